"""A fixed grid for the probability-flow ODE: the same batched calls for every sample.

A :class:`LikelihoodGrid` holds the nodes of a fixed-step Runge–Kutta solve in the likelihood
solver's variable ``u = sigma / (0.6 + sigma)`` (:mod:`.flow`) and the method whose propagated
solution steps between them. :class:`GridSolver` runs it with the interface of the adaptive
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
from .flow import DenoiserFlow, ProbabilityFlow
from .rk import RHS, TABLEAUS, ODESolution, solve_fixed

__all__ = ["LikelihoodGrid", "GridSolver", "uniform_grid", "calls_per_step", "check_grid"]


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
    """The Runge–Kutta pair whose propagated solution makes each step (a key of
    :data:`scoresde.likelihood.rk.TABLEAUS`)."""
    nfe: int
    """Batched score calls of one solve: ``(stages - 1) * steps``."""
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
    """Batched calls of one fixed step of ``method``: ``stages - 1``.

    With FSAL the last stage of a step is the next step's first.
    """
    return TABLEAUS[check_choice("method", method, TABLEAUS)].stages - 1


def steps_for(nfe: int, method: str) -> int:
    """The most steps of ``method`` within ``nfe`` batched calls (a ``ValueError`` if none)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise TypeError(f"nfe must be an int (batched score calls of one solve), got {nfe!r}")
    per = calls_per_step(method)
    if nfe < per:
        raise ValueError(
            f"nfe={nfe} is below one {method} step ({per} calls); pass nfe >= {per} "
            f"(about 20-60 is typical for 1e-3 bits/dim)"
        )
    return nfe // per


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
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    steps = steps_for(nfe, method)
    u0, u1 = end_points(sde, eps, tuple(event_shape))
    nodes = torch.linspace(u0, u1, steps + 1, dtype=torch.float64).tolist()
    return LikelihoodGrid(
        tuple(nodes), method, steps * calls_per_step(method), eps, repr(sde),
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
        nodes = self.nodes(y0)
        sol = solve_fixed(rhs, y0, nodes, method=self.grid.method)
        batch = y0.shape[0]
        nfe = torch.full((batch,), sol.calls, dtype=torch.long)
        steps = torch.full((batch,), self.grid.steps, dtype=torch.long)
        return ODESolution(sol.y, nfe, sol.calls, steps, torch.zeros_like(steps))

    def nodes(self, like: Tensor) -> Tensor:
        """The nodes in the direction of the solve, on ``like``'s device and dtype."""
        nodes = self.grid.nodes if self.forward else self.grid.nodes[::-1]
        return torch.tensor(nodes, dtype=like.dtype, device=like.device)
