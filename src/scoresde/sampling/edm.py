"""EDM samplers (Karras et al. 2022): the probability-flow ODE in the noise level, any SDE.

``euler`` and ``heun`` are EDM's Algorithm 1 (without and with the second-order correction), ``edm``
its Algorithm 2 (churn noise, then a Heun step); all step ``x_hat = x / s`` in ``sigma`` on the
grid ``sigma(times)`` (see :mod:`.sigma`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_nonnegative
from .base import Context, register
from .sigma import SigmaGrid, denoiser, run_in_sigma

__all__ = ["euler", "heun", "edm"]


def _ode_step(
    ctx: Context,
    x_hat: Tensor,
    t: Tensor,
    t_next: Tensor,
    heun: bool,
    coef: tuple[Tensor, Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """EDM Algorithm 1, lines 4-8: an Euler step in sigma plus the optional Heun correction.

    ``coef = (s, sigma, s_next, sigma_next)`` at ``t`` and ``t_next``.
    """
    s, sig, s_next, sig_next = coef
    den = denoiser(ctx, x_hat, t, s, sig)
    d = (x_hat - den) / sig
    x_next = x_hat + (sig_next - sig) * d
    if heun:
        d_next = (x_next - denoiser(ctx, x_next, t_next, s_next, sig_next)) / sig_next
        x_next = x_hat + (sig_next - sig) * 0.5 * (d + d_next)
    return x_next, den


def _algorithm1(ctx: Context, x: Tensor, times: Tensor, heun: bool) -> Tensor:
    grid = SigmaGrid.of(ctx.sde, times)

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        return _ode_step(ctx, x_hat, times[i], times[i + 1], heun, grid.coefficients(i))

    return run_in_sigma(ctx, x, grid, step)


@register("euler", order=1, stochastic=False, denoise=True, schedule="karras")
def euler(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Euler in sigma on the PF ODE: EDM Algorithm 1 without correction (1 NFE a step).

    Euler's method on ``d x_hat / d sigma = (x_hat - D) / sigma``. With the default
    ``denoise=True`` the final step to ``sigma = 0`` is the Euler step
    ``x_hat = D(x_hat; sigma_eps)``, exactly as in EDM.
    """
    return _algorithm1(ctx, x, times, heun=False)


@register("heun", order=2, stochastic=False, denoise=True, schedule="karras", evals_per_step=2)
def heun(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Heun in sigma on the PF ODE: EDM Algorithm 1 (2 NFE a step, Euler for the step to 0)."""
    return _algorithm1(ctx, x, times, heun=True)


def _churn(
    ctx: Context, x_hat: Tensor, sig: Tensor, sig_hat: Tensor, s_noise: float
) -> tuple[Tensor, Tensor]:
    """EDM Algorithm 2, lines 5-6: noise from ``sigma`` up to ``sigma_hat``; its time."""
    x_hat = x_hat + s_noise * torch.sqrt(sig_hat**2 - sig**2) * ctx.randn_like(x_hat)
    return x_hat, ctx.sde.sigma_inv(sig_hat)


@register("edm", order=2, stochastic=True, denoise=True, schedule="karras", evals_per_step=2)
def edm(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    s_churn: float = 40.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM Algorithm 2: churn noise, then a Heun step in sigma (2 NFE a step).

    Noise raises ``sigma_i`` to ``sigma_hat = (1 + gamma) sigma_i``, then a Heun step of the PF
    ODE goes from ``sigma_hat`` to ``sigma_{i+1}`` (2 NFE a step).

    ``gamma = min(s_churn / N, sqrt(2) - 1)`` for ``s_tmin <= sigma_i <= s_tmax`` (else 0);
    the added noise has std ``s_noise sqrt(sigma_hat^2 - sigma_i^2)``. This discretises the SDE
    of the ``beta(t)`` family (Karras et al. 2022, eq. 6): Langevin-like injection and removal of
    noise. ``sigma_hat`` is capped at ``sigma(T)`` where the score is defined.
    """
    s_churn = check_nonnegative("s_churn", s_churn)
    s_noise = check_nonnegative("s_noise", s_noise)
    sde, grid = ctx.sde, SigmaGrid.of(ctx.sde, times)
    gamma_max = min(s_churn / grid.steps, math.sqrt(2.0) - 1.0)
    sig_top = sde.sigma(torch.full_like(times[0], sde.T))
    # the churn decisions need the noise levels on the host: read them once, not every step
    top_host, sg_host = float(sig_top), torch.stack(grid.sigma).tolist()

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        t, (s, sig, s_next, sig_next) = times[i], grid.coefficients(i)
        gamma = gamma_max if s_tmin <= sg_host[i] <= s_tmax else 0.0
        if min(sg_host[i] * (1.0 + gamma), top_host) > sg_host[i]:
            sig_hat = torch.minimum(sig * (1.0 + gamma), sig_top)
            x_hat, t = _churn(ctx, x_hat, sig, sig_hat, s_noise)
            s, sig = sde.scale(t), sde.sigma(t)
        return _ode_step(ctx, x_hat, t, times[i + 1], True, (s, sig, s_next, sig_next))

    return run_in_sigma(ctx, x, grid, step)
