"""Classifier guidance and classifier-free guidance against exact mixture oracles."""

from __future__ import annotations

import pytest
import torch

import scoresde
from scoresde import VESDE, VPSDE
from scoresde.guidance import (
    cfg,
    cfg_from_labels,
    classifier_guidance,
    classifier_log_likelihood,
    guided,
)
from scoresde.metrics import frechet_distance, mode_report
from scoresde.targets import Gaussian, GaussianMixture

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture() -> GaussianMixture:
    return GaussianMixture(
        [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], variances=[0.4, 0.3, 0.5], weights=[0.5, 0.3, 0.2]
    )


def components(prior: GaussianMixture) -> list[Gaussian]:
    covs = prior.covariances()
    return [Gaussian(prior.means[k], covariance=covs[k]) for k in range(prior.n_components)]


def exact_classifier(prior: GaussianMixture, sde: scoresde.SDE):
    """Logits of the exact noise-conditional classifier ``p_t(k | x)`` of the mixture."""
    comps = components(prior)

    def logits(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [prior.weights[k].log() + c.marginal_log_prob(x, t, sde) for k, c in enumerate(comps)],
            1,
        )

    return logits


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_exact_classifier_guidance_samples_the_class(sde: scoresde.SDE) -> None:
    # grad log p_t(x) + grad log p_t(k | x) = grad log p_t(x | k): the guided sampler draws
    # component k exactly (Bayes' rule for scores)
    prior = mixture()
    clf = exact_classifier(prior, sde)
    n, k = 1500, 1
    score = classifier_guidance(prior.score_fn(sde), clf, k, scale=1.0)
    x = scoresde.sample(score, sde, (n, 2), steps=100, generator=gen(0), dtype=DT)
    rep = mode_report(prior, x)
    assert float(rep.mass[k]) > 0.99
    comp = components(prior)[k]
    fd = frechet_distance(x.mean(0), torch.cov(x.T), comp.means[0], comp.covariances()[0])
    assert fd < 0.02, fd


def test_guidance_scale_sharpens_and_zero_is_unconditional() -> None:
    prior, sde = mixture(), VPSDE()
    clf = exact_classifier(prior, sde)
    n, k = 1500, 2
    x0 = scoresde.sample(
        guided(prior.score_fn(sde), classifier_log_likelihood(clf, k), 0.0),
        sde,
        (n, 2),
        steps=100,
        generator=gen(1),
        dtype=DT,
    )
    assert mode_report(prior, x0).tv < 0.05  # scale 0: the unconditional mixture
    x3 = scoresde.sample(
        classifier_guidance(prior.score_fn(sde), clf, k, scale=3.0),
        sde,
        (n, 2),
        steps=100,
        generator=gen(1),
        dtype=DT,
    )
    comp = components(prior)[k]
    # p(x) p(k|x)^3 concentrates on mode k more tightly than p(x | k)
    assert float(mode_report(prior, x3).mass[k]) > 0.99
    assert float(torch.cov(x3.T).trace()) < float(comp.covariances()[0].trace())


def test_per_sample_labels() -> None:
    prior, sde = mixture(), VESDE(0.01, 10.0)
    clf = exact_classifier(prior, sde)
    labels = torch.arange(300) % 3
    x = scoresde.sample(
        classifier_guidance(prior.score_fn(sde), clf, labels),
        sde,
        (300, 2),
        steps=100,
        generator=gen(2),
        dtype=DT,
    )
    assert float((prior.assign(x) == labels).double().mean()) > 0.97


def test_cfg_scale_one_is_conditional_and_zero_unconditional() -> None:
    prior, sde = mixture(), VPSDE()
    comp = components(prior)[0]
    cond, uncond = comp.score_fn(sde), prior.score_fn(sde)
    x = torch.randn(64, 2, generator=gen(3), dtype=DT)
    t = torch.full((64,), 0.3, dtype=DT)
    assert torch.allclose(cfg(cond, uncond, 1.0)(x, t), cond(x, t))
    assert torch.allclose(cfg(cond, uncond, 0.0)(x, t), uncond(x, t))
    s2 = cfg(cond, uncond, 2.0)(x, t)
    assert torch.allclose(s2, 2 * cond(x, t) - uncond(x, t))
    n = 2000
    xs = scoresde.sample(cfg(cond, uncond, 1.0), sde, (n, 2), steps=100, generator=gen(4), dtype=DT)
    fd = frechet_distance(xs.mean(0), torch.cov(xs.T), comp.means[0], comp.covariances()[0])
    assert fd < 0.02


def test_cfg_from_labels_matches_two_callables() -> None:
    prior, sde = mixture(), VPSDE()
    comps = components(prior)
    null = 3
    calls = []

    def model(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        out = prior.score_fn(sde)(x, t)
        for k, c in enumerate(comps):
            sel = labels == k
            if bool(sel.any()):
                out[sel] = c.score_fn(sde)(x[sel], t[sel])
        assert bool(((labels >= 0) & (labels <= null)).all())
        return out

    x = torch.randn(32, 2, generator=gen(5), dtype=DT)
    t = torch.full((32,), 0.4, dtype=DT)
    got = cfg_from_labels(model, 2, null, 1.5)(x, t)
    want = cfg(comps[2].score_fn(sde), prior.score_fn(sde), 1.5)(x, t)
    assert torch.allclose(got, want)
    assert calls == [64]  # one batched call for the conditional and unconditional halves


def test_guided_works_inside_no_grad_and_bad_input() -> None:
    prior, sde = mixture(), VPSDE()
    clf = exact_classifier(prior, sde)
    score = classifier_guidance(prior.score_fn(sde), clf, 0)
    x = torch.randn(8, 2, dtype=DT)
    t = torch.full((8,), 0.5, dtype=DT)
    with torch.no_grad():
        s = score(x, t)
    assert s.shape == x.shape and not s.requires_grad
    with pytest.raises(ValueError, match="one value per sample"):
        guided(prior.score_fn(sde), lambda x, t: x.sum(), 1.0)(x, t)
    with pytest.raises(ValueError, match="labels must lie in"):
        classifier_guidance(prior.score_fn(sde), clf, 7)(x, t)
    with pytest.raises(TypeError, match="integers"):
        classifier_guidance(prior.score_fn(sde), clf, torch.zeros(8))(x, t)
    with pytest.raises(ValueError, match="finite"):
        cfg(prior.score_fn(sde), prior.score_fn(sde), float("nan"))
