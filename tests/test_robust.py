"""Numerical robustness in float32: no NaN/inf from any sampler or the likelihood, any SDE.

The exact score of a sharp Gaussian mixture (mode variances down to 0.002, so scores near
``t = eps`` reach ~1e3) is integrated with every registered sampler over the SDE's whole time
range, with 1, 3 and 20 steps and with ``eps`` at the smallest value the SDE supports in
float32. VE with ``sigma_max = 378`` (Song et al.'s CIFAR-10 setting) is included. Mixed
precision (bf16/fp16 autocast) runs only where CUDA is available.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import scoresde as S
from conftest import SDE_FACTORIES, sharp_modes
from scoresde.sampling.base import get_sampler
from scoresde.targets import GaussianMixture

SHARP = sharp_modes()
SDES: dict[str, Callable[[], S.SDE]] = {
    **SDE_FACTORIES,
    "ve378": lambda: S.VESDE(sigma_min=0.01, sigma_max=378.0),  # a large-range VE
}


def _supported(sampler: str, sde: S.SDE) -> bool:
    return get_sampler(sampler).supports(sde)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_every_sampler_is_finite_in_float32(sde_name: str) -> None:
    sde = SDES[sde_name]()
    score = SHARP.score_fn(sde)
    tried = 0
    for sampler in S.available_samplers():
        if not _supported(sampler, sde):
            continue
        for steps in (1, 3, 20):
            gen = torch.Generator().manual_seed(steps)
            x = S.sample(score, sde, (32, 2), sampler=sampler, steps=steps, generator=gen,
                         dtype=torch.float32)  # fmt: skip
            assert x.dtype == torch.float32 and bool(torch.isfinite(x).all()), (sampler, steps)
            tried += 1
    assert tried >= 3 * 12


def _smallest_eps(sde: S.SDE) -> float:
    """The smallest power of ten >= 1e-7 whose noise level is still > 0 in float32."""
    for k in range(7, 0, -1):
        eps = 10.0**-k
        if eps < sde.T and float(sde.sigma(torch.tensor([eps], dtype=torch.float32))[0]) > 0:
            return eps
    raise AssertionError("no usable eps")


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_samplers_reach_the_smallest_float32_time(sde_name: str) -> None:
    """Down to eps = 1e-7 where float32 still resolves the noise level; finite results."""
    sde = SDES[sde_name]()
    eps = _smallest_eps(sde)
    score = SHARP.score_fn(sde)
    for sampler in ("euler_maruyama", "pc", "ode_heun", "dpm_solver", "edm", "fast", "ddim"):
        if not _supported(sampler, sde):
            continue
        x = S.sample(score, sde, (32, 2), sampler=sampler, steps=20, eps=eps,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert bool(torch.isfinite(x).all()), (sampler, eps)
    if eps > 1e-7:  # below that, a clear error instead of NaN
        with pytest.raises(ValueError, match="noise level"):
            S.sample(score, sde, (4, 2), sampler="euler", steps=5, eps=1e-7)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_sde_coefficients_are_finite_on_the_whole_range(sde_name: str) -> None:
    sde = SDES[sde_name]()
    t = torch.linspace(sde.eps, sde.T, 2001, dtype=torch.float32)
    for name in ("scale", "sigma", "f", "g2", "std", "log_snr", "sigma_deriv"):
        value = getattr(sde, name)(t)
        assert bool(torch.isfinite(value).all()), name
    back = sde.sigma_inv(sde.sigma(t))
    assert bool(torch.isfinite(back).all())
    assert float((back - t).abs().max()) < 1e-3 * sde.T


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_likelihood_is_finite_in_float32(sde_name: str) -> None:
    """From eps = 1e-5 (or the SDE's smallest float32 time) to T, Hutchinson and exact."""
    sde = SDES[sde_name]()
    x = SHARP.sample(8, torch.Generator().manual_seed(1)).float()
    eps = max(1e-5, _smallest_eps(sde))
    exact = S.log_likelihood(SHARP.score_fn(sde), sde, x, rtol=1e-3, atol=1e-3, eps=eps,
                             divergence="exact")  # fmt: skip
    assert exact.log_prob.dtype == torch.float32
    assert bool(torch.isfinite(exact.log_prob).all()) and bool(torch.isfinite(exact.latent).all())
    # float32 and a loose tolerance: within 1 nat of the true density (the sharp modes)
    truth = SHARP.log_prob(x.double())
    assert float((exact.log_prob.double() - truth).abs().max()) < 1.0
    hutch = S.log_likelihood(SHARP.score_fn(sde), sde, x, rtol=1e-3, atol=1e-3, eps=eps,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert bool(torch.isfinite(hutch.log_prob).all())


def test_ve_with_sigma_max_378_recovers_the_modes() -> None:
    """Song et al.'s VE setting: samples land on the modes (not only finite)."""
    sde = S.VESDE(sigma_min=0.01, sigma_max=378.0)
    gm = GaussianMixture([[-4.0, 0.0], [4.0, 0.0]], variances=[0.25, 0.25])
    x = S.sample(gm.score_fn(sde), sde, (512, 2), sampler="pc", steps=200,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    dist = torch.cdist(x, gm.means.to(x)).min(dim=1).values
    assert float(dist.median()) < 1.0 and float(dist.max()) < 4.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sde_name", ["vp", "ve378", "edm"])
def test_autocast_samplers_and_likelihood_are_finite(sde_name: str, dtype: torch.dtype) -> None:
    """A small network under CUDA autocast: every sampler and the likelihood stay finite."""
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    sde = SDES[sde_name]()
    torch.manual_seed(0)
    net = S.nets.MLP(2, hidden=64, depth=2).cuda()
    model = S.ScoreModel(net, sde, "edm" if sde_name == "edm" else "eps")
    x0 = SHARP.sample(16, torch.Generator().manual_seed(1)).cuda()
    with torch.autocast("cuda", dtype=dtype):
        for sampler in S.available_samplers():
            if not _supported(sampler, sde):
                continue
            x = S.sample(model, sde, (16, 2), sampler=sampler, steps=10, device="cuda",
                         generator=torch.Generator("cuda").manual_seed(0))  # fmt: skip
            assert bool(torch.isfinite(x).all()), sampler
        res = S.log_likelihood(model, sde, x0, rtol=1e-3, atol=1e-3, eps=max(1e-5, sde.eps))
        assert bool(torch.isfinite(res.log_prob).all())
