"""``fast``'s schedule chosen from the model: the noise-level probe and the range it gives."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import scoresde as S
from scoresde.metrics import mode_report
from scoresde.sampling.base import ScheduleContext
from scoresde.sampling.end_level import END_MULTIPLES, END_REFERENCE_STEPS
from scoresde.sampling.fast import FIXED_RANGES, fast_schedule
from scoresde.sampling.profile import PROBE_ROWS, noise_profile, sigma_range
from scoresde.targets import GaussianMixture

EDM = S.EDMSDE(0.002, 80.0)


def ctx_for(fn: object, sde: S.SDE, d: int, batch: int = 256) -> ScheduleContext:
    return ScheduleContext(fn, sde, (d,), batch, torch.device("cpu"), torch.float64)  # type: ignore[arg-type]


def gaussian(mean: float, std: float, d: int = 8) -> GaussianMixture:
    return GaussianMixture(torch.full((1, d), mean, dtype=torch.float64), torch.tensor([std**2]))


def modes(scale: float, width: float) -> GaussianMixture:
    """Two unequal modes in 2-D at ``scale``, each of std ``scale * width``."""
    means = scale * torch.tensor([[1.0, 0.5], [-1.0, -0.5]], dtype=torch.float64)
    return GaussianMixture(means, torch.full((2,), (scale * width) ** 2), weights=[0.7, 0.3])


def test_profile_matches_the_gaussian_noise_fraction() -> None:
    """``r(sigma) = sigma^2 / (v + sigma^2)`` and the RMS ``sqrt(mu^2 + v)`` of N(mu, v I)."""
    g = gaussian(0.5, 0.3)
    prof = noise_profile(ctx_for(g.score_fn(EDM), EDM, 8))
    want = prof.sigmas**2 / (0.09 + prof.sigmas**2)
    # 128 rows x 8 coordinates: the mean square has a relative error ~ sqrt(2 / 1024) = 0.044
    assert float((prof.fraction - want).abs().max()) < 0.06
    assert prof.rms == pytest.approx(math.sqrt(0.25 + 0.09), rel=0.1)
    assert prof.calls == 24 and bool((prof.sigmas.diff() < 0).all())


@pytest.mark.parametrize("steps", [4, 9, 19])
def test_range_scales_with_the_data(steps: int) -> None:
    """The sampler is scale-equivariant in sigma, so the chosen range must scale with the data."""
    lo1, hi1 = _range(modes(1.0, 0.05), steps)
    lo10, hi10 = _range(modes(10.0, 0.05), steps)
    assert lo10 / lo1 == pytest.approx(10.0, rel=0.25)
    if hi1 is not None and hi10 is not None:
        assert hi10 / hi1 == pytest.approx(10.0, rel=0.25)


def _range(gm: GaussianMixture, steps: int) -> tuple[float, float | None]:
    """The end and start noise levels of ``fast``'s grid (``None``: it starts at ``T``)."""
    times = fast_schedule(steps, ctx_for(gm.score_fn(EDM), EDM, 2))
    assert isinstance(times, Tensor) and times.numel() == steps + 1
    assert bool((times.diff() < 0).all()) and EDM.eps <= float(times[-1])
    sig = EDM.sigma(times)  # the EDM SDE: sigma = t
    return float(sig[-1]), None if float(times[0]) == EDM.T else float(sig[0])


def test_range_follows_the_finest_detail() -> None:
    """Narrower modes at the same scale: a lower end level."""
    wide, _ = _range(modes(1.0, 0.2), 9)
    narrow, _ = _range(modes(1.0, 0.01), 9)
    assert narrow < wide / 5


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_chosen_grid_beats_the_fixed_range_on_data_far_from_unit_scale(scale: float) -> None:
    """Data at scale 0.1 or 10: the fixed range (for unit scale) loses on per-mode Fréchet."""
    gm, n = modes(scale, 0.05), 4000
    fn = gm.score_fn(EDM)
    fixed = FIXED_RANGES[12]
    out = {}
    for name, sched in (("model", None), ("fixed", S.Schedule("logsnr", sigma_min=fixed[0]))):
        x = S.sample(fn, EDM, (n, 2), sampler="fast", steps=9, schedule=sched,
                     generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fmt: skip
        out[name] = mode_report(gm, x).frechet_weighted
    assert out["model"] < 0.5 * out["fixed"]


def test_probe_runs_once_per_score_function_and_spares_the_generator() -> None:
    gm = modes(1.0, 0.05)
    calls = {"n": 0}

    def fn(x: Tensor, t: Tensor) -> Tensor:
        calls["n"] += 1
        return gm.marginal_score(x, t, EDM)

    def run() -> Tensor:
        return S.sample(fn, EDM, (16, 2), sampler="fast", steps=5, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3))  # fmt: skip

    first = run()
    # the probe, the end-level fit (a reference of 32 steps and five candidate grids, each with
    # its final step), then 5 steps and the final step
    fit = END_REFERENCE_STEPS + 1 + len(END_MULTIPLES) * 6
    assert calls["n"] == 24 + fit + 6
    calls["n"] = 0
    second = run()
    assert calls["n"] == 6
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_score_function_tied_to_the_batch_is_probed_at_the_batch_size() -> None:
    gm, batch = modes(1.0, 0.05), PROBE_ROWS + 72

    def fn(x: Tensor, t: Tensor) -> Tensor:
        if x.shape[0] != batch:
            raise RuntimeError(f"labels hold {batch} rows, got {x.shape[0]}")
        return gm.marginal_score(x, t, EDM)

    x = S.sample(fn, EDM, (batch, 2), sampler="fast", steps=5, dtype=torch.float64,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert bool(torch.isfinite(x).all())


def test_a_denoiser_that_removes_nothing_falls_back_to_the_fixed_range() -> None:
    def zero(x: Tensor, t: Tensor) -> Tensor:  # D(x) = x at every level: no fall of r
        return torch.zeros_like(x)

    sched = fast_schedule(9, ctx_for(zero, EDM, 3))
    assert isinstance(sched, S.Schedule)
    assert (sched.sigma_min, sched.sigma_max) == FIXED_RANGES[12]
    assert sigma_range(noise_profile(ctx_for(zero, EDM, 3)), r_min=0.2, start_factor=None) is None


def test_non_finite_score_while_probing_is_a_clear_error() -> None:
    def bad(x: Tensor, t: Tensor) -> Tensor:
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match="probed its noise range"):
        noise_profile(ctx_for(bad, EDM, 3))


@pytest.mark.parametrize("sde", [S.VPSDE(), S.VESDE(), S.RectifiedFlow()], ids=type)
def test_every_sde_gets_a_valid_model_chosen_grid(sde: S.SDE) -> None:
    gm = modes(1.0, 0.05)
    res = S.sample(gm.score_fn(sde), sde, (64, 2), sampler="fast", steps=9, return_info=True,
                   generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fmt: skip
    assert bool((res.times.diff() < 0).all()) and bool(torch.isfinite(res.samples).all())
    assert float(res.times[-1]) >= sde.eps
