"""The exponential multistep grid method ``expint4`` (``scoresde.likelihood.expint``, issue 21).

Exact oracles: Gaussian and Gaussian-mixture targets give the exact log-density of every SDE's
marginals, so errors are measured against the exact ODE answer (float64 throughout).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import scoresde as S
from helpers import draw64, grid_calls_and_reads, rms_bits_error
from scoresde.likelihood import expint, fit_grid, log_likelihood, uniform_grid
from scoresde.likelihood.divergence import score_and_jacobian, score_and_trace
from scoresde.likelihood.expint import expint_plan, lambda_of_u
from scoresde.likelihood.fitting import DENSITY_REACH, _equidistribute, calibrate
from scoresde.likelihood.grid import run_expint
from scoresde.targets import Gaussian, GaussianMixture


def _mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    return GaussianMixture(means, variances=[0.003, 0.01, 0.03], weights=[0.5, 0.3, 0.2])


_GAUSS = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])


@pytest.mark.parametrize("sde", [S.VESDE(), S.VPSDE(), S.SubVPSDE(), S.EDMSDE()], ids=repr)
def test_fourth_order_and_exact_on_a_gaussian(sde: S.SDE) -> None:
    # nodes uniform in lambda = -log sigma: doubling the steps cuts the error by ~2^4 (order 4;
    # measured 16-17.5 on the four SDEs, float64)
    score, x = _GAUSS.score_fn(sde), draw64(_GAUSS, 32, 2)
    ends = sde.sigma(torch.tensor([1e-5, sde.T], dtype=torch.float64)).log().neg()
    errs = []
    for steps in (40, 80):
        sigma = torch.linspace(float(ends[0]), float(ends[1]), steps + 1).double().neg().exp()
        u = (sigma / (0.6 + sigma)).tolist()
        g = uniform_grid(sde, (2,), nfe=steps + 1, method="expint4")
        g = dataclasses.replace(g, nodes=(g.nodes[0], *u[1:-1], g.nodes[-1]))
        r = log_likelihood(score, sde, x, divergence="exact", grid=g)
        assert r.calls == steps + 1 and (r.nfe == steps + 1).all()
        errs.append(rms_bits_error(_GAUSS, sde, x, r))
    assert 12 < errs[0] / errs[1] < 22, errs
    assert errs[1] < 5e-4, errs


def test_plan_is_exact_for_polynomials_and_the_linear_part() -> None:
    # the weights integrate polynomials of the predictor's degree exactly (Lagrange basis)
    lams = [3.0, 2.5, 1.7, 1.0, 0.2]
    plan = expint_plan(lams, 3)
    i = 3  # a full-order step: predictor on nodes 1..3, corrector on 1..4
    (pi, _, pa), (ci, cw, ca) = plan.pred[i], plan.corr[i]
    a, b = lams[i], lams[i + 1]
    assert pi == (1, 2, 3) and ci == (1, 2, 3, 4)
    assert math.isclose(sum(pa), b - a, rel_tol=1e-13)  # int 1 dl
    assert math.isclose(sum(cw), 1.0 - math.exp(a - b), rel_tol=1e-13)  # int e^(l-b) dl
    poly = [lam**3 for lam in lams]
    assert math.isclose(
        sum(w * poly[j] for w, j in zip(ca, ci, strict=True)), (b**4 - a**4) / 4, rel_tol=1e-12
    )
    assert math.isclose(plan.decay[i], math.exp(a - b), rel_tol=1e-15)


@pytest.fixture(scope="module")
def mixture_fit():
    tg, sde = _mixture(), S.VPSDE()
    grid = fit_grid(
        tg.score_fn(sde), sde, draw64(tg, 64, 1), nfe=41, divergence="exact", reference_tol=1e-8
    )  # fmt: skip  (method "auto": expint4 off flow paths)
    return tg, sde, grid


def test_fitted_grid_beats_uniform_on_held_out_points(mixture_fit) -> None:
    tg, sde, grid = mixture_fit
    assert grid.method == "expint4" and grid.nfe == 41 and grid.steps == 40
    assert (torch.tensor(grid.nodes).diff() > 0).all() and grid.fit_calls > 0
    x, score = draw64(tg, 64, 2), tg.score_fn(sde)
    uni = uniform_grid(sde, (4,), nfe=41, method="expint4")
    e_fit = rms_bits_error(tg, sde, x, log_likelihood(score, sde, x, divergence="exact", grid=grid))
    e_uni = rms_bits_error(tg, sde, x, log_likelihood(score, sde, x, divergence="exact", grid=uni))
    # measured: 2.0e-3 against 3.6e-1 bits/dim; the calibration error (2.9e-3) predicts it
    assert e_fit < e_uni / 10 and e_fit < 3e-3, (e_fit, e_uni)
    assert grid.calibration_error <= grid.uniform_error
    assert 0.3 < e_fit / grid.calibration_error < 3, (e_fit, grid.calibration_error)


def test_calls_fixed_no_host_reads_and_encode_decode(mixture_fit) -> None:
    tg, sde, grid = mixture_fit
    score = tg.score_fn(sde)
    for divergence in ("hutchinson", "exact"):  # exact: the linearly implicit corrector
        reads = grid_calls_and_reads(tg, sde, method="expint4", divergence=divergence)
        assert reads[0] == reads[1] == reads[2], (divergence, reads)  # none per step
    x = draw64(tg, 8, 0)
    z = S.encode(score, sde, x, grid=grid)
    z_ad = S.encode(score, sde, x, rtol=1e-9, atol=1e-9)
    assert (z - z_ad).abs().max() < 1e-2 * z_ad.abs().max()  # measured 1.3e-3
    assert (S.decode(score, sde, z, grid=grid) - x).abs().max() < 1e-2


def test_hutchinson_on_an_expint_grid_matches_the_adaptive_solve() -> None:
    # the same fixed probe: the grid solves the same ODE as the adaptive solver
    tg, sde = _mixture(), S.EDMSDE()
    score, x = tg.score_fn(sde), draw64(tg, 16, 3)
    grid = fit_grid(score, sde, draw64(tg, 32, 1), nfe=61, method="expint4",
                    generator=torch.Generator().manual_seed(0), reference_tol=1e-8)  # fmt: skip
    a = log_likelihood(score, sde, x, grid=grid, generator=torch.Generator().manual_seed(5))
    b = log_likelihood(score, sde, x, rtol=1e-9, atol=1e-9,
                       generator=torch.Generator().manual_seed(5))  # fmt: skip
    assert float((a.log_prob - b.log_prob).abs().max()) / (4 * math.log(2)) < 1e-2


def test_expint_errors() -> None:
    tg = _mixture()
    x = draw64(tg, 4, 0)
    flow = S.RectifiedFlow()
    with pytest.raises(ValueError, match="use method='dopri5' for flow paths"):
        fit_grid(tg.score_fn(flow), flow, x, nfe=20, method="expint4")
    with pytest.raises(ValueError, match="use method='dopri5' for flow paths"):
        uniform_grid(flow, (4,), nfe=20, method="expint4")
    with pytest.raises(ValueError, match="nfe=1 is below one expint4 step"):
        uniform_grid(S.VPSDE(), (4,), nfe=1, method="expint4")
    with pytest.raises(ValueError, match="unknown method"):
        uniform_grid(S.VPSDE(), (4,), nfe=20, method="expint5")


def test_auto_method_is_expint4_off_flow_paths_and_dopri5_on_them() -> None:
    assert uniform_grid(S.VPSDE(), (4,), nfe=20, method="auto").method == "expint4"
    assert uniform_grid(S.RectifiedFlow(), (4,), nfe=18, method="auto").method == "dopri5"
    assert uniform_grid(S.VPSDE(), (4,), nfe=18).method == "dopri5"  # the unfitted baseline


def test_score_and_jacobian_is_autograds_jacobian_and_its_trace_the_exact_trace() -> None:
    tg, sde = _mixture(), S.VPSDE()
    score, x = tg.score_fn(sde), draw64(tg, 6, 4)
    t = torch.full((6,), 0.3, dtype=torch.float64)
    s, jac = score_and_jacobian(score, x, t)
    want = torch.stack([
        torch.autograd.functional.jacobian(lambda v, tt=tt: score(v[None], tt[None])[0], xi)
        for xi, tt in zip(x, t, strict=True)
    ])  # fmt: skip
    assert jac.shape == (6, 4, 4) and torch.allclose(jac, want, rtol=1e-12, atol=1e-12)
    s2, tr = score_and_trace(score, x, t, None)
    assert torch.equal(s, s2)
    assert torch.allclose(jac.diagonal(dim1=1, dim2=2).sum(-1), tr, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("sde", [S.VPSDE(), S.EDMSDE()], ids=repr)
def test_linearly_implicit_corrector_follows_the_stiff_paths_of_a_mixture(sde: S.SDE) -> None:
    # the same 31 uniform nodes, with and without the Jacobian in the corrector: paths that
    # leave a split posterior contract fast (data to noise), too fast for the explicit one.
    # Measured (64 points, RMS bits/dim against a 1e-9 solve): VP 8.9e-2 vs 8.7e-1, EDM 0.36
    # vs 132 (VE 2.0e-2 vs 6.9e-2).
    tg = _mixture()
    cal = calibrate(tg.score_fn(sde), sde, draw64(tg, 64, 2), divergence="exact",
                    reference_tol=1e-9)  # fmt: skip
    nodes = uniform_grid(sde, (4,), nfe=31, method="expint4").nodes
    errs = []
    for linearize in (True, False):
        y, calls, _ = run_expint(cal.flow, cal.rhs, cal.y0, cal.t0, cal.t1, nodes,
                                 linearize=linearize)  # fmt: skip
        assert calls == 31
        errs.append(cal.error(y))
    assert errs[0] < errs[1] / 5, errs


def test_node_density_reaches_past_the_measured_window() -> None:
    # a density measured high only on [0, 0.1] in lambda: the nodes are dense over
    # [-reach, 0.1 + reach] (a held-out path turns a little before or after the calibration's)
    lams = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    mid = 0.5 * (lams[1:] + lams[:-1])
    density = torch.where((mid > 0) & (mid < 0.1), 1e4, 1.0).double()
    nodes = torch.tensor(lambda_of_u(_equidistribute(lams, density, 40)))
    before = ((nodes > -DENSITY_REACH + 0.02) & (nodes < -0.02)).sum()
    after = ((nodes > 0.12) & (nodes < 0.1 + DENSITY_REACH - 0.02)).sum()
    # each side holds ~0.25 / 0.6 of the mass: ~16 nodes (none without the reach)
    assert before >= 12 and after >= 12, nodes
    assert (nodes.diff() > 0).all()


def test_above_the_dimension_cap_the_corrector_is_explicit(monkeypatch) -> None:
    tg, sde = _mixture(), S.VPSDE()
    cal = calibrate(tg.score_fn(sde), sde, draw64(tg, 8, 2), divergence="exact",
                    reference_tol=1e-6)  # fmt: skip
    nodes = uniform_grid(sde, (4,), nfe=15, method="expint4").nodes

    def solve(linearize: bool) -> torch.Tensor:
        return run_expint(cal.flow, cal.rhs, cal.y0, cal.t0, cal.t1, nodes, linearize=linearize)[0]

    explicit, implicit = solve(False), solve(True)
    assert not torch.equal(explicit, implicit)
    monkeypatch.setattr(expint, "LINEARIZE_MAX_DIM", 3)  # d = 4: no Jacobian kept
    assert torch.equal(solve(True), explicit)
