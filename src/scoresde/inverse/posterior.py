"""Closed-form posteriors of a Gaussian-mixture prior under linear-Gaussian measurements (oracle).

Prior ``x ~ sum_k w_k N(mu_k, Sigma_k)``, measurement ``y = A x + n``, ``n ~ N(0, sigma_n^2 I)``.
Each component is conjugate, so the posterior is again a Gaussian mixture (Bishop 2006, 2.3.3)::

    S_k = A Sigma_k A^T + sigma_n^2 I,     K_k = Sigma_k A^T S_k^{-1},
    mu_k' = mu_k + K_k (y - A mu_k),       Sigma_k' = Sigma_k - K_k A Sigma_k,
    w_k' ∝ w_k N(y; A mu_k, S_k).

Noise-free observation of some coordinates (inpainting) is the limit ``sigma_n -> 0`` restricted to
the missing coordinates: :func:`gaussian_mixture_conditional`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..targets import GaussianMixture
from .operators import LinearOperator, as_operator

__all__ = ["gaussian_mixture_posterior", "gaussian_mixture_conditional"]


def _gauss_logpdf(r: Tensor, cov: Tensor) -> Tensor:
    """``log N(r; 0, cov)`` for a batch of residuals ``(K, m)`` and covariances ``(K, m, m)``."""
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, r[..., None], upper=False)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (z.pow(2).sum(-1) + logdet + r.shape[-1] * math.log(2 * math.pi))


def _condition(
    prior: GaussianMixture, a: Tensor, y: Tensor, noise_var: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior means ``(K, d)``, covariances ``(K, d, d)`` and weights ``(K,)`` (float64)."""
    mu, cov = prior.means, prior.covariances()
    eye = torch.eye(a.shape[0], dtype=torch.float64)
    s = a @ cov @ a.T + noise_var * eye
    gain = cov @ a.T @ torch.linalg.inv(s)
    resid = y[None] - mu @ a.T
    post_mu = mu + (gain @ resid[..., None])[..., 0]
    post_cov = cov - gain @ a @ cov
    post_cov = 0.5 * (post_cov + post_cov.transpose(1, 2))
    logw = prior.weights.log() + _gauss_logpdf(resid, s)
    return post_mu, post_cov, torch.softmax(logw, 0)


def gaussian_mixture_posterior(
    prior: GaussianMixture, A: LinearOperator | Tensor, y: Tensor, noise_std: float
) -> GaussianMixture:
    """The exact posterior ``p(x | y)`` for ``y = A x + N(0, noise_std^2 I)`` (one measurement).

    Args:
        prior: the Gaussian-mixture prior.
        A: a dense ``(m, d)`` matrix or a :class:`LinearOperator` (turned into its matrix).
        y: the measurement, ``m`` values (any shape, or ``(1, *y_shape)``).
        noise_std: ``sigma_n > 0``; for noise-free observation of coordinates use
            :func:`gaussian_mixture_conditional`.

    Returns:
        The posterior as a :class:`~scoresde.targets.GaussianMixture` with the prior's event shape.
    """
    noise_std = float(noise_std)
    if not noise_std > 0 or not math.isfinite(noise_std):
        raise ValueError(
            f"noise_std must be > 0 (got {noise_std}); for noise-free observed "
            f"coordinates use gaussian_mixture_conditional"
        )
    if isinstance(A, Tensor):
        a = A.detach().to(torch.float64)
    else:
        a = as_operator(A).matrix(prior.event_shape)
    yy = y.detach().to(torch.float64).reshape(-1).cpu()
    if a.shape != (yy.numel(), prior.dim):
        raise ValueError(
            f"A maps {a.shape[1]} values to {a.shape[0]}, but the prior has "
            f"d={prior.dim} and y has {yy.numel()} values"
        )
    mu, cov, w = _condition(prior, a.cpu(), yy, noise_std**2)
    return GaussianMixture(mu, covariances=cov, weights=w, event_shape=prior.event_shape)


def gaussian_mixture_conditional(
    prior: GaussianMixture, known: Tensor, values: Tensor
) -> GaussianMixture:
    """The exact conditional of the missing coordinates given noise-free known ones.

    Args:
        prior: the Gaussian-mixture prior.
        known: boolean mask over one event (``prior.event_shape`` or ``(d,)``), True = observed.
        values: the observed event (same shape as ``known``; values at missing places ignored).

    Returns:
        A mixture over the missing coordinates, in flattened (row-major) order.
    """
    kn = torch.as_tensor(known).reshape(-1).bool().cpu()
    if kn.numel() != prior.dim:
        raise ValueError(
            f"known must mark the {prior.dim} coordinates of one event, got {kn.numel()}"
        )
    if bool(kn.all()) or not bool(kn.any()):
        raise ValueError("known must observe some but not all coordinates")
    v = values.detach().to(torch.float64).reshape(-1).cpu()
    if v.numel() != prior.dim:
        raise ValueError(f"values must hold one event ({prior.dim} values), got {v.numel()}")
    idx_o, idx_m = kn.nonzero()[:, 0], (~kn).nonzero()[:, 0]
    mu, cov = prior.means, prior.covariances()
    c_oo = cov[:, idx_o][:, :, idx_o]
    c_mo = cov[:, idx_m][:, :, idx_o]
    c_mm = cov[:, idx_m][:, :, idx_m]
    resid = v[idx_o][None] - mu[:, idx_o]
    gain = c_mo @ torch.linalg.inv(c_oo)
    post_mu = mu[:, idx_m] + (gain @ resid[..., None])[..., 0]
    post_cov = c_mm - gain @ c_mo.transpose(1, 2)
    post_cov = 0.5 * (post_cov + post_cov.transpose(1, 2))
    logw = prior.weights.log() + _gauss_logpdf(resid, c_oo)
    return GaussianMixture(post_mu, covariances=post_cov, weights=torch.softmax(logw, 0))
