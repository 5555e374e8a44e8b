"""Alternative formulations of the PF-ODE likelihood, rebuilt from the library's pieces.

``scoresde.log_likelihood`` keeps one formulation: integration variable
``u = sigma / (0.6 + sigma)``, state ``w = x / (s sqrt(1 + sigma^2))``, the unit-Gaussian part of
the divergence in closed form ("residual"), a per-sample RMS error norm and a starting-step probe
within 2% of the interval. The likelihood benchmarks compare it with the alternatives here; with
the default arguments :func:`variant_log_likelihood` is ``scoresde.log_likelihood`` bit for bit
(``tests/test_likelihood_variants.py``).

With ``x = s(t) y`` the PF ODE is ``dy/du = -r(u) score(s y, t(u))``, ``r = s sigma dsigma/du``,
for any monotone reparameterisation ``u`` of the noise level. Integration variables
(:data:`VARIABLES`): the SDE's own time ``"t"``, ``"sigma"``, ``"log_sigma"``, the log-SNR
``"log_snr"`` (``-2 log sigma``), ``"asinh_sigma"`` (``~ sigma`` at small noise,
``~ log(2 sigma)`` at large noise), ``"vp_time"`` (the time at which the standard VP SDE,
``beta`` linear from 0.1 to 20, reaches ``sigma``: ``~ sigma^2`` at small noise) and the library's
``"sigma_frac"``. Why ``sigma_frac`` wins: at small noise it is linear in ``sigma`` (smooth both
for scores that are bounded as ``sigma -> 0`` and for network scores that grow like
``eps_hat / sigma``, where ``vp_time`` and VP's own ``t`` have a square-root singularity), and at
large noise ``1 - u ~ kappa / sigma``, in which the remaining relaxation of ``w`` (the data mean
decays like ``1 / sigma``, its spread like ``1 / sigma^2``) is a polynomial, so the whole tail
above the data scale ``kappa`` takes a step or two; ``asinh`` and ``log sigma`` stretch that tail
into an exponential decay over several units of ``u``. ``kappa = 0.6`` came from tolerance sweeps
(0.5-0.8 within a few percent of each other, 1 and 2 worse); see ``benchmarks/RESULTS.md``.

Solver states (:data:`STATES`) ``w = y / k``: ``"x"`` (``k = 1/s``, the data itself: the reference
implementation's equations), ``"y"`` (``k = 1``) or ``"w"`` (``k = sqrt(1 + sigma^2)``, the
library's). ``residual=False`` leaves the unit-Gaussian divergence in the integrand. Error norms
(:data:`NORMS`): ``"rms"`` over all components of a sample (the log-density column counts as one
more), ``"mixed"`` (the larger of the data columns' RMS and the log-density column's own scaled
error) and ``"logp"`` (the log-density column alone). ``first_probe`` is the reach of the
starting-step probe as a fraction of the interval (1.0: Hairer's unbounded heuristic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from scoresde._checks import check_choice
from scoresde.likelihood.api import (
    FIRST_PROBE,
    FlowSolver,
    LikelihoodResult,
    solve_log_density,
)
from scoresde.likelihood.divergence import draw_probes
from scoresde.likelihood.flow import ProbabilityFlow
from scoresde.likelihood.rk import Norm, rms_norm
from scoresde.sde import SDE, ScoreFn

__all__ = [
    "VARIABLES",
    "STATES",
    "NORMS",
    "VariantFlow",
    "error_norm",
    "variant_log_likelihood",
]

VARIABLES = ("t", "sigma", "log_sigma", "log_snr", "vp_time", "asinh_sigma", "sigma_frac")
"""Integration variables of the PF ODE (``"sigma_frac"`` is the library's)."""
STATES = ("x", "y", "w")
"""Solver states: the data ``x``, ``y = x / s`` or ``w = y / sqrt(1 + sigma^2)`` (the library's)."""
NORMS = ("rms", "mixed", "logp")
"""Per-sample error norms (``"rms"`` is the library's)."""
_VP_B0, _VP_B1 = 0.1, 20.0


def _vp_time(sigma: Tensor) -> Tensor:
    """The VP clock: root of ``b0 u + (b1 - b0) u^2 / 2 = log(1 + sigma^2)``."""
    b = torch.log1p(sigma * sigma)
    return 2 * b / (_VP_B0 + torch.sqrt(_VP_B0**2 + 2 * (_VP_B1 - _VP_B0) * b))


def _vp_sigma(u: Tensor) -> Tensor:
    """Inverse of :func:`_vp_time`."""
    return torch.sqrt(torch.expm1(_VP_B0 * u + 0.5 * (_VP_B1 - _VP_B0) * u * u))


def _vp_dsigma(sigma: Tensor) -> Tensor:
    """``d sigma / du = beta(u) (1 + sigma^2) / (2 sigma)`` of the VP clock."""
    beta = torch.sqrt(_VP_B0**2 + 2 * (_VP_B1 - _VP_B0) * torch.log1p(sigma * sigma))
    return beta * (1.0 + sigma * sigma) / (2.0 * sigma)


class _Map(NamedTuple):
    """A variable ``u(sigma)``: the map, its inverse and ``d sigma / du`` as a function of sigma."""

    u_of_sigma: Callable[[Tensor], Tensor]
    sigma_of_u: Callable[[Tensor], Tensor]
    dsigma_du: Callable[[Tensor], Tensor]


_MAPS = {
    "sigma": _Map(lambda s: s, lambda u: u, torch.ones_like),
    "log_sigma": _Map(torch.log, torch.exp, lambda s: s),
    "log_snr": _Map(
        lambda s: -2.0 * torch.log(s), lambda u: torch.exp(-0.5 * u), lambda s: -0.5 * s
    ),
    "vp_time": _Map(_vp_time, _vp_sigma, _vp_dsigma),
    "asinh_sigma": _Map(torch.asinh, torch.sinh, lambda s: torch.sqrt(1.0 + s * s)),
}


@dataclass
class VariantFlow(ProbabilityFlow):
    """The library's :class:`ProbabilityFlow` in another ``variable``/``state``/``residual``."""

    variable: str = "sigma_frac"
    state: str = "w"
    residual: bool = True

    def __post_init__(self) -> None:
        check_choice("variable", self.variable, VARIABLES)
        check_choice("state", self.state, STATES)

    def u_of_t(self, t: Tensor) -> Tensor:
        if self.variable == "t":
            return t
        if self.variable == "sigma_frac":
            return super().u_of_t(t)
        return _MAPS[self.variable].u_of_sigma(self.sde.sigma(t))

    def sigma_of_u(self, u: Tensor) -> Tensor:
        if self.variable == "t":
            return self.sde.sigma(u)
        if self.variable == "sigma_frac":
            return super().sigma_of_u(u)
        return _MAPS[self.variable].sigma_of_u(u)

    def dsigma_du(self, t: Tensor, sigma: Tensor) -> Tensor:
        if self.variable == "t":
            return self.sde.sigma_deriv(t)
        if self.variable == "sigma_frac":
            return super().dsigma_du(t, sigma)
        return _MAPS[self.variable].dsigma_du(sigma)

    def time_and_sigma(self, u: Tensor) -> tuple[Tensor, Tensor]:
        if self.variable == "t":
            return u, self.sde.sigma(u)
        return super().time_and_sigma(u)

    def normaliser(self, t: Tensor, sigma: Tensor, dsig: Tensor) -> tuple[Tensor, Tensor]:
        if self.state == "w":
            return super().normaliser(t, sigma, dsig)
        if self.state == "y":
            return torch.ones_like(sigma), torch.zeros_like(sigma)
        dt_du = torch.ones_like(sigma) if self.variable == "t" else dsig / self.sde.sigma_deriv(t)
        return 1.0 / self.sde.scale(t), -self.sde.f(t) * dt_du

    def state_normaliser(self, t: Tensor) -> Tensor:
        if self.state == "w":
            return super().state_normaliser(t)
        return torch.ones_like(t) if self.state == "y" else 1.0 / self.sde.scale(t)

    def gaussian_rate(self, s: Tensor, sigma: Tensor, rate: Tensor) -> Tensor:
        return super().gaussian_rate(s, sigma, rate) if self.residual else torch.zeros_like(s)

    def gaussian_integral(self, t0: Tensor, t1: Tensor) -> Tensor:
        return super().gaussian_integral(t0, t1) if self.residual else torch.zeros_like(t0)


def error_norm(kind: str, dim: int) -> Norm:
    """The per-sample error norm ``kind`` (:data:`NORMS`) of scaled errors ``(B, d [+ 1])``."""
    check_choice("norm", kind, NORMS)
    if kind == "rms":
        return rms_norm

    def with_logp(z: Tensor) -> Tensor:
        if z.shape[1] == dim:  # no log-density column (encode/decode)
            return rms_norm(z)
        if kind == "logp":
            return z[:, dim].abs()
        return torch.maximum(rms_norm(z[:, :dim]), z[:, dim].abs())

    return with_logp


@torch.no_grad()
def variant_log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    variable: str = "sigma_frac",
    state: str = "w",
    residual: bool = True,
    norm: str = "rms",
    first_probe: float = FIRST_PROBE,
    fixed_probes: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    divergence: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """``scoresde.log_likelihood`` in another formulation (module docstring).

    ``fixed_probes`` ``(P, B, d)``, if given, replace the Hutchinson probes drawn from
    ``generator``; the other arguments are ``scoresde.log_likelihood``'s.
    """
    check_choice("divergence", divergence, ("hutchinson", "exact"))
    flow = VariantFlow(score_fn, sde, tuple(x.shape[1:]), variable, state, residual)
    v = None
    if divergence == "hutchinson":
        v = fixed_probes
        if v is None:
            v = draw_probes(probe, x.shape[0], flow.dim, probes, generator, x)
    solver = FlowSolver(rtol, atol, method, error_norm(norm, flow.dim), first_probe)
    return solve_log_density(flow, x, v, eps, solver)
