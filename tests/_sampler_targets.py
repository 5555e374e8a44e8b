"""Shared analytic targets for the sampler tests (not a test module)."""

from __future__ import annotations

import torch

from scoresde.targets import GaussianMixture


def ring2d() -> GaussianMixture:
    """Three sharp modes in 2-D with unequal weights."""
    return GaussianMixture(
        [[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], [0.05, 0.08, 0.03], weights=[0.5, 0.3, 0.2]
    )


def aniso32d() -> GaussianMixture:
    """Three anisotropic (diagonal) modes in 32-D with unequal weights."""
    g = torch.Generator().manual_seed(7)
    d = 32
    means = torch.randn(3, d, generator=g, dtype=torch.float64) * 1.2
    var = 0.02 + 0.3 * torch.rand(3, d, generator=g, dtype=torch.float64)
    return GaussianMixture(means, var, weights=[0.55, 0.3, 0.15])
