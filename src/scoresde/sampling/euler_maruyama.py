"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Context, register


@register("euler_maruyama", order=1, stochastic=True)
def euler_maruyama(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Integrate ``dx = [f x - g^2 score] dt + g dw_bar`` backwards over ``times``.

    ``x_{i+1} = x_i + (f x_i - g^2 s(x_i, t_i)) h + g sqrt(|h|) z`` with ``h = t_{i+1} - t_i < 0``;
    the last step adds no noise (it returns the mean, the usual final denoising).
    """
    sde = ctx.sde
    n = times.numel() - 1
    for i in range(n):
        t, h = times[i], times[i + 1] - times[i]
        g2 = sde.g2(t)
        x_mean = x + (sde.f(t) * x - g2 * ctx.score(x, t)) * h
        x = x_mean + torch.sqrt(g2 * -h) * ctx.randn_like(x) if i < n - 1 else x_mean
        ctx.report(i, times[i + 1], x, x_mean=x_mean)
    return x


__all__ = ["euler_maruyama"]
