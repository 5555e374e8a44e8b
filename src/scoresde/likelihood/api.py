"""``log_likelihood``, ``encode`` and ``decode`` through the probability-flow ODE.

Each public function is the same three steps: check the inputs, build the
:class:`~.flow.ProbabilityFlow` and its right-hand side, and solve it with the per-sample
adaptive Runge–Kutta solver (:class:`FlowSolver`); :func:`solve_log_density` is the solve of
Song et al. (2021), eq. 39, for one batch with given probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_device, check_positive, check_tensor
from ..sde import SDE, ScoreFn
from .divergence import draw_probes
from .flow import ProbabilityFlow, probability_flow
from .grid import GridSolver, LikelihoodGrid, check_grid
from .rk import RHS, TABLEAUS, Norm, ODESolution, rms_norm, solve_ivp_batched

__all__ = ["LikelihoodResult", "log_likelihood", "encode", "decode"]

FIRST_PROBE = 0.02
"""Farthest reach of the starting-step heuristic's probe, as a fraction of the ``u`` interval.

The PF ODE is flat near ``sigma = 0``; a probe that stays near the start sees the structure of
the data at small noise (see :func:`.rk._initial_step`)."""


@dataclass
class LikelihoodResult:
    """Result of :func:`log_likelihood`: everything per sample, batch-first."""

    log_prob: Tensor
    """``log p_eps(x)`` in nats, shape ``(B,)`` (the density of the data at time ``eps``)."""
    latent: Tensor
    """``z = x(T)``, the PF-ODE image of ``x``, shaped like ``x``."""
    nfe: Tensor
    """Score evaluations each sample took, ``(B,)`` int64 (its own adaptive steps; on a grid,
    ``grid.nfe`` for every sample)."""
    calls: int
    """Batched ``score_fn`` calls (each over the still-unfinished samples)."""
    prior_log_prob: Tensor
    """``log p_prior(z)``, shape ``(B,)``; ``log_prob - prior_log_prob`` is the ODE's term."""


@dataclass(frozen=True)
class FlowSolver:
    """The adaptive solver of the PF ODE: tolerances, embedded RK pair, error norm, first probe.

    Every sample has its own steps and error control (:func:`.rk.solve_ivp_batched`).
    """

    rtol: float
    atol: float
    method: str = "dopri5"
    norm: Norm = rms_norm
    """Per-sample norm of the scaled errors (the log-density column counts as a component)."""
    first_probe: float = FIRST_PROBE

    def __post_init__(self) -> None:
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        check_choice("method", self.method, TABLEAUS)

    def solve(
        self, flow: ProbabilityFlow, rhs: RHS, y0: Tensor, t_from: Tensor, t_to: Tensor
    ) -> ODESolution:
        """Integrate ``rhs`` from the times ``t_from`` to ``t_to`` in ``flow``'s variable."""
        return solve_ivp_batched(
            rhs,
            y0,
            flow.u_of_t(t_from),
            flow.u_of_t(t_to),
            rtol=self.rtol,
            atol=self.atol,
            method=self.method,
            norm=self.norm,
            first_probe=self.first_probe,
        )


def solve_log_density(
    flow: ProbabilityFlow,
    x: Tensor,
    probes: Tensor | None,
    eps: float,
    solver: FlowSolver | GridSolver,
) -> LikelihoodResult:
    """``log p_eps(x)`` of one batch by the PF ODE (Song et al. 2021, eq. 39; Chen et al. 2018).

    ``log p_eps(x) = log p_prior(z) + int_eps^T div(dx/dt) dt`` with ``z = x(T)``: integrate
    ``[w, A]`` (see :mod:`.flow`) from ``eps`` to ``T`` and add the closed-form terms.
    ``probes`` ``(P, B, d)`` give Hutchinson's trace estimate; ``None`` the exact trace.
    ``solver`` is the adaptive :class:`FlowSolver` or a fitted grid's :class:`~.grid.GridSolver`.
    """
    t0, t1 = _times(flow.sde, x, eps)
    state = initial_state(flow, x, t0)
    sol = solver.solve(flow, flow.drift_and_divergence(probes), state, t0, t1)
    log_prob, z, prior = final_log_density(flow, sol.y, t0, t1)
    return LikelihoodResult(log_prob, z, sol.nfe, sol.calls, prior)


def initial_state(flow: ProbabilityFlow, x: Tensor, t0: Tensor) -> Tensor:
    """The augmented state ``[w, A = 0]`` of data ``x`` at time ``t0`` (see :mod:`.flow`)."""
    return torch.cat([flow.to_state(x, t0), x.new_zeros(x.shape[0], 1)], dim=1)


def final_log_density(
    flow: ProbabilityFlow, y: Tensor, t0: Tensor, t1: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``log p_eps(x)``, the latent ``z`` and ``log p_prior(z)`` from the state ``y`` at ``T``.

    The prior's log-density at ``z`` plus the integrated divergence ``A`` and the closed-form
    terms (:meth:`~.flow.ProbabilityFlow.log_scale_correction`).
    """
    z = flow.from_state(y[:, :-1], t1)
    prior = flow.sde.prior_log_prob(z)
    return prior + (y[:, -1] + flow.log_scale_correction(t0, t1)), z, prior


def _solver(
    adaptive: FlowSolver,
    grid: LikelihoodGrid | None,
    sde: SDE,
    x: Tensor,
    eps: float,
    *,
    forward: bool,
) -> FlowSolver | GridSolver:
    """The adaptive solver, or the grid's fixed-step one (the grid checked against the inputs).

    Call after :func:`_check_common`.
    """
    if grid is None:
        return adaptive
    check_grid(grid, sde, tuple(x.shape[1:]), eps)
    return GridSolver(grid, forward)


def _times(sde: SDE, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    t0 = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
    return t0, torch.full_like(t0, sde.T)


def _check_common(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    name: str,
    eps: float,
) -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if isinstance(x, Tensor):
        check_device(f"{name}'s device", x.device)
    check_tensor(name, x, min_dim=2)
    if x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty batch (B, *event_shape), got shape {tuple(x.shape)}"
        )
    check_positive("eps", eps)
    if eps >= sde.T:
        raise ValueError(
            f"eps must lie in (0, T) = (0, {sde.T}) for {type(sde).__name__}, got eps={eps}"
        )


def _check_estimator(
    divergence: str,
    probe: str,
    probes: int,
    generator: torch.Generator | None,
    batch_size: int | None,
) -> None:
    check_choice("divergence", divergence, ("hutchinson", "exact"))
    check_choice("probe", probe, ("rademacher", "gaussian"))
    if isinstance(probes, bool) or not isinstance(probes, int):
        raise TypeError(f"probes must be an int >= 1, got {probes!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def _concat(parts: list[LikelihoodResult]) -> LikelihoodResult:
    """The results of consecutive chunks of a batch as one result."""
    if len(parts) == 1:
        return parts[0]
    return LikelihoodResult(
        torch.cat([r.log_prob for r in parts]),
        torch.cat([r.latent for r in parts]),
        torch.cat([r.nfe for r in parts]),
        sum(r.calls for r in parts),
        torch.cat([r.prior_log_prob for r in parts]),
    )


@torch.no_grad()
def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    divergence: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    grid: LikelihoodGrid | None = None,
) -> LikelihoodResult:
    """Exact log-likelihood ``log p_eps(x)`` by the probability-flow ODE.

    The instantaneous change of variables along the PF ODE (Song et al. 2021, eq. 39; Chen et
    al. 2018): integrate ``[x, log-density change]`` from ``t = eps`` to ``T`` with an adaptive
    embedded Runge–Kutta pair whose step size and error control are per sample, then add the
    prior log-density of the end point ``z``::

        log p_eps(x) = log p_prior(z) + int_eps^T div(dx/dt) dt.

    The ODE runs on the normalised state ``w = x / (s(t) sqrt(1 + sigma(t)^2))`` against the
    bounded ``u = sigma / (0.6 + sigma)``, with the unit-Gaussian part of the divergence
    integrated in closed form (:mod:`scoresde.likelihood.flow`). The divergence is exact or
    Hutchinson's estimate (Skilling 1989; Hutchinson 1989) with probes fixed for the solve. The
    result is the density of the data at time ``eps`` (for VE, the data convolved with
    ``N(0, sigma(eps)^2)``), and it is exact only up to the mismatch between the prior and the
    true ``p_T`` and the solver tolerance.

    Args:
        score_fn: ``score_fn(x, t)``, differentiable in ``x`` (for the divergence).
        sde: the forward SDE; the result is for ``p_eps`` under it.
        x: data ``(B, *event_shape)``, finite, floating point; any device.
        rtol: per-sample relative tolerance of the adaptive solver.
        atol: per-sample absolute tolerance of the adaptive solver.
        method: ``"dopri5"`` (Dormand–Prince 5(4)), ``"tsit5"`` (Tsitouras 5(4)) or
            ``"bosh3"`` (Bogacki–Shampine 3(2)).
        divergence: ``"hutchinson"`` (unbiased estimate, one forward + one VJP per evaluation)
            or ``"exact"`` (``d`` VJPs per evaluation: small ``d`` only).
        probes: Hutchinson probes per sample, drawn once and fixed for the whole solve and
            averaged (standard error falls as ``1/sqrt(probes)``).
        probe: ``"rademacher"`` (``±1``, lower variance) or ``"gaussian"``.
        eps: the smallest time; ``t = 0`` is singular (``sigma = 0`` for VP/sub-VP) and scores
            are trained on ``[eps, T]``. It is a *time*: for :class:`~scoresde.EDMSDE` time is
            the noise level, so ``eps = 1e-5`` means ``sigma = 1e-5``, below EDM's training range
            ``sigma >= sde.eps = 0.002``; pass ``eps=sde.eps`` there with a trained network.
        generator: source of the Hutchinson probes.
        batch_size: solve at most this many samples at a time (peak memory independent of
            ``B``). Each sample has its own adaptive steps and the probes are drawn for the whole
            batch at once, so the result does not depend on the chunking.
        grid: a :class:`~.grid.LikelihoodGrid` from :func:`~.fitting.fit_grid` for this model,
            SDE and ``eps``: solve on its fixed nodes instead (``rtol``, ``atol`` and ``method``
            are then unused). Every sample takes ``grid.nfe`` batched score calls per chunk and
            no tensor is read into Python during the solve.

    Returns:
        :class:`LikelihoodResult` with ``log_prob`` (nats, ``(B,)``), ``latent``, ``nfe``.
        Use :func:`bits_per_dim` for bits per dimension. The result is detached.
    """
    _check_common(score_fn, sde, x, "x", eps)
    _check_estimator(divergence, probe, probes, generator, batch_size)
    solver = _solver(FlowSolver(rtol, atol, method), grid, sde, x, eps, forward=True)
    flow = probability_flow(score_fn, sde, tuple(x.shape[1:]))
    v = None
    if divergence == "hutchinson":
        v = draw_probes(probe, x.shape[0], flow.dim, probes, generator, x)
    size = x.shape[0] if batch_size is None else batch_size
    parts = []
    for i in range(0, x.shape[0], size):  # probes for the whole batch: chunking changes nothing
        vb = None if v is None else v[:, i : i + size]
        parts.append(solve_log_density(flow, x[i : i + size], vb, eps, solver))
    return _concat(parts)


@torch.no_grad()
def encode(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    eps: float = 1e-5,
    grid: LikelihoodGrid | None = None,
) -> Tensor:
    """Map data ``x`` at time ``eps`` to its latent ``z = x(T)`` by the PF ODE.

    The PF ODE (Song et al. 2021, eq. 13) is a deterministic, invertible map; same solver and
    settings as :func:`log_likelihood` (and :func:`decode`, its inverse up to the tolerance).
    Returns ``z`` shaped like ``x``. ``grid``: solve on a fitted grid's fixed nodes (as
    :func:`log_likelihood`).
    """
    solver = FlowSolver(rtol, atol, method)
    return _transport(score_fn, sde, x, "x", solver, grid, eps, forward=True)


@torch.no_grad()
def decode(
    score_fn: ScoreFn,
    sde: SDE,
    z: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    eps: float = 1e-5,
    grid: LikelihoodGrid | None = None,
) -> Tensor:
    """Map a latent ``z`` at time ``T`` back to data at time ``eps`` by the PF ODE.

    The inverse of :func:`encode` with the same settings. ``z`` drawn from the prior gives a
    sample of the model (the deterministic PF-ODE sampler with adaptive steps). ``grid``: solve
    on a fitted grid's fixed nodes, backwards (as :func:`log_likelihood`).
    """
    solver = FlowSolver(rtol, atol, method)
    return _transport(score_fn, sde, z, "z", solver, grid, eps, forward=False)


def _transport(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    name: str,
    adaptive: FlowSolver,
    grid: LikelihoodGrid | None,
    eps: float,
    *,
    forward: bool,
) -> Tensor:
    """Check the inputs, then carry ``x`` from ``eps`` to ``T`` (``forward``) or back."""
    _check_common(score_fn, sde, x, name, eps)
    solver = _solver(adaptive, grid, sde, x, eps, forward=forward)
    flow = probability_flow(score_fn, sde, tuple(x.shape[1:]))
    t_eps, t_end = _times(sde, x, eps)
    t_from, t_to = (t_eps, t_end) if forward else (t_end, t_eps)
    sol = solver.solve(flow, flow.drift(), flow.to_state(x, t_from), t_from, t_to)
    return flow.from_state(sol.y, t_to)
