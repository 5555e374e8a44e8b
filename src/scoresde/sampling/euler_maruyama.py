"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6)."""

from __future__ import annotations

from torch import Tensor

from .base import Context, register
from .predictors import em_step, run_predictor


@register(
    "euler_maruyama",
    order=1,
    stochastic=True,
    description="Euler-Maruyama on the reverse-time SDE (any SDE)",
)
def euler_maruyama(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Integrate ``dx = [f x - g^2 score] dt + g dw_bar`` backwards over ``times``.

    ``x_{i+1} = x_i + (f x_i - g^2 s(x_i, t_i)) h + g sqrt(|h|) z`` with ``h = t_{i+1} - t_i < 0``;
    the last step adds no noise (it returns the mean, the usual final denoising).
    """
    return run_predictor(ctx, x, times, em_step)


__all__ = ["euler_maruyama"]
