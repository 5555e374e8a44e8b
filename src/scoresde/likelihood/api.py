"""``log_likelihood``, ``encode`` and ``decode`` through the probability-flow ODE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_device, check_positive, check_tensor
from ..sde import SDE, ScoreFn
from .divergence import draw_probes
from .flow import ProbabilityFlow
from .rk import TABLEAUS, ODESolution, rms_norm, solve_ivp_batched

__all__ = ["LikelihoodResult", "log_likelihood", "encode", "decode"]

DEFAULT_VARIABLE = "sigma_frac"
"""Integration variable used by the public functions (chosen by ``benchmarks/likelihood.py``)."""
DEFAULT_STATE = "w"
"""Solver state used by the public functions (see :mod:`.flow`)."""
DEFAULT_NORM = "rms"
"""Per-sample error norm used by the public functions (see :func:`_norm`)."""
FIRST_PROBE = 0.02
"""Farthest reach of the starting-step heuristic's probe, as a fraction of the ``u`` interval.

Chosen by ``benchmarks/likelihood.py``: it keeps the first step from jumping over structure at
small noise (``test_first_probe_sees_small_noise_structure``) without capping the first step of
smooth problems (see :func:`.rk._initial_step`)."""
PI_CONTROLLER = (1.0, 0.0)
"""Step-size controller exponents ``(alpha, beta) * order``: ``h *= r^-alpha r_prev^beta``."""


@dataclass
class LikelihoodResult:
    """Result of :func:`log_likelihood`: everything per sample, batch-first."""

    log_prob: Tensor
    """``log p_eps(x)`` in nats, shape ``(B,)`` (the density of the data at time ``eps``)."""
    latent: Tensor
    """``z = x(T)``, the PF-ODE image of ``x``, shaped like ``x``."""
    nfe: Tensor
    """Score evaluations each sample took, ``(B,)`` int64 (its own adaptive steps)."""
    calls: int
    """Batched ``score_fn`` calls (each over the still-unfinished samples)."""
    prior_log_prob: Tensor
    """``log p_prior(z)``, shape ``(B,)``; ``log_prob - prior_log_prob`` is the ODE's term."""


def _check_common(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    name: str,
    rtol: float,
    atol: float,
    method: str,
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
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_choice("method", method, TABLEAUS)
    check_positive("eps", eps)
    if eps >= sde.T:
        raise ValueError(
            f"eps must lie in (0, T) = (0, {sde.T}) for {type(sde).__name__}, got eps={eps}"
        )


def _norm(kind: str, dim: int) -> Callable[[Tensor], Tensor]:
    """Per-sample error norm of scaled errors ``(B, d [+ 1])``.

    ``"rms"``: root mean square over all components of the sample (the log-density column
    counts as one more component). ``"mixed"``: the larger of the RMS over the data columns and
    the log-density column's own scaled error, so the log-density is held to the tolerance on its
    own.
    """
    if kind == "rms":
        return rms_norm

    def mixed(z: Tensor) -> Tensor:
        if z.shape[1] == dim:
            return rms_norm(z)
        return torch.maximum(rms_norm(z[:, :dim]), z[:, dim].abs())

    def logp(z: Tensor) -> Tensor:
        if z.shape[1] == dim:
            return rms_norm(z)
        return z[:, dim].abs()

    return mixed if kind == "mixed" else logp


def _times(sde: SDE, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    t0 = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
    return t0, torch.full_like(t0, sde.T)


def _solve_flow(
    flow: ProbabilityFlow,
    rhs: Callable[[Tensor, Tensor, Tensor], Tensor],
    y0: Tensor,
    t_from: Tensor,
    t_to: Tensor,
    rtol: float,
    atol: float,
    method: str,
    norm: str,
    first_probe: float = FIRST_PROBE,
) -> ODESolution:
    return solve_ivp_batched(
        rhs,
        y0,
        flow.u_of_t(t_from),
        flow.u_of_t(t_to),
        rtol=rtol,
        atol=atol,
        method=method,
        norm=_norm(norm, flow.dim),
        pi=PI_CONTROLLER,
        first_probe=first_probe,
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
    _variable: str = DEFAULT_VARIABLE,
    _state: str = DEFAULT_STATE,
    _norm_kind: str = DEFAULT_NORM,
    _residual: bool = True,
    _first_probe: float = FIRST_PROBE,
    _probes: Tensor | None = None,
) -> LikelihoodResult:
    """Exact log-likelihood ``log p_eps(x)`` by the probability-flow ODE (seed 002).

    Integrates ``[x, log-density change]`` from ``t = eps`` to ``T`` with an adaptive embedded
    Runge–Kutta pair whose step size and error control are per sample, then adds the prior
    log-density of the end point ``z``::

        log p_eps(x) = log p_prior(z) + int_eps^T div(dx/dt) dt.

    The ODE runs on the normalised state ``w = x / (s(t) sqrt(1 + sigma(t)^2))`` (O(1) at every
    noise level; ``w = x`` for VP) against the bounded ``u = sigma / (kappa + sigma)`` (like
    ``sigma`` at small noise, ``1 - kappa / sigma`` at large noise, ``kappa = 0.6``), with the
    unit-Gaussian part of the divergence integrated in closed form. Among ``t``, ``sigma``,
    ``log sigma``, log-SNR, ``asinh sigma`` and a VP clock this needed the fewest evaluations at
    equal accuracy over analytic targets and network-like scores together (see
    :mod:`scoresde.likelihood.flow` and ``benchmarks/RESULTS.md``). The result is
    the density of the data at time
    ``eps`` (for VE, the data convolved with ``N(0, sigma(eps)^2)``), and it is exact only up to
    the mismatch between the prior and the true ``p_T`` and the solver tolerance.

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
            ``B``). Each sample has its own adaptive steps, so the result does not depend on the
            chunking (up to the probes, which are drawn per chunk from ``generator``).

    Returns:
        :class:`LikelihoodResult` with ``log_prob`` (nats, ``(B,)``), ``latent``, ``nfe``.
        Use :func:`bits_per_dim` for bits per dimension. The result is detached.
    """
    _check_common(score_fn, sde, x, "x", rtol, atol, method, eps)
    check_choice("divergence", divergence, ("hutchinson", "exact"))
    check_choice("probe", probe, ("rademacher", "gaussian"))
    if isinstance(probes, bool) or not isinstance(probes, int):
        raise TypeError(f"probes must be an int >= 1, got {probes!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if x.shape[0] > batch_size:
            kw: dict[str, Any] = dict(rtol=rtol, atol=atol, method=method, probes=probes)
            kw.update(divergence=divergence)
            kw.update(probe=probe, eps=eps, generator=generator, _variable=_variable)
            kw.update(_state=_state, _norm_kind=_norm_kind, _residual=_residual)
            kw.update(_first_probe=_first_probe)
            # probes for the whole batch, drawn once: the chunking does not change any result
            full = _probes
            if divergence == "hutchinson" and full is None:
                full = draw_probes(probe, x.shape[0], x[0].numel(), probes, generator, x)
            parts = [
                log_likelihood(
                    score_fn,
                    sde,
                    xb,
                    **kw,
                    _probes=None if full is None else full[:, i : i + xb.shape[0]],
                )
                for i, xb in zip(range(0, x.shape[0], batch_size), x.split(batch_size), strict=True)
            ]
            return LikelihoodResult(
                torch.cat([r.log_prob for r in parts]),
                torch.cat([r.latent for r in parts]),
                torch.cat([r.nfe for r in parts]),
                sum(r.calls for r in parts),
                torch.cat([r.prior_log_prob for r in parts]),
            )
    flow = ProbabilityFlow(score_fn, sde, tuple(x.shape[1:]), _variable, _state, _residual)
    t0, t1 = _times(sde, x, eps)
    v = None
    if divergence == "hutchinson":
        v = (
            _probes
            if _probes is not None
            else draw_probes(probe, x.shape[0], flow.dim, probes, generator, x)
        )
    state = torch.cat([flow.to_state(x, t0), x.new_zeros(x.shape[0], 1)], dim=1)
    rhs = flow.drift_and_divergence(v)
    sol = _solve_flow(flow, rhs, state, t0, t1, rtol, atol, method, _norm_kind, _first_probe)
    z = flow.from_state(sol.y[:, :-1], t1)
    prior = sde.prior_log_prob(z)
    delta = sol.y[:, -1] + flow.log_scale_correction(t0, t1)
    return LikelihoodResult(prior + delta, z, sol.nfe, sol.calls, prior)


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
) -> Tensor:
    """Map data ``x`` at time ``eps`` to its latent ``z = x(T)`` by the PF ODE (seed 002).

    Same solver and settings as :func:`log_likelihood` (and :func:`decode`, its inverse up to the
    tolerance). Returns ``z`` shaped like ``x``.
    """
    _check_common(score_fn, sde, x, "x", rtol, atol, method, eps)
    return _transport(score_fn, sde, x, eps, rtol, atol, method, forward=True)


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
) -> Tensor:
    """Map a latent ``z`` at time ``T`` back to data at time ``eps`` by the PF ODE.

    The inverse of :func:`encode` with the same settings. ``z`` drawn from the prior gives a
    sample of the model (the deterministic PF-ODE sampler with adaptive steps).
    """
    _check_common(score_fn, sde, z, "z", rtol, atol, method, eps)
    return _transport(score_fn, sde, z, eps, rtol, atol, method, forward=False)


def _transport(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    eps: float,
    rtol: float,
    atol: float,
    method: str,
    *,
    forward: bool,
) -> Tensor:
    flow = ProbabilityFlow(score_fn, sde, tuple(x.shape[1:]), DEFAULT_VARIABLE, DEFAULT_STATE)
    t_eps, t_end = _times(sde, x, eps)
    t_from, t_to = (t_eps, t_end) if forward else (t_end, t_eps)
    sol = _solve_flow(
        flow,
        flow.drift(),
        flow.to_state(x, t_from),
        t_from,
        t_to,
        rtol,
        atol,
        method,
        DEFAULT_NORM,
    )
    return flow.from_state(sol.y, t_to)
