"""Bits/dim, dequantisation and input checking of the likelihood API."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.targets import Gaussian


# ---------------------------------------------------------------------------------------------
# bits per dimension and dequantisation
def test_uniform_density_is_eight_bits_in_both_ranges() -> None:
    # uniform density: log p = 0 on [0,1]^D, = -D log 2 on [-1,1]^D; a uniform 8-bit source
    # has entropy exactly 8 bits per dimension
    d = 12
    shape = (3, 3, 2, 2)
    assert torch.allclose(S.bits_per_dim(torch.zeros(3), shape), torch.full((3,), 8.0))
    lp = torch.full((3,), -d * math.log(2.0))
    assert torch.allclose(S.bits_per_dim(lp, shape, data_range=(-1, 1)), torch.full((3,), 8.0))
    assert torch.allclose(S.bits_per_dim(torch.zeros(3), shape, bins=16), torch.full((3,), 4.0))


def _piecewise_constant_log_density(x: torch.Tensor, probs: torch.Tensor, lo: float, hi: float):
    """log p(x) of the histogram density with cell masses probs on bins equal cells of [lo, hi]."""
    bins = probs.numel()
    width = (hi - lo) / bins
    k = ((x - lo) / width).floor().long().clamp(0, bins - 1)
    return (probs[k].log() - math.log(width)).flatten(1).sum(1), k


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_bits_per_dim_equals_discrete_code_length_for_histogram_density(data_range) -> None:
    # a continuous density that is constant on each dequantisation cell makes the bound tight:
    # bits/dim == -sum_i log2 P(k_i) / D exactly
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(256, generator=g, dtype=torch.float64), 0)
    k = torch.multinomial(probs, 5 * 48, replacement=True, generator=g).reshape(5, 3, 4, 4)
    x = S.dequantize(k.to(torch.uint8), data_range=data_range, generator=g, dtype=torch.float64)
    lp, k_back = _piecewise_constant_log_density(x, probs, *data_range)
    assert torch.equal(k_back, k)
    hand = -probs[k].log2().flatten(1).sum(1) / 48
    assert torch.allclose(S.bits_per_dim(lp, x.shape, data_range=data_range), hand, atol=1e-12)


def test_bits_per_dim_from_log_likelihood_on_dequantised_gaussian_data() -> None:
    # 8-bit data from a discretised N(0.5, 0.1^2), dequantised to [-1, 1]; the model is the
    # exact Gaussian N(0, 0.2^2) on the rescaled data, its flow is exact, so
    # bpd = (-log N(x) / D + log(256 / 2)) / log 2 up to solver error
    g = torch.Generator().manual_seed(1)
    d = 6
    k = (0.5 + 0.1 * torch.randn(4, d, generator=g)).mul(256).floor().clamp(0, 255).to(torch.uint8)
    x = S.dequantize(k, data_range=(-1, 1), generator=g, dtype=torch.float64)
    tg, sde = Gaussian(torch.zeros(d), variance=0.04), S.VPSDE()
    res = S.log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-6, atol=1e-6)
    exact = (
        tg.marginal_log_prob(x, 1e-5, sde)
        - tg.marginal_log_prob(res.latent, sde.T, sde)
        + res.prior_log_prob
    )
    hand = (-exact / d + math.log(128.0)) / math.log(2.0)
    bpd = S.bits_per_dim(res.log_prob, x.shape, data_range=(-1, 1))
    assert torch.allclose(bpd, hand, atol=1e-3)
    # and against the clean density: sigma(eps) ~ 1e-3 and p_T ~ prior here
    clean = (-tg.log_prob(x) / d + math.log(128.0)) / math.log(2.0)
    assert torch.allclose(bpd, clean, atol=1e-3)


def test_dequantize_properties_and_errors() -> None:
    g = torch.Generator().manual_seed(2)
    k = torch.randint(0, 256, (1000,), generator=g)
    x = S.dequantize(k, generator=g)
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) < 1.0
    assert torch.equal((x * 256).floor().long(), k)
    u = x * 256 - k  # the noise is U[0,1): mean 1/2, variance 1/12
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 1000)
    y = S.dequantize(k.to(torch.uint8), data_range=(-1, 1), generator=g)
    assert float(y.min()) >= -1.0 and float(y.max()) < 1.0
    with pytest.raises(TypeError, match="integers"):
        S.dequantize(x)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        S.dequantize(k, bins=16)
    with pytest.raises(ValueError, match="bins"):
        S.dequantize(k, bins=1)
    with pytest.raises(ValueError, match="lo < hi"):
        S.dequantize(k, data_range=(1, 0))


def test_bits_per_dim_errors() -> None:
    with pytest.raises(ValueError, match="batch shape"):
        S.bits_per_dim(torch.zeros(3), (3,))
    with pytest.raises(ValueError, match="batch shape"):
        S.bits_per_dim(torch.zeros(3), (4, 2))
    with pytest.raises(ValueError, match="data_range"):
        S.bits_per_dim(torch.zeros(3), (3, 2), data_range=(0, 1, 2))
    with pytest.raises(TypeError, match="floating"):
        S.bits_per_dim(torch.zeros(3, dtype=torch.long), (3, 2))


# ---------------------------------------------------------------------------------------------
# input checks of log_likelihood / encode / decode
def _setup():
    tg, sde = Gaussian(torch.zeros(2)), S.VESDE()
    return tg.score_fn(sde), sde, torch.zeros(3, 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "dopri"}, ValueError, "Did you mean 'dopri5'"),
        ({"divergence": "hutch"}, ValueError, "Did you mean 'hutchinson'"),
        ({"probe": "normal"}, ValueError, "choose one of"),
        ({"probes": 0}, ValueError, "probes must be >= 1"),
        ({"probes": 1.5}, TypeError, "probes must be an int"),
        ({"rtol": 0.0}, ValueError, "rtol"),
        ({"atol": float("nan")}, ValueError, "atol"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": 1.0}, ValueError, r"eps must lie in \(0, T\)"),
        ({"generator": 3}, TypeError, "generator"),
    ],
)
def test_log_likelihood_rejects_bad_options(kwargs, exc, match) -> None:
    fn, sde, x = _setup()
    with pytest.raises(exc, match=match):
        S.log_likelihood(fn, sde, x, **kwargs)


def test_bad_inputs_raise_clear_errors() -> None:
    fn, sde, x = _setup()
    bad = x.clone()
    bad[1, 0] = float("nan")
    for call in (S.log_likelihood, S.encode, S.decode):
        with pytest.raises(ValueError, match="NaN"):
            call(fn, sde, bad)
        with pytest.raises(ValueError, match="at least 2"):
            call(fn, sde, torch.zeros(3))
        with pytest.raises(TypeError, match="floating"):
            call(fn, sde, torch.zeros(3, 2, dtype=torch.long))
        with pytest.raises(TypeError, match="SDE"):
            call(fn, "ve", x)
        with pytest.raises(TypeError, match="callable"):
            call(None, sde, x)
    with pytest.raises(ValueError, match="shaped like x"):
        S.log_likelihood(lambda x, t: x[:, :1], sde, x)
    with pytest.raises(ValueError, match="shaped like x"):
        S.encode(lambda x, t: x.sum(1), sde, x)

    def no_grad_score(x, t):
        with torch.no_grad():
            return -x

    with pytest.raises(ValueError, match="differentiabl"):
        S.log_likelihood(no_grad_score, sde, x)
    with pytest.raises(ValueError, match="NaN or inf"):
        S.log_likelihood(lambda x, t: x * float("nan"), sde, x)


def test_edm_eps_is_a_noise_level() -> None:
    # for EDM time is sigma: eps=sde.eps (0.002) integrates from sigma = 0.002, and the result is
    # the density of the data convolved with N(0, 0.002^2)
    tg, sde = Gaussian(torch.zeros(2), variance=[0.5, 0.2]), S.EDMSDE()
    x = tg.sample(4, torch.Generator().manual_seed(3), dtype=torch.float64)
    res = S.log_likelihood(
        tg.score_fn(sde), sde, x, divergence="exact", eps=sde.eps, rtol=1e-6, atol=1e-6
    )
    exact = (
        tg.marginal_log_prob(x, sde.eps, sde)
        - tg.marginal_log_prob(res.latent, sde.T, sde)
        + res.prior_log_prob
    )
    assert torch.allclose(res.log_prob, exact, atol=2e-3)
