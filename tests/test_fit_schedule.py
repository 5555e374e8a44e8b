"""``scoresde.fit_schedule``: grids fitted to the model, checked against exact oracles.

The Gaussian oracle: for data ``N(mu, diag(lam))`` the probability-flow ODE moves each
coordinate of ``x / s - mu`` by the factor ``sqrt(lam + sigma^2)`` (Song et al. 2021, eq. 13
with the exact score), so its endpoint from ``x`` at ``t0`` is known in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from conftest import ring2d
from scoresde.sampling import FitResult, Schedule
from scoresde.targets import Gaussian

GEN = torch.Generator


def small_fit(score, sde, steps, sampler="fast", seed=0, **kw):  # noqa: ANN001, ANN201
    """A fit small enough for the unit suite (16 noises, a 32-step reference)."""
    kw = {"n": 16, "max_calls": 300, "reference_steps": 32, "event_shape": (2,), **kw}
    return S.fit_schedule(
        score, sde, steps, sampler=sampler, generator=GEN().manual_seed(seed), **kw
    )


def check_grid(sched: Schedule, sde: S.SDE, steps: int) -> None:
    times = sched.times
    assert times is not None and len(times) == steps + 1
    assert all(a > b for a, b in zip(times, times[1:], strict=False))
    assert times[0] <= sde.T and times[-1] >= sde.eps * (1 - 1e-6)
    assert sched.kind == "fitted" and sched.sde == repr(sde)


@pytest.mark.parametrize(
    ("sampler", "sde", "steps"),
    [
        ("fast", S.EDMSDE(), 4),
        ("fast", S.VPSDE(), 6),
        ("fast", S.RectifiedFlow(), 4),
        ("heun", S.VESDE(), 3),
        ("ode_heun", S.VPSDE(), 3),
        ("dpm_solver", S.SubVPSDE(), 4),
        ("euler_maruyama", S.VPSDE(), 5),
    ],
)
def test_fitted_times_decrease_strictly_within_eps_and_T(sampler, sde, steps) -> None:  # noqa: ANN001
    res = small_fit(ring2d().score_fn(sde), sde, steps, sampler, return_info=True)
    check_grid(res.schedule, sde, steps)
    assert res.loss_fitted <= res.loss_default
    out = S.sample(ring2d().score_fn(sde), sde, (4, 2), sampler=sampler, steps=steps,
                   schedule=res.schedule, return_info=True)  # fmt: skip
    torch.testing.assert_close(
        out.times.double(), torch.tensor(res.schedule.times).float().double()
    )


def gaussian_endpoint(target: Gaussian, sde: S.SDE, x: torch.Tensor, t0: float) -> torch.Tensor:
    """The exact PF-ODE endpoint (noise level 0) from ``x`` at ``t0`` (diagonal covariance)."""
    t = torch.tensor(t0, dtype=torch.float64)
    lam, mu = target.covariances()[0].diagonal(), target.means[0]
    sig2 = float(sde.sigma(t)) ** 2
    return mu + (x / float(sde.scale(t)) - mu) * (lam / (lam + sig2)).sqrt()


def test_gaussian_fitted_grid_is_no_worse_than_the_default_against_the_exact_endpoint() -> None:
    sde = S.EDMSDE()
    target = Gaussian([0.5, -1.0, 2.0, 0.0], variance=[0.01, 0.05, 0.3, 1.0])
    score = target.score_fn(sde)
    res = S.fit_schedule(score, sde, 4, n=256, generator=GEN().manual_seed(1), event_shape=(4,),
                         dtype=torch.float64, max_calls=600, reference_steps=48,
                         return_info=True)  # fmt: skip
    assert res.loss_fitted < res.loss_default  # the search does move the grid
    errors = []
    for sched in (None, res.schedule):  # fresh noises, not those of the fit
        t0 = res.default_times[0]
        x = torch.randn(400, 4, generator=GEN().manual_seed(9), dtype=torch.float64) * t0
        out = S.sample(score, sde, (400, 4), sampler="fast", steps=4, schedule=sched, x_init=x)
        errors.append(float((out - gaussian_endpoint(target, sde, x, t0)).pow(2).mean()))
    assert errors[1] <= errors[0], errors


def test_reproducible_with_a_generator() -> None:
    sde, score = S.EDMSDE(), ring2d().score_fn(S.EDMSDE())
    a, b = small_fit(score, sde, 4, seed=3), small_fit(score, sde, 4, seed=3)
    assert a == b
    stoch = [small_fit(score, sde, 3, "ddim", seed=5, eta=1.0) for _ in range(2)]
    assert stoch[0] == stoch[1]


class Counting:
    """An exact score counting its batched calls (its ``denoise`` too)."""

    def __init__(self, fn: S.ScoreWithDenoiser) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x, t)

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn.denoise(x, t)


@pytest.mark.parametrize(
    ("sampler", "sde", "budget"),
    [("fast", S.VPSDE(), 250), ("heun", S.EDMSDE(), 200), ("fast", S.RectifiedFlow(), 180)],
)
def test_call_budget_is_kept(sampler: str, sde: S.SDE, budget: int) -> None:
    score = Counting(ring2d().score_fn(sde))
    res = small_fit(score, sde, 5, sampler, max_calls=budget, return_info=True)
    assert isinstance(res, FitResult)
    assert score.calls == res.calls <= budget
    assert res.calls > budget - 2 * 12  # the search spends what it is given (one run: <= 11)
    with pytest.raises(ValueError, match="max_calls=50 is below"):
        small_fit(score, sde, 5, sampler, max_calls=50)


def test_default_budget_is_2000_calls() -> None:
    sde = S.EDMSDE()
    score = Counting(ring2d().score_fn(sde))
    S.fit_schedule(score, sde, 9, n=8, generator=GEN().manual_seed(0), event_shape=(2,))
    assert 2000 - 2 * 11 < score.calls <= 2000


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"steps": True}, ValueError, "steps must be an integer >= 1"),
        ({"sampler": "fsat"}, ValueError, "Did you mean 'fast'"),
        ({"sampler": "ode"}, ValueError, "sampler 'ode' is adaptive"),
        ({"event_shape": 2}, TypeError, "event_shape must be a tuple"),
        ({"event_shape": (0,)}, ValueError, "event_shape must hold positive ints"),
        ({"event_shape": (2.0,)}, ValueError, "event_shape must hold positive ints"),
        ({"event_shape": (3,)}, ValueError, "score_fn|shape|size"),
        ({"n": 1}, ValueError, "n must be an integer >= 2"),
        ({"objective": "l1"}, ValueError, "unknown objective"),
        ({"eps": 2.0}, ValueError, "eps must lie in"),
        ({"sampler": "ancestral", "sde": S.RectifiedFlow()}, ValueError, "does not support"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs: dict, error: type, match: str) -> None:
    sde = kwargs.pop("sde", S.VPSDE())
    steps = kwargs.pop("steps", 3)
    with pytest.raises(error, match=match):
        small_fit(ring2d().score_fn(sde), sde, steps, **kwargs)


def test_a_fitted_schedule_is_checked_where_it_is_used() -> None:
    sde = S.VPSDE()
    sched = Schedule.from_times(torch.tensor([1.0, 0.3, 0.01]), sde, "fast")
    assert sched.times == pytest.approx((1.0, 0.3, 0.01)) and sched.sampler == "fast"
    torch.testing.assert_close(S.get_times(sde, 2, sched), torch.tensor([1.0, 0.3, 0.01]))
    with pytest.raises(ValueError, match="has 2 steps but steps=3: pass steps=2"):
        S.get_times(sde, 3, sched)
    with pytest.raises(ValueError, match="fitted for VPSDE.*not VESDE"):
        S.get_times(S.VESDE(), 2, sched)
    with pytest.raises(ValueError, match="leave eps unset"):
        S.get_times(sde, 2, sched, eps=0.01)
    with pytest.raises(ValueError, match="t must lie in"):
        S.get_times(sde, 2, Schedule.from_times([2.0, 0.5, 0.1]))
    for bad in ({"times": (1.0, 0.5)}, {"kind": "fitted"}):
        with pytest.raises(ValueError, match="Schedule.from_times"):
            Schedule(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decrease strictly"):
        Schedule.from_times([1.0, 1.0])
    with pytest.raises(ValueError, match="fix both ends"):
        Schedule("fitted", times=(1.0, 0.1), eps=0.01)
    assert Schedule("karras").times is None and math.isclose(Schedule().rho, 7.0)
