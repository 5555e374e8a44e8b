"""``fast``'s end level fitted per model (:mod:`scoresde.sampling.end_level`)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import scoresde as S
from scoresde.sampling.base import ScheduleContext
from scoresde.sampling.end_level import END_FIT_MAX_STEPS, END_MULTIPLES
from scoresde.sampling.fast import PROFILE_RULES, _by_steps, fast_schedule
from scoresde.sampling.profile import noise_profile, sigma_range
from scoresde.targets import GaussianMixture

EDM = S.EDMSDE(0.002, 80.0)
F64 = torch.float64


def ctx_for(fn: object, d: int) -> ScheduleContext:
    return ScheduleContext(fn, EDM, (d,), 256, torch.device("cpu"), F64)  # type: ignore[arg-type]


def wide_gaussian() -> GaussianMixture:
    """N(0, 25 I) in 4-D: the rule ends where r = 0.5, i.e. at sigma = 5, the data's own std."""
    return GaussianMixture(torch.zeros(1, 4, dtype=F64), torch.tensor([25.0], dtype=F64))


def end_of(gm: GaussianMixture, steps: int) -> tuple[float, float]:
    """The fitted grid's end level and the rule's."""
    ctx = ctx_for(gm.score_fn(EDM), gm.dim)
    times = fast_schedule(steps, ctx)
    assert isinstance(times, Tensor)
    r_min, factor, _ = _by_steps(PROFILE_RULES, steps)
    chosen = sigma_range(noise_profile(ctx), r_min=r_min, start_factor=factor)
    assert chosen is not None
    return float(EDM.sigma(times[-1])), chosen[0]


def test_a_wide_gaussian_gets_a_lower_end_and_wider_samples() -> None:
    """Tweedie's step at sigma 5 shrinks N(0, 25) to std 5 / sqrt(2) = 3.5; a lower end less.

    The fit must pick one of the candidates, below the rule's level, and its samples must be
    closer to std 5 (measured: end 1.29 against the rule's 5.16; std 5.08 against 3.46 for a
    log-uniform grid to the rule's end; 8000 x 4 values, std error about 0.02).
    """
    gm = wide_gaussian()
    end, rule = end_of(gm, 4)
    assert end < rule
    assert any(end == pytest.approx(m * rule, rel=1e-9) for m in END_MULTIPLES)
    fitted = S.sample(gm.score_fn(EDM), EDM, (8000, 4), sampler="fast", steps=4,
                      generator=torch.Generator().manual_seed(0), dtype=F64)  # fmt: skip
    ctx = ctx_for(gm.score_fn(EDM), 4)
    r_min, factor, _ = _by_steps(PROFILE_RULES, 4)
    lo, hi = sigma_range(noise_profile(ctx), r_min=r_min, start_factor=factor) or (0.0, None)
    rule_times = EDM.sigma_inv(torch.logspace(math.log10(hi or 80.0), math.log10(lo), 5, dtype=F64))
    ruled = S.sample(gm.score_fn(EDM), EDM, (8000, 4), sampler="fast", schedule=rule_times,
                     generator=torch.Generator().manual_seed(0), dtype=F64)  # fmt: skip
    assert abs(float(fitted.std()) - 5.0) < abs(float(ruled.std()) - 5.0) - 0.5


def test_the_fit_is_deterministic_decreasing_and_leaves_the_generator_alone() -> None:
    means = torch.tensor([[3.0, 0.0, 1.0], [-2.0, 1.0, 0.0], [0.0, -3.0, -1.0]], dtype=F64)
    gm = GaussianMixture(means, torch.tensor([0.1, 0.5, 0.02], dtype=F64), weights=[0.5, 0.3, 0.2])
    for steps in (4, 9):
        a = fast_schedule(steps, ctx_for(gm.score_fn(EDM), 3))
        b = fast_schedule(steps, ctx_for(gm.score_fn(EDM), 3))  # a new function: no cache
        assert isinstance(a, Tensor) and isinstance(b, Tensor)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert bool((a.diff() < 0).all()) and EDM.eps <= float(a[-1]) and float(a[0]) <= EDM.T
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    fn = gm.score_fn(EDM)
    S.sample(fn, EDM, (8, 3), sampler="fast", steps=4, dtype=F64, generator=gen)
    again = torch.Generator().manual_seed(5)
    S.sample(fn, EDM, (8, 3), sampler="fast", steps=4, dtype=F64, generator=again)
    assert torch.equal(gen.get_state(), again.get_state()) and not torch.equal(
        state, gen.get_state()
    )
    # nor the global generator (a first call per step count runs the fit)
    torch.manual_seed(0)
    want = torch.rand(1)
    torch.manual_seed(0)
    assert isinstance(fast_schedule(7, ctx_for(gm.score_fn(EDM), 3)), Tensor)
    assert torch.equal(torch.rand(1), want)


def test_more_steps_keep_the_rule() -> None:
    """Above END_FIT_MAX_STEPS steps the end level is the rule's (no fit calls)."""
    gm = wide_gaussian()
    calls = {"n": 0}

    def fn(x: Tensor, t: Tensor) -> Tensor:
        calls["n"] += 1
        return gm.marginal_score(x, t, EDM)

    steps = END_FIT_MAX_STEPS + 1
    S.sample(fn, EDM, (16, 4), sampler="fast", steps=steps, dtype=F64)
    assert calls["n"] == 24 + steps + 1  # the probe, the steps and the final step
    end, rule = end_of(gm, steps)
    assert end == pytest.approx(rule, rel=1e-9)
