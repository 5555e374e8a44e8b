"""Heun's method (explicit trapezoid, order 2) on the probability-flow ODE in time t."""

from __future__ import annotations

from torch import Tensor

from .base import Context, register


def pf_drift(ctx: Context, x: Tensor, t: Tensor) -> Tensor:
    """Probability-flow ODE drift ``f(t) x - g(t)^2 score(x, t) / 2`` at a scalar time."""
    sde = ctx.sde
    return sde.f(t) * x - 0.5 * sde.g2(t) * ctx.score(x, t)


@register(
    "ode_heun",
    order=2,
    stochastic=False,
    evals_per_step=2,
    description="Heun (explicit trapezoid) in t on the PF ODE, any SDE",
)
def ode_heun(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """``x' = x + h d(x, t_i)``; ``x <- x + h (d(x, t_i) + d(x', t_{i+1})) / 2`` (2 NFE a step)."""
    for i in range(times.numel() - 1):
        t, t_next = times[i], times[i + 1]
        h = t_next - t
        d = pf_drift(ctx, x, t)
        x_pred = x + h * d
        x = x + 0.5 * h * (d + pf_drift(ctx, x_pred, t_next))
        ctx.report(i, t_next, x)
    return x
