"""Sample-quality metrics against a known mixture: per-mode mass, per-mode Fréchet, sliced W2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .targets import GaussianMixture

__all__ = ["ModeReport", "mode_report", "frechet_distance", "sliced_wasserstein"]


def _sqrtm_psd(a: Tensor) -> Tensor:
    lam, vec = torch.linalg.eigh(a)
    return (vec * lam.clamp_min(0).sqrt()) @ vec.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Squared Fréchet (W2) distance between two Gaussians (Dowson & Landau 1982)."""
    s1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(s1 @ cov2 @ s1)
    return float((mu1 - mu2).pow(2).sum() + torch.trace(cov1 + cov2 - 2 * cross))


@dataclass
class ModeReport:
    """Per-mode comparison of samples with a Gaussian mixture."""

    mass: Tensor
    """Fraction of samples assigned to each component ``(K,)``."""
    tv: float
    """Total variation between the sample mode masses and the mixture weights."""
    frechet: Tensor
    """Squared Fréchet distance of each mode's samples to its component ``(K,)``."""
    frechet_weighted: float
    """Mixture-weighted mean of ``frechet``."""


def mode_report(target: GaussianMixture, x: Tensor) -> ModeReport:
    """Assign samples to their most probable component and compare mode by mode (float64)."""
    x = x.detach().to(torch.float64).reshape(x.shape[0], -1).cpu()
    labels = target.assign(x)
    k = target.n_components
    mass = torch.bincount(labels, minlength=k).double() / max(len(x), 1)
    tv = 0.5 * float((mass - target.weights).abs().sum())
    covs = target.covariances()
    fr = torch.full((k,), float("inf"), dtype=torch.float64)
    for j in range(k):
        xj = x[labels == j]
        if len(xj) > x.shape[1] + 1:
            fr[j] = frechet_distance(
                xj.mean(0), torch.cov(xj.T).reshape(x.shape[1], -1), target.means[j], covs[j]
            )
    return ModeReport(mass, tv, fr, float((target.weights * fr).sum()))


def sliced_wasserstein(
    x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between two equal-size sample sets (random directions)."""
    x = x.detach().reshape(x.shape[0], -1).double().cpu()
    y = y.detach().reshape(y.shape[0], -1).double().cpu()
    if x.shape != y.shape:
        raise ValueError(
            f"sample sets must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dirs = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = (x @ dirs).sort(0)
    py, _ = (y @ dirs).sort(0)
    return float((px - py).pow(2).mean().sqrt())
