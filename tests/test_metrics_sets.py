"""Issue 17: metrics between two sample sets against exact oracles.

- Fréchet distance between two Gaussian sample sets against the closed form (Dowson & Landau);
- improved precision/recall (Kynkäänniemi et al. 2019) on constructed sets with known answers;
- KID / unbiased MMD²: zero mean on two draws of one distribution (where the biased V-statistic
  is visibly positive), and the closed-form MMD² of two 1-D Gaussians under the cubic kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scoresde.metrics as M
from scoresde.metrics import (
    frechet_distance,
    frechet_from_samples,
    kernel_distance,
    mmd2_unbiased,
    precision_recall,
)

F64 = torch.float64


def _gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, len(mean), generator=gen, dtype=F64)
    return mean + z @ torch.linalg.cholesky(cov).T


MU1, MU2 = torch.tensor([0.0, 1.0, -0.5], dtype=F64), torch.tensor([0.8, 0.2, 0.0], dtype=F64)
C1 = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]], dtype=F64)
C2 = torch.tensor([[0.6, -0.2, 0.1], [-0.2, 1.2, 0.0], [0.1, 0.0, 0.4]], dtype=F64)


def test_frechet_of_gaussian_sample_sets_matches_the_closed_form() -> None:
    exact = frechet_distance(MU1, C1, MU2, C2)
    gen = torch.Generator().manual_seed(0)
    n, reps = 4000, 16
    est = torch.tensor(
        [frechet_from_samples(_gaussian(n, MU1, C1, gen), _gaussian(n, MU2, C2, gen))
         for _ in range(reps)], dtype=F64,
    )  # fmt: skip
    # E||mean1 - mean2||^2 exceeds ||mu1 - mu2||^2 by tr(C1 + C2)/n; the covariance part's bias
    # is of the same order (d/n); the spread is measured over independent repeats.
    bias = float(torch.trace(C1 + C2)) / n
    se = float(est.std()) / math.sqrt(reps)
    assert abs(float(est.mean()) - exact) < 5 * se + 2 * bias, (float(est.mean()), exact, se)
    assert se < 0.02 * exact  # the check is sharp: a few percent of the distance


def test_frechet_from_samples_is_the_textbook_fid_formula() -> None:
    from scipy import linalg

    gen = torch.Generator().manual_seed(1)
    x, y = _gaussian(300, MU1, C1, gen), _gaussian(200, MU2, C2, gen)
    c1, c2 = np.cov(x.numpy(), rowvar=False), np.cov(y.numpy(), rowvar=False)
    diff = x.mean(0).numpy() - y.mean(0).numpy()
    covmean = linalg.sqrtm(c1 @ c2).real
    ref = diff @ diff + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    assert frechet_from_samples(x, y) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert abs(frechet_from_samples(x, x)) < 1e-10


def test_precision_recall_on_a_hand_computed_1d_example() -> None:
    # real: 0..9 with k = 1, so every real ball has radius 1 (boundaries count as inside)
    real = torch.arange(10, dtype=F64)[:, None]
    fake = torch.tensor([0.5, 3.0, 9.9, 10.0, 10.5, -1.0, -1.5, 20.0], dtype=F64)[:, None]
    pr = precision_recall(real, fake, k=1)
    # inside real's balls: 0.5, 3.0, 9.9, 10.0 (|10 - 9| = 1), -1.0 (|-1 - 0| = 1): 5 of 8.
    assert pr.precision == 5 / 8
    # fake radii (k = 1): -1.5: 0.5, -1.0: 0.5, 0.5: 1.5, 3.0: 2.5, 9.9/10.0: ~0.1, 10.5: 0.5,
    # 20: 9.5. Covered real points: 0, 1, 2 (|2 - 0.5| = 1.5), 3, 4, 5 (by 3.0); not 6..9.
    assert pr.recall == 6 / 10


def test_precision_recall_exact_on_copies_and_far_clusters() -> None:
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(300, 4, generator=gen, dtype=F64)
    far = torch.randn(300, 4, generator=gen, dtype=F64) + 100.0
    same = precision_recall(real, real.clone())
    assert (same.precision, same.recall) == (1.0, 1.0)
    # fake = real + as many far points: half the fakes are real points (distance 0), the far
    # half is outside; every real point is a fake point, so recall is exactly 1
    mixed = precision_recall(real, torch.cat([real, far]))
    assert (mixed.precision, mixed.recall) == (0.5, 1.0)
    swapped = precision_recall(torch.cat([real, far]), real)
    assert (swapped.precision, swapped.recall) == (1.0, 0.5)
    apart = precision_recall(real, far)
    assert (apart.precision, apart.recall) == (0.0, 0.0)


def test_precision_recall_blocks_match_a_brute_force_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(90, 3, generator=gen, dtype=F64)
    fake = torch.randn(70, 3, generator=gen, dtype=F64) * 0.6 + 0.9
    k = 4

    def brute(a: torch.Tensor, b: torch.Tensor) -> float:  # fraction of b in a's manifold
        da = torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")
        radii = da.sort(1).values[:, k]
        d = torch.cdist(b, a, compute_mode="donot_use_mm_for_euclid_dist")
        return float((d <= radii).any(1).double().mean())

    monkeypatch.setattr(M, "_BLOCK_ELEMENTS", 7 * 90)  # blocks of 7 rows
    pr = precision_recall(real, fake, k=k)
    assert pr.precision == pytest.approx(brute(real, fake), abs=1e-12)
    assert pr.recall == pytest.approx(brute(fake, real), abs=1e-12)
    assert 0.2 < pr.precision < 0.95 and 0.2 < pr.recall < 0.95  # a non-trivial case


def _biased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The V-statistic (diagonal terms kept): biased upwards."""
    g = 1.0 / x.shape[1]
    kxx, kyy, kxy = ((g * a @ b.T + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


def test_kid_is_unbiased_on_two_draws_of_one_distribution() -> None:
    gen = torch.Generator().manual_seed(4)
    reps, n = 400, 40
    draws = [(torch.randn(n, 2, generator=gen, dtype=F64), torch.randn(n, 2, generator=gen,
              dtype=F64)) for _ in range(reps)]  # fmt: skip
    unbiased = torch.tensor([mmd2_unbiased(x, y) for x, y in draws])
    biased = torch.tensor([_biased_mmd2(x, y) for x, y in draws])
    se = float(unbiased.std()) / math.sqrt(reps)
    assert abs(float(unbiased.mean())) < 4 * se
    # the same test rejects the biased estimator, whose mean is ~ 2 E k(x,x)/n > 0
    assert float(biased.mean()) > 10 * float(biased.std()) / math.sqrt(reps)


def test_mmd2_matches_the_closed_form_for_1d_gaussians() -> None:
    # k(x, y) = (x y + 1)^3 in 1-D (gamma = 1/d = 1): E k(x, x') = m3^2 + 3 m2^2 + 3 m1^2 + 1
    # for independent x, x', so MMD^2 = (dm3)^2 + 3 (dm2)^2 + 3 (dm1)^2 with Gaussian moments.
    a, b, s = 0.0, 0.5, 1.0

    def moments(m: float) -> tuple[float, float, float]:
        return m, m**2 + s**2, m**3 + 3 * m * s**2

    exact = sum(w * (p - q) ** 2 for w, p, q in zip((3, 3, 1), moments(a), moments(b), strict=True))
    gen = torch.Generator().manual_seed(5)
    reps, n = 200, 200
    est = torch.tensor([
        mmd2_unbiased(a + s * torch.randn(n, 1, generator=gen, dtype=F64),
                      b + s * torch.randn(n, 1, generator=gen, dtype=F64))
        for _ in range(reps)])  # fmt: skip
    se = float(est.std()) / math.sqrt(reps)
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)
    assert se < 0.1 * exact


def test_kernel_distance_averages_subset_estimates() -> None:
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(50, 3, generator=gen, dtype=F64), torch.randn(60, 3, generator=gen) + 0.3
    whole = kernel_distance(x, y[:50], subsets=1, subset_size=None)
    assert whole.mean == pytest.approx(mmd2_unbiased(x, y[:50]), rel=1e-10)
    assert (whole.subset_size, whole.std) == (50, 0.0)
    kd = kernel_distance(
        x, y, subsets=20, subset_size=30, generator=torch.Generator().manual_seed(0)
    )
    again = kernel_distance(x, y, subsets=20, subset_size=30,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert kd == again and kd.subset_size == 30 and kd.std > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: frechet_from_samples(torch.zeros(5, 2), torch.zeros(5, 3)), "same number"),
        (lambda: frechet_from_samples(torch.zeros(1, 2), torch.zeros(5, 2)), "at least 2"),
        (lambda: precision_recall(torch.zeros(5, 2), torch.zeros(5, 2), k=0), "positive int"),
        (lambda: precision_recall(torch.zeros(3, 2), torch.zeros(5, 2), k=3), "at least 4"),
        (lambda: mmd2_unbiased(torch.full((4, 2), float("nan")), torch.zeros(4, 2)), "NaN"),
        (lambda: kernel_distance(torch.zeros(4, 2), torch.zeros(4, 2), subsets=0), "subsets"),
    ],
)
def test_metric_inputs_are_checked(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
