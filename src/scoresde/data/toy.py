"""Two-dimensional toy data sets, drawn with torch from an explicit generator.

Each set has a natural label (which moon, mode, ring, arm or square) except the swiss roll, and
is drawn at a fixed scale of order one (standard deviation about 1 per coordinate), so that the
same SDE settings suit them all. ``8gaussians`` is an exact :class:`GaussianMixture`
(:func:`toy_mixture`), so samples of a model trained on it can be scored against the truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_choice
from ..targets import GaussianMixture

__all__ = ["TOY_DATASETS", "toy_data", "toy_mixture"]

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]


def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _normal(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), noise 0.1, centred."""
    y = (torch.rand(n, generator=g) < 0.5).long()
    a = math.pi * _uniform(n, g)
    upper = torch.stack([torch.cos(a), torch.sin(a)], 1)
    lower = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1)
    x = torch.where(y[:, None] == 0, upper, lower) + 0.1 * _normal((n, 2), g)
    return (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 1.4, y


def _swissroll(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    """The 2-D swiss roll: ``r (cos r, sin r)`` for ``r = 1.5 pi (1 + 2u)``, noise 0.5, / 5."""
    r = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    x = torch.stack([r * torch.cos(r), r * torch.sin(r)], 1) + 0.5 * _normal((n, 2), g)
    return x / 5.0, None


def toy_mixture(name: str = "8gaussians") -> GaussianMixture:
    """The exact mixture behind ``"8gaussians"``: 8 equal modes on a circle of radius 2, std 0.2."""
    check_choice("mixture", name, ("8gaussians",))
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture(means, variances=0.04)


def _eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    x, y = toy_mixture().sample(n, g, dtype=torch.float64, return_labels=True)  # type: ignore[misc]
    return x, y


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform on the 8 dark squares of a 4x4 board on ``[-2, 2]^2``; label = the square."""
    sq = torch.randint(0, 8, (n,), generator=g)
    row = sq // 2
    col = 2 * (sq % 2) + row % 2
    u = _uniform(2 * n, g).reshape(n, 2)
    x = torch.stack([col.double() + u[:, 0], row.double() + u[:, 1]], 1) - 2.0
    return x, sq


def _pinwheel(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Five arms: Gaussian blobs sheared into spirals (Johnson et al. 2016), scaled by 1.5."""
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    y = torch.randint(0, arms, (n,), generator=g)
    feats = _normal((n, 2), g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    feats[:, 0] += 1.0
    angle = y.double() * (2 * math.pi / arms) + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    x = torch.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)
    return 1.5 * x, y


def _spirals(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two interleaved spirals (one is the other rotated by pi), radius up to about 2.6."""
    y = (torch.rand(n, generator=g) < 0.5).long()
    r = torch.sqrt(_uniform(n, g)) * 3 * math.pi
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], 1) + 0.5 * _uniform(2 * n, g).reshape(
        n, 2
    )
    sign = 1.0 - 2.0 * y.double()
    return sign[:, None] * arm / 4.0 + 0.08 * _normal((n, 2), g), y


def _rings(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Four concentric circles of radii 0.5, 1, 1.5, 2 (mass proportional to radius), noise 0.04."""
    radii = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    y = torch.multinomial(radii.float(), n, replacement=True, generator=g)
    a = 2 * math.pi * _uniform(n, g)
    x = radii[y, None] * torch.stack([torch.cos(a), torch.sin(a)], 1)
    return x + 0.04 * _normal((n, 2), g), y


_TOYS: dict[str, Sampler] = {
    "moons": _moons,
    "swissroll": _swissroll,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "spirals": _spirals,
    "rings": _rings,
}

TOY_DATASETS = tuple(_TOYS)
"""The names of the 2-D toy sets."""
TOY_CLASSES = {"moons": 2, "swissroll": None, "8gaussians": 8, "checkerboard": 8, "pinwheel": 5,
               "spirals": 2, "rings": 4}  # fmt: skip
"""Number of label classes of each toy set (``None``: unlabelled)."""


def toy_data(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor | None]:
    """Draw ``n`` points ``(n, 2)`` of the toy set ``name`` (one of :data:`TOY_DATASETS`).

    Randomness comes from ``generator``, else from a fresh CPU generator seeded with ``seed``
    (default 0), so ``toy_data(name, n, seed=s)`` is reproducible. With ``return_labels`` also
    the ``(n,)`` labels (``None`` for the swiss roll).
    """
    check_choice("toy data set", name, TOY_DATASETS)
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of points, got {n}")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    elif seed is not None:
        raise ValueError("give either generator or seed, not both")
    if generator.device.type != "cpu":
        raise ValueError("toy data are drawn on the CPU; pass a CPU generator and move the data")
    x, y = _TOYS[name](int(n), generator)
    x = x.to(dtype)
    return (x, y) if return_labels else x
