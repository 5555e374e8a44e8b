"""The data's Gaussian part: mean and a low-rank-plus-isotropic covariance, read from samples.

``fast`` integrates the probability-flow ODE of the Gaussian with the data's mean ``m`` and
covariance ``C`` exactly (:mod:`.split`). ``C`` is estimated from the rows the model's noise
profile ends with (its probe's samples, :mod:`.profile`) as

    C ~ U diag(evals) U^T + rest (I - U U^T),

the ``rank`` leading principal directions ``U`` of the rows (orthonormal columns) with their
variances, and the mean variance of the remaining directions. The leading directions carry the
data's large-scale structure (where its modes lie relative to each other), which decides
the mode masses a few-step sampler produces; the rest is one number, so the estimate costs
``O(n^2 d)`` for ``n < d`` rows of dimension ``d`` and no ``d x d`` matrix is formed then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DataGaussian", "data_gaussian"]


@dataclass(frozen=True)
class DataGaussian:
    """``N(mean, U diag(evals) U^T + rest (I - U U^T))`` over flattened samples.

    Attributes:
        mean: the mean, flattened (``d`` entries), on the sampling device and dtype.
        basis: ``U``, ``d x k`` with orthonormal columns, same device and dtype.
        evals: the variances along ``U``'s columns (``k`` entries, float64, host).
        rest: the variance of every direction orthogonal to ``U`` (0 when ``k = d``).
    """

    mean: Tensor
    basis: Tensor
    evals: tuple[float, ...]
    rest: float

    @property
    def rank(self) -> int:
        """``k``, the number of leading directions."""
        return len(self.evals)

    def variances(self) -> list[float]:
        """The ``k + 1`` distinct variances: ``evals`` then ``rest``."""
        return [*self.evals, self.rest]

    def apply(self, coef: Tensor, u: Tensor) -> Tensor:
        """``(U diag(c_top) U^T + c_rest (I - U U^T)) u`` for rows ``u`` (``n x d``).

        ``coef`` holds ``k + 1`` coefficients (``c_top`` then ``c_rest``) on ``u``'s device and
        dtype: an operator diagonal in the basis of :meth:`variances`.
        """
        return self.combine(coef[None], [u], [u @ self.basis])

    def combine(self, coefs: Tensor, us: list[Tensor], projs: list[Tensor]) -> Tensor:
        """``sum_j`` :meth:`apply` ``(coefs[j], us[j])``, given ``projs[j] = us[j] @ U``.

        One ``n x k`` by ``k x d`` product for the whole sum, whatever the number of terms
        (the projections are computed once per vector by the caller and reused).
        """
        rest = coefs[:, -1]
        out = rest[0] * us[0]
        low = (coefs[0, :-1] - rest[0]) * projs[0]
        for j in range(1, len(us)):
            out = out + rest[j] * us[j]
            low = low + (coefs[j, :-1] - rest[j]) * projs[j]
        return out + low @ self.basis.T


def data_gaussian(rows: Tensor, mean: Tensor, rank: int) -> DataGaussian | None:
    """The Gaussian of ``rows`` (samples, ``n x ...``) about ``mean``, ``rank`` directions kept.

    The principal directions come from the smaller of the ``d x d`` covariance and the
    ``n x n`` Gram matrix of the centred rows (whose eigenvectors the rows map back), so the
    work is ``O(min(n, d)^2 max(n, d))``; only that matrix goes to the host. ``None`` with
    fewer than two rows or rows without spread.
    """
    n = rows.shape[0]
    flat = rows.reshape(n, -1)
    d = flat.shape[1]
    if n < 2:
        return None
    centred = flat - flat.mean(0)
    small = centred.T @ centred if d <= n else centred @ centred.T
    evals, evecs = torch.linalg.eigh(small.cpu().double() / (n - 1))  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    total = float(evals.clamp_min(0).sum())
    if not math.isfinite(total) or total <= 0:
        return None
    k = min(rank, d, int((evals > 1e-12 * total).sum()))
    top = evals[:k]
    vecs = evecs[:, :k].to(device=flat.device, dtype=flat.dtype)
    if d <= n:
        basis = vecs
    else:  # X^T v / sqrt((n - 1) lambda): unit columns
        basis = (centred.T @ vecs) / (top * (n - 1)).sqrt().to(device=flat.device, dtype=flat.dtype)
    rest = max(total - float(top.sum()), 0.0) / (d - k) if d > k else 0.0
    return DataGaussian(mean.reshape(-1).to(flat), basis.contiguous(), tuple(top.tolist()), rest)
