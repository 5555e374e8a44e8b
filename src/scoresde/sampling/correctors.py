"""Corrector steps: Langevin MCMC at a fixed time, targeting ``p_t`` (Song et al. 2021, Alg. 4/5).

Both correctors take ``x_mean = x + eps * score(x, t)`` then ``x = x_mean + sqrt(2 eps) z``.
They differ in the step size ``eps``:

* ``"langevin"``: ``eps = 2 alpha (snr ||z|| / ||score||)^2``, the signal-to-noise rule of the
  reference implementation. The norms are taken **per sample** by default, so a sample never
  depends on the rest of its batch (and per sample ``||z||`` is replaced by its root mean
  square ``sqrt(d)``, so that the step does not depend on the noise it multiplies);
  ``batch_averaged=True`` averages them over the batch as the reference implementation does.
  Per sample, ``||score||`` can be near zero (a sample between
  two modes, or any sample in low dimension), which makes the rule's step unbounded; the step
  is therefore capped at ``std(t)^2``, half the stability limit of Langevin dynamics on ``p_t``
  (whose log-density has curvature at most ``1 / std(t)^2``, as ``p_t`` is a Gaussian
  convolution).
* ``"ald"``: annealed Langevin dynamics, ``eps = 2 alpha (snr * std(t))^2`` (NCSN, Song & Ermon
  2019, with the marginal std in place of sigma_i).

``alpha = (s(t_next) / s(t))^2`` is the generic form of DDPM's ``alpha_i = 1 - beta_i``
(it is 1 for VE); the reference implementation's ``sde.alphas`` lookup fails for sub-VP.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..sde import bcast
from .base import Context

__all__ = ["langevin_step", "ald_step", "CORRECTORS"]

Corrector = Callable[[Context, Tensor, Tensor, float | Tensor, float, bool], tuple[Tensor, Tensor]]


def _norm(v: Tensor, batch_averaged: bool) -> Tensor:
    n = v.reshape(v.shape[0], -1).norm(dim=1)
    return n.mean().expand(v.shape[0]) if batch_averaged else n


def langevin_step(
    ctx: Context, x: Tensor, t: Tensor, alpha: float | Tensor, snr: float, batch_averaged: bool
) -> tuple[Tensor, Tensor]:
    """One Langevin step with the signal-to-noise step-size rule (Song et al. 2021, Alg. 4)."""
    grad = ctx.score(x, t)
    z = ctx.randn_like(x)
    if batch_averaged:
        noise_norm = _norm(z, True)
    else:  # the expected norm: a step size that does not depend on the noise it scales
        noise_norm = torch.full(
            (x.shape[0],), math.sqrt(x[0].numel()), device=x.device, dtype=x.dtype
        )
    ratio = noise_norm / _norm(grad, batch_averaged).clamp_min(1e-30)
    step = torch.minimum(2.0 * alpha * (snr * ratio) ** 2, ctx.sde.std(t) ** 2)
    step = bcast(step, x)
    x_mean = x + step * grad
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def ald_step(
    ctx: Context, x: Tensor, t: Tensor, alpha: float | Tensor, snr: float, batch_averaged: bool
) -> tuple[Tensor, Tensor]:
    """One annealed-Langevin step with ``eps = 2 alpha (snr std(t))^2`` (Song et al., Alg. 5)."""
    grad = ctx.score(x, t)
    z = ctx.randn_like(x)
    step = 2.0 * alpha * (snr * ctx.sde.std(t)) ** 2
    x_mean = x + step * grad
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


CORRECTORS: dict[str, Corrector] = {"langevin": langevin_step, "ald": ald_step}
"""Corrector steps by name."""
