"""DDIM (Song, Meng & Ermon 2021, eq. 12) in the noise level, for every affine SDE."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Context, register
from .edm import denoiser, grid_coefficients

__all__ = ["ddim"]


def _check_eta(eta: float) -> float:
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
    return eta


@register(
    "ddim",
    order=1,
    stochastic=True,
    denoise=True,
    options=("eta",),
    description="DDIM with eta in [0, 1] (eta = 0: Euler in sigma), any SDE",
)
def ddim(ctx: Context, x: Tensor, times: Tensor, *, eta: float = 0.0) -> Tensor:
    """DDIM: ``x_hat' = D + sqrt(sigma'^2 - c^2) eps_hat + c z`` (1 NFE a step).

    Here ``eps_hat = (x_hat - D) / sigma`` and ``c = eta sigma' sqrt(1 - sigma'^2 / sigma^2)``.

    In the scaled variable ``x_hat = x / s`` this is DDIM's eq. 12 (``c`` is its
    ``sigma_t(eta)`` divided by ``s``), so it holds for any SDE; ``eta = 0`` is deterministic
    (Euler in sigma on the PF ODE) and ``eta = 1`` is ancestral sampling. No data clipping.
    """
    eta = _check_eta(eta)
    sc, sg = grid_coefficients(ctx, times)
    x_hat = x / sc[0]
    for i in range(times.numel() - 1):
        t, t_next = times[i], times[i + 1]
        sig, sig_next = sg[i], sg[i + 1]
        den = denoiser(ctx, x_hat, t, sc[i], sig)
        eps_hat = (x_hat - den) / sig
        c = eta * sig_next * torch.sqrt((1.0 - (sig_next / sig) ** 2).clamp_min(0.0))
        x_hat = den + torch.sqrt(sig_next**2 - c**2) * eps_hat
        if eta > 0:
            x_hat = x_hat + c * ctx.randn_like(x_hat)
        if ctx.active:
            ctx.report(i, t_next, sc[i + 1] * x_hat, denoised=den)
    return sc[-1] * x_hat
