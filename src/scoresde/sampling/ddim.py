"""DDIM (Song, Meng & Ermon 2021, eq. 12) in the noise level, for every affine SDE."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Context, register
from .sigma import SigmaGrid, run_in_sigma

__all__ = ["ddim"]


def _check_eta(eta: float) -> float:
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
    return eta


@register("ddim", order=1, stochastic=True, denoise=True)
def ddim(ctx: Context, x: Tensor, times: Tensor, *, eta: float = 0.0) -> Tensor:
    """DDIM with eta in [0, 1]; eta = 0 is Euler in sigma on the PF ODE (1 NFE a step).

    ``x_hat' = D + sqrt(sigma'^2 - c^2) eps_hat + c z`` with ``eps_hat = (x_hat - D) / sigma``
    and ``c = eta sigma' sqrt(1 - sigma'^2 / sigma^2)``.

    In the scaled variable ``x_hat = x / s`` this is DDIM's eq. 12 (``c`` is its
    ``sigma_t(eta)`` divided by ``s``), so it holds for any SDE; ``eta = 0`` is deterministic
    (Euler in sigma on the PF ODE) and ``eta = 1`` is ancestral sampling. No data clipping.
    """
    eta = _check_eta(eta)
    grid = SigmaGrid.of(ctx.sde, times)

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        sig, sig_next = grid.sigma[i], grid.sigma[i + 1]
        den = grid.denoise(ctx, i, x_hat)
        eps_hat = (x_hat - den) / sig
        c = eta * sig_next * torch.sqrt((1.0 - (sig_next / sig) ** 2).clamp_min(0.0))
        x_hat = den + torch.sqrt(sig_next**2 - c**2) * eps_hat
        if eta > 0:
            x_hat = x_hat + c * ctx.randn_like(x_hat)
        return x_hat, den

    return run_in_sigma(ctx, x, grid, step)
