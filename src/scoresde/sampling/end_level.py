"""Where ``fast``'s grid ends, chosen per model by a small fit of that one level.

The profile's rule (the level where the mean noise fraction falls to ``r_min``) is one number
for every data set, but the best end level of a few-step grid differs by a factor of 4 either
way between targets: modes much wider than the others want a lower end (Tweedie's final step
shrinks every mode wider than ``sigma_N``), fine detail among wide structure a higher one (more
of the few steps where the structure forms). On random Gaussian mixtures (tuning seeds 100-175
of ``benchmarks/samplers_general.py``) the best of ``END_MULTIPLES`` times the rule's level per
target would win over the best peer on 71 (NFE 5) and 69 (NFE 10) of 76 targets, the rule
alone on 62 and 65.

:func:`fitted_end` picks among those candidates the way :func:`scoresde.fit_schedule` fits a
whole grid, on a budget: ``END_ROWS`` noises drawn (own seed) from ``fast``'s matched start,
a ``END_REFERENCE_STEPS``-step solve of them as the reference, and each candidate grid's samples
scored by their mean RMS distance to it (LD3's matching loss). ``END_REFERENCE_STEPS + 1 +
len(END_MULTIPLES) * (steps + 1)`` score calls on ``END_ROWS`` rows (each run ends with its
final step), once per model and step count
(cached with the profile); only for grids of at most ``END_FIT_MAX_STEPS`` steps, where a
32-step reference is far more accurate than the candidates (at NFE 20 the choice was noise:
44 vs 45 wins of 60).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .api import sample
from .base import ScheduleContext
from .profile import NoiseProfile, StartMoments

__all__ = ["fitted_end", "END_MULTIPLES", "END_ROWS", "END_REFERENCE_STEPS", "END_FIT_MAX_STEPS"]

END_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)
"""The candidate end levels, as multiples of the rule's."""
END_ROWS = 64
"""The noises the choice is fitted on (64 and 128 chose alike on the tuning seeds)."""
END_REFERENCE_STEPS = 32
"""Steps of the reference solve (32 and 96 chose alike on the tuning seeds at NFE 5)."""
END_FIT_MAX_STEPS = 12
"""Grids of more steps keep the rule's end level."""
END_SEED = 20_261_130
"""The fit's own seed (the caller's generator is not touched)."""


def fitted_end(
    ctx: ScheduleContext,
    profile: NoiseProfile,
    lo: float,
    start: Tensor,
    grid: Callable[[float], Tensor],
) -> float:
    """The end level among ``END_MULTIPLES * lo`` whose grid best matches a reference solve.

    ``start`` is the grid's first time, ``grid(level)`` the sampler's times ending at
    ``level``. The candidates are kept within ``[1.5 sigma(eps), sigma(start) / 4]`` (``lo``
    itself always is one). Returns ``lo`` when the profile has no data Gaussian to start from
    (nothing to fit against).
    """
    sde = ctx.sde
    top = float(sde.sigma(start))
    bottom = 1.5 * float(sde.sigma(torch.tensor(sde.eps, dtype=torch.float64)))
    cands = sorted({lo} | {min(max(lo * m, bottom), top / 4) for m in END_MULTIPLES})
    if len(cands) == 1 or profile.gaussian is None:
        return lo
    fn = getattr(ctx.score_fn, "fn", ctx.score_fn)  # the caller's: its profile is cached
    shape = (END_ROWS, *ctx.event_shape)
    x0 = _matched_noise(ctx, profile, start, shape)

    def run(times: Tensor) -> Tensor:  # own generator: no draw from the global one either
        gen = torch.Generator().manual_seed(END_SEED)
        return sample(fn, sde, shape, sampler="fast", schedule=times, x_init=x0,
                      generator=gen, device=ctx.device, dtype=ctx.dtype)  # fmt: skip

    levels = torch.logspace(
        math.log10(top), math.log10(bottom), END_REFERENCE_STEPS + 1, dtype=torch.float64
    )
    ref_times = sde.sigma_inv(levels).clamp(sde.eps, sde.T)
    ref_times[0] = start
    ref = run(ref_times).reshape(END_ROWS, -1)
    losses = [float((run(grid(c)).reshape(END_ROWS, -1) - ref).square().mean(1).sqrt().mean())
              for c in cands]  # fmt: skip
    return cands[min(range(len(cands)), key=losses.__getitem__)]


def _matched_noise(
    ctx: ScheduleContext, profile: NoiseProfile, start: Tensor, shape: tuple[int, ...]
) -> Tensor:
    """``shape`` draws (own seed) from ``fast``'s matched start at ``start``, in ``x``."""
    g = torch.Generator().manual_seed(END_SEED)
    z = torch.randn(shape, generator=g, dtype=torch.float64).to(ctx.device, ctx.dtype)
    moments = StartMoments(profile.mean, profile.var)
    return moments.draw(ctx.sde, start.reshape(1).double(), z)
