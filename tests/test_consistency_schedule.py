"""The consistency sampler's default multistep schedule: re-noise levels read off the model.

Exact oracles: the consistency function of Gaussian data is the PF-ODE map in closed form; a
copy of it that is wrong on a band of noise levels stands for a model that is inaccurate at
intermediate levels (what the benchmarks find in distilled students).
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde
from scoresde.sampling.base import ScheduleContext
from scoresde.sampling.consistency import PROBE_LEVELS, consistency_schedule
from scoresde.sde import EDMSDE, SDE, VPSDE, RectifiedFlow, ScoreWithDenoiser
from scoresde.targets import GaussianMixture

MU, VAR, LO, HI = 0.7, 0.25, 0.002, 80.0
BAND, SHIFT = (0.5, 20.0), 1.0


class Counting(ScoreWithDenoiser):
    """The exact score of N(MU, VAR I) on 2-D with its consistency function, optionally off by
    ``SHIFT`` on the noise levels of ``BAND``; counts the consistency evaluations."""

    def __init__(self, sde: SDE, defect: bool) -> None:
        exact = GaussianMixture([[MU, MU]], variances=[VAR]).score_fn(sde)
        super().__init__(exact, exact.denoise)
        self.sigma_min, self.sigma_max, self.defect, self.calls = LO, HI, defect, 0

    def consistency(self, x_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        ratio = torch.sqrt((VAR + LO**2) / (VAR + sigma**2)).reshape(-1, 1)
        out = MU + ratio * (x_hat - MU)
        if self.defect:
            out = out + SHIFT * ((sigma > BAND[0]) & (sigma < BAND[1])).to(out).reshape(-1, 1)
        return out


def _ctx(fn: object, sde: SDE, dtype: torch.dtype = torch.float32) -> ScheduleContext:
    return ScheduleContext(fn, sde, (2,), batch=64, device=torch.device("cpu"), dtype=dtype)  # type: ignore[arg-type]


def _grid(steps: int, ctx: ScheduleContext) -> torch.Tensor:
    times = consistency_schedule(steps, ctx)
    assert isinstance(times, torch.Tensor) and times.dtype == torch.float64
    return times


@pytest.mark.parametrize("sde", [EDMSDE(), VPSDE(), RectifiedFlow()], ids=["edm", "vp", "rf"])
@pytest.mark.parametrize("defect", [False, True])
def test_levels_are_decreasing_inside_the_model_range_and_deterministic(
    sde: SDE, defect: bool
) -> None:
    state = torch.random.get_rng_state()
    for steps in (2, 3, 5):
        first, second = Counting(sde, defect), Counting(sde, defect)
        times = _grid(steps, _ctx(first, sde))
        assert times.numel() == steps + 1
        assert torch.equal(times, _grid(steps, _ctx(second, sde)))
        assert times[0] == sde.T and bool((times.diff() < 0).all()) and times[-1] > 0
        levels = sde.sigma(times[1:steps])
        assert bool((levels > LO).all() and (levels < HI).all())
        assert first.calls == 2 + PROBE_LEVELS  # the probe's batched calls
        if defect:  # every re-noise level lies below the band where the model is wrong
            assert float(levels.max()) < BAND[0]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not used


def test_probe_is_cached_per_score_function_and_counted() -> None:
    sde, fn = EDMSDE(), Counting(EDMSDE(), defect=True)
    ctx = _ctx(fn, sde)
    a = _grid(2, ctx)
    assert ctx.calls == fn.calls == 2 + PROBE_LEVELS
    b = _grid(4, _ctx(fn, sde))
    assert fn.calls == 2 + PROBE_LEVELS  # the same object: no new probe
    assert torch.allclose(sde.sigma(a[1]), sde.sigma(b[1]))  # the same first level


def test_one_step_plain_scores_and_user_schedules_keep_their_grids() -> None:
    sde = EDMSDE()
    fn = Counting(sde, defect=False)
    assert consistency_schedule(1, _ctx(fn, sde)) == "karras" and fn.calls == 0
    plain = GaussianMixture([[MU, MU]], variances=[VAR]).score_fn(sde)
    assert consistency_schedule(3, _ctx(plain, sde)) == "karras"
    narrow = Counting(sde, defect=False)
    narrow.sigma_min, narrow.sigma_max = 1.0, 4.0  # no room for candidate levels
    assert consistency_schedule(2, _ctx(narrow, sde)) == "karras" and narrow.calls == 0
    times = torch.tensor([80.0, 0.1, 0.002], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    res = scoresde.sample(fn, sde, (32, 2), sampler="consistency", steps=2, schedule=times,
                          generator=gen, return_info=True)  # fmt: skip
    assert fn.calls == 2 and res.nfe == 2  # a user schedule: no probe
    assert torch.equal(res.times, times.to(res.times))


def test_default_beats_the_karras_grid_where_the_model_is_wrong() -> None:
    """A model off by SHIFT on sigma in BAND: the Karras grid re-noises 2- and 3-step sampling
    into the band (its mean is off by about SHIFT); the default avoids it (exact up to noise)."""
    sde, n = EDMSDE(), 4000
    for steps in (2, 3):
        means = {}
        for sched in (None, "karras"):
            x = scoresde.sample(Counting(sde, defect=True), sde, (n, 2), sampler="consistency",
                                steps=steps, schedule=sched, dtype=torch.float64,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
            means[sched] = float((x.mean(0) - MU).abs().max())
        assert means[None] < 5 * math.sqrt(VAR / n)  # 5 standard errors
        assert means["karras"] > 0.5 * SHIFT


def test_probe_leaves_the_callers_generator_alone() -> None:
    """The default schedule gives the same samples as its grid passed explicitly: the probe
    draws from its own generator, not the caller's."""
    sde = EDMSDE()
    times = _grid(2, _ctx(Counting(sde, defect=True), sde, torch.float64))
    x = [
        scoresde.sample(
            Counting(sde, defect=True),
            sde,
            (256, 2),
            sampler="consistency",
            steps=2,
            schedule=sched,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        for sched in (None, times)
    ]
    assert torch.equal(x[0], x[1])
