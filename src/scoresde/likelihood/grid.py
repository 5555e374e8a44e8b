"""A fixed grid for the probability-flow ODE: the same batched calls for every sample.

A :class:`LikelihoodGrid` holds the nodes of a fixed-step solve in the likelihood solver's
variable ``u = sigma / (0.6 + sigma)`` (:mod:`.flow`) and the method that steps between them: a
Runge–Kutta pair's propagated solution in ``u``, or the exponential multistep
predictor–corrector ``expint4`` in ``lambda = -log sigma`` (:mod:`.expint`,
:func:`run_expint`). :class:`GridSolver` runs it with the interface of the adaptive
:class:`~.api.FlowSolver`, so :func:`~.api.log_likelihood`, :func:`~.api.encode` and
:func:`~.api.decode` take either. Without step-size control every sample costs the same number
of batched score calls and no tensor is read into Python during the solve (GPU-friendly, and
ranks of a distributed run stay in step). :func:`~.fitting.fit_grid` fits the nodes to a model;
:func:`uniform_grid` is the unfitted baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from ..sde import SDE
from .expint import EXPINT_METHODS, expint_plan, lambda_of_u, solve_expint
from .flow import DenoiserFlow, ProbabilityFlow, _WithDivergence
from .rk import RHS, TABLEAUS, ODESolution, solve_fixed

__all__ = [
    "LikelihoodGrid",
    "GridSolver",
    "uniform_grid",
    "calls_per_step",
    "check_grid",
    "GRID_METHODS",
    "run_expint",
    "resolve_method",
]

GRID_METHODS = (*TABLEAUS, *EXPINT_METHODS)
"""Methods a grid can step with: the Runge–Kutta pairs of :data:`.rk.TABLEAUS` (propagated
solution, FSAL) and the exponential multistep methods of :data:`.expint.EXPINT_METHODS`."""


@dataclass(frozen=True)
class LikelihoodGrid:
    """Fixed nodes of the PF-ODE solve, fitted to one model (:func:`~.fitting.fit_grid`).

    Pass it as ``log_likelihood(..., grid=g)`` (also ``encode``/``decode``): every sample then
    takes :attr:`nfe` batched score calls. It holds only floats and strings (JSON-friendly,
    device-independent).
    """

    nodes: tuple[float, ...]
    """``u = sigma / (0.6 + sigma)`` at the ``steps + 1`` nodes, strictly increasing from
    ``u(eps)`` to ``u(T)`` (:mod:`scoresde.likelihood.flow`)."""
    method: str
    """How each step is made (:data:`GRID_METHODS`): a Runge–Kutta pair of
    :data:`scoresde.likelihood.rk.TABLEAUS` (its propagated solution), or ``"expint4"``, the
    exponential multistep predictor–corrector in ``lambda = -log sigma``
    (:mod:`scoresde.likelihood.expint`)."""
    nfe: int
    """Batched score calls of one solve: ``(stages - 1) * steps`` for a Runge–Kutta pair,
    ``steps + 1`` for ``expint4``."""
    eps: float
    """The smallest time the nodes start at (``log_likelihood``'s ``eps``)."""
    sde: str
    """``repr`` of the SDE the grid was fitted for (checked on use)."""
    event_shape: tuple[int, ...]
    """Shape of one sample the grid was fitted on (checked on use)."""
    calibration_error: float
    """RMS error of the fitted grid's log-density on the calibration points against the tight
    adaptive solve, in bits/dim (nan for :func:`uniform_grid`)."""
    initial_error: float = math.nan
    """The same for the starting nodes of the fit (local error equidistributed)."""
    uniform_error: float = math.nan
    """The same for nodes uniform in ``u`` at the same ``nfe``."""
    fit_calls: int = 0
    """Batched score calls the fit took over the calibration batch (reference solve included)."""

    @property
    def steps(self) -> int:
        """Number of steps (``len(nodes) - 1``)."""
        return len(self.nodes) - 1


def calls_per_step(method: str) -> int:
    """Batched calls of one fixed step of ``method``: ``stages - 1`` (FSAL), or 1 (multistep).

    With FSAL the last stage of a step is the next step's first. A multistep method calls the
    model once per node (one more call than steps in all: :func:`grid_nfe`).
    """
    if check_choice("method", method, GRID_METHODS) in EXPINT_METHODS:
        return 1
    return TABLEAUS[method].stages - 1


def grid_nfe(steps: int, method: str) -> int:
    """Batched calls of a solve of ``steps`` steps of ``method``."""
    return steps + 1 if method in EXPINT_METHODS else steps * calls_per_step(method)


def steps_for(nfe: int, method: str) -> int:
    """The most steps of ``method`` within ``nfe`` batched calls (a ``ValueError`` if none)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise TypeError(f"nfe must be an int (batched score calls of one solve), got {nfe!r}")
    per = calls_per_step(method)
    least = per + 1 if method in EXPINT_METHODS else per
    if nfe < least:
        raise ValueError(
            f"nfe={nfe} is below one {method} step ({least} calls); pass nfe >= {least} "
            f"(about 20-60 is typical for 1e-3 bits/dim)"
        )
    return nfe - 1 if method in EXPINT_METHODS else nfe // per


def resolve_method(method: str, sde: SDE) -> str:
    """``"auto"``: ``"expint4"``, or ``"dopri5"`` on a flow path (``lambda(T) = -inf``)."""
    if method != "auto":
        return method
    return "dopri5" if sde.zero_terminal_snr else "expint4"


def check_method_for(method: str, sde: SDE) -> None:
    """Raise unless ``method`` can step a grid for ``sde`` (multistep: not on flow paths)."""
    check_choice("method", method, GRID_METHODS)
    if method in EXPINT_METHODS and sde.zero_terminal_snr:
        raise ValueError(
            f"method={method!r} works in lambda = -log sigma, which is -inf at T of {sde!r} "
            f"(s(T) = 0); use method='dopri5' for flow paths"
        )


def _identity(x: Tensor, t: Tensor) -> Tensor:
    return x


def end_points(sde: SDE, eps: float, event_shape: tuple[int, ...]) -> tuple[float, float]:
    """``(u(eps), u(T))`` of the solver's variable for ``sde``, in float64."""
    check_positive("eps", eps)
    if eps >= sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}) for {sde!r}, got eps={eps}")
    kind = DenoiserFlow if sde.zero_terminal_snr else ProbabilityFlow
    u = kind(_identity, sde, event_shape).u_of_t(torch.tensor([eps, sde.T], dtype=torch.float64))
    return float(u[0]), float(u[1])


def uniform_grid(
    sde: SDE,
    event_shape: tuple[int, ...],
    *,
    nfe: int,
    method: str = "dopri5",
    eps: float = 1e-5,
) -> LikelihoodGrid:
    """Nodes uniform in ``u = sigma / (0.6 + sigma)``: the unfitted grid of ``nfe`` calls.

    The baseline :func:`~.fitting.fit_grid` is compared with (its ``uniform_error``).
    ``method``: as for ``fit_grid`` (``"auto"`` included); dopri5 by default, because uniform
    nodes suit it far better than they suit ``expint4``.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    method = resolve_method(method, sde)
    check_method_for(method, sde)
    steps = steps_for(nfe, method)
    u0, u1 = end_points(sde, eps, tuple(event_shape))
    nodes = torch.linspace(u0, u1, steps + 1, dtype=torch.float64).tolist()
    return LikelihoodGrid(
        tuple(nodes), method, grid_nfe(steps, method), eps, repr(sde),
        tuple(int(s) for s in event_shape), math.nan,
    )  # fmt: skip


def check_grid(grid: object, sde: SDE, event_shape: tuple[int, ...], eps: float) -> None:
    """Raise unless ``grid`` is a :class:`LikelihoodGrid` for ``sde``, ``event_shape``, ``eps``.

    ``TypeError`` for another type, ``ValueError`` for another SDE, shape or ``eps``.
    """
    if not isinstance(grid, LikelihoodGrid):
        raise TypeError(
            f"grid must be a scoresde.likelihood.LikelihoodGrid (from fit_grid), got "
            f"{type(grid).__name__}"
        )
    if grid.sde != repr(sde):
        raise ValueError(
            f"grid was fitted for {grid.sde} but sde is {sde!r}; fit a grid for this SDE with "
            f"scoresde.likelihood.fit_grid"
        )
    if tuple(grid.event_shape) != tuple(event_shape):
        raise ValueError(
            f"grid was fitted on samples of shape {grid.event_shape} but x has samples of "
            f"shape {tuple(event_shape)}; fit a grid on data of this model"
        )
    if not math.isclose(grid.eps, eps, rel_tol=1e-12):
        raise ValueError(
            f"grid was fitted for eps={grid.eps} but eps={eps}; pass eps=grid.eps or refit"
        )
    nodes = grid.nodes
    if len(nodes) < 2 or any(b <= a for a, b in zip(nodes[:-1], nodes[1:], strict=False)):
        raise ValueError("grid.nodes must be strictly increasing with at least two nodes")


@dataclass(frozen=True)
class GridSolver:
    """The fixed-step solver of a :class:`LikelihoodGrid`, interchangeable with ``FlowSolver``.

    ``forward``: from ``eps`` to ``T`` (likelihood, encode); else back (decode).
    """

    grid: LikelihoodGrid
    forward: bool = True

    def solve(
        self, flow: ProbabilityFlow, rhs: RHS, y0: Tensor, t_from: Tensor, t_to: Tensor
    ) -> ODESolution:
        """Integrate ``rhs`` over the grid's nodes; ``t_from``/``t_to`` are the grid's ends."""
        if self.grid.method in EXPINT_METHODS:
            y, calls, _ = run_expint(
                flow, rhs, y0, t_from, t_to, self.ordered(), method=self.grid.method
            )
        else:
            sol = solve_fixed(rhs, y0, self.nodes(y0), method=self.grid.method)
            y, calls = sol.y, sol.calls
        batch = y0.shape[0]
        nfe = torch.full((batch,), calls, dtype=torch.long)
        steps = torch.full((batch,), self.grid.steps, dtype=torch.long)
        return ODESolution(y, nfe, calls, steps, torch.zeros_like(steps))

    def ordered(self) -> tuple[float, ...]:
        """The nodes in the direction of the solve."""
        return self.grid.nodes if self.forward else self.grid.nodes[::-1]

    def nodes(self, like: Tensor) -> Tensor:
        """The nodes in the direction of the solve, on ``like``'s device and dtype."""
        return torch.tensor(self.ordered(), dtype=like.dtype, device=like.device)


def run_expint(
    flow: ProbabilityFlow,
    rhs: RHS,
    y0: Tensor,
    t_from: Tensor,
    t_to: Tensor,
    nodes: tuple[float, ...] | list[float],
    *,
    method: str = "expint4",
    estimate: bool = False,
    linearize: bool = True,
) -> tuple[Tensor, int, list[Tensor]]:
    """The multistep solve over ``nodes`` (``u``, in the solve's direction) in the flow's state.

    ``y0`` is the flow's state at ``t_from`` (``[w, A]`` when ``rhs`` carries the divergence,
    else ``w``); returns the state at ``t_to`` in the same form, the batched calls and, with
    ``estimate``, the per-step local-error estimates (``linearize``: as in
    :func:`.expint.solve_expint`). ``A`` is converted from the integral of ``g`` in ``lambda``
    (:mod:`.expint`) so that :func:`~.api.final_log_density` applies unchanged.
    """
    div = isinstance(rhs, _WithDivergence)
    batch, d = y0.shape[0], flow.dim
    w = y0[:, :-1] if div else y0
    s0, s1 = flow.sde.scale(t_from), flow.sde.scale(t_to)
    x_hat = flow.from_state(w, t_from).reshape(batch, d) / s0[:, None]
    u = torch.tensor(nodes, dtype=y0.dtype, device=y0.device)
    plan = expint_plan(lambda_of_u(nodes), EXPINT_METHODS[method])
    probes = rhs.probes if div else None  # type: ignore[attr-defined]
    sol = solve_expint(
        flow, x_hat, u, plan, probes=probes, divergence=div, estimate=estimate, linearize=linearize
    )
    w1 = flow.to_state((sol.x_hat * s1[:, None]).reshape(batch, *flow.event_shape), t_to)
    if not div:
        return w1, sol.calls, sol.estimates
    assert sol.integral is not None
    # log p_eps - log p_T = -int g dlambda + d log(s_T / s_eps) = A + log_scale_correction
    a = -sol.integral + d * (torch.log(s1) - torch.log(s0))
    a = a - flow.log_scale_correction(t_from, t_to)
    return torch.cat([w1, a[:, None]], dim=1), sol.calls, sol.estimates
