"""Analytic test fixtures shared by test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

import math

import torch

import scoresde as S
from scoresde.targets import GaussianMixture


def cosine_affine() -> S.AffineSDE:
    """A cosine-schedule VP process written as a user AffineSDE (derivatives by autograd)."""

    def alpha(t: torch.Tensor) -> torch.Tensor:
        return torch.cos(0.5 * math.pi * (t + 0.008) / 1.008) / math.cos(
            0.5 * math.pi * 0.008 / 1.008
        )

    def sigma(t: torch.Tensor) -> torch.Tensor:
        a = alpha(t)
        return torch.sqrt(1 - a**2) / a

    return S.AffineSDE(alpha, sigma, T=0.99, eps=1e-3)


def four_mode_mixture() -> GaussianMixture:
    """A 2-D mixture with four unequal modes and unequal, anisotropic covariances."""
    means = [[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]
    covs = [
        [[0.5, 0.2], [0.2, 0.4]],
        [[0.3, 0.0], [0.0, 0.6]],
        [[0.8, -0.3], [-0.3, 0.5]],
        [[0.4, 0.1], [0.1, 0.3]],
    ]
    return GaussianMixture(means, covariances=covs, weights=[0.1, 0.2, 0.3, 0.4])
