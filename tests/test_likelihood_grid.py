"""Likelihood on a fitted fixed grid: ``scoresde.likelihood.fit_grid`` and ``grid=`` (issue 21).

Exact oracles: Gaussian and Gaussian-mixture targets give the exact log-density of every SDE's
marginals (``scoresde.targets``), so the grid's error is measured, not compared with a solver.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from helpers import draw64, grid_calls_and_reads, rms_bits_error
from scoresde.likelihood import LikelihoodGrid, fit_grid, log_likelihood, uniform_grid
from scoresde.likelihood.rk import TABLEAUS, solve_fixed
from scoresde.targets import Gaussian, GaussianMixture


def _mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    return GaussianMixture(means, variances=[0.01, 0.03, 0.1], weights=[0.5, 0.3, 0.2])


def _anisotropic() -> Gaussian:
    """A Gaussian in 8-d with covariance eigenvalues 1e-3..1 (the scales a grid must resolve)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    lam = torch.logspace(-3, 0, 8, dtype=torch.float64)
    return Gaussian(torch.full((8,), 0.3, dtype=torch.float64), covariance=q @ lam.diag() @ q.T)


@pytest.fixture(scope="module")
def fitted() -> tuple[GaussianMixture, S.SDE, LikelihoodGrid]:
    tg, sde = _anisotropic(), S.VPSDE()
    x = draw64(tg, 16, 1)
    grid = fit_grid(tg.score_fn(sde), sde, x, nfe=18, method="dopri5", divergence="exact",
                    max_solves=16, reference_tol=1e-7)  # fmt: skip
    return tg, sde, grid


def test_fitted_nodes_strictly_increasing_inside_the_interval(fitted) -> None:
    tg, sde, grid = fitted
    u = torch.tensor(grid.nodes, dtype=torch.float64)
    sigma = sde.sigma(torch.tensor([1e-5, sde.T], dtype=torch.float64))
    assert math.isclose(grid.nodes[0], float(sigma[0] / (0.6 + sigma[0])), rel_tol=1e-12)
    assert math.isclose(grid.nodes[-1], float(sigma[1] / (0.6 + sigma[1])), rel_tol=1e-12)
    assert (u.diff() > 0).all() and grid.steps == 3 and grid.nfe == 18
    assert grid.method == "dopri5" and grid.sde == repr(sde) and grid.event_shape == (8,)
    assert grid.fit_calls > 0 and grid.calibration_error <= grid.uniform_error


def test_fitted_grid_no_worse_than_uniform_on_held_out_points(fitted) -> None:
    # exact log-density of an anisotropic Gaussian under VP; held-out points (other seed); the
    # same batched calls for the fitted and the uniform grid (measured: 1e-3 vs 3e-2 bits/dim)
    tg, sde, grid = fitted
    score = tg.score_fn(sde)
    x = draw64(tg, 64, 2)
    uni = uniform_grid(sde, (8,), nfe=18)
    r_fit = log_likelihood(score, sde, x, divergence="exact", grid=grid)
    r_uni = log_likelihood(score, sde, x, divergence="exact", grid=uni)
    assert r_fit.calls == r_uni.calls == 18
    e_fit, e_uni = rms_bits_error(tg, sde, x, r_fit), rms_bits_error(tg, sde, x, r_uni)
    assert e_fit <= e_uni / 4, (e_fit, e_uni)
    assert e_fit < 3e-3  # the accuracy, with 18 calls
    assert abs(e_fit - grid.calibration_error) < 0.5 * e_fit  # calibration predicts it


def test_gaussian_grid_is_accurate_and_converges() -> None:
    # one Gaussian: few calls give 1e-3 bits/dim; more calls reduce the error
    tg = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])
    for sde in (S.VESDE(), S.EDMSDE()):
        score = tg.score_fn(sde)
        xc = draw64(tg, 16, 1)
        x = draw64(tg, 32, 2)
        errs = []
        for nfe in (12, 24):
            g = fit_grid(score, sde, xc, nfe=nfe, method="dopri5", divergence="exact",
                         max_solves=8, reference_tol=1e-7)  # fmt: skip
            errs.append(rms_bits_error(tg, sde, x, log_likelihood(score, sde, x, grid=g,
                                                             divergence="exact")))  # fmt: skip
        assert errs[1] < errs[0] < 3e-3, errs


def test_fit_is_reproducible_with_a_generator() -> None:
    tg, sde = _mixture(), S.EDMSDE()
    x = draw64(tg, 8, 1)

    def fit(seed: int) -> LikelihoodGrid:
        gen = torch.Generator().manual_seed(seed)
        return fit_grid(tg.score_fn(sde), sde, x, nfe=18, method="dopri5", generator=gen,
                        max_solves=6, reference_tol=1e-7)  # fmt: skip

    a, b = fit(3), fit(3)
    assert a == b  # nodes, errors and cost, bit for bit
    assert fit(4).calibration_error != a.calibration_error  # the probes come from the generator


def test_calls_fixed_whatever_the_batch_and_no_host_reads_per_step() -> None:
    tg, sde = _mixture(), S.VESDE()
    score = tg.score_fn(sde)
    reads = grid_calls_and_reads(tg, sde, generator=torch.Generator().manual_seed(0))
    # the boundary checks read a few values; the solve itself none (4x the steps, same reads)
    assert reads[0] == reads[1] == reads[2], reads
    # chunks: each chunk is a full solve
    x = draw64(tg, 10, 0)
    r = log_likelihood(score, sde, x, grid=uniform_grid(sde, (4,), nfe=12), batch_size=4)
    assert r.calls == 3 * 12


def test_encode_decode_on_a_grid_invert_each_other() -> None:
    tg, sde = _mixture(), S.EDMSDE()
    score = tg.score_fn(sde)
    x = draw64(tg, 8, 0)
    grid = uniform_grid(sde, (4,), nfe=60)
    z = S.encode(score, sde, x, grid=grid)
    z_ad = S.encode(score, sde, x, rtol=1e-8, atol=1e-8)
    assert (z - z_ad).abs().max() < 1e-2 * z_ad.abs().max()
    assert (S.decode(score, sde, z, grid=grid) - x).abs().max() < 1e-2


def test_flow_path_grid() -> None:
    # rectified flow: s(T) = 0, the denoiser form; the last node is u = 1 exactly
    tg, sde = _mixture(), S.RectifiedFlow()
    score = tg.score_fn(sde)
    xc = draw64(tg, 16, 1)
    grid = fit_grid(score, sde, xc, nfe=30, divergence="exact", max_solves=8, reference_tol=1e-7)
    assert grid.method == "dopri5"  # "auto" on a flow path (expint4 cannot start at lambda = -inf)
    assert grid.nodes[-1] == 1.0 and (torch.tensor(grid.nodes).diff() > 0).all()
    x = draw64(tg, 32, 2)
    r = log_likelihood(score, sde, x, divergence="exact", grid=grid)
    assert rms_bits_error(tg, sde, x, r) < 0.05


def test_solve_fixed_is_fifth_order() -> None:
    # dy/du = cos(u) y: y(1) = exp(sin 1); halving the step cuts the error by ~2^5
    def rhs(rows: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cos(u)[:, None] * y

    y0 = torch.ones(2, 1, dtype=torch.float64)
    errs = []
    for steps in (4, 8):
        nodes = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        sol = solve_fixed(rhs, y0, nodes, method="dopri5")
        assert sol.calls == 6 * steps
        errs.append(float((sol.y - math.exp(math.sin(1.0))).abs().max()))
    assert 20 < errs[0] / errs[1] < 45, errs
    assert TABLEAUS["bosh3"].stages - 1 == 3


def test_bad_input_errors(fitted) -> None:
    tg, sde, grid = fitted
    score = tg.score_fn(sde)
    x = draw64(tg, 4, 0)
    with pytest.raises(ValueError, match="fitted for VPSDE.*fit a grid for this SDE"):
        log_likelihood(tg.score_fn(S.VESDE()), S.VESDE(), x, grid=grid)
    with pytest.raises(ValueError, match=r"samples of shape \(8,\).*\(2, 4\)"):
        log_likelihood(score, sde, x.reshape(4, 2, 4), grid=grid)
    with pytest.raises(ValueError, match="pass eps=grid.eps"):
        log_likelihood(score, sde, x, grid=grid, eps=1e-3)
    with pytest.raises(TypeError, match="LikelihoodGrid"):
        log_likelihood(score, sde, x, grid=list(grid.nodes))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nfe=4 is below one dopri5 step"):
        fit_grid(score, sde, x, nfe=4, method="dopri5")
    with pytest.raises(TypeError, match="nfe must be an int"):
        fit_grid(score, sde, x, nfe=12.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown method"):
        fit_grid(score, sde, x, nfe=12, method="rk45")
    with pytest.raises(ValueError, match="x_calib must be a non-empty batch"):
        fit_grid(score, sde, x[:0], nfe=12)
    with pytest.raises(ValueError, match="max_solves"):
        fit_grid(score, sde, x, nfe=12, max_solves=-1)
