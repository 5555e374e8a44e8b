"""Fit the nodes of a fixed-step likelihood solve to a model: :func:`fit_grid`.

The fixed grid (:mod:`.grid`) trades the adaptive solver's per-sample step control for the same
batched calls on every sample. Where its nodes sit decides its accuracy, and for a trained
network the right places follow how the network varies with the noise level, not the data's
scales. :func:`fit_grid` finds them on a few calibration points in two stages:

1. A tight adaptive solve of the calibration points (the library's own solver at
   ``rtol = atol = reference_tol``, float64 data give float64 arithmetic) is the reference, and
   the ends of its step attempts, pooled over the points, give the step density that
   equidistributes the local error at that tolerance (Hairer, Nørsett & Wanner, *Solving ODEs I*,
   II.4); the starting nodes are its quantiles, or uniform nodes in ``u`` where those score
   better.
2. A derivative-free coordinate search moves one interior node at a time towards a neighbour by
   a fraction of the gap (1/2, halved whenever a sweep improves nothing) and keeps a move when
   the objective falls. The objective bounds each point's log-density error by the sum over the
   steps of ``|e_i|``, step ``i``'s local error (step doubling from the grid's own state) carried
   to the log-density: ``log p_t(x_t) + A_t`` is constant along the exact flow, so a state error
   ``dw`` changes the result by ``m score . dw`` besides the error of ``A`` itself. The RMS of
   that bound over the points is minimised. Unlike the global error against the reference, the
   bound cannot be lowered by errors of different steps cancelling on the calibration points,
   which did not carry over to other points (measured: ``benchmarks/likelihood_grid.py``). A
   move of node ``i`` leaves the solve up to node ``i - 1`` unchanged, so each trial restarts
   there. The reference gives the reported calibration errors, and where the result is less
   accurate on the calibration points than uniform nodes, the uniform nodes are returned.

For ``method="expint4"`` (:mod:`.expint`) the nodes instead equidistribute the multistep
method's own local-error estimate (:func:`fit_expint`): no search, a few solves.

Everything is deterministic given ``generator`` (it draws only the Hutchinson probes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_positive
from ..sde import SDE, ScoreFn
from .api import (
    FlowSolver,
    _check_common,
    _check_estimator,
    _times,
    final_log_density,
    initial_state,
)
from .divergence import draw_probes
from .expint import EXPINT_METHODS, lambda_of_u
from .flow import DenoiserFlow, ProbabilityFlow, probability_flow, u_of_sigma
from .grid import (
    LikelihoodGrid,
    check_method_for,
    end_points,
    grid_nfe,
    resolve_method,
    run_expint,
    steps_for,
)
from .rk import RHS, FixedSolution, solve_fixed, substeps

__all__ = ["fit_grid", "calibrate", "fit_calibrated", "fit_expint", "Calibration"]

MIN_MOVE = 1 / 64
"""The search stops when a move would shift a node by less than this fraction of its gap."""


class _Recorder:
    """Passes a staged right-hand side through, recording where each step attempt ends."""

    def __init__(self, rhs: RHS, ends: list[Tensor]) -> None:
        self.rhs, self.ends = rhs, ends

    def __call__(self, rows: Tensor, u: Tensor, y: Tensor) -> Tensor:
        return self.rhs(rows, u, y)

    def prepare(self, us: Tensor) -> None:
        """Record the last stage's point (the step's end) and announce the step."""
        self.ends.append(us[-1].detach())
        self.rhs.prepare(us)  # type: ignore[attr-defined]

    def stage(self, i: int, rows: Tensor, y: Tensor) -> Tensor:
        """Stage ``i`` of the announced step."""
        return self.rhs.stage(i, rows, y)  # type: ignore[attr-defined]


@dataclass
class Calibration:
    """The calibration problem: the augmented PF ODE of ``x`` and its reference log-density."""

    flow: ProbabilityFlow
    x: Tensor
    probes: Tensor | None
    eps: float
    method: str = "dopri5"
    """The fixed-step method being fitted."""
    reference: Tensor = field(init=False)
    ends: Tensor = field(init=False)
    """Where the reference solve's step attempts ended (pooled over the points)."""
    reference_calls: int = 0
    fine_rates: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    """Per multistep method: the local-error rates of the fine solve and its ``lambda``s."""
    calls: int = 0
    """Batched calls of the trial solves so far, each over the calibration batch."""

    def __post_init__(self) -> None:
        self.t0, self.t1 = _times(self.flow.sde, self.x, self.eps)
        self.rhs = self.flow.drift_and_divergence(self.probes)
        self.y0 = initial_state(self.flow, self.x, self.t0)

    def log_prob(self, y: Tensor) -> Tensor:
        """``log p_eps(x)`` from the augmented state ``y`` at ``T`` (as ``solve_log_density``)."""
        return final_log_density(self.flow, y, self.t0, self.t1)[0]

    def solve_reference(self, tol: float) -> None:
        """The tight adaptive solve: the reference and the pooled ends of its step attempts."""
        ends: list[Tensor] = []
        solver = FlowSolver(tol, tol, "dopri5")
        sol = solver.solve(self.flow, _Recorder(self.rhs, ends), self.y0, self.t0, self.t1)
        self.reference = self.log_prob(sol.y)
        self.reference_calls = sol.calls
        self.ends = torch.cat(ends)

    def error(self, y: Tensor) -> float:
        """RMS error (nats) of the log-densities at the end state ``y`` against the reference."""
        return float((self.log_prob(y) - self.reference).double().pow(2).mean().sqrt())

    def solve(self, nodes: Tensor, start: int = 0, y: Tensor | None = None,
              k: Tensor | None = None) -> FixedSolution:  # fmt: skip
        """The fixed-step solve over ``nodes`` from node ``start`` (state ``y``, slope ``k``)."""
        y0 = self.y0 if y is None else y
        sol = solve_fixed(self.rhs, y0, nodes, method=self.method, start=start, k0=k, keep=True)
        self.calls += sol.calls
        return sol

    def sensitivity(self, u: Tensor, y: Tensor, k: Tensor) -> Tensor:
        """``d log p_t(x) / dw`` at state ``y`` with slope ``k`` there: ``m score(m w, t)``.

        ``log p_t(x_t) + A_t`` is constant along the exact flow, so a state error ``dw`` at
        ``u`` changes the final log-density by this times ``dw``. The score is read back from
        the slope ``dw/du = -a F - b w`` (``F`` the score, or the denoiser on a flow path).
        """
        fr = self.flow.frame(u)
        w = y[:, :-1]
        f = -(k[:, :-1] + fr.b[:, None] * w) / fr.a[:, None]
        if isinstance(self.flow, DenoiserFlow):  # F = D: score = (s D - x) / std^2
            s = self.flow.sde.scale(fr.t)[:, None]
            f = (s * f - fr.m[:, None] * w) / self.flow.sde.std(fr.t)[:, None] ** 2
        return fr.m[:, None] * f

    def local_errors(
        self, nodes: Tensor, sol: FixedSolution, start: int, count: int | None = None
    ) -> Tensor:
        """``|e_i|`` ``(count, B)`` of the steps from ``start`` (default: all to the end).

        Each step's local error carried to ``log p``: step doubling from the solve's own state
        at every node (``sol`` starts at node ``start``; all steps in one batch),
        ``d = y_{i+1} - (two half steps)``, ``e_i = d_A + sensitivity . d_w``.
        """
        n, batch = nodes.shape[0] - 1 - start if count is None else count, self.x.shape[0]
        probes = None if self.probes is None else self.probes.repeat(1, n, 1)
        u = nodes[start : start + n].repeat_interleave(batch)
        h = (nodes[start + 1 : start + n + 1] - nodes[start : start + n]).repeat_interleave(batch)
        y, k = torch.cat(sol.states[:n]), torch.cat(sol.slopes[:n])
        rhs = self.flow.drift_and_divergence(probes)
        fine, k_fine, calls = substeps(rhs, y, k, u, h, method=self.method)
        self.calls += calls
        d = torch.cat(sol.states[1 : n + 1]) - fine
        g = self.sensitivity(u + h, fine, k_fine)
        e = d[:, -1] + (g * d[:, :-1]).sum(dim=1)
        return e.abs().reshape(n, batch)


def _equidistributed(ends: Tensor, u0: float, u1: float, steps: int) -> list[float]:
    """Nodes at the quantiles of the step ends, blended 9:1 with uniform ones.

    The blend keeps them strictly increasing where quantiles coincide.
    """
    qs = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    inner = torch.quantile(ends.double().cpu().clamp(u0, u1), qs[1:-1])
    uniform = u0 + (u1 - u0) * qs[1:-1]
    return [u0, *(0.9 * inner + 0.1 * uniform).tolist(), u1]


def _uniform(u0: float, u1: float, steps: int) -> list[float]:
    return torch.linspace(u0, u1, steps + 1, dtype=torch.float64).tolist()


@dataclass
class _Search:
    """Current nodes, the solve's states and slopes at them and the steps' local errors."""

    nodes: list[float]
    sol: FixedSolution
    local: Tensor
    """``|e_i|`` per step and point, ``(steps, B)``."""

    @property
    def objective(self) -> float:
        """RMS over the points of the summed ``|e_i|``: an error bound no step can cancel."""
        return float(self.local.sum(dim=0).double().pow(2).mean().sqrt())

    def trial(self, cal: Calibration, i: int, move: float) -> bool:
        """Move node ``i`` by ``move`` of the gap towards a neighbour; keep it if better."""
        nodes = list(self.nodes)
        gap = nodes[i + 1] - nodes[i] if move > 0 else nodes[i] - nodes[i - 1]
        nodes[i] += move * gap
        grid = _tensor(nodes, cal.x)
        sol = cal.solve(grid, i - 1, self.sol.states[i - 1], self.sol.slopes[i - 1])
        # the two steps next to node i change; later steps' local errors barely (their states
        # move by the change of the global error) and keep their values
        local = torch.cat(
            [self.local[: i - 1], cal.local_errors(grid, sol, i - 1, 2), self.local[i + 1 :]]
        )
        old = self.objective
        before = (self.nodes, self.sol, self.local)
        self.nodes, self.local = nodes, local
        if not self.objective < old:  # NaN never wins
            self.nodes, self.sol, self.local = before
            return False
        self.sol = FixedSolution(
            sol.y, sol.calls, before[1].states[: i - 1] + sol.states,
            before[1].slopes[: i - 1] + sol.slopes,
        )  # fmt: skip
        return True


def _tensor(nodes: list[float], like: Tensor) -> Tensor:
    return torch.tensor(nodes, dtype=like.dtype, device=like.device)


def _start(cal: Calibration, nodes: list[float]) -> _Search:
    grid = _tensor(nodes, cal.x)
    sol = cal.solve(grid)
    return _Search(nodes, sol, cal.local_errors(grid, sol, 0))


def _refine(search: _Search, cal: Calibration, max_solves: int) -> _Search:
    """Coordinate search over the interior nodes (module docstring), ``max_solves`` trials."""
    move, solves = 0.5, 0
    while move >= MIN_MOVE and solves < max_solves:
        improved = False
        for i in range(1, len(search.nodes) - 1):
            for sign in (1.0, -1.0):
                if solves >= max_solves:
                    break
                solves += 1
                if search.trial(cal, i, sign * move):
                    improved = True
                    break
        if not improved:
            move /= 2
    return search


@torch.no_grad()
def fit_grid(
    score_fn: ScoreFn,
    sde: SDE,
    x_calib: Tensor,
    *,
    nfe: int,
    method: str = "auto",
    divergence: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    reference_tol: float | None = None,
    max_solves: int = 48,
) -> LikelihoodGrid:
    """Fit the nodes of a fixed-step PF-ODE solve of ``nfe`` batched calls to ``score_fn``.

    The likelihood ODE (Song et al. 2021, eq. 39) of the calibration points ``x_calib`` is
    solved tightly by the adaptive solver; the grid's nodes start where that solve's steps
    equidistribute the local error and a coordinate search then moves them to minimise the RMS
    error of the calibration log-densities (module docstring). Use the result as
    ``log_likelihood(score_fn, sde, x, grid=g, eps=eps)``: every sample then costs ``g.nfe``
    batched calls with no per-step host reads.

    Args:
        score_fn: the model's ``score_fn(x, t)``, differentiable in ``x``.
        sde: the forward SDE.
        x_calib: data points ``(B, *event_shape)`` like those the grid will score, 64-256:
            a fixed grid's error is set by the hardest trajectories, and the more points, the
            better the calibration error predicts other points' (on a narrow mixture 64 did
            not, 256 did within 2x). Float64 data make a float64 reference where the model
            allows it.
        nfe: batched score calls of one solve; the grid takes ``nfe // (stages - 1)`` steps
            (``dopri5``, ``tsit5``: 6 calls per step; ``bosh3``: 3), or ``nfe - 1`` steps of
            ``expint4`` (one call per node).
        method: how the grid steps between its nodes (:data:`.grid.GRID_METHODS`): a
            Runge–Kutta pair (its propagated solution; the nodes fitted as above), or
            ``"expint4"``, the exponential multistep predictor–corrector of order 4 in
            ``lambda = -log sigma`` (:mod:`.expint`; nodes that equidistribute its local error,
            :func:`fit_expint`; not on flow paths), or ``"auto"`` (default): ``expint4``, and
            ``dopri5`` on flow paths. Measured (``benchmarks/likelihood_grid.py``): on the
            trained demo networks ``expint4`` needed 0.25-0.48x SciPy's RK45 calls at equal
            accuracy against 0.77-1.42x for ``dopri5``; on analytic mixtures 0.24-0.46x
            (``dopri5`` 0.47-1.12x); on single Gaussians, whose flow in ``u`` is nearly
            linear, 0.19-0.54x (``dopri5`` 0.16-0.63x).
        divergence: ``"hutchinson"`` or ``"exact"`` as in ``log_likelihood`` (the same ODE).
        probes: Hutchinson probes per point (fixed for the fit).
        probe: ``"rademacher"`` or ``"gaussian"``.
        eps: the smallest time, as in ``log_likelihood`` (pass the same there).
        generator: source of the Hutchinson probes; the fit is deterministic given it.
        reference_tol: ``rtol = atol`` of the reference solve (default ``1e-9`` for float64
            data, else ``1e-6``).
        max_solves: trial solves of the coordinate search (each at most ``nfe`` calls).

    Returns:
        The :class:`~.grid.LikelihoodGrid` with its calibration error (bits/dim, RMS), the
        errors of the starting and of uniform nodes, and ``fit_calls``, the cost of the fit.
    """
    _check_common(score_fn, sde, x_calib, "x_calib", eps)
    method = resolve_method(method, sde)
    check_method_for(method, sde)
    _check_estimator(divergence, probe, probes, generator, None)
    steps_for(nfe, method)
    if isinstance(max_solves, bool) or not isinstance(max_solves, int) or max_solves < 0:
        raise ValueError(f"max_solves must be an int >= 0, got {max_solves!r}")
    cal = calibrate(
        score_fn, sde, x_calib, divergence=divergence, probes=probes, probe=probe, eps=eps,
        generator=generator, reference_tol=reference_tol,
    )  # fmt: skip
    return fit_calibrated(cal, nfe, method=method, max_solves=max_solves)


def calibrate(
    score_fn: ScoreFn,
    sde: SDE,
    x_calib: Tensor,
    *,
    divergence: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    reference_tol: float | None = None,
) -> Calibration:
    """The calibration problem of :func:`fit_grid`, its reference solved once.

    Arguments as there (unchecked); :func:`fit_calibrated` fits grids of several ``nfe`` to it.
    """
    tol = reference_tol or (1e-9 if x_calib.dtype == torch.float64 else 1e-6)
    check_positive("reference_tol", tol)
    flow = probability_flow(score_fn, sde, tuple(x_calib.shape[1:]))
    v = None
    if divergence == "hutchinson":
        v = draw_probes(probe, x_calib.shape[0], flow.dim, probes, generator, x_calib)
    cal = Calibration(flow, x_calib, v, eps)
    cal.solve_reference(tol)
    return cal


def fit_calibrated(
    cal: Calibration, nfe: int, *, method: str = "dopri5", max_solves: int = 48
) -> LikelihoodGrid:
    """:func:`fit_grid`'s two stages on a solved calibration problem (module docstring)."""
    if method in EXPINT_METHODS:
        return fit_expint(cal, nfe, method=method)
    steps = steps_for(nfe, method)
    cal.method, before = method, cal.calls
    sde, eps, event_shape = cal.flow.sde, cal.eps, cal.flow.event_shape
    u0, u1 = end_points(sde, eps, event_shape)
    uniform = _start(cal, _uniform(u0, u1, steps))
    start = _start(cal, _equidistributed(cal.ends, u0, u1, steps))
    uniform_err = cal.error(uniform.sol.y)
    if not start.objective <= uniform.objective:
        start = uniform
    start_err = cal.error(start.sol.y)
    search = _refine(start, cal, max_solves)
    nodes, err = search.nodes, cal.error(search.sol.y)
    if not err <= uniform_err:  # do no harm where the reference can tell
        nodes, err = _uniform(u0, u1, steps), uniform_err
    bits = cal.flow.dim * math.log(2.0)
    return LikelihoodGrid(
        tuple(nodes), method, grid_nfe(steps, method), float(eps), repr(sde),
        event_shape, err / bits, start_err / bits, uniform_err / bits,
        cal.reference_calls + cal.calls - before,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the exponential multistep method (:mod:`.expint`): nodes that equidistribute its local error
FINE_STEPS = 400
"""Steps uniform in ``lambda`` of the fine solve whose error estimates give the node density."""
EXPONENTS = (0.2, 0.25, 1 / 3)
"""Exponents ``q`` of the node densities ``L^q`` tried by :func:`fit_expint`."""
THEORY_EXPONENT = 0.25
"""The exponent ``1 / (order + 1)`` of the order-4 theory: its first pass is the grid's
``initial_error`` ("the starting nodes")."""
UNIFORM_MARGIN = 0.5
"""Uniform nodes replace the equidistributed ones only when their error bound is below this
fraction of the best one's: the bounds of all sets are close (100-250x the actual errors on a
trained network), and a near-tie won by uniform nodes cost 3-12x the error (measured)."""
DENSITY_FLOOR = 1e-3
"""The node density is at least this fraction of its maximum (no step spans a whole end)."""
DENSITY_REACH = 0.25
"""The node density at ``lambda`` is the largest measured within this distance in ``lambda``
(a running maximum). A path that changes mode turns sharply over a window of ``lambda`` that
differs from path to path; held-out points whose windows sat just outside the calibration
points' were stepped coarsely there (mixture d=16 under VP: two of 128 points at 1e-2 to 4e-2
bits/dim against a median of 2e-4, whatever the calls). Measured on the benchmark's mixtures
(``benchmarks/likelihood_grid.py``, with the RMS bound then in use): reach 0.25 0.27-0.49x
SciPy's calls, 0.5 0.26-0.51x, none 0.27-0.61x."""


def _expint_run(cal: Calibration, nodes: list[float]) -> tuple[float, Tensor, float]:
    """Solve the calibration points over ``nodes``.

    Returns the RMS error (nats) against the reference, the per-step RMS over the points of
    the local-error estimates, and the largest over the points of their summed magnitudes (an
    error bound that errors of different steps cannot cancel in, as :class:`_Search`'s, for
    the worst calibration path: a fixed grid's error on a mixture is set by its few hardest
    paths. Against the RMS over the points, measured with the linearly implicit corrector:
    fewer or equal calls on 11 of the benchmark's 12 mixtures and 18 of 24 tuning mixtures,
    ``benchmarks/likelihood_grid.py``; with the explicit corrector it had been mixed).
    """
    y, calls, est = run_expint(
        cal.flow, cal.rhs, cal.y0, cal.t0, cal.t1, nodes, method=cal.method, estimate=True
    )
    cal.calls += calls
    e = torch.stack(est).double().cpu()
    return cal.error(y), e.pow(2).mean(dim=1).sqrt(), float(e.abs().sum(0).max())


def _u_of_lambda(lams: Tensor) -> list[float]:
    return u_of_sigma(torch.exp(-lams)).tolist()


def _equidistribute(lams: Tensor, density: Tensor, steps: int) -> list[float]:
    """``steps + 1`` nodes (in ``u``) at the quantiles of a piecewise-constant ``density``.

    ``density`` is per unit ``lambda`` on the intervals of ``lams``; it is first widened to its
    running maximum over :data:`DENSITY_REACH`, and a floor keeps it positive.
    """
    density = torch.nan_to_num(density, nan=math.inf).clamp(max=torch.finfo(density.dtype).max)
    mid = 0.5 * (lams[1:] + lams[:-1])
    near = (mid[:, None] - mid[None, :]).abs() <= DENSITY_REACH
    density = torch.where(near, density[None, :], density.new_zeros(())).amax(dim=1)
    density = density + DENSITY_FLOOR * float(density.max())
    mass = torch.cat(
        [density.new_zeros(1), torch.cumsum(density * (lams[1:] - lams[:-1]).abs(), 0)]
    )
    q = torch.linspace(0.0, float(mass[-1]), steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(mass, q).clamp(1, len(lams) - 1)
    frac = (q - mass[idx - 1]) / (mass[idx] - mass[idx - 1]).clamp(min=1e-300)
    out = lams[idx - 1] + frac.clamp(0, 1) * (lams[idx] - lams[idx - 1])
    out[0], out[-1] = lams[0], lams[-1]
    return _u_of_lambda(out)


def _expint_rates(
    cal: Calibration, nodes: list[float], order: int
) -> tuple[tuple[float, float], Tensor, Tensor]:
    """Solve over ``nodes``: ``(error, bound)``, each step's ``L`` and the ``lambda``s.

    ``(error, bound)`` as :func:`_expint_run` returns them. A step's estimate is
    ``~ L h^(order + 1)`` (the predictor's local error, RMS over the
    points), so ``L`` is the estimate over ``h^(order + 1)``, per unit ``lambda``.
    """
    lams = torch.tensor(lambda_of_u(nodes), dtype=torch.float64)
    err, est, bound = _expint_run(cal, nodes)
    return (err, bound), est / (lams[1:] - lams[:-1]).abs() ** (order + 1), lams


def fit_expint(cal: Calibration, nfe: int, *, method: str = "expint4") -> LikelihoodGrid:
    """Nodes for the exponential multistep method that equidistribute its local error.

    The nodes that equidistribute the local error ``L h^(p+1)`` of an order-``p`` method have
    density ``L^(1/p)`` (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4); ``L`` is measured:

    1. A fine solve (:data:`FINE_STEPS` steps uniform in ``lambda``, once per calibration) of
       the calibration points gives each step's local-error estimate (corrector minus predictor
       carried to ``log p``, RMS over the points), hence ``L``; nodes at the quantiles of
       ``L^q`` for each ``q`` of :data:`EXPONENTS` (``1/4`` the theory's, the others allowing
       for the estimate's lower order).
    2. One more pass re-measures ``L`` on each of those node sets (it sees the lower-order
       first steps and the actual step sizes) and places the nodes again.

    Of these, the set with the least error bound (the largest over the points of the summed
    magnitudes of the steps' estimates) is returned; nodes uniform in ``u`` only when their
    bound is below :data:`UNIFORM_MARGIN` of it. Choosing by the error against the reference
    instead picked sets whose step errors happened to cancel on the calibration points: 5x
    below their error on other points (measured).
    """
    steps = steps_for(nfe, method)
    cal.method, before = method, cal.calls
    sde, eps, event_shape = cal.flow.sde, cal.eps, cal.flow.event_shape
    u0, u1 = end_points(sde, eps, event_shape)
    order = EXPINT_METHODS[method]
    if method not in cal.fine_rates:
        l0, l1 = lambda_of_u([u0, u1])
        fine = _u_of_lambda(torch.linspace(l0, l1, FINE_STEPS + 1, dtype=torch.float64))
        cal.fine_rates[method] = _expint_rates(cal, [u0, *fine[1:-1], u1], order)[1:]
    uniform = _uniform(u0, u1, steps)
    found = [(_expint_rates(cal, uniform, order)[0], uniform)]
    for q in EXPONENTS:
        rates, lams = cal.fine_rates[method]
        for _ in range(2):
            nodes = _equidistribute(lams, rates**q, steps)
            nodes[0], nodes[-1] = u0, u1
            err, rates, lams = _expint_rates(cal, nodes, order)
            found.append((err, nodes))
    errs = [e for (e, _), _ in found]
    best = min(range(1, len(found)), key=lambda i: (found[i][0][1], -i))
    if found[0][0][1] < UNIFORM_MARGIN * found[best][0][1]:  # uniform only on a clear win
        best = 0
    start = 1 + 2 * EXPONENTS.index(THEORY_EXPONENT)  # found: uniform, then 2 passes per q
    bits = cal.flow.dim * math.log(2.0)
    return LikelihoodGrid(
        tuple(found[best][1]), method, grid_nfe(steps, method), float(eps), repr(sde),
        event_shape, errs[best] / bits, errs[start] / bits, errs[0] / bits,
        cal.reference_calls + cal.calls - before,
    )  # fmt: skip
