"""Measured convergence orders: PF-ODE solvers against an adaptive reference (pathwise error)
and Euler-Maruyama's weak error on a Gaussian target."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import scoresde as S
from scoresde.targets import Gaussian, GaussianMixture

STEPS = (16, 32, 64)


def _target() -> GaussianMixture:
    return GaussianMixture([[1.0, 0.0], [-1.0, 0.5]], [0.3, 0.5], weights=[0.6, 0.4])


def _slopes(errs: list[float]) -> list[float]:
    return [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]


@pytest.fixture(scope="module", params=["vp", "ve"])
def problem(request: pytest.FixtureRequest) -> tuple[S.SDE, Any, torch.Tensor, torch.Tensor]:
    sde = S.VPSDE() if request.param == "vp" else S.VESDE()
    score = _target().score_fn(sde)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = x0 * sde.prior_std
    ref = S.sample(
        score, sde, x0.shape, sampler="ode", x_init=x0, rtol=1e-11, atol=1e-11, method="dopri8"
    )
    return sde, score, x0, ref


@pytest.mark.parametrize(
    ("sampler", "options", "lo", "hi"),
    [
        ("euler", {}, 0.85, 1.2),
        ("heun", {}, 1.8, 2.5),
        ("ode_heun", {}, 1.7, 2.9),
        ("dpm_solver", {"order": 2}, 1.8, 2.4),
        ("dpm_solver", {"order": 3}, 2.6, 3.8),
        ("dpm_solver", {"order": 3, "singlestep_start": True}, 2.6, 3.8),
        ("ddim", {}, 0.85, 1.2),
    ],
    ids=["euler", "heun", "ode_heun", "dpm++2M", "dpm++3M", "dpm++3M-2S-start", "ddim"],
)
def test_pf_ode_pathwise_order(
    problem: Any, sampler: str, options: dict, lo: float, hi: float
) -> None:
    sde, score, x0, ref = problem
    errs = []
    for n in STEPS:
        x = S.sample(
            score,
            sde,
            x0.shape,
            sampler=sampler,
            steps=n,
            x_init=x0,
            denoise=False,
            schedule="logsnr",
            **options,
        )
        errs.append(float((x - ref).abs().max()))
    slope = _slopes(errs)[-1]
    assert lo <= slope <= hi, (errs, _slopes(errs))


def test_adaptive_ode_meets_tolerance_and_reports_nfe() -> None:
    sde = S.VPSDE()
    score = _target().score_fn(sde)
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = S.sample(
        score, sde, x0.shape, sampler="ode", x_init=x0, rtol=1e-11, atol=1e-11, method="dopri8"
    )
    loose = S.sample(
        score, sde, x0.shape, sampler="ode", x_init=x0, rtol=1e-4, atol=1e-4, return_info=True
    )
    tight = S.sample(
        score, sde, x0.shape, sampler="ode", x_init=x0, rtol=1e-7, atol=1e-7, return_info=True
    )
    assert 10 < loose.nfe < tight.nfe
    e_loose = float((loose.samples - ref).abs().max())
    e_tight = float((tight.samples - ref).abs().max())
    assert e_tight < e_loose < 5e-2 and e_tight < 1e-4


def test_euler_maruyama_weak_order_one() -> None:
    """The weak error E[x] - mu of EM on a 1-D Gaussian target halves when the steps double."""
    mu, var, n = 2.0, 0.04, 200_000
    target = Gaussian([mu], var)
    sde = S.VPSDE()
    errs = []
    for steps in (10, 20, 40):
        x = S.sample(
            target.score_fn(sde),
            sde,
            (n, 1),
            sampler="euler_maruyama",
            steps=steps,
            schedule="uniform",
            generator=torch.Generator().manual_seed(steps),
            dtype=torch.float64,
        )
        errs.append(abs(float(x.mean()) - mu))
    mc = math.sqrt(var / n)  # standard deviation of the Monte-Carlo estimate
    assert errs[-1] > 8 * mc, (errs, mc)  # the bias dominates the Monte-Carlo error
    slopes = _slopes(errs)
    assert all(0.75 <= s <= 1.3 for s in slopes), (errs, slopes)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_step_integrates_a_polynomial_denoiser_exactly(order: int) -> None:
    """With ``D(lambda)`` a polynomial of degree ``order - 1`` the multistep update equals the
    exact solution ``e^-h x + int e^(l - l_t) D(l) dl`` for any (uneven) step history: this pins
    every coefficient, including ``-2 phi_3`` on the second divided difference."""
    from scoresde.sampling.multistep import multistep_update

    coef = torch.tensor([0.7, -1.3, 0.45], dtype=torch.float64)[:order]

    def den(lam: torch.Tensor) -> torch.Tensor:
        return sum(c * lam**k for k, c in enumerate(coef))

    lams = [torch.tensor([v], dtype=torch.float64) for v in (-1.1, -0.35, 0.2)][-order:]
    lam_next = torch.tensor([1.4], dtype=torch.float64)
    x = torch.tensor([0.3], dtype=torch.float64)
    got = multistep_update(x, lams[-1], lam_next, [den(v) for v in lams], lams, order, 0.0, None)
    grid = torch.linspace(float(lams[-1]), float(lam_next), 200_001, dtype=torch.float64)
    exact = torch.exp(lams[-1] - lam_next) * x + torch.trapezoid(
        torch.exp(grid - lam_next) * den(grid), grid
    )
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-9)
