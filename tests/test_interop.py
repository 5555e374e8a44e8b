"""scoresde.interop: diffusers schedules as SDEs, network outputs as scores, step-for-step parity.

Oracles: the scheduler's own ``alphas_cumprod``; a stand-in UNet returning the exact target of a
Gaussian mixture noised by diffusers' formulas; diffusers' own sampling loops and a hand-written
EDM Algorithm 1, all in float64 on small seeded random UNets of two sizes.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.sampling.base import is_variance_preserving
from scoresde.targets import GaussianMixture

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on NumPy 2

from _interop_nets import (  # noqa: E402
    OracleUNet,
    edm_precond,
    event_shape,
    mixture_score,
    noised_mixture,
    tiny_unet,
)
from scoresde.interop import (  # noqa: E402
    DISCRETE_SCHEDULERS,
    DiscreteVPSDE,
    from_denoiser,
    from_diffusers,
)

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
F64 = torch.float64


def _trained_betas(n: int) -> list[float]:
    g = torch.Generator().manual_seed(5)
    return (torch.rand(n, generator=g, dtype=F64) * 0.05 + 1e-4).tolist()


def _ddpm(schedule: str, n: int = 1000, **kw: object):
    if schedule == "trained_betas":
        return diffusers.DDPMScheduler(num_train_timesteps=n, trained_betas=_trained_betas(n), **kw)
    return diffusers.DDPMScheduler(num_train_timesteps=n, beta_schedule=schedule, **kw)


# ------------------------------------------------------------------------------------------------
# the SDE of a discrete schedule


@pytest.mark.parametrize("n", [1000, 37])
@pytest.mark.parametrize("schedule", [*SCHEDULES, "trained_betas"])
def test_marginal_equals_alphas_cumprod_at_every_timestep(schedule: str, n: int) -> None:
    sched = _ddpm(schedule, n)
    m = from_diffusers(tiny_unet(), sched)
    k = torch.arange(n)
    mean, std = m.sde.marginal(torch.ones(n, 1, dtype=F64), m.times(k))
    ab = sched.alphas_cumprod.double()
    assert torch.allclose(m.times(k), (k + 1.0).double() / n, rtol=0, atol=1e-15)
    assert float(((mean[:, 0] ** 2 - ab) / ab).abs().max()) <= 1e-10
    assert float(((std**2 - (1 - ab)) / (1 - ab)).abs().max()) <= 1e-10
    assert m.sde.T == 1.0 and m.sde.eps == 1.0 / n and m.sde.prior_std == 1.0


@pytest.mark.parametrize("name", DISCRETE_SCHEDULERS)
def test_every_discrete_scheduler_gives_its_own_alphas_cumprod(name: str) -> None:
    sched = getattr(diffusers, name)(num_train_timesteps=50, beta_schedule="scaled_linear")
    m = from_diffusers(tiny_unet(), sched)
    s = m.sde.scale(m.times(torch.arange(50)))
    assert torch.allclose(s**2, sched.alphas_cumprod.double(), rtol=1e-12, atol=0)


def test_discrete_sde_coefficients_are_consistent() -> None:
    """std = s sigma, f = (log s)', g^2 = 2 s^2 sigma' sigma (central differences inside the
    intervals), sigma_inv inverts sigma everywhere (knots, between them, below t = 1/N), VP."""
    sde = DiscreteVPSDE(_ddpm("squaredcos_cap_v2", 40).alphas_cumprod)
    g = torch.Generator().manual_seed(0)
    knots = torch.arange(41, dtype=F64) / 40
    t = torch.cat([knots, torch.rand(200, generator=g, dtype=F64), torch.tensor([1e-5, 3e-3])])
    assert torch.allclose(sde.std(t), sde.scale(t) * sde.sigma(t), rtol=1e-12)
    assert torch.allclose(sde.sigma_inv(sde.sigma(t[1:])), t[1:], rtol=1e-10, atol=1e-13)
    j = torch.randint(0, 40, (50,), generator=g)
    mid = (j + 0.2 + 0.6 * torch.rand(50, generator=g, dtype=F64)) / 40  # inside interval j
    h = 1e-6
    dlogs = (torch.log(sde.scale(mid + h)) - torch.log(sde.scale(mid - h))) / (2 * h)
    dsig = (sde.sigma(mid + h) - sde.sigma(mid - h)) / (2 * h)
    assert torch.allclose(sde.f(mid), dlogs, rtol=1e-6)
    assert torch.allclose(sde.sigma_deriv(mid), dsig, rtol=1e-6)
    assert torch.allclose(sde.g2(mid), 2 * sde.scale(mid) ** 2 * dsig * sde.sigma(mid), rtol=1e-6)
    assert is_variance_preserving(sde)


def test_the_network_is_called_at_fractional_timesteps() -> None:
    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            seen.append(timestep.clone())
            return torch.zeros_like(x)

    m = from_diffusers(Recorder(), _ddpm("linear", 100), event_shape=(2,))
    t = torch.tensor([0.005, 0.5, 0.2345, 1.0], dtype=F64)
    m(torch.zeros(4, 2, dtype=F64), t)
    assert torch.allclose(seen[0], torch.tensor([-0.5, 49.0, 22.45, 99.0], dtype=F64))
    assert torch.allclose(m.times(seen[0]), t)


def test_invalid_alphas_cumprod_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="1 > a_0 > a_1"):
        DiscreteVPSDE([0.9, 0.95, 0.5])
    with pytest.raises(ValueError, match="1 > a_0 > a_1"):
        DiscreteVPSDE([1.0, 0.5])


# ------------------------------------------------------------------------------------------------
# network outputs as scores


@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("schedule", [*SCHEDULES, "trained_betas"])
def test_each_prediction_type_gives_the_exact_score(schedule: str, pred: str) -> None:
    """A stand-in UNet returns the mixture's exact eps / v / x0 by diffusers' formulas: the score
    must be the noised mixture's exact score at every timestep."""
    mix = GaussianMixture([[-1.0, 0.5, 0.0], [0.8, -0.3, 0.4]], variances=[0.05, 0.2])
    sched = _ddpm(schedule, 60, prediction_type=pred)
    m = from_diffusers(OracleUNet(mix, sched.alphas_cumprod, pred), sched, event_shape=(3,))
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    k = torch.tensor([0, 3, 17, 30, 45, 59])
    got = m.score_fn(x, m.times(k))
    want = torch.cat(
        [
            mixture_score(noised_mixture(mix, float(sched.alphas_cumprod[ki])), x[i : i + 1])
            for i, ki in enumerate(k)
        ]
    )
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_denoiser_score_is_exact_for_the_exact_denoiser() -> None:
    """D = Tweedie's mean of a mixture under EDM: from_denoiser gives its exact score."""
    mix = GaussianMixture([[-1.0, 0.5], [1.2, -0.3]], variances=[0.05, 0.1])
    edm = S.EDMSDE(0.002, 80.0)
    kwargs: list[dict] = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **kw: object) -> torch.Tensor:
        kwargs.append(kw)
        return edm.tweedie(x, sigma, mix.marginal_score(x, sigma, edm))

    m = from_denoiser(denoiser, sigma_min=0.002, sigma_max=80.0, event_shape=(2,))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    t = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=F64)
    assert torch.allclose(m.score_fn(x, t), mix.marginal_score(x, t, edm), rtol=1e-10)
    onehot = torch.eye(3, dtype=F64)[[0, 2, 1, 1, 0]]
    m(x, t, onehot)  # labels pass through to the denoiser unchanged
    assert kwargs[0] == {} and torch.equal(kwargs[-1]["class_labels"], onehot)
    assert m.sigma_data == 0.5 and m.times(t) is not None and m.sde.eps == 0.002


def test_ve_scheduler_gives_a_vesde_and_the_network_output_is_the_score() -> None:
    unet = tiny_unet(time_embedding_type="fourier", flip_sin_to_cos=False)
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0, sampling_eps=1e-4)
    sched.set_timesteps(7)
    m = from_diffusers(unet, sched)
    assert isinstance(m.sde, S.VESDE) and (m.sde.sigma_min, m.sde.sigma_max) == (0.01, 50.0)
    assert m.sde.eps == 1e-4 and m.data_range == (0.0, 1.0) and m.event_shape == (1, 8, 8)
    t = m.times(sched.timesteps)
    assert torch.allclose(t, sched.timesteps.double())
    sched.set_sigmas(7)  # float32 sigmas of the float32 timesteps
    assert torch.allclose(m.sde.sigma(t), sched.sigmas.double(), rtol=1e-6)
    sigmas = 0.01 * (50.0 / 0.01) ** t  # the scheduler's formula, in float64
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    with torch.no_grad():
        want = unet(x, sigmas).sample  # the output as ScoreSdeVePipeline uses it: the score
        assert torch.allclose(m.score_fn(x, t), want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# step for step against diffusers' loops (float64, deterministic)


def _diffusers_loop(unet: torch.nn.Module, sched: object, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for k in sched.timesteps:  # type: ignore[attr-defined]
            x = sched.step(unet(x, k).sample, k, x).prev_sample  # type: ignore[attr-defined]
    return x


def _start(size: str, seed: int = 1) -> torch.Tensor:
    return torch.randn(3, *event_shape(size), generator=torch.Generator().manual_seed(seed),
                       dtype=F64)  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("size", ["small", "wide"])
def test_ddim_reproduces_diffusers_ddim(size: str, schedule: str, pred: str) -> None:
    unet = tiny_unet(size, seed=3)
    sched = diffusers.DDIMScheduler(beta_schedule=schedule, prediction_type=pred,
                                    clip_sample=False)  # fmt: skip
    sched.set_timesteps(8)
    x0 = _start(size)
    want = _diffusers_loop(unet, sched, x0)
    m = from_diffusers(unet, sched)
    got = S.sample(m.score_fn, m.sde, x0.shape, sampler="ddim", schedule=m.times(sched.timesteps),
                   x_init=x0, denoise=True)  # fmt: skip
    assert _rel(got, want) < 1e-5


def test_ddim_reproduces_diffusers_on_trained_betas_and_few_train_steps() -> None:
    unet = tiny_unet("small", seed=4)
    sched = diffusers.DDIMScheduler(num_train_timesteps=50, trained_betas=_trained_betas(50),
                                    clip_sample=False, timestep_spacing="trailing")  # fmt: skip
    sched.set_timesteps(5)  # DDIM steps to t - N // steps: evenly spaced timesteps only
    x0 = _start("small", 2)
    m = from_diffusers(unet, sched)
    got = S.sample(m.score_fn, m.sde, x0.shape, sampler="ddim", schedule=m.times(sched.timesteps),
                   x_init=x0, denoise=True)  # fmt: skip
    assert _rel(got, _diffusers_loop(unet, sched, x0)) < 1e-5


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("size", ["small", "wide"])
def test_dpm_solver_reproduces_diffusers_dpmsolver_pp_2m(size: str, solver_type: str) -> None:
    unet = tiny_unet(size, seed=5)
    sched = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", algorithm_type="dpmsolver++", solver_order=2,
        solver_type=solver_type,
    )  # fmt: skip
    sched.set_timesteps(9)
    x0 = _start(size)
    want = _diffusers_loop(unet, sched, x0)
    m = from_diffusers(unet, sched)

    def ours(kind: str) -> torch.Tensor:
        return S.sample(m.score_fn, m.sde, x0.shape, sampler="dpm_solver", order=2,
                        solver_type=kind, schedule=m.times(sched.timesteps), x_init=x0,
                        denoise=True)  # fmt: skip

    assert _rel(ours(solver_type), want) < 1e-5
    other = "heun" if solver_type == "midpoint" else "midpoint"
    assert _rel(ours(other), want) > 1e-4  # the two forms differ: the match is not by accident


def _edm_algorithm1(denoiser: object, x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """EDM's Algorithm 1 (Karras et al. 2022), written out: Heun steps, Euler for the last."""
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            d = (x - denoiser(x, torch.full((len(x),), s, dtype=F64))) / s  # type: ignore[operator]
            x_next = x + (s_next - s) * d
            if s_next > 0:
                sn = torch.full((len(x),), s_next, dtype=F64)
                d2 = (x_next - denoiser(x_next, sn)) / s_next  # type: ignore[operator]
                x_next = x + (s_next - s) * 0.5 * (d + d2)
            x = x_next
    return x


@pytest.mark.parametrize("size", ["small", "wide"])
def test_heun_with_a_denoiser_is_edm_algorithm_1(size: str) -> None:
    den = edm_precond(tiny_unet(size, seed=6)).double()
    m = from_denoiser(den, sigma_min=0.002, sigma_max=80.0)
    n, rho = 7, 7.0
    i = torch.arange(n, dtype=F64)
    sig = (80.0 ** (1 / rho) + i / (n - 1) * (0.002 ** (1 / rho) - 80.0 ** (1 / rho))) ** rho
    x0 = _start(size) * 80.0
    want = _edm_algorithm1(den, x0, [*sig.tolist(), 0.0])
    got = S.sample(m.score_fn, m.sde, x0.shape, sampler="heun", steps=n - 1, schedule="karras",
                   rho=rho, x_init=x0, denoise=True)  # fmt: skip
    assert _rel(got, want) < 1e-10


def test_no_host_reads_per_step_from_the_adapter() -> None:
    from helpers import HostReads

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return x * (1.0 + 0.0 * timestep.reshape(-1, 1, 1, 1))

    m = from_diffusers(Net(), _ddpm("linear", 100), event_shape=(1, 2, 2))

    def reads(steps: int) -> int:
        with HostReads() as h:
            S.sample(m.score_fn, m.sde, (3, 1, 2, 2), sampler="dpm_solver", steps=steps,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        return h.count

    assert reads(20) == reads(5)


def test_times_use_float64_and_accept_lists() -> None:
    m = from_diffusers(tiny_unet(), _ddpm("linear", 1000))
    t = m.times([999, 0])
    assert t.dtype == F64 and t.tolist() == [1.0, 1e-3]
    assert math.isclose(float(m.sde.timestep(t[1:])), 0.0, abs_tol=1e-12)


def test_a_learned_variance_half_is_dropped_as_diffusers_does() -> None:
    """out_channels = 2 C (variance_type="learned_range"): the first C channels predict eps."""
    unet = tiny_unet("small", seed=8, out_channels=2)
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, variance_type="learned_range")
    m = from_diffusers(unet, sched)
    x = _start("small")
    t = m.times(torch.tensor([10, 50, 99]))
    with torch.no_grad():
        eps = unet(x, m.sde.timestep(t)).sample[:, :1]
        assert torch.allclose(m.score_fn(x, t), -eps / m.sde.std(t).reshape(-1, 1, 1, 1))
