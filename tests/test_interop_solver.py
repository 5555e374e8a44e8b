"""The ``solver_type`` option of DPM-Solver++(2M): diffusers' "midpoint" form beside the phi_2
("heun") form. Both must be second order (pathwise error against an adaptive reference on an
exact Gaussian-mixture score); they differ by O(h^3) a step. diffusers is not needed here."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.sampling.multistep import first_difference_weight, phi2
from scoresde.targets import GaussianMixture

F64 = torch.float64


def test_the_two_weights_agree_to_second_order() -> None:
    u = torch.logspace(-4, -2.5, 7, dtype=F64)
    mid, heun = first_difference_weight(u, "midpoint"), first_difference_weight(u, "heun")
    assert torch.equal(heun, phi2(u))
    assert torch.allclose(mid, -0.5 * torch.expm1(-u))
    assert torch.allclose((mid - heun) / u**2, torch.full_like(u, -1 / 12), rtol=1e-2)


@pytest.mark.parametrize("sde", [S.VPSDE(), S.VESDE()], ids=["vp", "ve"])
def test_midpoint_dpm_solver_is_second_order(sde: S.SDE) -> None:
    mix = GaussianMixture([[1.0, 0.0], [-1.0, 0.5]], [0.3, 0.5], weights=[0.6, 0.4])
    score = mix.score_fn(sde)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0 = x0 * sde.prior_std
    ref = S.sample(score, sde, x0.shape, sampler="ode", x_init=x0, rtol=1e-11, atol=1e-11,
                   method="dopri8")  # fmt: skip

    def err(n: int, kind: str) -> float:
        x = S.sample(score, sde, x0.shape, sampler="dpm_solver", steps=n, x_init=x0,
                     denoise=False, schedule="logsnr", order=2, solver_type=kind)  # fmt: skip
        return float((x - ref).abs().max())

    mid = [err(n, "midpoint") for n in (16, 32, 64)]
    slope = math.log2(mid[-2] / mid[-1])
    assert 1.8 <= slope <= 2.5, mid
    assert err(64, "heun") != mid[-1]


def test_solver_type_is_checked_and_reaches_the_sde_variant() -> None:
    sde = S.VPSDE()
    score = GaussianMixture([[1.0, 0.0]], [0.3]).score_fn(sde)
    with pytest.raises(ValueError, match="solver_type"):
        S.sample(score, sde, (2, 2), sampler="dpm_solver", steps=3, solver_type="rk4")

    def run(kind: str) -> torch.Tensor:
        return S.sample(score, sde, (4, 2), sampler="dpm_solver_sde", steps=40, solver_type=kind,
                        generator=torch.Generator().manual_seed(0), dtype=F64)  # fmt: skip

    a, b = run("midpoint"), run("heun")
    assert bool(torch.isfinite(a).all()) and 0 < float((a - b).abs().max()) < 0.1
