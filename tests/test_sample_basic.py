"""First samplers with the exact score recover a 4-mode mixture under every SDE."""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from conftest import four_mode_mixture
from scoresde.metrics import mode_report


@pytest.mark.parametrize(("sampler", "steps"), [("euler_maruyama", 1000), ("ode_heun", 200)])
def test_exact_score_recovers_mixture(std_sde: S.SDE, sampler: str, steps: int) -> None:
    target = four_mode_mixture()
    n = 10000
    x = S.sample(
        target.score_fn(std_sde),
        std_sde,
        (n, 2),
        sampler=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (n, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    rep = mode_report(target, x)
    # sampling floor of the TV for n = 10^4 and these weights is about 0.007
    assert rep.tv <= 0.02, rep.mass
    # per-mode mean/covariance: squared Frechet distance, floor about 3e-3 per mode
    assert float(rep.frechet.max()) <= 0.03, rep.frechet


def test_same_seed_same_samples_and_dtype() -> None:
    sde = S.VPSDE()
    target = four_mode_mixture()
    kw = {"sampler": "euler_maruyama", "steps": 50, "dtype": torch.float64}
    a = S.sample(
        target.score_fn(sde), sde, (64, 2), generator=torch.Generator().manual_seed(7), **kw
    )
    b = S.sample(
        target.score_fn(sde), sde, (64, 2), generator=torch.Generator().manual_seed(7), **kw
    )
    assert a.dtype == torch.float64 and torch.equal(a, b)


def test_unknown_sampler_suggests_a_name() -> None:
    sde = S.VPSDE()
    with pytest.raises(ValueError, match="Did you mean 'euler_maruyama'"):
        S.sample(lambda x, t: -x, sde, (4, 2), sampler="euler_maruyam")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"schedule": "linear"}, "schedule"),
        ({"schedule": torch.tensor([0.1, 0.5])}, "decreasing"),
        ({"bogus_option": 1}, "unknown option"),
        ({"x_init": torch.zeros(3, 2)}, "x_init"),
    ],
)
def test_bad_sampling_arguments(kwargs: dict, match: str) -> None:
    sde = S.VPSDE()
    with pytest.raises(ValueError, match=match):
        S.sample(lambda x, t: -x, sde, (4, 2), **kwargs)


def test_schedules_are_decreasing_with_exact_ends(any_sde: S.SDE) -> None:
    for name in S.sampling.SCHEDULES:
        times = S.get_times(any_sde, 10, name, dtype=torch.float64)
        assert times.shape == (11,) and bool((times.diff() < 0).all())
        assert float(times[0]) == pytest.approx(any_sde.T)
        assert float(times[-1]) == pytest.approx(any_sde.eps)
