"""Multistep consistency sampling (Song et al. 2023, Algorithm 1), on any SDE in sigma-space.

A consistency model travels through :func:`scoresde.sample` as a score function that carries
``consistency(x_hat, sigma)`` (:meth:`scoresde.consistency.ConsistencyModel.score_fn`). Step
``i`` maps ``x_hat`` at ``sigma_i`` to ``x0 = f(x_hat, sigma_i)`` (one evaluation) and, before
the next step, re-noises it to the next level, ``x_hat = x0 + sqrt(sigma_{i+1}^2 -
sigma_min^2) z``. The levels are ``sigma(times[i])`` of the schedule (Karras by default),
clamped to the model's ``[sigma_min, sigma_max]``; ``steps = k`` takes ``k`` evaluations
(``times[-1]`` is not used: the output is already clean). The re-noise levels matter (Song et
al. 2023 search them): on the 2-D mixture of ``tests/test_consistency_quality.py`` two steps
re-noising to ``sigma = 0.1`` reach a per-mode Fréchet of 0.013, the Karras grid's 5.8 only
0.20; pass ``schedule=`` a tensor of times for such levels.

Given a plain score function, ``f`` is replaced by Tweedie's denoiser ``D(x_hat; sigma)``
(denoise, then re-noise: the sampler every score model supports, but not a consistency model,
whose ``f`` is the ODE's end point rather than the posterior mean); ``scoresde sample
--sampler consistency`` refuses score-model runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import Context, register
from .endpoint import prior_denoise, starts_at_prior
from .sigma import denoiser

__all__ = ["consistency", "consistency_of"]

ConsistencyFn = Callable[[Tensor, Tensor], Tensor]


def consistency_of(score_fn: object) -> ConsistencyFn | None:
    """The ``consistency(x_hat, sigma)`` a score function carries, else ``None``.

    Also found through the checked wrapper of :func:`scoresde.sample`, which keeps the caller's
    function as ``.fn``.
    """
    for obj in (score_fn, getattr(score_fn, "fn", None)):
        fn = getattr(obj, "consistency", None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def _first(ctx: Context, x: Tensor, t0: Tensor, hi: float) -> Tensor:
    """``x_hat`` at the first level (one host read per run).

    ``x / s(T)``, or ``hi`` times the unit noise ``x / std(T)`` where ``sigma(T) > hi``.
    """
    sde = ctx.sde
    if float(sde.sigma(t0)) > hi:
        return x / sde.std(t0) * hi
    return x / sde.scale(t0)


@register(
    "consistency",
    order=1,
    stochastic=True,
    denoise=False,
    schedule="karras",
    description="multistep consistency sampling (Song et al. 2023 Alg. 1)",
)
def consistency(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): 1 NFE a step.

    ``x_hat_0 = x / s(T)`` (or ``sigma_max`` times the unit noise ``x / std(T)`` where
    ``sigma(T) > sigma_max``, e.g. at ``T`` of a flow path); then ``x0 = f(x_hat, sigma_i)``
    and, between steps, ``x_hat = x0 + sqrt(sigma_{i+1}^2 - sigma_min^2) z``. ``f`` is the
    score function's ``consistency(x_hat, sigma)``, or Tweedie's denoiser for a plain score.
    """
    f = consistency_of(ctx.score_fn)
    inner = getattr(ctx.score_fn, "fn", ctx.score_fn)
    lo = float(getattr(inner, "sigma_min", 0.0)) if f is not None else 0.0
    hi = float(getattr(inner, "sigma_max", math.inf)) if f is not None else math.inf
    steps, b = times.numel() - 1, x.shape[0]
    sig = ctx.sde.sigma(times[:steps]).clamp(lo, hi)

    def evaluate(i: int, x_hat: Tensor) -> Tensor:
        if f is None:
            return denoiser(ctx, x_hat, times[i])
        ctx.nfe += 1
        return f(x_hat, sig[i].expand(b))

    if f is None and starts_at_prior(ctx, times):  # s(T) = 0: E[x0 | x_T] in closed form
        x0 = prior_denoise(ctx, x, times[0])
    else:
        x0 = evaluate(0, _first(ctx, x, times[0], hi))
    if ctx.active:
        ctx.report(0, times[1], x0, denoised=x0)
    for i in range(1, steps):
        x0 = evaluate(i, x0 + torch.sqrt(sig[i] ** 2 - lo**2) * ctx.randn_like(x0))
        if ctx.active:
            ctx.report(i, times[i + 1], x0, denoised=x0)
    return x0
