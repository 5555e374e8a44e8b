"""The sampler toolbox's contract: seeded batch-size independence, results, schedules, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import scoresde as S
from conftest import ring2d
from helpers import HostReads
from scoresde.sampling import CounterNoise, SampleResult, Schedule, available_samplers

STOCHASTIC = {
    "euler_maruyama": {},
    "reverse_diffusion": {},
    "ancestral": {},
    "pc": {},
    "pc_batch": {"batch_averaged": True},
    "langevin": {},
    "edm": {},
    "ddim": {"eta": 1.0},
    "dpm_solver_sde": {},
}


@pytest.mark.parametrize("key", sorted(STOCHASTIC))
def test_same_seed_same_sample_whatever_the_batch_size(key: str) -> None:
    sampler = "pc" if key == "pc_batch" else key
    sde, target = S.VPSDE(), ring2d()
    kw: dict[str, Any] = {"sampler": sampler, "steps": 20, **STOCHASTIC[key]}
    small = S.sample(
        target.score_fn(sde), sde, (5, 2), generator=torch.Generator().manual_seed(3), **kw
    )
    large = S.sample(
        target.score_fn(sde), sde, (64, 2), generator=torch.Generator().manual_seed(3), **kw
    )
    other = S.sample(
        target.score_fn(sde), sde, (5, 2), generator=torch.Generator().manual_seed(4), **kw
    )
    if key == "pc_batch":  # batch-averaged step sizes couple the samples by design
        assert not torch.allclose(small, large[:5])
    else:
        torch.testing.assert_close(small, large[:5], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(small, other)


def test_counter_noise_is_standard_normal_and_prefix_stable() -> None:
    noise = CounterNoise(12345)
    z = noise.randn((200_000, 4), torch.device("cpu"), torch.float64)
    assert abs(float(z.mean())) < 4 / (800_000**0.5)
    assert abs(float(z.var()) - 1) < 4 * (2 / 800_000) ** 0.5
    kurt = float((z**4).mean())
    assert abs(kurt - 3) < 0.05
    corr = torch.corrcoef(z.T)
    assert float((corr - torch.eye(4)).abs().max()) < 0.01
    # successive draws differ, the same (seed, call) repeats, row i ignores the batch size
    again = CounterNoise(12345)
    torch.testing.assert_close(again.randn((7, 4), torch.device("cpu"), torch.float64), z[:7])
    assert not torch.allclose(noise.randn((7, 4), torch.device("cpu"), torch.float64), z[:7])


def test_counter_noise_has_no_pinned_elements_across_calls() -> None:
    """Each element's noise over successive calls is i.i.d. standard normal (no stuck values)."""
    noise = CounterNoise(777)
    z = torch.stack([noise.randn((400, 2), torch.device("cpu"), torch.float64) for _ in range(300)])
    assert float(z.mean(0).abs().max()) * 300**0.5 < 5.0  # max of 800 standard normals
    assert float((z[1:] * z[:-1]).mean(0).abs().max()) * 299**0.5 < 5.0
    v = z.var(0)
    assert 0.7 < float(v.min()) and float(v.max()) < 1.35


def test_return_info_trajectory_callback_and_progress() -> None:
    sde, target = S.VESDE(), ring2d()
    seen: list[int] = []
    res = S.sample(
        target.score_fn(sde),
        sde,
        (16, 2),
        sampler="heun",
        steps=6,
        generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
        callback=lambda st: seen.append(int(st["i"])),
        progress=True,
    )
    assert isinstance(res, SampleResult)
    assert res.nfe == 2 * 6 + 1  # Heun: 2 per step, + the final denoising step
    assert res.trajectory is not None and res.trajectory.shape == (1 + 6 + 1, 16, 2)
    torch.testing.assert_close(res.trajectory[-1], res.samples)
    assert seen == list(range(7)) and res.times.shape == (7,)
    plain = S.sample(
        target.score_fn(sde),
        sde,
        (16, 2),
        sampler="heun",
        steps=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(plain, torch.Tensor)
    torch.testing.assert_close(plain, res.samples)


@pytest.mark.parametrize("sampler", sorted(set(available_samplers()) - {"ancestral"}))
def test_every_sampler_runs_in_float64_on_the_affine_sde(sampler: str) -> None:
    from conftest import cosine_affine

    sde, target = cosine_affine(), ring2d()
    res = S.sample(
        target.score_fn(sde),
        sde,
        (8, 2),
        sampler=sampler,
        steps=4,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        return_info=True,
    )
    assert res.samples.dtype == torch.float64 and bool(torch.isfinite(res.samples).all())
    assert res.nfe >= 1


def test_denoise_is_one_tweedie_step() -> None:
    sde, target = S.VPSDE(), ring2d()
    kw: dict[str, Any] = {
        "sampler": "euler",
        "steps": 5,
        "generator": torch.Generator().manual_seed(0),
        "return_info": True,
    }
    raw = S.sample(target.score_fn(sde), sde, (8, 2), denoise=False, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    den = S.sample(target.score_fn(sde), sde, (8, 2), denoise=True, **kw)
    assert den.nfe == raw.nfe + 1
    t = raw.times[-1:].expand(8)
    s, sig = sde.scale(t)[:, None], sde.sigma(t)[:, None]
    tweedie = raw.samples / s + s * sig**2 * target.marginal_score(raw.samples, t, sde)
    torch.testing.assert_close(den.samples, tweedie)


def test_schedule_objects_and_sigma_min() -> None:
    sde = S.VPSDE()
    times = S.get_times(sde, 8, Schedule("karras", rho=3.0, sigma_min=0.05), dtype=torch.float64)
    assert float(sde.sigma(times[-1])) == pytest.approx(0.05, rel=1e-6)
    assert times.shape == (9,) and bool((times.diff() < 0).all())
    a = S.get_times(sde, 8, Schedule("karras", rho=3.0), dtype=torch.float64)
    b = S.get_times(sde, 8, "karras", rho=3.0, dtype=torch.float64)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="schedule"):
        Schedule("cosine")
    with pytest.raises(ValueError, match="not both"):
        Schedule("karras", eps=1e-3, sigma_min=0.1)


@pytest.mark.parametrize(
    ("sampler", "options", "match"),
    [
        ("ancestral", {}, "does not support SubVPSDE"),
        ("pc", {"predictor": "ancestral"}, "does not support SubVPSDE"),
        ("pc", {"predictor": "heun"}, "unknown predictor"),
        ("pc", {"corrector": "mala"}, "unknown corrector"),
        ("pc", {"predictor": None, "corrector": None}, "both are None"),
        ("pc", {"corrector_steps": -1}, "corrector_steps"),
        ("ddim", {"eta": 1.5}, "eta must lie in"),
        ("dpm_solver", {"order": 4}, "order must be 1, 2 or 3"),
        ("dpm_solver", {"eta": 1.0}, "unknown option"),
        ("ode", {"method": "rk45"}, "unknown method"),
        ("edm", {"s_churn": -1.0}, "s_churn"),
        ("heun", {"order": 2}, "unknown option"),
    ],
)
def test_unsupported_combinations_raise(sampler: str, options: dict, match: str) -> None:
    sde, target = S.SubVPSDE(), ring2d()
    with pytest.raises(ValueError, match=match):
        S.sample(target.score_fn(sde), sde, (4, 2), sampler=sampler, steps=3, **options)


def test_every_sampler_declares_its_contract() -> None:
    from scoresde.sampling import get_sampler

    for name in available_samplers():
        spec = get_sampler(name)
        assert spec.order >= 1 and spec.description
        assert spec.supports(S.VPSDE()) and spec.supports(S.VESDE())
    assert not get_sampler("ancestral").supports(S.SubVPSDE())


def test_precision_runs_the_score_under_autocast_and_keeps_the_sampling_dtype() -> None:
    """``precision="bf16"``: a network's matmul runs in bf16 (seen inside score_fn), the output
    comes back in the sampling dtype, and the samples stay close to the fp32 ones."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)  # float32: autocast leaves float64 alone
    seen: list[torch.dtype] = []

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = -x + 0.1 * net(x)
        seen.append(net(x).dtype)
        return out

    sde = S.VPSDE()
    kw: dict[str, Any] = dict(sampler="dpm_solver", steps=10, dtype=torch.float32)
    ref = S.sample(score, sde, (64, 2), generator=torch.Generator().manual_seed(1), **kw)
    assert set(seen) == {torch.float32}
    seen.clear()
    low = S.sample(
        score, sde, (64, 2), generator=torch.Generator().manual_seed(1), precision="bf16", **kw
    )
    assert set(seen) == {torch.bfloat16} and low.dtype == torch.float32
    err = (low - ref).abs().max()
    assert 0 < float(err) < 0.05  # bf16 rounding of the network only (8-bit mantissa)
    with pytest.raises(ValueError, match="precision"):
        S.sample(score, sde, (4, 2), steps=2, precision="int8")


@pytest.mark.parametrize("sampler", [s for s in available_samplers() if s != "ode"])
def test_no_host_reads_that_grow_with_the_steps(sampler: str) -> None:
    """A fixed-step sampler reads tensor values into Python a fixed number of times per call
    (setup, checks), never once per step: on a GPU each read waits for the device."""
    sde = S.VPSDE()  # N(0, I) data: the score is exactly -x at every time

    def reads(steps: int) -> int:
        with HostReads() as h:
            S.sample(lambda x, t: -x, sde, (4, 2), sampler=sampler, steps=steps,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        return h.count

    # a new score function per call: a model-chosen schedule probes it every time (a fixed
    # number of reads), and ``fast`` fits its end level for at most 12 steps (fixed too)
    msg = f"{sampler}: host reads grow with the number of steps"
    assert reads(40) == reads(20), msg
    assert reads(10) == reads(6), msg


@pytest.mark.parametrize("sampler", [s for s in available_samplers() if s != "ode"])
def test_checked_score_functions_add_no_host_reads_per_step(sampler: str) -> None:
    """Score functions that validate ``t`` through ``SDE.time`` (the analytic targets) read it
    into Python, except under the samplers, which build the times themselves (it used to cost
    two device synchronisations per evaluation); called directly they are still checked."""
    from scoresde.targets import Gaussian

    sde = S.VPSDE()
    score = Gaussian([0.5, -0.5], variance=[0.3, 0.6]).score_fn(sde)

    def reads(steps: int) -> int:
        with HostReads() as h:
            S.sample(score, sde, (4, 2), sampler=sampler, steps=steps,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        return h.count

    reads(10)  # a model-chosen schedule probes the model once per score function
    msg = f"{sampler}: host reads grow with the number of steps"
    assert reads(40) == reads(20), msg  # beyond 12 steps: no end-level fit (``fast``)
    reads(6)  # ``fast`` fits its end level once per model and step count
    assert reads(10) == reads(6), msg
    with pytest.raises(ValueError, match="t must lie in"):
        score(torch.zeros(2, 2), torch.tensor([0.5, 1.5]))


def test_adaptive_ode_with_a_nan_score_is_a_clear_error() -> None:
    """torchdiffeq's step-size underflow on a NaN score is one ValueError (found by fuzzing)."""
    sde = S.EDMSDE()

    def nan_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match="non-finite"):
        S.sample(nan_score, sde, (4, 2), sampler="ode", steps=3)
