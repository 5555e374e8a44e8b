"""Likelihood by the probability-flow ODE against the exact Gaussian-mixture oracle.

Reference: the exact PF ODE maps ``p_eps`` onto the true ``p_T``, while ``log_likelihood`` puts
the *prior* density at the end point ``z`` (the prior is only approximately ``p_T``: for VP the
mean ``s(T) mu`` is ``e^-5 mu``, not 0). So the exact value the solver approximates is
``log p_eps(x) - log p_T(z) + log prior(z)``, all available in closed form from the oracle.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from conftest import STD_SDES as SDES
from conftest import four_mode_mixture, gauss2, gauss64
from scoresde.targets import Gaussian, GaussianMixture

EPS = 1e-5


TARGETS = {"gauss2": gauss2, "gauss64": gauss64, "mixture": four_mode_mixture}


def exact_reference(tg: GaussianMixture, sde: S.SDE, x, res) -> torch.Tensor:
    return (
        tg.marginal_log_prob(x, EPS, sde)
        - tg.marginal_log_prob(res.latent, sde.T, sde)
        + res.prior_log_prob
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_exact_divergence_matches_oracle(target: str, sde_name: str) -> None:
    tg, sde = TARGETS[target](), SDES[sde_name]()
    batch = 3 if target == "gauss64" else 6
    x = tg.sample(batch, torch.Generator().manual_seed(0), dtype=torch.float64)
    res = S.log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-6, atol=1e-6)
    err = (res.log_prob - exact_reference(tg, sde, x, res)).abs() / tg.dim
    assert res.log_prob.shape == (batch,) and res.latent.shape == x.shape
    assert float(err.max()) <= 1e-3
    assert res.nfe.shape == (batch,) and int(res.nfe.min()) > 0
    assert res.calls == int(res.nfe.max())


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
def test_close_to_clean_density_when_prior_matches(sde_name: str) -> None:
    # centred unit-scale data: p_T == prior to ~1e-5 and sigma(eps) <= 1e-3, so the result is
    # the clean GaussianMixture.log_prob itself (within 1e-3 nats/dim)
    tg, sde = Gaussian(torch.zeros(4), variance=[1.0, 0.5, 0.8, 0.3]), SDES[sde_name]()
    x = tg.sample(8, torch.Generator().manual_seed(1), dtype=torch.float64)
    res = S.log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-6, atol=1e-6)
    assert float((res.log_prob - tg.log_prob(x)).abs().max()) / 4 <= 1e-3


def test_float32_and_latent_is_the_pf_ode_image() -> None:
    tg, sde = gauss2(), S.VPSDE()
    x = tg.sample(4, torch.Generator().manual_seed(2))
    res = S.log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-5, atol=1e-5)
    assert res.log_prob.dtype == torch.float32 and res.latent.dtype == torch.float32
    z = S.encode(tg.score_fn(sde), sde, x.double(), rtol=1e-8, atol=1e-8)
    assert torch.allclose(res.latent.double(), z, rtol=1e-3, atol=1e-3)
    ref = exact_reference(tg, sde, x.double(), res)
    assert float((res.log_prob.double() - ref).abs().max()) <= 2e-3


def _hutchinson_errors(probes: int, probe: str, n: int) -> torch.Tensor:
    """Hutchinson minus exact log-density for n rows sharing one x (distinct probes per row)."""
    tg, sde = four_mode_mixture(), S.VPSDE()
    x = tg.sample(1, torch.Generator().manual_seed(3), dtype=torch.float64).expand(n, -1)
    x = torch.cat([x, 0.5 * x], dim=1)  # d = 4: two copies of the mixture's coordinates
    tg4 = GaussianMixture(
        torch.cat([tg.means, 0.5 * tg.means], 1),
        covariances=torch.block_diag(*[torch.eye(2)] * 2).repeat(4, 1, 1) * 0.4,
    )
    fn = tg4.score_fn(sde)
    exact = S.log_likelihood(fn, sde, x[:1], divergence="exact", rtol=1e-7, atol=1e-7)
    est = S.log_likelihood(
        fn,
        sde,
        x,
        probes=probes,
        probe=probe,
        rtol=1e-6,
        atol=1e-6,
        generator=torch.Generator().manual_seed(4),
    )
    return est.log_prob - exact.log_prob


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe: str) -> None:
    err = _hutchinson_errors(1, probe, 200)
    se = float(err.std()) / math.sqrt(err.numel())
    assert float(err.std()) > 1e-3  # the estimate really is random
    assert abs(float(err.mean())) <= 4 * se


def test_more_probes_shrink_error_as_inverse_sqrt() -> None:
    e1 = _hutchinson_errors(1, "rademacher", 200)
    e16 = _hutchinson_errors(16, "rademacher", 200)
    ratio = float(e1.pow(2).mean().sqrt() / e16.pow(2).mean().sqrt())
    assert 4 / 1.35 <= ratio <= 4 * 1.35  # sqrt(16) = 4, RMS of 200 draws: about 10% each


def test_fixed_probe_per_solve_and_seeded() -> None:
    tg, sde = gauss2(), S.VESDE()
    x = tg.sample(5, torch.Generator().manual_seed(5), dtype=torch.float64)
    fn = tg.score_fn(sde)
    a = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(6))
    b = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(6))
    c = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.log_prob, b.log_prob)
    assert not torch.equal(a.log_prob, c.log_prob)


def test_error_control_is_per_sample() -> None:
    # a sample's result and step count do not depend on its batch-mates
    tg, sde = four_mode_mixture(), S.VESDE()
    x = tg.sample(4, torch.Generator().manual_seed(8), dtype=torch.float64)
    far = torch.tensor([[40.0, -35.0]], dtype=torch.float64)  # a much harder batch-mate
    fn = tg.score_fn(sde)
    alone = S.log_likelihood(fn, sde, x[:1], divergence="exact")
    mixed = S.log_likelihood(fn, sde, torch.cat([x[:1], far, x[1:]]), divergence="exact")
    assert int(alone.nfe[0]) == int(mixed.nfe[0])
    assert int(mixed.nfe[1]) != int(mixed.nfe[0])
    assert torch.allclose(alone.log_prob[0], mixed.log_prob[0], rtol=0, atol=1e-10)


def test_encode_decode_round_trip(std_sde: S.SDE) -> None:
    tg = four_mode_mixture()
    x = tg.sample(6, torch.Generator().manual_seed(9), dtype=torch.float64)
    fn = tg.score_fn(std_sde)
    z = S.encode(fn, std_sde, x)
    back = S.decode(fn, std_sde, z)
    assert z.shape == x.shape
    assert float((back - x).norm() / x.norm()) <= 1e-4


def test_encode_matches_closed_form_gaussian_flow() -> None:
    # for N(mu, diag(c^2)) the PF ODE is
    # x_t = s(t) (mu + (x0/s0 - mu) sqrt(c^2 + sig^2) / sqrt(c^2 + sig0^2))
    c2 = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
    mu = torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)
    tg, sde = Gaussian(mu, variance=c2), S.SubVPSDE()
    x = tg.sample(5, torch.Generator().manual_seed(10), dtype=torch.float64)
    z = S.encode(tg.score_fn(sde), sde, x, rtol=1e-8, atol=1e-8)
    t0, t1 = torch.tensor(EPS, dtype=torch.float64), torch.tensor(sde.T, dtype=torch.float64)
    s0, s1, g0, g1 = sde.scale(t0), sde.scale(t1), sde.sigma(t0), sde.sigma(t1)
    expect = s1 * (mu + (x / s0 - mu) * torch.sqrt((c2 + g1**2) / (c2 + g0**2)))
    assert torch.allclose(z, expect, rtol=1e-6, atol=1e-6)


def test_decode_of_prior_samples_follows_the_target() -> None:
    tg, sde = gauss2(), S.EDMSDE()
    z = sde.prior_sample((400, 2), torch.Generator().manual_seed(11), dtype=torch.float64)
    x = S.decode(tg.score_fn(sde), sde, z, rtol=1e-4, atol=1e-4)
    assert torch.allclose(x.mean(0), tg.mean(), atol=4 * 0.8 / math.sqrt(400))
    assert torch.allclose(torch.cov(x.T), tg.covariance(), atol=0.15)


def test_chunked_solve_equals_whole_batch_also_for_hutchinson() -> None:
    tg, sde = four_mode_mixture(), S.SubVPSDE()
    x = tg.sample(5, torch.Generator().manual_seed(12), dtype=torch.float64)
    fn = tg.score_fn(sde)
    whole = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(13))
    parts = S.log_likelihood(fn, sde, x, batch_size=2, generator=torch.Generator().manual_seed(13))
    assert torch.allclose(whole.log_prob, parts.log_prob, rtol=0, atol=1e-10)
    assert torch.equal(whole.nfe, parts.nfe)
