"""``sampler="fast"``: the recommended few-step sampler (NFE 5-20).

DPM-Solver++(3M) (2M up to 5 steps) with the UniC-style corrector on a grid chosen from the
model (:func:`fast_schedule`) that stops at a noise level ``sigma_min > 0`` and ends with the
Tweedie step to noise level 0; it starts from the Gaussian matching the noised data's mean and
variance (``matched_start``) and integrates the flow of the data's Gaussian part (mean and
leading covariance directions, read from the model) exactly (:mod:`.split`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .base import Context, ScheduleContext, register
from .dpm_solver import dpm_solver
from .end_level import END_FIT_MAX_STEPS, fitted_end
from .profile import NoiseProfile, activity_levels, cached_profile, sigma_range
from .schedules import Schedule
from .split import split_dpm_solver

__all__ = ["fast", "fast_schedule"]


FIXED_RANGES: dict[int | None, tuple[float, float | None]] = {
    5: (0.15, 40.0),
    12: (0.04, None),
    None: (0.02, None),
}
"""The model-free ranges ``(sigma_min, sigma_max)`` by largest step count (``None``: more)."""

PROFILE_RULES: dict[int | None, tuple[float, float | None, float]] = {
    5: (0.5, 10.0, 0.5),
    12: (0.2, 20.0, 1.0),
    None: (0.02, 20.0, 1.0),
}
"""The model-chosen grids by largest step count: ``(r_min, start_factor, floor)``.

``r_min`` and ``start_factor`` go to :func:`~scoresde.sampling.profile.sigma_range`,
``floor`` to :func:`~scoresde.sampling.profile.activity_levels`. Chosen on random Gaussian
mixtures (seeds 100-199 of ``benchmarks/samplers_general.py``) and measured on 24 others
(seeds 0-23); see ``docs/design.md`` and ``benchmarks/RESULTS.md``."""


SECOND_ORDER_STEPS = 5
"""Up to this many steps ``fast`` is second order (DPM-Solver++(2M) + corrector)."""


def _by_steps(table: dict[int | None, Any], steps: int) -> Any:
    """The entry of ``table`` for ``steps`` (the first limit ``>= steps``, else ``None``'s)."""
    for limit, value in table.items():
        if limit is not None and steps <= limit:
            return value
    return table[None]


def fast_schedule(steps: int, ctx: ScheduleContext | None = None) -> Schedule | Tensor:
    """The grid ``"fast"`` uses unless ``schedule=`` is given: chosen from the model.

    Given the model (``ctx``, as :func:`scoresde.sample` passes it), the grid comes from the
    model's :func:`~scoresde.sampling.profile.noise_profile` (a probe of its denoiser at 24
    noise levels on 128 rows, once per score function object, SDE and shape): it ends where
    the denoiser's noise fraction ``r(sigma)`` falls to ``r_min`` (the data's finest scale),
    starts at ``start_factor`` times the data's RMS size (or at ``T``, if that is lower), and
    places its levels by :func:`~scoresde.sampling.profile.activity_levels`, denser where
    ``r`` changes (:data:`PROFILE_RULES`); the sampler then takes the final step to 0. For at
    most 12 steps the end level is then fitted among 1/4-4 times the rule's
    (:func:`~.end_level.fitted_end`: a 32-step reference and each candidate grid on 64 rows of
    its own seed, about ``32 + 5 * steps`` calls once per model and step count).
    On a flow path (``s(T) = 0``) the grid starts at ``T`` exactly and is uniform in log-SNR
    down to the chosen end. Without a model, or when the model's denoiser does not behave as
    a denoiser (an untrained network), it is uniform in log-SNR between levels for data of
    roughly unit scale (:data:`FIXED_RANGES`).
    """
    if ctx is None:
        return _fixed(steps)
    r_min, factor, floor = _by_steps(PROFILE_RULES, steps)
    flow = ctx.sde.zero_terminal_snr
    prof = cached_profile(ctx)
    chosen = sigma_range(prof, r_min=r_min, start_factor=None if flow else factor)
    if chosen is None:
        return _fixed(steps)
    lo, hi = chosen
    if flow:
        return Schedule("logsnr", sigma_min=lo)
    top = float(prof.sigmas[0]) if hi is None else hi
    sde = ctx.sde

    def grid(end: float) -> Tensor:
        times = sde.sigma_inv(activity_levels(prof, top, end, steps, floor=floor))
        times = times.clamp(sde.eps, sde.T)
        if hi is None:
            times[0] = sde.T
        return times

    if steps <= END_FIT_MAX_STEPS:  # the rule's grid gives the fit its start, once (cached)
        lo = ctx.memo(f"fast_end_{steps}", lambda: _fit_end(ctx, prof, lo, grid(lo)[0], grid))
    return grid(lo)


def _fit_end(
    ctx: ScheduleContext,
    prof: NoiseProfile,
    lo: float,
    start: Tensor,
    grid: Callable[[float], Tensor],
) -> float:
    """:func:`~.end_level.fitted_end`, or the rule's ``lo`` if the fit cannot run.

    A score function that only accepts the caller's batch size (as the probe falls back to it)
    cannot be run on the fit's rows; it keeps the rule's end level.
    """
    try:
        return fitted_end(ctx, prof, lo, start, grid)
    except (RuntimeError, ValueError, IndexError):
        return lo


def _fixed(steps: int) -> Schedule:
    lo, hi = _by_steps(FIXED_RANGES, steps)
    return Schedule("logsnr", sigma_min=lo, sigma_max=hi)


@register(
    "fast", order=3, stochastic=False, denoise=True, schedule=fast_schedule, matched_start=True
)
def fast(ctx: Context, x: Tensor, times: Tensor, *, split: bool = True) -> Tensor:
    """The recommended few-step sampler (NFE 5-20): DPM-Solver++(3M) + corrector.

    DPM-Solver++(3M) with the UniC-style corrector on :func:`fast_schedule`; up to
    :data:`SECOND_ORDER_STEPS` steps DPM-Solver++(2M) with the corrector, which held up better
    on the uneven model-chosen grids of so few steps.

    ``steps`` solver steps cost ``steps`` score evaluations, plus one for the final step to
    noise level 0 (``denoise=True``): ``steps=9`` is NFE 10. That step is Tweedie's up to 5
    steps; with more (and ``split``) it extrapolates the denoiser along the path in
    ``sigma^2`` from the last two nodes (:meth:`~.base.Context.final_denoise`), which keeps
    modes wider than the last noise level from shrinking.

    Options:
        split: integrate the flow of the data's Gaussian part (its mean and leading covariance
            directions, read from the model's noise profile) exactly and interpolate only the
            rest of the denoiser (:func:`.split.split_dpm_solver`); the mode masses of few-step
            samples come out much closer to the data's. Without a profile (an untrained
            network, a flow path) or with ``split=False``: plain DPM-Solver++.
    """
    order = 2 if times.numel() - 1 <= SECOND_ORDER_STEPS else 3
    gauss = ctx.gaussian
    if split and gauss is not None:  # None on flow paths (sigma(T) = inf) and without a profile
        return split_dpm_solver(ctx, x, times, gauss, order=order)
    return dpm_solver(ctx, x, times, order=order, corrector=True)
