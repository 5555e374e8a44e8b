"""Asymptotically exact posterior sampling for linear-Gaussian measurements by twisted SMC.

The twisted diffusion sampler (TDS; Wu et al. 2023, Algorithm 1) on the reverse SDE. The guided
samplers of :mod:`.linear` approximate ``p_t(y | x_t)`` and so miss the posterior's mode masses
when ``p(x0 | x_t)`` is multimodal. Sequential Monte Carlo corrects that: ``N`` particles move
with the guided reverse step (the proposal), carry importance weights and are resampled when the
effective sample size drops. One step from ``t`` to ``t' = t + h`` (``h < 0``):

* propose: the unconditional reverse transition is the Euler–Maruyama step of the reverse SDE
  (Anderson 1982; Song et al. 2021, Eq. 6), ``p(x' | x) = N(mu(x), v I)`` with
  ``mu = x + [f x - g^2 score] h`` and ``v = g^2 |h|``; the twisted proposal shifts its mean
  along the twist's gradient, ``q(x' | x) = N(mu(x) + v grad log p~_t(y | x), v I)``;
* weight: ``w = p(x' | x) p~_{t'}(y | x') / (q(x' | x) p~_t(y | x))``, where the twisting
  function ``p~_t(y | x_t)`` is the Gaussian approximation :class:`.linear.GaussianLikelihood`
  (``"dps"`` is TDS's own twist ``N(y; A m, sigma_n^2 I)``, ``"tmpd"`` and ``"pgdm"`` add a
  covariance);
* resample (systematic) when the effective sample size falls below a threshold;
* finish: the last step multiplies by ``p(y | x0) / p~_eps(y | x0)`` with the true likelihood
  ``N(y; A x0, sigma_n^2 I)``.

The weighted particles target ``p(x0 | y)`` as ``N -> infinity`` (up to the time
discretisation), whatever the twist and the proposal's shift; a better twist only needs fewer
particles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_choice, check_positive, check_tensor, trusted_times
from ..sampling.schedules import get_times
from ..sde import SDE, ScoreFn
from .linear import METHODS, GaussianLikelihood, LikelihoodTerms
from .operators import LinearOperator, as_operator

__all__ = ["SMCResult", "smc_linear", "systematic_resample"]


@dataclass
class SMCResult:
    """Outcome of :func:`smc_linear`."""

    samples: Tensor
    """Equally weighted posterior samples ``(N, ...)`` (after the final resampling)."""
    particles: Tensor
    """The final particles before the last resampling ``(N, ...)``."""
    log_weights: Tensor
    """Their normalised log-weights ``(N,)``."""
    ess: Tensor
    """Effective sample size (fraction of ``N``) after each step, before resampling ``(steps,)``."""
    resampled: int
    """How many times the particles were resampled."""


class _Particles(NamedTuple):
    """Particles ``x``, their twist terms at the current time and their log-weights ``(N,)``."""

    x: Tensor
    terms: LikelihoodTerms
    log_w: Tensor


def systematic_resample(log_w: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices ``(N,)`` of a systematic resampling of particles with log-weights ``log_w``.

    One uniform ``u ~ U[0, 1)`` places the ``N`` points ``(u + i) / N`` on the weights' CDF
    (Carpenter, Clifford & Fearnhead 1999): particle ``k`` is copied ``floor(N w_k)`` or
    ``ceil(N w_k)`` times.
    """
    n = log_w.shape[0]
    w = torch.softmax(log_w.double(), 0)
    u = (
        torch.rand((), generator=generator, device=log_w.device, dtype=torch.float64)
        + torch.arange(n, device=log_w.device, dtype=torch.float64)
    ) / n
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, u).clamp_max(n - 1)


def _ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``1 / sum w_k^2`` of normalised log-weights, as a fraction of N."""
    w = torch.softmax(log_w, 0)
    return 1.0 / (w * w).sum() / log_w.shape[0]


def _propose(sde: SDE, p: _Particles, t: Tensor, h: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """Draw ``x' ~ q(x' | x)`` and return it with ``log p(x' | x) - log q(x' | x)`` ``(N,)``.

    ``p(x' | x) = N(mu, v I)`` is the Euler–Maruyama step of ``sde.reverse`` over ``h < 0``,
    driven by the prior score already evaluated at ``(x, t)``; the twisted proposal is
    ``q = N(mu + v g, v I)`` with ``g = grad log p~_t(y | x)``, so that
    ``log p - log q = -<g, x' - mu> + v |g|^2 / 2``.
    """
    reverse = sde.reverse(lambda _x, _t: p.terms.score)
    mu = p.x + reverse.drift(p.x, t) * h
    var = reverse.diffusion(t) ** 2 * -h
    x_new = mu + var * p.terms.grad + torch.sqrt(var) * noise
    n = x_new.shape[0]
    flat_g = p.terms.grad.reshape(n, -1)
    step = (x_new - mu).reshape(n, -1)
    log_ratio = -(flat_g * step).sum(1) + 0.5 * var * flat_g.pow(2).sum(1)
    return x_new, log_ratio


def _move(
    sde: SDE, p: _Particles, twist: GaussianLikelihood, t: Tensor, t_next: Tensor, noise: Tensor
) -> _Particles:
    """Propose ``x'`` at ``t_next`` and multiply in the incremental weight.

    ``w = p(x' | x) p~_{t'}(y | x') / (q(x' | x) p~_t(y | x))`` (Wu et al. 2023, Algorithm 1).
    """
    x_new, log_ratio = _propose(sde, p, t, t_next - t, noise)
    nxt = twist(x_new, t_next.expand(x_new.shape[0]))
    return _Particles(x_new, nxt, p.log_w + log_ratio + nxt.log_twist - p.terms.log_twist)


def _finish(p: _Particles, y: Tensor, op: LinearOperator, noise_var: float) -> _Particles:
    """Replace the twist by the true likelihood: multiply by ``p(y | x0) / p~_eps(y | x0)``.

    ``log p(y | x0) = -|y - A x0|^2 / (2 sigma_n^2)`` up to a constant shared by all particles.
    """
    n = p.x.shape[0]
    resid = (y - op(p.x)).reshape(n, -1)
    return p._replace(log_w=p.log_w - 0.5 * resid.pow(2).sum(1) / noise_var - p.terms.log_twist)


def _resample(p: _Particles, generator: torch.Generator | None) -> _Particles:
    """Systematic resampling: copies of the particles (and their twist terms), equal weights."""
    idx = systematic_resample(p.log_w, generator)
    terms = LikelihoodTerms(*(v[idx] for v in p.terms))
    return _Particles(p.x[idx], terms, torch.full_like(p.log_w, -math.log(p.log_w.shape[0])))


def _sweep(
    sde: SDE,
    p: _Particles,
    twist: GaussianLikelihood,
    times: Tensor,
    finish: Callable[[_Particles], _Particles],
    ess_threshold: float,
    generator: torch.Generator | None,
) -> SMCResult:
    """Move the particles through ``times``: propose and weight, resample, finish at the end."""
    ess_hist, resampled, last = [], 0, times.numel() - 2
    for i in range(last + 1):
        noise = torch.randn(p.x.shape, generator=generator, device=p.x.device, dtype=p.x.dtype)
        p = _move(sde, p, twist, times[i], times[i + 1], noise)
        if i == last:
            p = finish(p)
        p = p._replace(log_w=p.log_w - torch.logsumexp(p.log_w, 0))
        ess_hist.append(_ess(p.log_w))
        if i < last and float(ess_hist[-1]) < ess_threshold:
            p, resampled = _resample(p, generator), resampled + 1
    idx = systematic_resample(p.log_w, generator)
    return SMCResult(p.x[idx], p.x, p.log_w, torch.stack(ess_hist), resampled)


def smc_linear(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    operator: LinearOperator | Tensor,
    shape: tuple[int, ...],
    *,
    noise_std: float,
    twist: str = "tmpd",
    steps: int = 500,
    ess_threshold: float = 0.5,
    cg_iters: int = 20,
    data_var: float = 1.0,
    schedule: str | Tensor | None = None,
    eps: float | None = None,
    generator: torch.Generator | None = None,
) -> SMCResult:
    """Sample ``p(x | y)`` for one measurement ``y = A x + N(0, noise_std^2 I)`` by twisted SMC.

    The twisted diffusion sampler (Wu et al. 2023, Algorithm 1): propose, weight and resample at
    every step of the reverse SDE, then weight by the true likelihood; see the module docstring.

    Args:
        score_fn: the prior's score.
        sde: its forward SDE.
        y: one measurement, shaped ``(1, *y_shape)`` or ``y_shape``.
        operator: ``A`` (a :class:`LinearOperator` or an ``(m, d)`` matrix).
        shape: ``(N, *x_shape)``: ``N`` particles.
        noise_std: ``sigma_n > 0``.
        twist: the likelihood approximation used as twisting function and guide:
            ``"tmpd"``, ``"pgdm"`` or ``"dps"``.
        steps: reverse-time steps (Euler–Maruyama transitions).
        ess_threshold: resample when the ESS falls below this fraction of ``N``.
        cg_iters: conjugate-gradient iterations of the twist.
        data_var: data variance for the ``"pgdm"`` twist.
        schedule: the time schedule (as in :func:`scoresde.sample`).
        eps: the final time (default ``sde.eps``).
        generator: source of all randomness (moves and resampling).

    Returns:
        An :class:`SMCResult`.
    """
    twist = check_choice("twist", twist, METHODS)
    noise_var = check_positive("noise_std", noise_std) ** 2
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold}")
    check_tensor("y", y, min_dim=0)
    yy = y if y.dim() > 0 and y.shape[0] == 1 else y[None]
    op, n, device, dtype = as_operator(operator), int(shape[0]), y.device, y.dtype
    twist_at = GaussianLikelihood(
        score_fn,
        sde,
        op,
        yy,
        noise_std=noise_std,
        method=twist,
        cg_iters=cg_iters,
        data_var=data_var,
    )
    times = get_times(sde, steps, schedule, eps=eps, device=device, dtype=dtype)
    x = sde.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    with trusted_times():  # the schedule built every t: no per-step read of its values
        p = _Particles(
            x, twist_at(x, times[0].expand(n)), torch.zeros(n, device=device, dtype=dtype)
        )
        finish = partial(_finish, y=yy, op=op, noise_var=noise_var)
        return _sweep(sde, p, twist_at, times, finish, ess_threshold, generator)
