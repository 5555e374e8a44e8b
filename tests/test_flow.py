"""Flow paths on the SDE core (issue 14): RectifiedFlow, interpolants, the velocity
parameterisation, the mixture's velocity oracle, every sampler and the likelihood from t = T."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import scoresde as S
from conftest import four_mode_mixture, ring2d, three_modes
from helpers import HostReads
from scoresde.metrics import mode_report
from scoresde.parameterize import PARAMETERIZATIONS, ScoreModel, check_fits, from_velocity
from scoresde.sampling import Schedule, get_times
from scoresde.sde import AffineSDE, RectifiedFlow, ScoreWithDenoiser
from scoresde.targets import GaussianMixture

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(gm: GaussianMixture, n: int, seed: int, dtype: torch.dtype = DT) -> Tensor:
    x = gm.sample(n, gen(seed), dtype=dtype)
    assert isinstance(x, Tensor)
    return x


def cosine_path() -> S.SDE:
    """The trigonometric interpolant alpha = cos(pi t / 2), sigma = sin(pi t / 2)."""
    return AffineSDE.from_interpolant(
        lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t)
    )


FLOWS = {"rectified_flow": RectifiedFlow, "cosine": cosine_path}


# ------------------------------------------------------------------------------------------
# the SDEs


def test_rectified_flow_closed_forms_match_the_interpolant() -> None:
    rf = RectifiedFlow()
    generic = AffineSDE.from_interpolant(lambda t: 1 - t, lambda t: t)  # autograd derivatives
    t = torch.linspace(0.01, 0.99, 50, dtype=DT)
    for name in ("scale", "std", "sigma", "f", "g2", "sigma_deriv", "scale_deriv", "std_deriv"):
        torch.testing.assert_close(getattr(rf, name)(t), getattr(generic, name)(t))
    # f = s'/s and g^2 = 2 s^2 sigma' sigma, the affine-SDE relations (Karras et al., App. B.2)
    torch.testing.assert_close(rf.f(t), -1 / (1 - t))
    torch.testing.assert_close(rf.g2(t), 2 * (1 - t) ** 2 * rf.sigma_deriv(t) * rf.sigma(t))
    torch.testing.assert_close(rf.sigma_inv(rf.sigma(t)), t)
    end = torch.tensor([0.0, 1.0], dtype=DT)
    assert rf.scale(end).tolist() == [1.0, 0.0] and rf.std(end).tolist() == [0.0, 1.0]
    assert rf.sigma(end)[1] == math.inf and rf.sigma_inv(
        torch.tensor([0.0, math.inf])
    ).tolist() == [
        0.0,
        1.0,
    ]
    assert rf.prior_std == 1.0 and rf.zero_terminal_snr and not S.VPSDE().zero_terminal_snr
    x0 = torch.randn(4, 3, generator=gen(0), dtype=DT)
    z = torch.randn(4, 3, generator=gen(1), dtype=DT)
    torch.testing.assert_close(rf.perturb(x0, 0.25, z), 0.75 * x0 + 0.25 * z)
    assert torch.equal(rf.perturb(x0, 1.0, z), z)  # the prior is exactly N(0, I) at T


def test_cosine_interpolant_snaps_to_zero_terminal_snr() -> None:
    sde = cosine_path()
    assert sde.zero_terminal_snr and sde.prior_std == pytest.approx(1.0)
    t = torch.tensor([0.2, 0.6], dtype=DT)
    torch.testing.assert_close(sde.std(t) ** 2 + sde.scale(t) ** 2, torch.ones(2, dtype=DT))
    torch.testing.assert_close(sde.scale_deriv(t), -0.5 * math.pi * torch.sin(0.5 * math.pi * t))
    torch.testing.assert_close(sde.sigma_inv(sde.sigma(t)), t)
    # the general affine SDE with the same s and sigma has the same coefficients
    ref = AffineSDE(lambda u: torch.cos(0.5 * math.pi * u), lambda u: torch.tan(0.5 * math.pi * u))
    torch.testing.assert_close(sde.g2(t), ref.g2(t))
    torch.testing.assert_close(sde.f(t), ref.f(t))


def test_bad_interpolants_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        AffineSDE.from_interpolant(lambda t: 0.5 - t, lambda t: t)
    with pytest.raises(ValueError, match="increasing"):
        AffineSDE.from_interpolant(lambda t: 1 - 0 * t, lambda t: 1 - 0.5 * t)
    with pytest.raises(ValueError, match="sigma"):
        AffineSDE.from_interpolant(lambda t: 1 - t, lambda t: t - 0.5)


# ------------------------------------------------------------------------------------------
# the oracle: the mixture's velocity, posterior mean, score and density at every t, T included


def velocity_by_gaussian_conditioning(
    gm: GaussianMixture, sde: S.SDE, x: Tensor, t: float
) -> Tensor:
    """``E[a' x0 + b' z | x]`` per component, written from the joint Gaussian of ``(x0, x_t)``.

    ``x_t = a x0 + b z`` with ``x0 ~ N(mu, C)`` is ``N(a mu, a^2 C + b^2 I)``, and
    ``E[a' x0 + b' z | x] = a' mu + (a a' C + b b' I)(a^2 C + b^2 I)^{-1} (x - a mu)``
    (the cross-covariance of the velocity and ``x_t`` over ``Cov x_t``); responsibilities from
    torch's own multivariate normal.
    """
    tt = torch.tensor([t], dtype=DT)
    a, b = float(sde.scale(tt)), float(sde.std(tt))
    da, db = float(sde.scale_deriv(tt)), float(sde.std_deriv(tt))
    eye = torch.eye(gm.dim, dtype=DT)
    logs, fields = [], []
    for k in range(gm.n_components):
        mu, cov = gm.means[k], gm.covariances()[k]
        marg = a * a * cov + b * b * eye
        logs.append(torch.distributions.MultivariateNormal(a * mu, marg).log_prob(x))
        cross = a * da * cov + b * db * eye
        fields.append(da * mu + (x - a * mu) @ torch.linalg.solve(marg, cross.T).T)
    r = torch.softmax(torch.stack(logs, 1) + gm.weights.log(), dim=1)
    return (r[..., None] * torch.stack(fields, 1)).sum(1)


@pytest.mark.parametrize("path", sorted(FLOWS))
@pytest.mark.parametrize("t", [0.05, 0.4, 0.9, 1.0])
def test_mixture_velocity_matches_independent_closed_form(path: str, t: float) -> None:
    sde, gm = FLOWS[path](), four_mode_mixture()
    x = draw(gm, 64, 2)
    x = sde.perturb(x, t, torch.randn(x.shape, generator=gen(3), dtype=DT))
    got = gm.marginal_velocity(x, t, sde)
    torch.testing.assert_close(got, velocity_by_gaussian_conditioning(gm, sde, x, t))
    if t == 1.0:  # at T: E[z - x0 | x_T] = x_T - E[x0] (x_T is independent of the data)
        torch.testing.assert_close(
            gm.marginal_denoise(x, t, sde), gm.mean().expand(64, -1), rtol=0, atol=1e-12
        )
        torch.testing.assert_close(gm.marginal_score(x, t, sde), -x / sde.prior_std**2)


def test_mixture_velocity_is_the_conditional_velocity_by_quadrature() -> None:
    """``v(x) = E[z - x0 | x_t = x]`` under rectified flow, by quadrature over ``x0`` on a grid."""
    rf, gm = RectifiedFlow(), three_modes()
    g = torch.linspace(-5.0, 5.0, 801, dtype=DT)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    prior = gm.log_prob(grid)
    x = torch.tensor([[0.3, -0.4], [-1.0, 1.2], [2.0, 0.5]], dtype=DT)
    for t in (0.35, 0.7):
        z = (x[:, None, :] - (1 - t) * grid[None]) / t  # the noise that takes x0 to x
        logw = prior[None] - 0.5 * z.pow(2).sum(-1)
        w = torch.softmax(logw, dim=1)[..., None]
        want = (w * (z - grid[None])).sum(1)
        torch.testing.assert_close(gm.marginal_velocity(x, t, rf), want, rtol=1e-6, atol=1e-6)


def test_marginal_log_prob_at_t_is_finite_and_exact_at_the_prior() -> None:
    rf, gm = RectifiedFlow(), ring2d()
    x = torch.randn(32, 2, generator=gen(4), dtype=DT)
    want = -0.5 * x.pow(2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(gm.marginal_log_prob(x, 1.0, rf), want)
    torch.testing.assert_close(rf.prior_log_prob(x), want)


# ------------------------------------------------------------------------------------------
# the velocity parameterisation


class VelocityOracle(nn.Module):
    """A 'network' returning the exact velocity at the (x, t) it was told about."""

    def __init__(self, sde: S.SDE, gm: GaussianMixture) -> None:
        super().__init__()
        self.sde, self.gm = sde, gm
        self.x: Tensor | None = None
        self.t: Tensor | None = None

    def forward(self, inp: Tensor, c_noise: Tensor) -> Tensor:
        assert self.x is not None and self.t is not None and bool(torch.isfinite(c_noise).all())
        return self.gm.marginal_velocity(self.x, self.t, self.sde)


@pytest.mark.parametrize("sde_name", ["rectified_flow", "cosine", "vp", "ve", "edm"])
def test_flow_parameterisation_gives_the_exact_score_and_denoiser(sde_name: str) -> None:
    sde = {**FLOWS, "vp": S.VPSDE, "ve": S.VESDE, "edm": S.EDMSDE}[sde_name]()
    gm = three_modes()
    n = 48
    t = torch.linspace(sde.eps * 10, sde.T, n, dtype=DT)
    if not sde.zero_terminal_snr:
        t = t[:-1]  # VP/VE/EDM: t = T is an ordinary time; keep the interior
    x = sde.perturb(
        draw(gm, t.numel(), 5),
        t,
        torch.randn(t.numel(), 2, generator=gen(6), dtype=DT),
    )
    net = VelocityOracle(sde, gm)
    model = ScoreModel(net, sde, "flow", sigma_data=0.7)
    net.x, net.t = x, t
    torch.testing.assert_close(model(x, t), gm.marginal_score(x, t, sde), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(
        model.denoise(x, t), gm.marginal_denoise(x, t, sde), rtol=1e-8, atol=1e-8
    )
    fn = model.score_fn()
    assert isinstance(fn, ScoreWithDenoiser)
    torch.testing.assert_close(fn.denoise(x, t), model.denoise(x, t), rtol=0, atol=0)
    # a velocity model from elsewhere gives the same score and denoiser
    ext = from_velocity(lambda xx, tt: gm.marginal_velocity(xx, tt, sde), sde)
    torch.testing.assert_close(ext(x, t), model(x, t))
    torch.testing.assert_close(ext.denoise(x, t), model.denoise(x, t))


class Echo(nn.Module):
    """Returns its input: a network whose output is known."""

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return x


@pytest.mark.parametrize("kind", ["x0", "v", "edm", "flow"])
def test_fitting_parameterisations_are_finite_at_t(kind: str) -> None:
    """At ``T`` of a flow path the score is the prior's ``-x`` for any network output and the
    denoiser is the network's own prediction."""
    rf = RectifiedFlow()
    model = ScoreModel(Echo(), rf, kind, sigma_data=1.0)  # type: ignore[arg-type]
    assert model.noise_input == "t"
    x = torch.randn(8, 2, generator=gen(7), dtype=DT)
    t = torch.ones(8, dtype=DT)
    torch.testing.assert_close(model(x, t), -x)
    assert bool(torch.isfinite(model.denoise(x, t)).all())
    if kind == "flow":  # D = x - t v for rectified flow (here v = c_in x = x: D = 0)
        torch.testing.assert_close(model.denoise(x, t), torch.zeros_like(x))


@pytest.mark.parametrize("kind", ["score", "scaled_score", "eps"])
def test_unfit_parameterisations_are_one_line_errors(kind: str) -> None:
    for sde in (RectifiedFlow(), cosine_path()):
        with pytest.raises(ValueError, match=r"does not fit .*use parameterization='flow'") as err:
            ScoreModel(nn.Identity(), sde, kind)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="noise_input='t'"):
        ScoreModel(nn.Identity(), RectifiedFlow(), "flow", noise_input="log_sigma")
    for name in PARAMETERIZATIONS:  # nothing changes for the SDEs without s(T) = 0
        check_fits(name, S.VPSDE())
        assert ScoreModel(nn.Identity(), S.VESDE(), name).noise_input == "log_sigma"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# sampling from t = T


N = 2000
CONFIGS: dict[str, tuple[int, dict[str, Any]]] = {  # "high NFE" for each method's order
    "euler": (200, {}),
    "heun": (40, {}),
    "fast": (30, {}),
    "euler_maruyama": (400, {}),
    "ode_heun": (60, {}),
    "dpm_solver": (25, {"order": 3}),
}
_FLOORS: dict[str, tuple[float, float]] = {}
TARGETS = {"ring2d": ring2d, "four_modes": four_mode_mixture}


def _floor(name: str) -> tuple[float, float]:
    """Mode TV and weighted Fréchet of exact draws of the same size (the metric floor)."""
    if name not in _FLOORS:
        target = TARGETS[name]()
        reps = [mode_report(target, draw(target, N, s, torch.float32)) for s in (101, 102, 103)]
        _FLOORS[name] = (max(r.tv for r in reps), max(r.frechet_weighted for r in reps))
    return _FLOORS[name]


@pytest.mark.parametrize("tname", sorted(TARGETS))
@pytest.mark.parametrize("sampler", sorted(CONFIGS))
def test_samplers_recover_the_mixture_under_rectified_flow(sampler: str, tname: str) -> None:
    rf, target = RectifiedFlow(), TARGETS[tname]()
    steps, options = CONFIGS[sampler]
    x = S.sample(
        target.score_fn(rf), rf, (N, 2), sampler=sampler, steps=steps, generator=gen(1), **options
    )
    assert bool(torch.isfinite(x).all())
    rep = mode_report(target, x)
    tv_floor, fr_floor = _floor(tname)
    w = target.weights
    tv_sd = 0.5 * float(torch.sqrt(w * (1 - w) / N).sum())
    assert rep.tv <= tv_floor + 2.5 * tv_sd, (rep.mass, w)
    assert rep.frechet_weighted <= 3 * fr_floor + 0.006, (rep.frechet, fr_floor)


def test_first_step_is_the_closed_form_from_t() -> None:
    """One step from T: Euler in sigma (= DDIM = Euler in t for rectified flow) is
    ``x' = s' D + std' x_T``; the reverse SDE's is Gaussian around ``s' D``; D is evaluated at
    t = T exactly, through the score function's denoiser."""
    rf, gm = RectifiedFlow(), three_modes()
    seen: list[Tensor] = []

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        seen.append(t.clone())
        return gm.marginal_denoise(x, t, rf)

    fn = ScoreWithDenoiser(gm.score_fn(rf), denoise)
    z = torch.randn(16, 2, generator=gen(8), dtype=DT)
    x = S.sample(fn, rf, (16, 2), sampler="euler", steps=1, x_init=z, denoise=False, dtype=DT)
    assert len(seen) == 1 and bool((seen[0] == 1.0).all())
    eps = rf.eps
    torch.testing.assert_close(x, (1 - eps) * gm.mean() + eps * z)
    # Euler in t on the velocity, by hand: x + (eps - 1) (x - D)
    torch.testing.assert_close(x, z + (eps - 1) * gm.marginal_velocity(z, 1.0, rf))
    em = S.sample(fn, rf, (16, 2), sampler="euler_maruyama", steps=1, x_init=z, dtype=DT)
    torch.testing.assert_close(em, (1 - eps) * gm.mean().expand(16, -1))  # last step: the mean
    heun = S.sample(fn, rf, (16, 2), sampler="ode_heun", steps=1, x_init=z, dtype=DT)
    v_t, v_e = gm.marginal_velocity(z, 1.0, rf), None
    x_pred = z + (eps - 1) * v_t
    v_e = gm.marginal_velocity(x_pred, eps, rf)
    torch.testing.assert_close(heun, z + 0.5 * (eps - 1) * (v_t + v_e))


def test_plain_score_functions_cannot_start_at_t() -> None:
    rf, gm = RectifiedFlow(), three_modes()
    plain = gm.score_fn(rf).score  # a bare callable: no denoiser
    for sampler in ("euler", "euler_maruyama", "ode_heun", "pc"):
        with pytest.raises(ValueError, match=r"s\(T\) = 0.*denoise") as err:
            S.sample(plain, rf, (8, 2), sampler=sampler, steps=4, generator=gen(0))
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="denoise"):
        S.log_likelihood(plain, rf, torch.zeros(2, 2))
    # a grid that starts below T needs no denoiser
    times = torch.linspace(0.99, 1e-3, 50)
    x = S.sample(plain, rf, (8, 2), sampler="euler", schedule=times, generator=gen(0))
    assert bool(torch.isfinite(x).all())


def test_sigma_schedules_start_at_t_on_flow_paths() -> None:
    rf = RectifiedFlow()
    for kind in ("karras", "logsnr"):
        times = get_times(rf, 8, kind, dtype=DT)
        assert times[0] == 1.0 and times[1] == pytest.approx(1 - (1 - rf.eps) / 8)
        assert bool((times.diff() < 0).all()) and times[-1] == rf.eps
    times = get_times(rf, 5, Schedule("logsnr", sigma_min=0.15, sigma_max=40.0), dtype=DT)
    assert times[0] == 1.0 and float(rf.sigma(times[1:2])) == pytest.approx(40.0)
    assert float(rf.sigma(times[-1:])) == pytest.approx(0.15)
    assert get_times(rf, 1, "karras").tolist() == pytest.approx([1.0, rf.eps])
    with pytest.raises(ValueError, match="sigma_max"):
        get_times(rf, 4, Schedule("karras", sigma_max=1e-6))


@pytest.mark.parametrize("sampler", ["euler", "euler_maruyama", "pc", "ode_heun", "fast", "edm"])
def test_no_host_reads_per_step_from_t(sampler: str) -> None:
    rf, gm = RectifiedFlow(), three_modes()
    fn = gm.score_fn(rf)

    def reads(steps: int) -> int:
        with HostReads() as h:
            S.sample(fn, rf, (4, 2), sampler=sampler, steps=steps, generator=gen(0))
        return h.count

    reads(10)  # a model-chosen schedule probes the model once per score function
    assert reads(40) == reads(10)


# ------------------------------------------------------------------------------------------
# likelihood from t = T


@pytest.mark.parametrize("path", sorted(FLOWS))
@pytest.mark.parametrize("tname", ["four_modes", "three_modes"])
def test_log_likelihood_is_exact_on_flow_paths(path: str, tname: str) -> None:
    sde = FLOWS[path]()
    gm = {"four_modes": four_mode_mixture, "three_modes": three_modes}[tname]()
    x = draw(gm, 64, 9)
    res = S.log_likelihood(gm.score_fn(sde), sde, x, divergence="exact", rtol=1e-6, atol=1e-6)
    want = gm.marginal_log_prob(x, 1e-5, sde)
    assert float((res.log_prob - want).abs().max()) / gm.dim <= 2e-3
    torch.testing.assert_close(res.prior_log_prob, sde.prior_log_prob(res.latent))
    back = S.decode(gm.score_fn(sde), sde, res.latent, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)


class LabelVelocity(nn.Module):
    """A class-conditional velocity net: one constant row per label (null label 2)."""

    null_label = 2

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=DT))

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor) -> Tensor:
        return x + self.table[y]


def test_guided_flow_model_starts_at_t() -> None:
    """Classifier-free guidance of a flow model: the guided denoiser at T is the same
    combination ``u + w (c - u)`` of the two denoisers, and sampling from T uses it."""
    rf = RectifiedFlow()
    model = ScoreModel(LabelVelocity(), rf, "flow", sigma_data=1.0)
    x = torch.randn(5, 2, generator=gen(10), dtype=DT)
    t = torch.ones(5, dtype=DT)
    fn = model.score_fn(0, guidance=3.0)
    cond = model.denoise(x, t, torch.zeros(5, dtype=torch.long))
    uncond = model.denoise(x, t, torch.full((5,), 2))
    torch.testing.assert_close(fn.denoise(x, t), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(fn(x, t), -x)  # the score at T is the prior's for any label
    out = S.sample(fn, rf, (5, 2), sampler="euler", steps=1, x_init=x, denoise=False, dtype=DT)
    torch.testing.assert_close(out, (1 - rf.eps) * fn.denoise(x, t) + rf.eps * x)
