"""Heun's method (explicit trapezoid, order 2) on the probability-flow ODE in time t."""

from __future__ import annotations

from torch import Tensor

from .base import Context, register
from .endpoint import prior_denoise, starts_at_prior

__all__ = ["ode_heun"]


@register("ode_heun", order=2, stochastic=False, evals_per_step=2)
def ode_heun(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Heun's method (explicit trapezoid) in t on the PF ODE (2 NFE a step).

    ``x' = x + h d(x, t_i)``; ``x <- x + h (d(x, t_i) + d(x', t_{i+1})) / 2``, where ``d`` is
    the probability-flow drift ``f x - g^2 score / 2`` (Song et al. 2021, eq. 13) of
    :meth:`scoresde.SDE.reverse`; at ``T`` of a flow path (``s(T) = 0``) its closed form
    ``s' D + (std'/std) x`` (:meth:`scoresde.ReverseSDE.prior_drift`).
    """
    pf = ctx.reverse(probability_flow=True)
    at_prior = starts_at_prior(ctx, times)
    for i in range(times.numel() - 1):
        t, t_next = times[i], times[i + 1]
        h = t_next - t
        if at_prior and i == 0:
            d = pf.prior_drift(x, t, prior_denoise(ctx, x, t))
        else:
            d = pf.drift(x, t)
        x_pred = x + h * d
        x = x + 0.5 * h * (d + pf.drift(x_pred, t_next))
        ctx.report(i, t_next, x)
    return x
