"""Denoising score matching: minimised by the exact score, for every weighting."""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from conftest import four_mode_mixture
from scoresde.losses import dsm_loss


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none"])
def test_exact_score_minimises_the_loss(std_sde: S.SDE, weighting: str) -> None:
    """With common random numbers, loss(exact + delta) - loss(exact) ~ E[lambda |delta|^2] > 0."""
    target = four_mode_mixture()
    gen = torch.Generator().manual_seed(0)
    n = 100000
    x0 = target.sample(n, gen, dtype=torch.float64)
    # keep clear of t -> 0 where the "none" and "likelihood" weightings blow up the variance
    t = std_sde.T * (0.05 + 0.95 * torch.rand(n, generator=gen, dtype=torch.float64))
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    exact = target.score_fn(std_sde)
    base = dsm_loss(exact, std_sde, x0, weighting=weighting, t=t, noise=noise, reduction="none")
    std = std_sde.std(t)
    lam = {"sigma2": std**2, "likelihood": std_sde.g2(t), "none": torch.ones_like(t)}[weighting]
    for k, direction in enumerate(([1.0, 0.0], [0.0, -1.0], [0.6, 0.8], [-0.8, 0.6])):
        # alternate constant shifts and shifts growing like 1/std (the score's own scale)
        size = 0.3 / std[:, None] if k % 2 else torch.full((n, 1), 0.3, dtype=torch.float64)
        delta = size * torch.tensor(direction, dtype=torch.float64)

        def shifted(x: torch.Tensor, tt: torch.Tensor, d: torch.Tensor = delta) -> torch.Tensor:
            return exact(x, tt) + d

        per = dsm_loss(
            shifted, std_sde, x0, weighting=weighting, t=t, noise=noise, reduction="none"
        )
        excess = per - base
        expected = lam * delta.pow(2).sum(1)
        # the excess is the quadratic term plus a zero-mean cross term
        diff = excess - expected
        se = float(diff.std()) / n**0.5
        assert float(excess.mean()) > 0
        assert abs(float(diff.mean())) < 5 * se + 1e-12


def test_reductions_and_weighting_relations() -> None:
    sde = S.VPSDE()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, generator=gen)
    t = torch.rand(16, generator=gen) * 0.9 + 0.05
    noise = torch.randn(16, 3, generator=gen)

    def score(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return -x

    kw = {"t": t, "noise": noise}
    per = dsm_loss(score, sde, x0, reduction="none", **kw)
    assert per.shape == (16,)
    assert torch.allclose(dsm_loss(score, sde, x0, **kw), per.mean())
    assert torch.allclose(dsm_loss(score, sde, x0, reduction="sum", **kw), per.sum())
    plain = dsm_loss(score, sde, x0, weighting="none", reduction="none", **kw)
    lik = dsm_loss(score, sde, x0, weighting="likelihood", reduction="none", **kw)
    assert torch.allclose(per, plain * sde.std(t) ** 2, rtol=1e-5)
    assert torch.allclose(lik, plain * sde.g2(t), rtol=1e-5)


def test_default_time_draw_stays_in_range_and_is_seeded() -> None:
    sde = S.VESDE()
    x0 = torch.randn(8, 2)
    seen: list[torch.Tensor] = []

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    a = dsm_loss(score, sde, x0, generator=torch.Generator().manual_seed(5))
    b = dsm_loss(score, sde, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert float(seen[0].min()) >= 1e-5 and float(seen[0].max()) <= 1.0


def test_bad_inputs() -> None:
    sde = S.VPSDE()

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(score, sde, torch.randn(4, 2), weighting="sigma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        dsm_loss(score, sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(TypeError, match="floating"):
        dsm_loss(score, sde, torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(lambda x, t: x[:, :1], sde, torch.randn(4, 2))
