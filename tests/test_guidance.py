"""Classifier guidance and classifier-free guidance against exact mixture oracles."""

from __future__ import annotations

from pathlib import Path

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


def test_cfg_convention_u_plus_w_c_minus_u_on_two_gaussians() -> None:
    # Two Gaussians with one covariance: c = N(m_c, S), u = N(m_u, S). For every t the guided
    # score u + w (c - u) is the score of N(s(t) m_w, s(t)^2 (S + sigma(t)^2 I)) with
    # m_w = m_u + w (m_c - m_u), so the reverse SDE draws N(m_w, S) exactly: w = 2 gives
    # 2 m_c - m_u (the old (1 + w) c - w u convention would give 3 m_c - 2 m_u).
    sde = VPSDE()
    cov = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=DT)
    m_c, m_u = torch.tensor([1.0, -0.5], dtype=DT), torch.tensor([-0.5, 0.5], dtype=DT)
    cond = Gaussian(m_c, covariance=cov).score_fn(sde)
    uncond = Gaussian(m_u, covariance=cov).score_fn(sde)
    x = torch.randn(16, 2, generator=gen(6), dtype=DT)
    t = torch.full((16,), 0.37, dtype=DT)
    for w in (0.0, 0.5, 1.0, 2.0, 3.5):
        exact = Gaussian(m_u + w * (m_c - m_u), covariance=cov).score_fn(sde)
        torch.testing.assert_close(cfg(cond, uncond, w)(x, t), exact(x, t))
    n, w = 4000, 2.0
    xs = scoresde.sample(cfg(cond, uncond, w), sde, (n, 2), steps=200, generator=gen(7), dtype=DT)
    fd = frechet_distance(xs.mean(0), torch.cov(xs.T), 2 * m_c - m_u, cov)
    assert fd < 0.01, fd
    assert float((xs.mean(0) - (3 * m_c - 2 * m_u)).norm()) > 1.0  # not the old convention


class _TableNet(torch.nn.Module):
    """``net(x, c_noise, y)``: one row of a table per label (label 2 is the null label)."""

    null_label = 2

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, y: torch.Tensor | None = None):
        y = torch.full((x.shape[0],), self.null_label) if y is None else y
        return self.table[y].to(x.dtype) + 0 * x


def test_score_model_guidance_is_cfg(monkeypatch: pytest.MonkeyPatch) -> None:
    model = scoresde.ScoreModel(_TableNet(), VPSDE(), "score")
    x = torch.randn(3, 2, generator=gen(8))
    t = torch.full((3,), 0.5)

    def with_label(k: int):
        return lambda x, t: model(x, t, torch.full((x.shape[0],), k))

    for w in (0.0, 1.0, 2.5):
        want = cfg(with_label(1), with_label(2), w)(x, t)
        torch.testing.assert_close(model.score_fn(1, guidance=w)(x, t), want)
    torch.testing.assert_close(model.score_fn(1)(x, t), with_label(1)(x, t))  # default w = 1
    with pytest.raises(ValueError, match="needs labels"):
        model.score_fn(guidance=2.0)
    calls = _spy_cfg_from_labels(monkeypatch)
    model.score_fn(torch.tensor([0, 1, 0]), guidance=3.0)(x, t)
    assert calls == [(2, 3.0)]


def _spy_cfg_from_labels(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Record (null label, weight) of every call of ``scoresde.guidance.cfg_from_labels``."""
    calls: list[tuple[int, float]] = []

    def spy(model_score_fn, label, null_label, cfg_scale):  # type: ignore[no-untyped-def]
        calls.append((null_label, cfg_scale))
        return cfg_from_labels(model_score_fn, label, null_label, cfg_scale)

    monkeypatch.setattr(scoresde.guidance, "cfg_from_labels", spy)
    return calls


def test_cli_guidance_goes_through_cfg_from_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scoresde import cli

    out = tmp_path / "run"
    assert cli.main(["train", "--data", "digits", "--out", str(out), "--steps", "2",
                     "--batch-size", "8", "--model", "mlp", "--class-conditional", "--device",
                     "cpu", "--no-progress", "--no-tensorboard", "--sample-n", "0", "--set",
                     "model_kwargs={hidden: 8, depth: 1}"]) == 0  # fmt: skip
    calls = _spy_cfg_from_labels(monkeypatch)
    base = ["sample", "--ckpt", str(out), "--n", "2", "--steps", "2", "--class", "3"]
    assert cli.main([*base, "--out", str(tmp_path / "a.npz"), "--guidance", "2.5"]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "b.npz")]) == 0
    assert calls == [(10, 2.5), (10, 1.0)]  # digits: 10 classes, null label 10
