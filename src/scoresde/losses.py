"""Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7) with its weightings.

``L = E_t lambda(t) E_{x0} E_{x_t | x0} || s(x_t, t) - grad log p(x_t | x0) ||^2`` with
``grad log p(x_t | x0) = -z / std`` for ``x_t = mean + std z`` and ``t ~ U(eps, T)``.

Weightings ``lambda(t)``: ``"sigma2"`` (``std^2``, the default; balances the noise levels),
``"likelihood"`` (``g(t)^2``, which makes the loss bound the KL, Song et al. 2021b) and ``"none"``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import check_choice, check_generator, check_output, check_tensor
from .sde import SDE, ScoreFn, bcast

__all__ = ["dsm_loss", "WEIGHTINGS", "EPS_TRAIN"]

WEIGHTINGS = ("sigma2", "likelihood", "none")
EPS_TRAIN = 1e-5


def dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    *,
    weighting: Literal["sigma2", "likelihood", "none"] = "sigma2",
    reduction: Literal["mean", "sum", "none"] = "mean",
    eps: float = EPS_TRAIN,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Denoising score-matching loss of ``score_fn`` on the data batch ``x0``.

    Per sample, ``lambda(t) || s(x_t, t) + z / std ||^2`` summed over the data dimensions; then
    ``reduction`` over the batch (``"none"`` returns the ``(B,)`` values). ``t`` and ``noise``
    may be given (for tests and variance reduction); else ``t ~ U(eps, T)`` and ``z ~ N(0, I)``
    are drawn from ``generator``.
    """
    check_tensor("x0", x0)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if not 0 <= eps < sde.T:
        raise ValueError(f"eps must lie in [0, T) = [0, {sde.T}), got {eps}")
    b = x0.shape[0]
    if t is None:
        u = torch.rand(b, generator=generator, device=x0.device, dtype=x0.dtype)
        t = eps + (sde.T - eps) * u
    else:
        t = sde.time(t, x0)
    check_generator("generator", generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif check_tensor("noise", noise).shape != x0.shape:
        raise ValueError(
            f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
        )
    mean, std = sde.marginal(x0, t)
    x_t = mean + bcast(std, x0) * noise
    score = check_output("score_fn", score_fn(x_t, t), x0)
    if weighting == "sigma2":  # lambda = std^2: || std * s + z ||^2
        per = (bcast(std, x0) * score + noise).flatten(1).pow(2).sum(1)
    else:
        per = (score + noise / bcast(std, x0)).flatten(1).pow(2).sum(1)
        if weighting == "likelihood":
            per = per * sde.g2(t)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per
