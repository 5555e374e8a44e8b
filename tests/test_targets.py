"""The exact oracle: noised scores are the gradients of noised log-densities."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from conftest import four_mode_mixture
from scoresde.targets import Gaussian, GaussianMixture


def _diag_mixture() -> GaussianMixture:
    means = torch.tensor([[0.0, 1.0, -1.0], [2.0, -1.0, 0.5], [-2.0, 0.0, 1.5]])
    var = torch.tensor([[0.3, 0.5, 0.2], [1.0, 0.1, 0.4], [0.6, 0.6, 0.6]])
    return GaussianMixture(means, variances=var, weights=[0.5, 0.3, 0.2])


@pytest.mark.parametrize("make", [four_mode_mixture, _diag_mixture])
def test_score_is_autograd_of_marginal_log_prob(any_sde: S.SDE, make) -> None:
    target = make()
    gen = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(64, target.dim, generator=gen, dtype=torch.float64)
    t = any_sde.T * (0.001 + 0.999 * torch.rand(64, generator=gen, dtype=torch.float64))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(target.marginal_log_prob(x, t, any_sde).sum(), x)
    score = target.score_fn(any_sde)(x.detach(), t)
    assert torch.allclose(score, grad, rtol=1e-8, atol=1e-10)


def test_gaussian_log_prob_matches_torch() -> None:
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    g = Gaussian([1.0, -1.0], covariance=cov)
    x = torch.randn(10, 2, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0], dtype=torch.float64), cov
    ).log_prob(x)
    assert torch.allclose(g.log_prob(x), ref, rtol=1e-12)
    lam = torch.linalg.eigvalsh(cov)
    assert g.entropy() == pytest.approx(
        0.5 * (2 * math.log(2 * math.pi * math.e) + float(lam.log().sum()))
    )


def test_noised_marginal_is_the_convolved_gaussian(any_sde: S.SDE) -> None:
    """Under the kernel N(s x0, s^2 sigma^2 I) a Gaussian stays Gaussian with known moments."""
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    g = Gaussian(mu, covariance=cov)
    t = torch.tensor(0.3 * any_sde.T, dtype=torch.float64)
    s, sig = any_sde.scale(t), any_sde.sigma(t)
    ref = torch.distributions.MultivariateNormal(
        s * mu, s**2 * (cov + sig**2 * torch.eye(2, dtype=torch.float64))
    )
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(g.marginal_log_prob(x, float(t), any_sde), ref.log_prob(x), rtol=1e-10)


def test_sampling_moments_and_labels() -> None:
    target = four_mode_mixture()
    x, labels = target.sample(
        40000, torch.Generator().manual_seed(3), dtype=torch.float64, return_labels=True
    )
    n = x.shape[0]
    counts = torch.bincount(labels, minlength=4).double() / n
    se = torch.sqrt(target.weights * (1 - target.weights) / n)
    assert ((counts - target.weights).abs() < 5 * se).all()
    mean_se = target.covariance().diagonal().sqrt() / math.sqrt(n)
    assert ((x.mean(0) - target.mean()).abs() < 5 * mean_se).all()
    assert torch.allclose(torch.cov(x.T), target.covariance(), rtol=0.05)
    assert (target.assign(x) == labels).double().mean() > 0.99


def test_event_shape_and_dtype_follow_input() -> None:
    target = GaussianMixture(torch.zeros(2, 4), variances=[1.0, 2.0], event_shape=(1, 2, 2))
    x = target.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 2, 2) and x.dtype == torch.float32
    sde = S.VPSDE()
    score = target.score_fn(sde)(x, torch.full((5,), 0.5))
    assert score.shape == x.shape and score.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"means": [[0.0, 0.0]], "variances": [-1.0]}, "positive"),
        ({"means": [[0.0, 0.0]]}, "exactly one"),
        ({"means": [[0.0, 0.0]], "variances": [1.0], "weights": [0.0]}, "weights"),
        ({"means": [[0.0, 0.0]], "covariances": [[[1.0, 0.5], [0.0, 1.0]]]}, "symmetric"),
        ({"means": [[0.0, float("nan")]], "variances": [1.0]}, "finite"),
    ],
)
def test_invalid_mixtures(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_wrong_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="values per sample"):
        four_mode_mixture().log_prob(torch.zeros(3, 5))
