"""Asymptotically exact posterior sampling for one linear-Gaussian measurement by twisted SMC.

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
  covariance); the initial particles are weighted by ``p~_T(y | x_T)``;
* resample (systematic) when the effective sample size falls below a threshold;
* finish: the last step multiplies by ``p(y | x0) / p~_eps(y | x0)`` with the true likelihood
  ``N(y; A x0, sigma_n^2 I)``.

The weighted particles target ``p(x | y)`` as ``N -> infinity`` (up to the time
discretisation), whatever the twist and the proposal's shift; a better twist only needs fewer
particles. The engine is :mod:`.particles`, which also runs many measurements at once
(``solve_linear(..., method="smc")``) and noise-free known values (``inpaint(...,
method="smc")``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_positive, check_tensor
from ..sampling.schedules import get_times
from ..sde import SDE, ScoreFn
from .linear import METHODS, GaussianLikelihood
from .operators import LinearOperator, as_operator
from .particles import linear_smc, systematic_resample

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
    Exact as ``N -> infinity`` up to the time discretisation. For a batch of measurements use
    ``solve_linear(..., method="smc", particles=K)``.

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
    op = as_operator(operator)
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
    times = get_times(sde, steps, schedule, eps=eps, device=y.device, dtype=y.dtype)
    res = linear_smc(
        lambda _rows: twist_at,
        sde,
        yy,
        as_operator(op, tuple(shape[1:])),
        (1, *shape[1:]),
        noise_var,
        times,
        particles=int(shape[0]),
        batch_size=None,
        draws=int(shape[0]),
        ess_threshold=float(ess_threshold),
        generator=generator,
    )
    assert res.particles is not None and res.log_weights is not None
    assert res.ess_history is not None and res.resampled is not None
    return SMCResult(
        res.samples[:, 0],
        res.particles[0],
        res.log_weights[0],
        res.ess_history[:, 0],
        int(res.resampled[0]),
    )
