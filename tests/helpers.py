"""Analytic test fixtures shared by test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

import math
from typing import Any

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


class HostReads:
    """Count reads of tensor values into Python (a device synchronisation on a GPU)."""

    NAMES = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> HostReads:
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def counted(t: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                self.count += 1
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
