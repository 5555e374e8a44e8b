"""Parameterisation wrappers: exactness against the Gaussian-mixture oracle, losses, guidance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import scoresde as S
from conftest import SDE_FACTORIES as SDES
from conftest import three_modes as mixture
from scoresde.parameterize import (
    PARAMETERIZATIONS,
    ScoreModel,
    coefficients,
    sample_training_times,
)
from scoresde.targets import GaussianMixture

SD = 0.7  # sigma_data used throughout (not the default, to catch a hard-coded 0.5)


def exact_output(kind: str, sde: S.SDE, gm: GaussianMixture, x: Tensor, t: Tensor) -> Tensor:
    """The ideal network output for ``kind``, derived here independently of the module."""
    score = gm.marginal_score(x, t, sde)
    s = sde.scale(t)[:, None]
    sigma = sde.sigma(t)[:, None]
    std = s * sigma
    x0 = (x + std**2 * score) / s  # Tweedie
    eps = -std * score
    r = torch.sqrt(SD**2 + sigma**2)
    if kind == "score":
        return score
    if kind == "scaled_score":
        return std * score
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return (SD / r) * eps - (sigma / r) * x0 / SD
    if kind == "edm":  # Karras et al. 2022, Table 1, on x^ = x / s
        c_skip = SD**2 / (sigma**2 + SD**2)
        c_out = sigma * SD / r
        return (x0 - c_skip * x / s) / c_out
    if kind == "flow":  # E[s' x0 + std' z | x] (Lipman et al. 2023, eq. 8)
        return sde.scale_deriv(t)[:, None] * x0 + sde.std_deriv(t)[:, None] * eps
    raise AssertionError(kind)


class OracleNet(nn.Module):
    """Returns the exact output at the (x, t) it was told about; checks what it is fed."""

    def __init__(self, kind: str, sde: S.SDE, gm: GaussianMixture) -> None:
        super().__init__()
        self.kind, self.sde, self.gm = kind, sde, gm
        self.x: Tensor | None = None
        self.t: Tensor | None = None

    def forward(self, inp: Tensor, c_noise: Tensor) -> Tensor:
        assert self.x is not None and self.t is not None
        s, sigma = self.sde.scale(self.t), self.sde.sigma(self.t)
        c_in = 1.0 / (s * torch.sqrt(SD**2 + sigma**2))
        torch.testing.assert_close(inp, c_in[:, None] * self.x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c_noise, torch.log(sigma) / 4, rtol=1e-12, atol=1e-12)
        return exact_output(self.kind, self.sde, self.gm, self.x, self.t)


def times(sde: S.SDE, n: int) -> Tensor:
    lo, hi = math.log(sde.eps * 10), math.log(sde.T)
    return torch.exp(torch.linspace(lo, hi, n, dtype=torch.float64))


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_exact_output_gives_exact_score(kind: str, sde_name: str) -> None:
    sde = SDES[sde_name]()
    gm = mixture()
    g = torch.Generator().manual_seed(0)
    n = 64
    t = times(sde, n)
    x = gm.sample(n, g, dtype=torch.float64)
    x = sde.perturb(x, t, torch.randn(x.shape, generator=g, dtype=torch.float64))
    net = OracleNet(kind, sde, gm)
    model = ScoreModel(net, sde, kind, sigma_data=SD)
    net.x, net.t = x, t
    got = model(x, t)
    want = gm.marginal_score(x, t, sde)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # the denoiser view is Tweedie's E[x0 | x]
    s, std = sde.scale(t)[:, None], sde.std(t)[:, None]
    torch.testing.assert_close(model.denoise(x, t), (x + std**2 * want) / s, rtol=1e-9, atol=1e-9)
    # and the score_fn view is the same function
    torch.testing.assert_close(model.score_fn()(x, t), got, rtol=0, atol=0)


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_target_is_the_conditional_quantity(kind: str) -> None:
    sde = S.VPSDE()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(32, 3, generator=g, dtype=torch.float64)
    z = torch.randn(32, 3, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x_t = sde.perturb(x0, t, z)
    model = ScoreModel(nn.Identity(), sde, kind, sigma_data=SD)
    s, sigma = sde.scale(t)[:, None], sde.sigma(t)[:, None]
    std, r = s * sigma, torch.sqrt(SD**2 + sigma**2)
    v = (SD / r) * z - (sigma / r) * x0 / SD
    want = {
        "score": -z / std,
        "scaled_score": -z,
        "eps": z,
        "x0": x0,
        "v": v,
        "edm": -v,
        "flow": sde.scale_deriv(t)[:, None] * x0 + sde.std_deriv(t)[:, None] * z,
    }[kind]
    torch.testing.assert_close(model.target(x_t, z, t), want, rtol=1e-10, atol=1e-10)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.lin(torch.cat([x, c_noise[:, None]], 1))


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none"])
def test_loss_matches_dsm_loss(kind: str, weighting: str) -> None:
    torch.manual_seed(0)
    sde = S.SubVPSDE()
    model = ScoreModel(TinyNet().double(), sde, kind)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    ours = model.loss(x0, weighting=weighting, t=t, noise=z, reduction="none")  # type: ignore[arg-type]
    ref = S.dsm_loss(model, sde, x0, weighting=weighting, t=t, noise=z, reduction="none")  # type: ignore[arg-type]
    # the trainer's unchecked path, the checked method and the public loss are one computation
    hot = model._loss(x0, t, z, None, weighting, "none")
    assert torch.equal(ours, ref)
    assert torch.equal(hot, ref)
    assert torch.equal(model._loss(x0, t, z, None, weighting, "mean"), ref.mean())
    # and it is lambda(t) out(t)^2 ||F - F*||^2 on the raw output, F* the exact target
    x_t = sde.perturb(x0, t, z)
    out, std = model.coefficients(t).out, sde.std(t)
    lam = {"sigma2": std**2, "likelihood": sde.g2(t), "none": torch.ones_like(t)}[weighting]
    raw = (model.raw_output(x_t, t) - model.target(x_t, z, t)).pow(2).sum(1)
    torch.testing.assert_close(ref, lam * out**2 * raw, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_natural_loss_is_the_mse_on_the_target(kind: str) -> None:
    """``natural`` weighting: ``||F - F*||^2`` exactly as the raw-output MSE (float64)."""
    torch.manual_seed(0)
    sde = S.VPSDE()
    model = ScoreModel(TinyNet().double(), sde, kind, sigma_data=SD)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.99 + 0.01
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    x_t = sde.perturb(x0, t, z)
    want = (model.raw_output(x_t, t) - model.target(x_t, z, t)).pow(2).sum(1)
    got = model.loss(x0, t=t, noise=z, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert torch.equal(model._loss(x0, t, z, None, "natural", "none"), got)


def test_natural_losses_are_the_papers() -> None:
    torch.manual_seed(0)
    sde = S.EDMSDE()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = sample_training_times(sde, 16, method="edm", generator=g, dtype=torch.float64)
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    x_t = sde.perturb(x0, t, z)
    net = TinyNet().double()
    # eps: DDPM's ||eps_hat - z||^2
    eps_model = ScoreModel(net, sde, "eps")
    f = eps_model.raw_output(x_t, t)
    want = (f - z).pow(2).sum(1)
    torch.testing.assert_close(eps_model.loss(x0, t=t, noise=z, reduction="none"), want)
    # edm: lambda(sigma) ||D - x0||^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2
    edm = ScoreModel(net, sde, "edm", sigma_data=SD)
    d = edm.denoise(x_t, t)
    lam = (t**2 + SD**2) / (t * SD) ** 2
    want = lam * (d - x0).pow(2).sum(1)
    got = edm.loss(x0, t=t, noise=z, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_edm_training_times_are_lognormal() -> None:
    sde = S.EDMSDE()
    g = torch.Generator().manual_seed(4)
    t = sample_training_times(sde, 20000, method="edm", generator=g, dtype=torch.float64)
    assert float(t.min()) >= sde.sigma_min and float(t.max()) <= sde.sigma_max
    logs = torch.log(t)
    # clamping touches < 1e-3 of the mass; mean/std of N(-1.2, 1.2^2) within 5 standard errors
    assert abs(float(logs.mean()) + 1.2) < 5 * 1.2 / math.sqrt(20000)
    assert abs(float(logs.std()) - 1.2) < 5 * 1.2 / math.sqrt(2 * 20000)
    u = sample_training_times(S.VPSDE(), 1000, generator=g)
    assert float(u.min()) >= 1e-5 and float(u.max()) <= 1.0


def test_noise_input_t_and_errors() -> None:
    sde = S.VESDE()
    t = torch.tensor([0.1, 0.5])
    c = coefficients("eps", sde, t, noise_input="t")
    torch.testing.assert_close(c.c_noise, t)
    with pytest.raises(ValueError, match="Did you mean 'eps'"):
        ScoreModel(nn.Identity(), sde, "epsilon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SDE"):
        ScoreModel(nn.Identity(), "vp")  # type: ignore[arg-type]
    bad = ScoreModel(WrongShape(), sde)
    with pytest.raises(ValueError, match="must return x's shape"):
        bad.raw_output(torch.zeros(2, 2), torch.full((2,), 0.5))


class WrongShape(nn.Module):
    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return x[:, :1]


class CondNet(nn.Module):
    """Output = one row of a table per label (null label = 2): makes guidance checkable."""

    null_label = 2

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        y = torch.full((x.shape[0],), 2) if y is None else y
        return self.table[y].to(x.dtype)


def test_classifier_free_guidance() -> None:
    sde = S.VPSDE()
    model = ScoreModel(CondNet(), sde, "score")
    x = torch.zeros(3, 2)
    t = torch.full((3,), 0.5)
    cond = model(x, t, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(cond, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(model(x, t), torch.full((3, 2), 0.5))
    w = 3.0  # the guided score u + w (c - u) (scoresde.guidance.cfg convention)
    guided = model.score_fn(y=0, guidance=w)(x, t)
    torch.testing.assert_close(guided, 0.5 + w * (cond[[0]].expand(3, 2) - 0.5))
    torch.testing.assert_close(model.score_fn(y=0)(x, t), cond[[0]].expand(3, 2))
    with pytest.raises(ValueError, match="needs labels"):
        model.score_fn(guidance=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        ScoreModel(TinyNet(), sde).score_fn(y=1)
