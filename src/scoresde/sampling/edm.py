"""EDM samplers (Karras et al. 2022): the probability-flow ODE in the noise level, any SDE.

In the scaled variable ``x_hat = x / s(t)`` every affine SDE has the same probability-flow ODE
in its noise level (EDM eq. 4 with ``s = 1``, seed 004):

    d x_hat / d sigma = (x_hat - D(x_hat; sigma)) / sigma,
    D(x_hat; sigma) = x_hat + s sigma^2 score(s x_hat, t(sigma))   (Tweedie's denoiser).

The SDE enters only through the score's time argument, so the EDM solvers here run on VE, VP,
sub-VP, EDM and user affine SDEs alike, stepping in ``sigma`` on the grid ``sigma(times)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_nonnegative
from .base import Context, register

__all__ = ["euler", "heun", "edm", "denoiser"]


def denoiser(
    ctx: Context, x_hat: Tensor, t: Tensor, s: Tensor | None = None, sig: Tensor | None = None
) -> Tensor:
    """``D(x_hat; sigma(t)) = x_hat + s sigma^2 score(s x_hat, t)``: Tweedie's posterior mean.

    :meth:`scoresde.SDE.tweedie` in the scaled variable ``x_hat = x / s`` (the samplers of this
    family step ``x_hat``); ``s = s(t)`` and ``sig = sigma(t)`` may be passed in when known.
    """
    if s is None:
        s = ctx.sde.scale(t)
    if sig is None:
        sig = ctx.sde.sigma(t)
    return x_hat + s * sig**2 * ctx.score(s * x_hat, t)


def grid_coefficients(ctx: Context, times: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """``s(t_i)`` and ``sigma(t_i)`` for the whole grid, computed once (0-d tensors)."""
    return list(ctx.sde.scale(times).unbind()), list(ctx.sde.sigma(times).unbind())


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


def _run(ctx: Context, x: Tensor, times: Tensor, heun: bool) -> Tensor:
    sc, sg = grid_coefficients(ctx, times)
    x_hat = x / sc[0]
    for i in range(times.numel() - 1):
        coef = (sc[i], sg[i], sc[i + 1], sg[i + 1])
        x_hat, den = _ode_step(ctx, x_hat, times[i], times[i + 1], heun, coef)
        if ctx.active:
            ctx.report(i, times[i + 1], sc[i + 1] * x_hat, denoised=den)
    return sc[-1] * x_hat


@register(
    "euler",
    order=1,
    stochastic=False,
    denoise=True,
    schedule="karras",
    description="Euler in sigma on the PF ODE (EDM Alg. 1 without correction), any SDE",
)
def euler(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Euler's method on ``d x_hat / d sigma = (x_hat - D) / sigma`` (1 NFE a step).

    With the default ``denoise=True`` the final step to ``sigma = 0`` is the Euler step
    ``x_hat = D(x_hat; sigma_eps)``, exactly as in EDM.
    """
    return _run(ctx, x, times, heun=False)


@register(
    "heun",
    order=2,
    stochastic=False,
    denoise=True,
    schedule="karras",
    evals_per_step=2,
    description="Heun in sigma on the PF ODE (EDM Alg. 1), any SDE",
)
def heun(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """EDM Algorithm 1: Heun's method in ``sigma`` (2 NFE a step, Euler for the step to 0)."""
    return _run(ctx, x, times, heun=True)


@register(
    "edm",
    order=2,
    stochastic=True,
    denoise=True,
    schedule="karras",
    evals_per_step=2,
    options=("s_churn", "s_tmin", "s_tmax", "s_noise"),
    description="EDM stochastic sampler (Alg. 2): churn noise then a Heun step",
)
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
    """EDM Algorithm 2: churn noise up to ``sigma_hat``, then a Heun step down to ``sigma_{i+1}``.

    Noise raises ``sigma_i`` to ``sigma_hat = (1 + gamma) sigma_i``, then a Heun step of the PF
    ODE goes from ``sigma_hat`` to ``sigma_{i+1}`` (2 NFE a step).

    ``gamma = min(s_churn / N, sqrt(2) - 1)`` for ``s_tmin <= sigma_i <= s_tmax`` (else 0);
    the added noise has std ``s_noise sqrt(sigma_hat^2 - sigma_i^2)``. This is the discretised
    SDE of seed 004's ``beta(t)`` family: Langevin-like injection and removal of noise.
    ``sigma_hat`` is capped at ``sigma(T)`` where the score is defined.
    """
    s_churn = check_nonnegative("s_churn", s_churn)
    s_noise = check_nonnegative("s_noise", s_noise)
    sde = ctx.sde
    n = times.numel() - 1
    gamma_max = min(s_churn / n, math.sqrt(2.0) - 1.0)
    sig_top = sde.sigma(torch.full_like(times[0], sde.T))
    sc, sg = grid_coefficients(ctx, times)
    # the churn decisions need the noise levels on the host: read them once, not every step
    top_host, sg_host = float(sig_top), torch.stack(sg).tolist()
    x_hat = x / sc[0]
    for i in range(n):
        t, t_next, s, sig = times[i], times[i + 1], sc[i], sg[i]
        gamma = gamma_max if s_tmin <= sg_host[i] <= s_tmax else 0.0
        if min(sg_host[i] * (1.0 + gamma), top_host) > sg_host[i]:
            sig_hat = torch.minimum(sig * (1.0 + gamma), sig_top)
            x_hat = x_hat + s_noise * torch.sqrt(sig_hat**2 - sig**2) * ctx.randn_like(x_hat)
            t = sde.sigma_inv(sig_hat)
            s, sig = sde.scale(t), sde.sigma(t)
        coef = (s, sig, sc[i + 1], sg[i + 1])
        x_hat, den = _ode_step(ctx, x_hat, t, t_next, True, coef)
        if ctx.active:
            ctx.report(i, t_next, sc[i + 1] * x_hat, denoised=den)
    return sc[-1] * x_hat
