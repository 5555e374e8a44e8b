"""Predictor steps of the reverse-time SDE and the samplers made of them alone.

Each step moves ``x`` from time ``t`` to an earlier time ``t_next`` and returns the new state
and its noise-free mean ``(x, x_mean)``; ``last=True`` drops the noise (the customary final
step that returns the mean). The same steps are the predictors of the predictor-corrector
sampler (:mod:`.pc`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import Context, is_variance_exploding, is_variance_preserving, register
from .endpoint import prior_step, starts_at_prior

__all__ = [
    "em_step",
    "reverse_diffusion_step",
    "ancestral_step",
    "prior_predictor_step",
    "PREDICTORS",
    "euler_maruyama",
    "reverse_diffusion",
    "ancestral",
]

Step = Callable[[Context, Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor]]


def _finish(ctx: Context, x_mean: Tensor, std: Tensor, last: bool) -> tuple[Tensor, Tensor]:
    if last:
        return x_mean, x_mean
    return x_mean + std * ctx.randn_like(x_mean), x_mean


def em_step(
    ctx: Context, x: Tensor, t: Tensor, t_next: Tensor, last: bool
) -> tuple[Tensor, Tensor]:
    """Euler-Maruyama on ``dx = [f x - g^2 score] dt + g dw_bar`` (Song et al. 2021, eq. 6).

    ``x' = x + (f x - g^2 s(x, t)) h + g sqrt(-h) z`` with ``h = t_next - t < 0``
    (:meth:`scoresde.ReverseSDE.euler_step`).
    """
    mean, std = ctx.reverse().euler_step(x, t, t_next)
    return _finish(ctx, mean, std, last)


def reverse_diffusion_step(
    ctx: Context, x: Tensor, t: Tensor, t_next: Tensor, last: bool
) -> tuple[Tensor, Tensor]:
    """Reverse of the exact forward transition ``x_t = a x_next + b z`` (Song et al., App. E).

    With ``a = s(t)/s(t_next)`` and ``b^2 = s(t)^2 (sigma(t)^2 - sigma(t_next)^2)`` the
    discretised forward step is ``x_t = x_next + (a - 1) x_next + b z``, and its reverse is
    ``x_next = x - (a - 1) x + b^2 score(x, t) + b z``: DDPM's and SMLD's discretisations for
    VP and VE, and the matching one for every other SDE.
    """
    sde = ctx.sde
    a = sde.scale(t) / sde.scale(t_next)
    b2 = sde.scale(t) ** 2 * (sde.sigma(t) ** 2 - sde.sigma(t_next) ** 2)
    x_mean = (2.0 - a) * x + b2 * ctx.score(x, t)
    return _finish(ctx, x_mean, torch.sqrt(b2), last)


def ancestral_step(
    ctx: Context, x: Tensor, t: Tensor, t_next: Tensor, last: bool
) -> tuple[Tensor, Tensor]:
    """Ancestral sampling: DDPM (Ho et al. 2020, eq. 11) for VP, SMLD (Song et al., App. F) for VE.

    VP: ``beta = 1 - abar_t / abar_next`` with ``abar = s^2``;
    ``x' = (x + beta score) / sqrt(1 - beta) + sqrt(beta) z``.
    VE: ``x' = x + (sigma_t^2 - sigma_next^2) score + sqrt(sigma_next^2 (sigma_t^2 -
    sigma_next^2) / sigma_t^2) z``.
    """
    sde = ctx.sde
    if "ve" not in ctx.memo:  # decided once on the host (the contract allows VP or VE only)
        ctx.memo["ve"] = is_variance_exploding(sde)
    if ctx.memo["ve"]:
        s2, n2 = sde.sigma(t) ** 2, sde.sigma(t_next) ** 2
        x_mean = x + (s2 - n2) * ctx.score(x, t)
        return _finish(ctx, x_mean, torch.sqrt(n2 * (s2 - n2) / s2), last)
    beta = 1.0 - (sde.scale(t) / sde.scale(t_next)) ** 2
    x_mean = (x + beta * ctx.score(x, t)) / torch.sqrt(1.0 - beta)
    return _finish(ctx, x_mean, torch.sqrt(beta), last)


def _ancestral_ok(sde: object) -> bool:
    return is_variance_preserving(sde) or is_variance_exploding(sde)  # type: ignore[arg-type]


PREDICTORS: dict[str, Step] = {
    "euler_maruyama": em_step,
    "reverse_diffusion": reverse_diffusion_step,
    "ancestral": ancestral_step,
}
"""Predictor steps by name (for :func:`.pc.pc`)."""

ANCESTRAL_REQUIREMENT = (
    "ancestral sampling is defined for variance-preserving (VP/DDPM: s^2 (1 + sigma^2) = 1) and "
    "variance-exploding (VE/SMLD/EDM: s = 1) SDEs; use 'reverse_diffusion' or 'ddim' instead"
)


def prior_predictor_step(
    ctx: Context, x: Tensor, t: Tensor, t_next: Tensor, stochastic: bool, last: bool
) -> tuple[Tensor, Tensor]:
    """The first step from ``T`` of a flow path (``s(T) = 0``), in closed form (:mod:`.endpoint`).

    Stochastic: the reverse SDE's ``x' ~ N(s' D, std'^2 I)`` (its infinite diffusion at ``T``
    forgets ``x``; the noise-free mean when ``last``). Otherwise the probability flow's
    ``x' = s' D + std' x / std(T)``. Returns ``(x', mean)``.
    """
    (mean, std), _ = prior_step(ctx, x, t, t_next, probability_flow=not stochastic)
    return _finish(ctx, mean, std, last) if stochastic else (mean, mean)


def run_predictor(ctx: Context, x: Tensor, times: Tensor, step: Step) -> Tensor:
    """Apply ``step`` over the grid; the last step is noise-free.

    A grid that starts at ``T`` of a flow path takes its first step by
    :func:`prior_predictor_step`.
    """
    n = times.numel() - 1
    start = 0
    if starts_at_prior(ctx, times):
        x, x_mean = prior_predictor_step(ctx, x, times[0], times[1], True, n == 1)
        ctx.report(0, times[1], x, x_mean=x_mean)
        start = 1
    for i in range(start, n):
        x, x_mean = step(ctx, x, times[i], times[i + 1], i == n - 1)
        ctx.report(i, times[i + 1], x, x_mean=x_mean)
    return x


@register("euler_maruyama", order=1, stochastic=True)
def euler_maruyama(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6).

    Integrates ``dx = [f x - g^2 score] dt + g dw_bar`` backwards over ``times``:
    ``x_{i+1} = x_i + (f x_i - g^2 s(x_i, t_i)) h + g sqrt(|h|) z`` with ``h = t_{i+1} - t_i < 0``;
    the last step adds no noise (it returns the mean, the usual final denoising).
    """
    return run_predictor(ctx, x, times, em_step)


@register("reverse_diffusion", order=1, stochastic=True)
def reverse_diffusion(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Reverse diffusion: the discretisation-matched reverse of the forward step.

    Song et al. 2021, App. E; see :func:`reverse_diffusion_step`.
    """
    return run_predictor(ctx, x, times, reverse_diffusion_step)


@register(
    "ancestral", order=1, stochastic=True, supports=_ancestral_ok, requirement=ANCESTRAL_REQUIREMENT
)
def ancestral(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """DDPM (VP) / SMLD (VE) ancestral sampling (Ho et al. 2020; Song et al. 2021, App. F).

    VP and VE only; see :func:`ancestral_step`.
    """
    return run_predictor(ctx, x, times, ancestral_step)
