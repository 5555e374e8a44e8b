"""Langevin MCMC on known energies: ULA/MALA recover a Gaussian, a mixture and a banana."""

from __future__ import annotations

import math

import pytest
import torch

from scoresde import langevin
from scoresde.metrics import mode_report
from scoresde.targets import Gaussian, GaussianMixture

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def banana_log_prob(x: torch.Tensor, a: float = 1.0, b: float = 0.5) -> torch.Tensor:
    """x1 ~ N(0, a^2), x2 | x1 ~ N(b (x1^2 - a^2), 1): mean 0, var (a^2, 1 + 2 b^2 a^4)."""
    x1, x2 = x[:, 0], x[:, 1]
    return -0.5 * x1**2 / a**2 - 0.5 * (x2 - b * (x1**2 - a**2)) ** 2


def moment_tol(var: float, n: int, k: float = 5.0) -> float:
    """k standard errors of a mean estimated from n independent draws."""
    return k * math.sqrt(var / n)


@pytest.mark.parametrize("method", ["ula", "mala"])
def test_gaussian_moments(method: str) -> None:
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DT)
    target = Gaussian([1.0, -2.0], covariance=cov)
    n = 4000
    x0 = torch.randn(n, 2, generator=gen(0), dtype=DT) * 2
    res = langevin.sample(
        target.log_prob, x0, step_size=0.02, steps=400, method=method, generator=gen(1)
    )
    x = res.samples
    assert x.shape == x0.shape and x.dtype == DT
    for j in range(2):
        assert abs(float(x[:, j].mean()) - float(target.mean()[j])) < moment_tol(cov[j, j], n)
    # covariance: ULA's O(h) bias at h=0.02 is ~1%, well inside the sampling tolerance
    emp = torch.cov(x.T)
    assert torch.allclose(emp, cov, atol=0.12), emp
    if method == "mala":
        assert res.acceptance is not None and res.acceptance.shape == (n,)
        assert res.acceptance_mean is not None and 0.9 < res.acceptance_mean <= 1.0
    else:
        assert res.acceptance is None and res.acceptance_mean is None


def test_energy_fn_equivalent_to_log_prob() -> None:
    target = Gaussian([0.0, 0.0], variance=[1.0, 2.0])
    x0 = torch.zeros(64, 2, dtype=DT)
    a = langevin.sample(
        target.log_prob, x0, step_size=0.1, steps=20, method="mala", generator=gen(3)
    )
    b = langevin.sample(
        energy_fn=lambda v: -target.log_prob(v),
        x_init=x0,
        step_size=0.1,
        steps=20,
        method="mala",
        generator=gen(3),
    )
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(a.acceptance, b.acceptance)


@pytest.mark.parametrize("method", ["ula", "mala"])
def test_mixture_mode_masses(method: str) -> None:
    target = GaussianMixture([[-1.5, 0.0], [1.5, 0.5]], variances=[0.5, 0.4], weights=[0.3, 0.7])
    n = 3000
    x0 = torch.randn(n, 2, generator=gen(4), dtype=DT)
    res = langevin.sample(
        target.log_prob, x0, step_size=0.1, steps=600, method=method, generator=gen(5)
    )
    rep = mode_report(target, res.samples)
    # mass TV: sampling error of a 2-way split is ~ sqrt(.21/n) = 0.008
    assert rep.tv < 0.04, rep.mass
    assert float(rep.frechet.max()) < 0.05, rep.frechet


def test_annealed_crosses_separated_modes() -> None:
    # modes 8 apart with std 0.5: plain MALA started in one basin never leaves it
    target = GaussianMixture([[-4.0, 0.0], [4.0, 0.0]], variances=0.25, weights=[0.5, 0.5])
    n = 1200
    x0 = torch.full((n, 2), -4.0, dtype=DT)
    plain = langevin.sample(
        target.log_prob, x0, step_size=0.05, steps=200, method="mala", generator=gen(6)
    )
    assert mode_report(target, plain.samples).mass[1] < 0.01
    betas = torch.logspace(-2.5, 0, 30, dtype=DT)
    res = langevin.sample_annealed(
        target.log_prob,
        x0,
        betas=betas,
        step_size=0.05,
        steps_per_level=25,
        method="mala",
        generator=gen(7),
    )
    rep = mode_report(target, res.samples)
    assert rep.tv < 0.06, rep.mass
    assert float(rep.frechet.max()) < 0.05, rep.frechet
    assert res.acceptance_mean is not None and res.acceptance_mean > 0.5


@pytest.mark.parametrize("method", ["ula", "mala"])
def test_banana_moments(method: str) -> None:
    a, b = 1.0, 0.5
    n = 4000
    x0 = torch.randn(n, 2, generator=gen(8), dtype=DT)
    res = langevin.sample(
        lambda v: banana_log_prob(v, a, b),
        x0,
        step_size=0.05,
        steps=600,
        method=method,
        generator=gen(9),
    )
    x = res.samples
    var1, var2 = a**2, 1 + 2 * b**2 * a**4
    assert abs(float(x[:, 0].mean())) < moment_tol(var1, n)
    assert abs(float(x[:, 1].mean())) < moment_tol(var2, n)
    assert abs(float(x[:, 0].var()) - var1) < 0.1
    assert abs(float(x[:, 1].var()) - var2) < 0.12
    # the banana's curvature: E[x1^2 x2] = b Var(x1^2) = 2 b a^4
    assert abs(float((x[:, 0] ** 2 * x[:, 1]).mean()) - 2 * b * a**4) < 0.15


def test_ula_bias_shrinks_with_step_size() -> None:
    # for N(0, s2) ULA's stationary variance is s2 / (1 - h / (2 s2)) exactly
    s2 = 1.0
    n = 20000
    target = Gaussian([0.0], variance=s2)
    biases = []
    for h in (0.4, 0.2, 0.1):
        x0 = torch.randn(n, 1, generator=gen(10), dtype=DT)
        res = langevin.sample(target.log_prob, x0, step_size=h, steps=150, generator=gen(11))
        var = float(res.samples.var())
        exact = s2 / (1 - h / (2 * s2))
        assert abs(var - exact) < 5 * exact * math.sqrt(2 / n)
        biases.append(var - s2)
    assert biases[0] > biases[1] > biases[2] > 0
    # MALA removes the bias at the largest step
    x0 = torch.randn(n, 1, generator=gen(12), dtype=DT)
    res = langevin.sample(
        target.log_prob, x0, step_size=0.4, steps=150, method="mala", generator=gen(13)
    )
    assert abs(float(res.samples.var()) - s2) < 5 * s2 * math.sqrt(2 / n)
    assert res.acceptance_mean is not None and 0.5 < res.acceptance_mean < 1.0


def test_per_chain_step_size_and_acceptance() -> None:
    target = Gaussian([0.0, 0.0], variance=1.0)
    n = 200
    h = torch.cat([torch.full((n // 2,), 0.05), torch.full((n // 2,), 3.0)]).to(DT)
    x0 = torch.randn(n, 2, generator=gen(14), dtype=DT)
    res = langevin.sample(
        target.log_prob, x0, step_size=h, steps=100, method="mala", generator=gen(15)
    )
    acc = res.acceptance
    assert acc is not None
    # small steps are accepted almost always, huge steps rarely: acceptance is per chain
    assert float(acc[: n // 2].mean()) > 0.95 > 0.5 > float(acc[n // 2 :].mean())
    assert torch.equal(res.step_size, h)


def test_chain_recording_and_reproducibility() -> None:
    target = Gaussian([0.0], variance=1.0)
    x0 = torch.zeros(8, 1)
    a = langevin.sample(
        target.log_prob, x0, step_size=0.1, steps=50, burn_in=10, keep_every=5, generator=gen(16)
    )
    b = langevin.sample(
        target.log_prob, x0, step_size=0.1, steps=50, burn_in=10, keep_every=5, generator=gen(16)
    )
    assert a.chain is not None and a.chain.shape == (8, 8, 1)
    assert torch.equal(a.chain[-1], a.samples) and torch.equal(a.samples, b.samples)
    assert a.samples.dtype == torch.float32


def test_bad_input_messages() -> None:
    target = Gaussian([0.0], variance=1.0)
    x0 = torch.zeros(4, 1)
    with pytest.raises(ValueError, match="exactly one of"):
        langevin.sample(x_init=x0, step_size=0.1, steps=5)
    with pytest.raises(ValueError, match="Did you mean 'mala'"):
        langevin.sample(target.log_prob, x0, step_size=0.1, steps=5, method="mal")
    with pytest.raises(ValueError, match="step_size"):
        langevin.sample(target.log_prob, x0, step_size=-1.0, steps=5)
    with pytest.raises(ValueError, match="one value per chain"):
        langevin.sample(lambda v: v.sum(), x0, step_size=0.1, steps=5)
    with pytest.raises(ValueError, match="end with 1"):
        langevin.sample_annealed(
            target.log_prob, x0, betas=[0.1, 0.5], step_size=0.1, steps_per_level=2
        )
    with pytest.raises(TypeError, match="torch.Tensor"):
        langevin.sample(target.log_prob, [[0.0]], step_size=0.1, steps=5)  # type: ignore[arg-type]
