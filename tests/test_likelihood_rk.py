"""The batched embedded Runge–Kutta solver: order, accuracy against torchdiffeq, per-row control."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

import scoresde as S
from helpers import HostReads
from scoresde.likelihood.flow import ProbabilityFlow
from scoresde.likelihood.rk import TABLEAUS, solve_ivp_batched
from scoresde.targets import Gaussian


def _fixed_step(tab, f, y0: torch.Tensor, n: int) -> torch.Tensor:
    """n equal steps of the propagated solution on [0, 1] (to measure the order)."""
    h, y, u = 1.0 / n, y0, torch.zeros(y0.shape[0], dtype=y0.dtype)
    for _ in range(n):
        ks = [f(u, y)]
        for i in range(1, tab.stages):
            acc = sum(ks[j] * tab.a[i][j] for j in range(i))
            ks.append(f(u + tab.c[i] * h, y + h * acc))
        y = y + h * sum(k * b for k, b in zip(ks, tab.b, strict=True))
        u = u + h
    return y


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_convergence_order(name: str) -> None:
    tab = TABLEAUS[name]

    def f(u, y):
        return torch.cos(u)[:, None] * y  # y = exp(sin u)

    y0 = torch.ones(1, 1, dtype=torch.float64)
    errs = [abs(float(_fixed_step(tab, f, y0, n)) - math.exp(math.sin(1.0))) for n in (8, 16)]
    assert math.log2(errs[0] / errs[1]) == pytest.approx(tab.order, abs=0.35)
    # the tableau is consistent: sum(b) = 1, sum(e) = 0, rows sum to c
    assert math.fsum(tab.b) == pytest.approx(1.0, abs=1e-14)
    assert math.fsum(tab.e) == pytest.approx(0.0, abs=1e-14)
    for ci, row in zip(tab.c[1:], tab.a[1:], strict=True):
        assert math.fsum(row) == pytest.approx(ci, abs=1e-14)


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_adaptive_matches_torchdiffeq_reference(name: str) -> None:
    # y' = A y (rotation with decay) on different intervals per row, against torchdiffeq dopri5
    a = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=torch.float64)

    def rhs(rows, u, y):
        return y @ a.T

    y0 = torch.tensor([[1.0, 0.0], [0.5, -1.0], [2.0, 1.0]], dtype=torch.float64)
    u0 = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    u1 = torch.tensor([2.0, 0.0, 4.0], dtype=torch.float64)  # row 1 integrates backwards
    sol = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-8, atol=1e-8, method=name)
    for b in range(3):
        ref = odeint(
            lambda t, y: y @ a.T,
            y0[b : b + 1],
            torch.stack([u0[b], u1[b]]),
            rtol=1e-11,
            atol=1e-11,
            method="dopri5",
        )[-1]
        assert torch.allclose(sol.y[b], ref[0], atol=5e-6), name
    assert int(sol.rejected.sum()) >= 0 and sol.calls == int(sol.nfe.max())


def test_rows_do_not_affect_each_other() -> None:
    def rhs(rows, u, y):
        k = torch.where(rows == 1, 40.0, 1.0).to(y)  # row 1 is stiff-ish
        return -k[:, None] * (y - torch.sin(u)[:, None])

    y0 = torch.ones(2, 3, dtype=torch.float64)
    u0, u1 = torch.zeros(2, dtype=torch.float64), torch.full((2,), 3.0, dtype=torch.float64)
    both = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-6, atol=1e-6)
    alone = solve_ivp_batched(
        lambda r, u, y: rhs(r * 0, u, y), y0[:1], u0[:1], u1[:1], rtol=1e-6, atol=1e-6
    )
    assert torch.equal(both.y[0], alone.y[0])
    assert int(both.nfe[0]) == int(alone.nfe[0]) < int(both.nfe[1])
    assert int(both.steps[0]) == int(alone.steps[0])


def test_tighter_tolerance_is_more_accurate_and_costs_more() -> None:
    def rhs(rows, u, y):
        return torch.cos(u)[:, None] * y

    y0 = torch.ones(1, 1, dtype=torch.float64)
    u0, u1 = torch.zeros(1, dtype=torch.float64), torch.full((1,), 5.0, dtype=torch.float64)
    exact = math.exp(math.sin(5.0))
    loose = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-4, atol=1e-4)
    tight = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-8, atol=1e-8)
    assert abs(float(tight.y) - exact) < abs(float(loose.y) - exact)
    assert abs(float(tight.y) - exact) < 1e-6
    assert int(tight.nfe[0]) > int(loose.nfe[0])


def test_nonfinite_rhs_raises() -> None:
    def bad_start(rows, u, y):
        return y * float("nan")

    y0 = torch.ones(2, 2, dtype=torch.float64)
    u0, u1 = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN or inf"):
        solve_ivp_batched(bad_start, y0, u0, u1, rtol=1e-5, atol=1e-5)

    def bad_later(rows, u, y):
        return torch.where((u > 0.5)[:, None], y * float("nan"), y)

    with pytest.raises(RuntimeError, match="step size underflow"):
        solve_ivp_batched(bad_later, y0, u0, u1, rtol=1e-5, atol=1e-5)


def test_zero_length_interval_and_unknown_method() -> None:
    y0 = torch.ones(2, 2, dtype=torch.float64)
    u = torch.zeros(2, dtype=torch.float64)
    sol = solve_ivp_batched(lambda r, u, y: y, y0, u, u, rtol=1e-5, atol=1e-5)
    assert torch.equal(sol.y, y0) and sol.calls == 0
    with pytest.raises(ValueError, match="did you mean|Did you mean"):
        solve_ivp_batched(lambda r, u, y: y, y0, u, u + 1, rtol=1e-5, atol=1e-5, method="dopri")


def _vp_gaussian_flow() -> tuple[ProbabilityFlow, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PF ODE of a 2-d Gaussian under VP: ``(flow, [w, A] at eps, u(eps), u(T))``, 6 rows."""
    sde = S.VPSDE()
    tg = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])
    x = tg.sample(6, torch.Generator().manual_seed(0), dtype=torch.float64)
    flow = ProbabilityFlow(tg.score_fn(sde), sde, (2,))
    t0, t1 = torch.full((6,), 1e-5, dtype=torch.float64), torch.full((6,), 1.0, dtype=torch.float64)
    y0 = torch.cat([flow.to_state(x, t0), x.new_zeros(6, 1)], dim=1)
    return flow, y0, flow.u_of_t(t0), flow.u_of_t(t1)


def test_staged_rhs_computes_coefficients_once_per_step_with_identical_results() -> None:
    """The PF-ODE right-hand side offers ``prepare``/``stage``: the solver announces each step's
    stage points, the frame coefficients are computed once per step, and the result is
    bit-identical to evaluating the same function stage by stage."""
    flow, y0, u0, u1 = _vp_gaussian_flow()
    frames = []
    original = flow.frame

    def counting_frame(u: torch.Tensor):  # noqa: ANN202
        frames.append(u.numel())
        return original(u)

    flow.frame = counting_frame  # type: ignore[method-assign]
    staged = flow.drift_and_divergence(None)
    plain = staged.__call__  # the same function without the staged interface
    kw = dict(rtol=1e-6, atol=1e-6)
    a = solve_ivp_batched(staged, y0, u0, u1, **kw)
    n_staged = len(frames)
    frames.clear()
    b = solve_ivp_batched(plain, y0, u0, u1, **kw)
    assert torch.equal(a.y, b.y) and torch.equal(a.nfe, b.nfe)
    assert len(frames) == b.calls  # one frame per batched call when evaluated stage by stage
    attempts = int((a.steps + a.rejected).max())
    assert n_staged == 2 + attempts < b.calls  # start, probe, then one per step attempt


def test_one_host_read_per_step() -> None:
    """The adaptive loop reads tensor values into Python once per step attempt (whether rows
    finished or underflowed, together): on a GPU each read waits for the device."""
    flow, y0, u0, u1 = _vp_gaussian_flow()
    counts = {}
    for tol in (1e-4, 1e-8):
        with HostReads() as h:
            sol = solve_ivp_batched(flow.drift_and_divergence(None), y0, u0, u1, rtol=tol, atol=tol)
        counts[tol] = (h.count, int((sol.steps + sol.rejected).max()))
    (reads_lo, n_lo), (reads_hi, n_hi) = counts[1e-4], counts[1e-8]
    assert n_hi > 2 * n_lo
    assert reads_hi - reads_lo <= n_hi - n_lo  # at most one more read per extra step attempt


@pytest.mark.parametrize(
    "sde", [S.VESDE(), S.VPSDE(), S.SubVPSDE(), S.EDMSDE()], ids=["ve", "vp", "subvp", "edm"]
)
def test_integration_variable_inverts_and_differentiates(sde: S.SDE) -> None:
    """``u = sigma / (0.6 + sigma)``: monotone, ``t_of_u`` inverts it, ``dsigma_du`` is exact."""
    flow = ProbabilityFlow(lambda x, t: -x, sde, (2,))
    t = torch.linspace(1e-4, 1.0, 9, dtype=torch.float64) * sde.T
    u = flow.u_of_t(t)
    assert torch.all(torch.diff(u) > 0) and float(u.max()) < 1.0
    torch.testing.assert_close(flow.t_of_u(u), t, rtol=1e-9, atol=1e-12)
    uu = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.sigma_of_u(uu).sum(), uu)
    torch.testing.assert_close(flow.dsigma_du(t, sde.sigma(t)), grad, rtol=1e-7, atol=1e-12)


def test_first_probe_bounds_the_heuristic_probe_not_the_first_step() -> None:
    y0 = torch.ones(1, 1)
    u0, u1 = torch.zeros(1), torch.ones(1)
    with pytest.raises(ValueError, match="first_probe must lie in"):
        solve_ivp_batched(lambda r, u, y: y, y0, u0, u1, rtol=1e-5, atol=1e-5, first_probe=0.0)
    at: list[float] = []

    def rhs(rows: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        at.append(float(u[0]))
        return y

    sol = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-3, atol=1e-3, first_probe=1e-3)
    # calls: the start, the heuristic's probe, then the first step's stages (the last at u0 + h)
    assert at[1] == pytest.approx(1e-3)  # unbounded, the probe would go to 0.01 |y0| / |f0| = 0.01
    assert at[7] > 50 * 1e-3  # the first step is not capped at the probe's reach
    torch.testing.assert_close(sol.y, torch.full((1, 1), torch.e), rtol=1e-3, atol=0)
