"""Sample-quality metrics: against a known mixture, and between two sample (feature) sets.

Against a mixture: per-mode mass, per-mode Fréchet distance, sliced W2. Between two sets of
samples or of their features (raw coordinates, a classifier's features, Inception-v3 features
for FID/KID, see :mod:`scoresde.features`):

- :func:`frechet_from_samples`: the Fréchet distance of Gaussians fitted to both sets (Dowson &
  Landau 1982; FID of Heusel et al. 2017 with Inception features);
- :func:`precision_recall`: improved precision and recall by k-NN manifolds (Kynkäänniemi et
  al. 2019);
- :func:`kernel_distance`: the unbiased squared MMD with the cubic polynomial kernel averaged
  over subsets (KID, Bińkowski et al. 2018), and :func:`mmd2_unbiased`, its estimator on one
  pair of sets.

Everything is computed in float64 on the inputs' device, in blocks (peak memory independent of
the set sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .targets import GaussianMixture

__all__ = [
    "ModeReport",
    "mode_report",
    "frechet_distance",
    "sliced_wasserstein",
    "frechet_from_samples",
    "PrecisionRecall",
    "precision_recall",
    "KernelDistance",
    "kernel_distance",
    "mmd2_unbiased",
]

_BLOCK_ELEMENTS = 2**23
"""Distance/kernel matrix entries computed at a time (64 MiB of float64)."""


def _sqrtm_psd(a: Tensor) -> Tensor:
    lam, vec = torch.linalg.eigh(0.5 * (a + a.T))  # symmetric up to rounding
    return (vec * lam.clamp_min(0).sqrt()) @ vec.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Squared Fréchet (W2) distance between two Gaussians (Dowson & Landau 1982)."""
    s1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(s1 @ cov2 @ s1)
    return float((mu1 - mu2).pow(2).sum() + torch.trace(cov1 + cov2 - 2 * cross))


@dataclass
class ModeReport:
    """Per-mode comparison of samples with a Gaussian mixture."""

    mass: Tensor
    """Fraction of samples assigned to each component ``(K,)``."""
    tv: float
    """Total variation between the sample mode masses and the mixture weights."""
    frechet: Tensor
    """Squared Fréchet distance of each mode's samples to its component ``(K,)``."""
    frechet_weighted: float
    """Mixture-weighted mean of ``frechet``."""


def mode_report(target: GaussianMixture, x: Tensor) -> ModeReport:
    """Assign samples to their most probable component and compare mode by mode (float64)."""
    x = x.detach().to(torch.float64).reshape(x.shape[0], -1).cpu()
    labels = target.assign(x)
    k = target.n_components
    mass = torch.bincount(labels, minlength=k).double() / max(len(x), 1)
    tv = 0.5 * float((mass - target.weights).abs().sum())
    covs = target.covariances()
    fr = torch.full((k,), float("inf"), dtype=torch.float64)
    for j in range(k):
        xj = x[labels == j]
        if len(xj) > x.shape[1] + 1:
            fr[j] = frechet_distance(
                xj.mean(0), torch.cov(xj.T).reshape(x.shape[1], -1), target.means[j], covs[j]
            )
    return ModeReport(mass, tv, fr, float((target.weights * fr).sum()))


def sliced_wasserstein(
    x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between two equal-size sample sets (random directions)."""
    x = x.detach().reshape(x.shape[0], -1).double().cpu()
    y = y.detach().reshape(y.shape[0], -1).double().cpu()
    if x.shape != y.shape:
        raise ValueError(
            f"sample sets must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dirs = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = (x @ dirs).sort(0)
    py, _ = (y @ dirs).sort(0)
    return float((px - py).pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------------------
# two sample sets: Fréchet distance, precision/recall, kernel distance


def _features(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """``x`` as a finite float64 ``(n, d)`` matrix (samples flattened); checked."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of samples or features, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < min_rows:
        raise ValueError(
            f"{name} needs at least {min_rows} samples (rows), got shape {tuple(x.shape)}"
        )
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _same_width(x: Tensor, y: Tensor, names: str) -> Tensor:
    """``y`` on ``x``'s device, after checking both have the same number of features."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names} must have the same number of features per sample, got {x.shape[1]} "
            f"and {y.shape[1]}"
        )
    return y.to(x.device)


def frechet_from_samples(x: Tensor, y: Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to two sample sets.

    ``||mu_x - mu_y||^2 + tr(C_x + C_y - 2 (C_x^(1/2) C_y C_x^(1/2))^(1/2))`` (Dowson & Landau
    1982) with the sample means and the unbiased sample covariances; with Inception-v3 pool
    features this is FID (Heusel et al. 2017, eq. 6). The estimate is biased upwards by
    ``O(d / n)`` (the sampling noise of the moments): compare numbers at equal sizes.

    Args:
        x: ``(n, ...)`` samples or features (flattened per row), ``n >= 2``.
        y: ``(m, ...)`` samples or features with as many values per row, ``m >= 2``.
    """
    x = _features("x", x, 2)
    y = _same_width(x, _features("y", y, 2), "x and y")
    cov_x = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    cov_y = torch.cov(y.T).reshape(y.shape[1], y.shape[1])
    return frechet_distance(x.mean(0), cov_x, y.mean(0), cov_y)


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall of generated samples (Kynkäänniemi et al. 2019)."""

    precision: float
    """Fraction of generated samples inside the k-NN manifold of the real ones (fidelity)."""
    recall: float
    """Fraction of real samples inside the k-NN manifold of the generated ones (coverage)."""
    k: int
    """The neighbour rank that sets each point's radius."""


def _blocks(n: int, m: int) -> range:
    """Row starts for blocks of an ``n x m`` matrix of at most :data:`_BLOCK_ELEMENTS` entries."""
    return range(0, n, max(1, _BLOCK_ELEMENTS // max(m, 1)))


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of ``x`` to its ``k``-th nearest other row (float64)."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    step = _blocks(x.shape[0], x.shape[0]).step
    for i in range(0, x.shape[0], step):
        d = torch.cdist(x[i : i + step], x)  # the row itself is among the k + 1 nearest (0)
        out[i : i + step] = d.kthvalue(k + 1, dim=1).values
    return out


def _inside(query: Tensor, ref: Tensor, radii: Tensor) -> Tensor:
    """Whether each query row lies in a ball ``|q - r| <= radius(r)`` around some ``r``."""
    out = torch.empty(query.shape[0], dtype=torch.bool, device=query.device)
    step = _blocks(query.shape[0], ref.shape[0]).step
    for i in range(0, query.shape[0], step):
        d = torch.cdist(query[i : i + step], ref)
        out[i : i + step] = (d <= radii[None, :]).any(dim=1)
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall by k-NN manifolds (Kynkäänniemi et al. 2019, eqs. 1-2).

    Each set's manifold is the union of balls around its points, each ball's radius the
    distance to the point's ``k``-th nearest neighbour in the same set. Precision is the
    fraction of ``fake`` rows inside the manifold of ``real`` (a ball boundary counts as
    inside), recall the fraction of ``real`` rows inside the manifold of ``fake``. The paper
    uses ``k = 3`` with 50000 samples per set in VGG-16 feature space; use equal set sizes
    (the radii shrink as a set grows).

    Args:
        real: ``(n, ...)`` real samples or features, ``n > k``.
        fake: ``(m, ...)`` generated samples or features, ``m > k``.
        k: the neighbour rank (a positive int).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    real = _features("real", real, k + 1)
    fake = _same_width(real, _features("fake", fake, k + 1), "real and fake")
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean()
    return PrecisionRecall(float(precision), float(recall), k)


def _poly_kernel_sum(
    x: Tensor, y: Tensor, gamma: float, coef0: float, degree: int, skip_diagonal: bool
) -> Tensor:
    """``sum_ij (gamma <x_i, y_j> + coef0)^degree``, without ``i == j`` if ``skip_diagonal``."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    step = _blocks(x.shape[0], y.shape[0]).step
    for i in range(0, x.shape[0], step):
        kb = (gamma * (x[i : i + step] @ y.T) + coef0) ** degree
        if skip_diagonal:
            kb.diagonal(offset=i).zero_()
        total = total + kb.sum()
    return total


def mmd2_unbiased(
    x: Tensor, y: Tensor, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """The unbiased estimate of the squared MMD between two sets, polynomial kernel.

    ``k(a, b) = (gamma <a, b> + coef0)^degree`` (``gamma = 1/d`` by default: KID's kernel,
    Bińkowski et al. 2018, sec. 3), and the U-statistic of Gretton et al. (2012, eq. 3)::

        1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
            - 2/(nm) sum_{i, j} k(x_i, y_j),

    whose mean over draws is exactly the population MMD² (zero for one distribution; a
    single estimate may be negative).
    """
    x = _features("x", x, 2)
    y = _same_width(x, _features("y", y, 2), "x and y")
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    n, m = x.shape[0], y.shape[0]
    kxx = _poly_kernel_sum(x, x, g, coef0, degree, True) / (n * (n - 1))
    kyy = _poly_kernel_sum(y, y, g, coef0, degree, True) / (m * (m - 1))
    kxy = _poly_kernel_sum(x, y, g, coef0, degree, False) / (n * m)
    return float(kxx + kyy - 2 * kxy)


@dataclass(frozen=True)
class KernelDistance:
    """Kernel (Inception) distance: the unbiased MMD² averaged over random subsets."""

    mean: float
    """Mean of the per-subset unbiased MMD² estimates (the KID)."""
    std: float
    """Standard deviation of the per-subset estimates."""
    subsets: int
    """Number of subsets averaged."""
    subset_size: int
    """Rows drawn (without replacement) from each set per subset."""


def kernel_distance(
    x: Tensor,
    y: Tensor,
    *,
    subsets: int = 100,
    subset_size: int | None = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> KernelDistance:
    """KID (Bińkowski et al. 2018): :func:`mmd2_unbiased` averaged over random subsets.

    The defaults are those of the paper and of torch-fidelity (100 subsets of 1000, cubic
    kernel with ``gamma = 1/d``, ``coef0 = 1``); with Inception-v3 pool features this is KID.
    Unbiased for every subset size: two draws of one distribution give 0 on average.

    Args:
        x: ``(n, ...)`` samples or features (flattened per row).
        y: ``(m, ...)`` samples or features with as many values per row.
        subsets: number of subset pairs.
        subset_size: rows per subset, drawn without replacement; ``None`` or more than a set
            holds: ``min(n, m)``.
        degree: the kernel's degree (3).
        gamma: the kernel's scale of ``<a, b>`` (default ``1/d``).
        coef0: the kernel's constant (1).
        generator: source of the subset draws (CPU).
    """
    x = _features("x", x, 2)
    y = _same_width(x, _features("y", y, 2), "x and y")
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive int, got {subsets!r}")
    size = min(x.shape[0], y.shape[0], subset_size or x.shape[0])
    if size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    vals = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        ix = torch.randperm(x.shape[0], generator=generator)[:size].to(x.device)
        iy = torch.randperm(y.shape[0], generator=generator)[:size].to(y.device)
        vals[i] = mmd2_unbiased(x[ix], y[iy], degree=degree, gamma=gamma, coef0=coef0)
    std = float(vals.std(unbiased=False)) if subsets > 1 else 0.0
    return KernelDistance(float(vals.mean()), std, subsets, size)
