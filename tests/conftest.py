"""Shared fixtures: the one SDE zoo and the one set of analytic targets of the suite.

Test modules that parametrize at collection time import the tables directly
(``from conftest import STD_SDES, TARGETS``); others use the fixtures ``any_sde`` / ``std_sde``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterator

import pytest
import torch

import scoresde as S
from scoresde.targets import Gaussian, GaussianMixture

# The suite's tensors are small: one intra-op thread is faster than two and does not slow down
# by an order of magnitude when the machine is busy (measured by several test files here).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test starts on one thread, whatever the previous one left behind."""
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------------------------------------
# the SDE zoo


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


STD_SDES: dict[str, Callable[[], S.SDE]] = {
    "ve": S.VESDE,
    "vp": S.VPSDE,
    "subvp": S.SubVPSDE,
    "edm": S.EDMSDE,
}
"""The four named SDEs of the public contract, with their default parameters."""

SDE_FACTORIES: dict[str, Callable[[], S.SDE]] = {**STD_SDES, "affine": cosine_affine}
"""Every SDE of the library, including a user-defined affine one."""


# ---------------------------------------------------------------------------------------------
# the analytic targets (exact noised scores and log-densities under every SDE)


def two_modes() -> GaussianMixture:
    """Two isotropic 2-D modes of equal weight."""
    return GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])


def three_modes() -> GaussianMixture:
    """Three diagonal 2-D modes with unequal weights."""
    return GaussianMixture(
        means=[[-2.0, 0.5], [1.5, 1.0], [0.0, -2.0]],
        variances=[[0.3, 0.1], [0.2, 0.5], [0.4, 0.4]],
        weights=[0.5, 0.3, 0.2],
    )


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


def sharp_modes() -> GaussianMixture:
    """Three 2-D modes, one of them very narrow (std 0.045): stresses small noise levels."""
    return GaussianMixture([[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]], variances=[0.01, 0.05, 0.002])


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


def gauss2() -> Gaussian:
    """A correlated 2-D Gaussian."""
    return Gaussian([0.5, -1.0], covariance=[[0.6, 0.25], [0.25, 0.3]])


def gauss64() -> Gaussian:
    """A 64-D diagonal Gaussian with variances over 3.5 decades."""
    lam = torch.logspace(-3, 0.5, 64, dtype=torch.float64)
    return Gaussian(torch.linspace(-1, 1, 64, dtype=torch.float64), variance=lam)


def imputation2d() -> GaussianMixture:
    """Three correlated 2-D modes whose conditional given ``x1 = 0`` has unequal weights."""
    cov = [[[0.5, 0.2], [0.2, 0.4]], [[0.4, -0.1], [-0.1, 0.3]], [[0.3, 0.0], [0.0, 0.6]]]
    return GaussianMixture(
        [[-1.0, -2.0], [-0.5, 2.0], [1.5, 0.0]], covariances=cov, weights=[0.3, 0.4, 0.3]
    )


def imputation16(n_known: int) -> GaussianMixture:
    """Three correlated 16-D modes whose means differ little on the first ``n_known``
    coordinates and a lot on the others (the missing ones)."""
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    means = torch.randn(3, 16, generator=g, dtype=dt)
    means[:, :n_known] *= 0.2
    means[:, n_known:] *= 1.5
    if n_known == 15:
        means[:, 15] = torch.tensor([-2.0, 2.0, 0.0], dtype=dt)
    a = torch.randn(3, 16, 16, generator=g, dtype=dt) / 4.0
    covs = 0.3 * a @ a.transpose(1, 2) + 0.1 * torch.eye(16, dtype=dt)
    return GaussianMixture(means, covariances=covs, weights=[0.4, 0.35, 0.25])


def imputation_problems() -> dict[str, tuple[GaussianMixture, torch.Tensor, torch.Tensor]]:
    """``name -> (prior, known mask, observed event)``: inpainting one coordinate and a block,
    in 2-D and 16-D, with conditional weights .247/.733/.020, .594/.279/.126, .521/.250/.229."""
    block, one = imputation16(8), imputation16(15)
    return {
        "2d-one": (
            imputation2d(),
            torch.tensor([True, False]),
            torch.zeros(2, dtype=torch.float64),
        ),
        "16d-block": (block, torch.arange(16) < 8, block.means[0].clone()),
        "16d-one": (one, torch.arange(16) < 15, 0.25 * one.means[0]),
    }


TARGETS: dict[str, Callable[[], GaussianMixture | Gaussian]] = {
    "two_modes": two_modes,
    "three_modes": three_modes,
    "four_modes": four_mode_mixture,
    "sharp_modes": sharp_modes,
    "ring2d": ring2d,
    "aniso32d": aniso32d,
    "gauss2": gauss2,
    "gauss64": gauss64,
    "imputation2d": imputation2d,
}
"""Every analytic target of the suite by name."""


@pytest.fixture(params=sorted(SDE_FACTORIES))
def any_sde(request: pytest.FixtureRequest) -> S.SDE:
    """Every SDE of the library, including a user-defined affine one."""
    return SDE_FACTORIES[request.param]()


@pytest.fixture(params=["ve", "vp", "subvp", "edm"])
def std_sde(request: pytest.FixtureRequest) -> S.SDE:
    """The four named SDEs of the public contract."""
    return SDE_FACTORIES[request.param]()


@pytest.fixture(scope="session")
def fuzz_cases(pytestconfig: pytest.Config) -> collections.Counter[str]:
    """Counter of the fuzz cases tried (by suite); reported in the terminal summary."""
    counter: collections.Counter[str] = collections.Counter()
    pytestconfig.stash[_FUZZ_KEY] = counter
    return counter


_FUZZ_KEY = pytest.StashKey[collections.Counter]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the number of fuzz cases tried (tests/test_fuzz*.py)."""
    counter = config.stash.get(_FUZZ_KEY, None)
    if counter:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
        terminalreporter.write_line(f"fuzz cases tried: {sum(counter.values())} ({parts})")
