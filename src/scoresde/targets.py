"""Analytic targets with exact noised scores and log-densities: the test oracle.

A Gaussian mixture ``sum_k w_k N(mu_k, Sigma_k)`` pushed through any affine SDE stays a Gaussian
mixture: under the kernel ``N(s x0, std^2 I)`` (``std = s sigma``) component ``k`` becomes
``N(s mu_k, s^2 Sigma_k + std^2 I)``. With ``Sigma_k = U_k diag(lam_k) U_k^T`` computed once,
the noised covariance at any per-sample time is ``U_k diag(s^2 lam_k + std^2) U_k^T``, so
log-densities, scores, posterior means and velocities at a batch of different times cost one
rotation per component. Written with ``s`` and ``std`` (never ``sigma`` or ``1 / s``), all of
them hold at ``T`` of a flow path too, where ``s = 0`` and ``p_T = N(0, std(T)^2 I)``.

Per component, ``E[x0 | x, k] = mu_k + s Sigma_k (s^2 Sigma_k + std^2 I)^{-1} (x - s mu_k)``
(Gaussian conditioning), and the velocity ``E[dx_t/dt | x] = s' E[x0 | x] - std std' score``
(the probability-flow drift; Lipman et al. 2023, eq. 8) is the mixture of the components'
affine velocity fields weighted by their responsibilities at ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_tensor
from .sde import SDE, ScoreWithDenoiser, bcast

__all__ = ["GaussianMixture", "Gaussian"]


def _as64(value: Any, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t


class GaussianMixture:
    """A mixture of Gaussians with exact noised marginals under every SDE.

    Args:
        means: ``(K, d)`` component means.
        variances: isotropic ``(K,)`` (or a scalar) or diagonal ``(K, d)`` variances.
        covariances: full ``(K, d, d)`` covariance matrices (instead of ``variances``).
        weights: ``(K,)`` positive mixture weights (normalised here); uniform if omitted.
        event_shape: shape of one sample if not flat (e.g. ``(1, 8, 8)``); ``prod == d``.
    """

    def __init__(
        self,
        means: Any,
        variances: Any = None,
        covariances: Any = None,
        weights: Any = None,
        *,
        event_shape: Sequence[int] | None = None,
    ) -> None:
        mu = _as64(means, "means")
        if mu.dim() == 1:
            mu = mu[None]
        if mu.dim() != 2 or mu.shape[0] == 0 or mu.shape[1] == 0:
            raise ValueError(f"means must have shape (K, d), got {tuple(mu.shape)}")
        k, d = mu.shape
        if (variances is None) == (covariances is None):
            raise ValueError("give exactly one of variances (K,) / (K, d) or covariances (K, d, d)")
        self.evecs: Tensor | None
        if covariances is not None:
            cov = _as64(covariances, "covariances")
            if cov.dim() == 2:
                cov = cov[None]
            if cov.shape != (k, d, d):
                raise ValueError(
                    f"covariances must have shape ({k}, {d}, {d}), got {tuple(cov.shape)}"
                )
            if not torch.allclose(cov, cov.transpose(1, 2)):
                raise ValueError("covariances must be symmetric")
            lam, vecs = torch.linalg.eigh(cov)
            self.evals, self.evecs = lam, vecs
        else:
            var = _as64(variances, "variances")
            if var.dim() == 0:
                var = var.expand(k)
            if var.dim() == 1 and var.shape[0] == k:
                var = var[:, None].expand(k, d)
            if var.shape != (k, d):
                raise ValueError(
                    f"variances must have shape ({k},) or ({k}, {d}), got {tuple(var.shape)}"
                )
            self.evals, self.evecs = var.clone(), None
        if not bool((self.evals > 0).all()):
            raise ValueError("covariances/variances must be positive definite (all > 0)")
        w = (
            torch.full((k,), 1.0 / k, dtype=torch.float64)
            if weights is None
            else _as64(weights, "weights")
        )
        if w.shape != (k,) or not bool((w > 0).all()):
            raise ValueError(f"weights must be {k} positive numbers, got {w.tolist()}")
        self.weights = w / w.sum()
        self.means = mu
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape {self.event_shape} does not hold d={d} values")
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}

    # ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension ``d`` of one (flattened) sample."""
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        """Number of components ``K``."""
        return int(self.means.shape[0])

    def covariances(self) -> Tensor:
        """Component covariances ``(K, d, d)`` in float64."""
        if self.evecs is None:
            return torch.diag_embed(self.evals)
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(1, 2)

    def mean(self) -> Tensor:
        """Mean of the mixture ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Covariance of the mixture ``(d, d)``."""
        m = self.mean()
        dev = self.means - m
        within = (self.weights[:, None, None] * self.covariances()).sum(0)
        return within + (self.weights[:, None, None] * dev[:, :, None] * dev[:, None, :]).sum(0)

    def _on(self, ref: Tensor) -> tuple[Tensor, ...]:
        key = (ref.device, ref.dtype)
        if key not in self._cache:
            conv = [
                t.to(device=ref.device, dtype=ref.dtype)
                for t in (self.means, self.evals, self.weights.log())
            ]
            if self.evecs is not None:
                conv.append(self.evecs.to(device=ref.device, dtype=ref.dtype))
            self._cache[key] = tuple(conv)
        return self._cache[key]

    # ------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples shaped ``(n, *event_shape)`` (and their component labels)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if device is None:
            device = generator.device if generator is not None else "cpu"
        labels = torch.multinomial(
            self.weights.to(device), n, replacement=True, generator=generator
        )
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        mu, lam = self.means.to(device), self.evals.to(device)
        z = z * lam[labels].sqrt()
        if self.evecs is not None:
            z = torch.einsum("nij,nj->ni", self.evecs.to(device)[labels], z)
        x = (mu[labels] + z).to(dtype).reshape(n, *self.event_shape)
        return (x, labels) if return_labels else x

    def _terms(self, x: Tensor, s: Tensor, std: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component log-densities ``(B, K)``, rotated residuals and noised variances.

        ``s`` and ``std`` are the kernel's scale and std, scalars or ``(B,)``.
        """
        params = self._on(x)
        mu, lam, logw = params[:3]
        flat = x.reshape(x.shape[0], -1)
        y = flat[:, None, :] - s.reshape(-1, 1, 1) * mu[None]
        if self.evecs is not None:
            y = torch.einsum("bkd,kde->bke", y, params[3])
        var = s.reshape(-1, 1, 1) ** 2 * lam[None] + std.reshape(-1, 1, 1) ** 2
        logp = -0.5 * ((y * y / var).sum(-1) + torch.log(2 * math.pi * var).sum(-1)) + logw
        return logp, y, var

    def _check(self, x: Tensor) -> Tensor:
        check_tensor("x", x, finite=False)
        if x[0].numel() != self.dim:
            raise ValueError(
                f"x must hold {self.dim} values per sample (event shape "
                f"{self.event_shape}), got shape {tuple(x.shape)}"
            )
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the clean mixture, per sample ``(B,)``."""
        self._check(x)
        one = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
        return torch.logsumexp(self._terms(x, one, 0 * one)[0], dim=1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities ``(B, K)`` under the clean mixture."""
        self._check(x)
        one = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
        return torch.softmax(self._terms(x, one, 0 * one)[0], dim=1)

    def assign(self, x: Tensor) -> Tensor:
        """Most probable component of each sample ``(B,)``."""
        return self.responsibilities(x).argmax(dim=1)

    def _coeffs(self, x: Tensor, t: float | Tensor, sde: SDE) -> tuple[Tensor, Tensor]:
        tt = sde.time(t, x)
        return sde.scale(tt), sde.std(tt)

    def marginal_log_prob(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """Exact log-density of ``p_t`` (the mixture pushed through ``sde`` to time ``t``)."""
        self._check(x)
        return torch.logsumexp(self._terms(x, *self._coeffs(x, t, sde))[0], dim=1)

    def _mixed(self, x: Tensor, s: Tensor, std: Tensor, denoise: bool) -> Tensor:
        """The score, or with ``denoise`` the posterior mean, of the noised mixture at ``x``.

        ``sum_k r_k U_k (-y_k / var_k)`` resp. ``sum_k r_k (mu_k + U_k (s lam_k y_k / var_k))``,
        ``r`` the responsibilities at ``x``.
        """
        logp, y, var = self._terms(x, s, std)
        r = torch.softmax(logp, dim=1)
        params = self._on(x)
        g = (s.reshape(-1, 1, 1) * params[1][None] if denoise else -1.0) * y / var
        if self.evecs is not None:
            g = torch.einsum("bke,kde->bkd", g, params[3])
        if denoise:
            g = g + params[0][None]
        return (r[..., None] * g).sum(1).reshape(x.shape)

    def marginal_score(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """Exact score ``grad_x log p_t(x)``, shaped like ``x``."""
        self._check(x)
        return self._mixed(x, *self._coeffs(x, t, sde), False)

    def marginal_denoise(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """Exact posterior mean ``E[x0 | x_t = x]`` (Tweedie's denoiser), shaped like ``x``.

        Closed form per component (module docstring); finite at ``T`` of a flow path, where it
        is the mixture's mean.
        """
        self._check(x)
        return self._mixed(x, *self._coeffs(x, t, sde), True)

    def marginal_velocity(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """Exact velocity ``E[dx_t/dt | x_t = x] = s' D - std std' score`` (the PF ODE drift).

        For :class:`~scoresde.RectifiedFlow` it is ``E[z - x0 | x_t = x]``, the field flow
        matching learns (Lipman et al. 2023, eq. 8; Liu et al. 2023); finite at ``T``.
        """
        self._check(x)
        tt = sde.time(t, x)
        s, std = sde.scale(tt), sde.std(tt)
        den = self._mixed(x, s, std, True)
        score = self._mixed(x, s, std, False)
        return bcast(sde.scale_deriv(tt), x) * den - bcast(std * sde.std_deriv(tt), x) * score

    def score_fn(self, sde: SDE) -> ScoreWithDenoiser:
        """The exact ``score_fn(x, t)`` of the noised mixture under ``sde``.

        A :class:`~scoresde.sde.ScoreWithDenoiser`: ``.denoise(x, t)`` is
        :meth:`marginal_denoise`, so samplers and the likelihood can start at ``T`` of a flow
        path.
        """

        def score(x: Tensor, t: Tensor) -> Tensor:
            return self.marginal_score(x, t, sde)

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            return self.marginal_denoise(x, t, sde)

        return ScoreWithDenoiser(score, denoise)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim})"


class Gaussian(GaussianMixture):
    """A single Gaussian ``N(mean, cov)`` (``variance`` scalar/diagonal or ``covariance``)."""

    def __init__(
        self,
        mean: Any,
        variance: Any = None,
        covariance: Any = None,
        *,
        event_shape: Sequence[int] | None = None,
    ) -> None:
        mu = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
        if variance is None and covariance is None:
            variance = 1.0
        var = None if variance is None else torch.as_tensor(variance, dtype=torch.float64)
        if var is not None and var.dim() == 1:
            var = var[None]
        cov = None if covariance is None else torch.as_tensor(covariance, dtype=torch.float64)
        super().__init__(mu, var, cov, None, event_shape=event_shape)

    def entropy(self) -> float:
        """Differential entropy in nats."""
        return float(0.5 * (self.dim * math.log(2 * math.pi * math.e) + self.evals.log().sum()))
