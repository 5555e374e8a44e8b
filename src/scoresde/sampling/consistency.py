"""Multistep consistency sampling (Song et al. 2023, Algorithm 1), on any SDE in sigma-space.

A consistency model travels through :func:`scoresde.sample` as a score function that carries
``consistency(x_hat, sigma)`` (:meth:`scoresde.consistency.ConsistencyModel.score_fn`). Step
``i`` maps ``x_hat`` at ``sigma_i`` to ``x0 = f(x_hat, sigma_i)`` (one evaluation) and, before
the next step, re-noises it to the next level, ``x_hat = x0 + sqrt(sigma_{i+1}^2 -
sigma_min^2) z``. The levels are ``sigma(times[i])`` of the schedule, clamped to the model's
``[sigma_min, sigma_max]``; ``steps = k`` takes ``k`` evaluations (``times[-1]`` is not used:
the output is already clean).

The re-noise levels matter (Song et al. 2023 search them per model): a level where the model
is inaccurate undoes a good first step. The default schedule (:func:`consistency_schedule`)
therefore reads them off the model, with a few probe calls on a fixed batch; the Karras grid
(the default before) re-noises 2-step sampling of the 2-D mixture of
``tests/test_consistency_quality.py`` to ``sigma = 5.8``, where its per-mode Fréchet is 0.20
against 0.011 for one step. ``schedule=`` (a tensor of times or a named schedule) overrides it.

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

from ..metrics import frechet_from_samples
from ..sde import SDE
from .base import Context, ScheduleContext, register
from .endpoint import prior_denoise, starts_at_prior
from .sigma import denoiser

__all__ = ["consistency", "consistency_of", "consistency_schedule"]

ConsistencyFn = Callable[[Tensor, Tensor], Tensor]

PROBE_ROWS = 256
"""Rows of the fixed probe batch :func:`consistency_schedule` evaluates the model on."""
PROBE_LEVELS = 12
"""Candidate re-noise levels, log-spaced in ``[2 sigma_min, sigma_max / 2]``."""
PROBE_TOLERANCE = 0.003
"""The largest change a re-noise step may make to the distribution of the model's one-step
samples, in units of the sampling noise of the probe (:func:`consistency_schedule`)."""
_PROBE_SEED = 15
_PROJECTIONS = 32


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


def consistency_schedule(steps: int, ctx: ScheduleContext | None = None) -> str | Tensor:
    """The schedule ``"consistency"`` uses unless ``schedule=`` is given.

    One step (and any plain score function, whose denoise-and-re-noise sampler wants a
    decreasing grid): the Karras grid from ``T``. ``k >= 2`` steps of a consistency model:
    ``T`` and then ``k - 1`` re-noise levels read off the model. Song et al. (2023, Sec. 6)
    search the levels of multistep sampling against FID; here the model judges itself. A
    re-noise step to ``sigma`` applied to samples of the right distribution leaves that
    distribution unchanged (``f`` maps ``x + sigma z`` back onto the data, Song et al. 2023
    eq. 2), so how much one step changes the distribution of the model's own one-step samples
    bounds the harm it can do at ``sigma``. On a fixed probe batch (:data:`PROBE_ROWS` rows,
    a fixed internal generator: the caller's is not used) the Fréchet distance between the
    one-step samples and their re-noised-and-mapped images is measured at
    :data:`PROBE_LEVELS` log-spaced candidate levels (in at most 32 fixed random directions,
    in units of the distance between two independent one-step batches). The first re-noise
    level is the largest candidate below which every candidate keeps that change within
    :data:`PROBE_TOLERANCE`; further levels lie two candidate spacings lower each.

    The rule is conservative: a later step refines the first without undoing it. On the CD
    students of ``benchmarks/consistency_schedule.py`` (five mixtures, 2 and 3 steps) it stays
    within 1.1x of one step's per-mode Fréchet in 8 of 10 cases (1.7x in the other two) and
    beats the Karras grid in 9 of 10 (by up to 40x). It cannot tell a level where the model
    is better than at ``sigma_max`` from one where it is worse, so it forgoes such gains:
    the weaker CT students of ``benchmarks/consistency.py`` improve on one step when
    re-noised to ``sigma ~ 1`` (digits) or on the Karras grid (moons); pass ``schedule=``
    for that. Cost: ``2 + PROBE_LEVELS`` batched calls, once per score-function object, SDE,
    event shape, device and dtype (cached; call ``model.score_fn()`` again after changing
    the weights).
    """
    if ctx is None or steps == 1 or consistency_of(ctx.score_fn) is None:
        return "karras"
    lo, hi = _model_range(ctx.score_fn)
    if hi < 8 * lo:  # too narrow a range for candidates in [2 sigma_min, sigma_max / 2]
        return "karras"
    candidates, changes = ctx.memo("consistency_levels", lambda: _probe(ctx))
    return _times_of(ctx.sde, _pick_levels(candidates, changes, steps - 1))


def _model_range(score_fn: object) -> tuple[float, float]:
    """The noise-level range ``[sigma_min, sigma_max]`` of a consistency model's score function."""
    inner = getattr(score_fn, "fn", score_fn)
    return float(getattr(inner, "sigma_min", 0.0)), float(getattr(inner, "sigma_max", math.inf))


@torch.no_grad()
def _probe(ctx: ScheduleContext) -> tuple[Tensor, Tensor]:
    """Candidate levels (ascending, float64) and the change a re-noise step to each makes.

    The change is the Fréchet distance between the one-step samples ``x1`` and ``f(x1 +
    sqrt(sigma^2 - sigma_min^2) z, sigma)``, over the distance between two one-step batches.
    """
    f = consistency_of(ctx.score_fn)
    assert f is not None
    lo, hi = _model_range(ctx.score_fn)
    hi = hi if math.isfinite(hi) else 80.0
    inner = getattr(ctx.score_fn, "fn", ctx.score_fn)
    y = getattr(inner, "y", None)
    rows = int(y.shape[0]) if isinstance(y, Tensor) and y.dim() > 0 else PROBE_ROWS
    gen = torch.Generator().manual_seed(_PROBE_SEED)
    size = math.prod(ctx.event_shape)
    proj = torch.randn(size, min(size, _PROJECTIONS), generator=gen, dtype=torch.float64)

    def noise() -> Tensor:
        z = torch.randn(rows, *ctx.event_shape, generator=gen)
        return z.to(device=ctx.device, dtype=ctx.dtype)

    def step(x_hat: Tensor, sigma: float) -> Tensor:
        ctx.calls += 1
        sig = torch.full((rows,), sigma, device=ctx.device, dtype=ctx.dtype)
        return f(x_hat, sig).detach().reshape(rows, -1).cpu().double() @ proj

    def flat(x: Tensor) -> Tensor:
        return x.reshape(rows, -1).cpu().double() @ proj

    x1 = f(hi * noise(), torch.full((rows,), hi, device=ctx.device, dtype=ctx.dtype))
    ctx.calls += 1
    floor = frechet_from_samples(flat(x1), step(hi * noise(), hi))
    candidates = torch.logspace(
        math.log10(2 * lo), math.log10(hi / 2), PROBE_LEVELS, dtype=torch.float64
    )
    changes = torch.tensor(
        [
            frechet_from_samples(flat(x1), step(x1 + math.sqrt(c * c - lo * lo) * noise(), c))
            for c in candidates.tolist()
        ],
        dtype=torch.float64,
    )
    return candidates, changes / max(floor, 1e-300)


def _pick_levels(candidates: Tensor, changes: Tensor, k: int) -> Tensor:
    """``k`` decreasing re-noise levels from the candidates and their changes.

    The first is the largest candidate below which every candidate's change is within
    :data:`PROBE_TOLERANCE`; the next ones lie two candidate spacings lower each (bounded
    below by ``sigma_min (1 + 2^-j)``, so they stay distinct).
    """
    bad = (changes > PROBE_TOLERANCE).nonzero()
    first = int(bad[0]) - 1 if len(bad) else len(candidates) - 1
    first = max(first, 0)
    ratio = float(candidates[1] / candidates[0]) ** 2
    lo = float(candidates[0]) / 2
    j = torch.arange(k, dtype=torch.float64)
    return torch.maximum(candidates[first] * ratio**-j, lo * (1 + 2.0**-j))


def _times_of(sde: SDE, levels: Tensor) -> Tensor:
    """``T``, the times of the decreasing ``levels``, and a final time below the last one."""
    t = sde.sigma_inv(levels)
    end = torch.clamp(torch.as_tensor(sde.eps, dtype=torch.float64), max=float(t[-1]) / 2)
    return torch.cat([torch.tensor([sde.T], dtype=torch.float64), t, end.reshape(1)])


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
    schedule=consistency_schedule,
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
    lo, hi = _model_range(ctx.score_fn) if f is not None else (0.0, math.inf)
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
