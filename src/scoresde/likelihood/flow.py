"""The probability-flow ODE in a chosen integration variable and state, with its divergence.

Seed 004: with ``x = s(t) y`` the PF ODE ``dx/dt = f x - g^2 score / 2`` becomes
``dy/dt = -s(t) sigma'(t) sigma(t) score(s y, t)``, free of the linear drift. For any monotone
reparameterisation ``u`` of the noise level::

    dy/du = -r(u) score(s y, t(u)),      r = s sigma (d sigma / du).

Integration variables: the SDE's own time ``"t"``, ``"sigma"``, ``"log_sigma"``, the log-SNR
``"log_snr"`` (``-2 log sigma``), ``"asinh_sigma"`` (``u = asinh(sigma)``: ``~ sigma`` at small
noise, ``~ log(2 sigma)`` at large noise), ``"vp_time"`` (the time at which the standard VP SDE,
``beta`` linear from 0.1 to 20, reaches ``sigma``: ``~ sigma^2`` at small noise) and
``"sigma_frac"`` (``u = sigma / (kappa + sigma)`` with ``kappa = SIGMA_FRAC_KAPPA``, a bounded
variable on ``[0, 1)``). ``sigma_frac`` is the default: at small noise it is linear in ``sigma``
(smooth both for scores that are bounded as ``sigma -> 0`` and for network scores that grow
like ``eps_hat / sigma``, where ``vp_time`` and VP's own ``t`` have a square-root singularity)
and at large noise ``1 - u ~ kappa / sigma``, in which the remaining relaxation of ``w`` (the
data mean decays like ``1 / sigma``, its spread like ``1 / sigma^2``) is a polynomial, so the
whole tail above the data scale ``kappa`` takes a step or two; ``asinh`` and ``log sigma``
stretch that tail into an exponential decay over several units of ``u``. See
``benchmarks/RESULTS.md`` for the measured comparison.

The solver's state is ``w = y / k(t)`` for a normaliser ``k``: ``"x"`` (``k = 1/s``, the data
itself, the reference formulation), ``"y"`` (``k = 1``) or ``"w"`` (``k = sqrt(1 + sigma^2)``:
``w`` stays O(1) at every noise level; for data ``N(0, c^2)`` it moves between the plateaus ``c``
and ``1`` instead of growing like ``sigma``; for VP it is exactly ``x``)::

    dw/du = -(r / k) score - w (d log k / du).

The linear term's divergence integrates in closed form and cancels against the Jacobian of
``x = s k w``. With ``residual`` the divergence of the flow of N(0, I) data,
``d sigma (d sigma/du) / (1 + sigma^2)``, is also taken out of the integrand and added back in
closed form (``d/2 log(1 + sigma^2)``), so the integrand is the data's deviation from a unit
Gaussian and stays bounded at large noise. The instantaneous change of variables (Chen et al.
2018; seed 002) then gives, with ``A = int_{u(eps)}^{u(T)} [-r s tr(d score/dx) - rho] du``
(``rho`` the residual term or 0)::

    log p_eps(x) = log p_T(x_T) + A + d (log s(T) - log s(eps)) + int rho du.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_choice, trusted_times
from ..sde import SDE, ScoreFn
from .divergence import score_and_trace

__all__ = ["VARIABLES", "STATES", "SIGMA_FRAC_KAPPA", "ProbabilityFlow", "Frame"]

VARIABLES = ("t", "sigma", "log_sigma", "log_snr", "vp_time", "asinh_sigma", "sigma_frac")
"""Integration variables of the PF ODE."""
STATES = ("x", "y", "w")
"""Solver states: the data ``x``, ``y = x / s`` or ``w = y / sqrt(1 + sigma^2)``."""
_VP_B0, _VP_B1 = 0.1, 20.0
SIGMA_FRAC_KAPPA = 0.6
"""Noise level at which ``"sigma_frac"`` turns from ``~ sigma`` to ``~ 1 - kappa / sigma``.

About the scale of data in [-1, 1]; chosen by the tolerance sweeps of ``benchmarks/likelihood.py``
(0.5-0.8 are within a few percent of each other there, 1 and 2 are worse)."""


def _vp_time(sigma: Tensor) -> Tensor:
    """The VP clock: root of ``b0 u + (b1 - b0) u^2 / 2 = log(1 + sigma^2)``."""
    b = torch.log1p(sigma * sigma)
    return 2 * b / (_VP_B0 + torch.sqrt(_VP_B0**2 + 2 * (_VP_B1 - _VP_B0) * b))


def _vp_sigma(u: Tensor) -> Tensor:
    """Inverse of :func:`_vp_time`."""
    return torch.sqrt(torch.expm1(_VP_B0 * u + 0.5 * (_VP_B1 - _VP_B0) * u * u))


class Frame(NamedTuple):
    """Coefficients at one ``u``: ``x = m w``, ``dw/du = -a score - b w``, ``dA/du = c tr + c0``."""

    t: Tensor
    m: Tensor
    a: Tensor
    b: Tensor
    c: Tensor
    c0: Tensor


@dataclass
class ProbabilityFlow:
    """The PF ODE of ``sde`` driven by ``score_fn`` in ``variable`` with solver state ``state``.

    The solver state is ``(B, d)``, or ``(B, d + 1)`` with the running log-density term ``A``
    in the last column (:meth:`drift_and_divergence`).
    """

    score_fn: ScoreFn
    sde: SDE
    event_shape: tuple[int, ...]
    variable: str = "sigma_frac"
    state: str = "w"
    residual: bool = True

    def __post_init__(self) -> None:
        check_choice("variable", self.variable, VARIABLES)
        check_choice("state", self.state, STATES)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of one sample."""
        return math.prod(self.event_shape)

    # ------------------------------------------------------------------------------------------
    # time <-> integration variable
    def u_of_t(self, t: Tensor) -> Tensor:
        """The integration variable at time ``t``."""
        if self.variable == "t":
            return t
        sigma = self.sde.sigma(t)
        if self.variable == "sigma":
            return sigma
        if self.variable == "log_sigma":
            return torch.log(sigma)
        if self.variable == "vp_time":
            return _vp_time(sigma)
        if self.variable == "asinh_sigma":
            return torch.asinh(sigma)
        if self.variable == "sigma_frac":
            return sigma / (SIGMA_FRAC_KAPPA + sigma)
        return -2.0 * torch.log(sigma)

    def t_of_u(self, u: Tensor) -> Tensor:
        """The time at integration variable ``u``."""
        if self.variable == "t":
            return u
        return self.sde.sigma_inv(self._sigma_of_u(u, u)).clamp(0.0, self.sde.T)

    def _dsigma_du(self, t: Tensor, sigma: Tensor) -> Tensor:
        if self.variable == "t":
            return self.sde.sigma_deriv(t)
        if self.variable == "sigma":
            return torch.ones_like(sigma)
        if self.variable == "log_sigma":
            return sigma
        if self.variable == "vp_time":  # d sigma/du = beta(u) (1 + sigma^2) / (2 sigma)
            beta = torch.sqrt(_VP_B0**2 + 2 * (_VP_B1 - _VP_B0) * torch.log1p(sigma * sigma))
            return beta * (1.0 + sigma * sigma) / (2.0 * sigma)
        if self.variable == "asinh_sigma":
            return torch.sqrt(1.0 + sigma * sigma)
        if self.variable == "sigma_frac":  # sigma = k u / (1 - u): d sigma/du = (k + sigma)^2 / k
            return (SIGMA_FRAC_KAPPA + sigma) ** 2 / SIGMA_FRAC_KAPPA
        return -0.5 * sigma

    def _sigma_of_u(self, u: Tensor, t: Tensor) -> Tensor:
        """``sigma`` at ``u`` (``t`` is only used for ``variable="t"``)."""
        if self.variable == "t":
            return self.sde.sigma(t)
        if self.variable == "sigma":
            return u
        if self.variable == "log_sigma":
            return torch.exp(u)
        if self.variable == "vp_time":
            return _vp_sigma(u)
        if self.variable == "asinh_sigma":
            return torch.sinh(u)
        if self.variable == "sigma_frac":
            return SIGMA_FRAC_KAPPA * u / (1.0 - u)
        return torch.exp(-0.5 * u)

    def frame(self, u: Tensor) -> Frame:
        """All per-sample coefficients at ``u`` (computed once per evaluation)."""
        sde = self.sde
        if self.variable == "t":
            t, sigma = u, sde.sigma(u)
        else:
            sigma = self._sigma_of_u(u, u)
            # rounding of u -> sigma -> t (float32 near a bounded u's end) must not leave [0, T]
            t = sde.sigma_inv(sigma).clamp(0.0, sde.T)
        s = sde.scale(t)
        dsig = self._dsigma_du(t, sigma)
        rate = s * sigma * dsig
        one_plus = 1.0 + sigma * sigma
        if self.state == "y":
            k, dlogk = torch.ones_like(sigma), torch.zeros_like(sigma)
        elif self.state == "w":
            k, dlogk = torch.sqrt(one_plus), sigma * dsig / one_plus
        else:
            dt_du = torch.ones_like(sigma) if self.variable == "t" else dsig / sde.sigma_deriv(t)
            k, dlogk = 1.0 / s, -sde.f(t) * dt_du
        offset = -self.dim * rate / (s * one_plus) if self.residual else torch.zeros_like(s)
        return Frame(t, s * k, rate / k, dlogk, -rate * s, offset)

    def _k(self, t: Tensor) -> Tensor:
        sde = self.sde
        if self.state == "y":
            return torch.ones_like(t)
        if self.state == "w":
            return torch.sqrt(1.0 + sde.sigma(t) ** 2)
        return 1.0 / sde.scale(t)

    # ------------------------------------------------------------------------------------------
    # state <-> data
    def to_state(self, x: Tensor, t: Tensor) -> Tensor:
        """Flatten ``x`` at time ``t`` to the solver's state ``x / (s k)``."""
        m = self.sde.scale(t) * self._k(t)
        return x.reshape(x.shape[0], -1) / m[:, None]

    def from_state(self, w: Tensor, t: Tensor) -> Tensor:
        """The data-space tensor ``s k w`` at time ``t`` from the solver's state."""
        m = self.sde.scale(t) * self._k(t)
        return (w * m[:, None]).reshape(w.shape[0], *self.event_shape)

    def log_scale_correction(self, t0: Tensor, t1: Tensor) -> Tensor:
        """``d (log s(t1) - log s(t0))``: the Jacobian term of the log-density."""
        sde = self.sde
        out = self.dim * (torch.log(sde.scale(t1)) - torch.log(sde.scale(t0)))
        if self.residual:
            out = out + 0.5 * self.dim * (
                torch.log1p(sde.sigma(t1) ** 2) - torch.log1p(sde.sigma(t0) ** 2)
            )
        return out

    # ------------------------------------------------------------------------------------------
    # right-hand sides
    def drift(self) -> _Drift:
        """The right-hand side ``(rows, u, w) -> dw/du`` (no divergence): encode/decode."""
        return _Drift(self)

    def drift_and_divergence(self, probes: Tensor | None) -> _WithDivergence:
        """The right-hand side of the augmented state ``[w, A]`` using ``probes``."""
        return _WithDivergence(self, probes)


class _StagedRHS:
    """A right-hand side whose coefficients depend on ``u`` alone, computed once per step.

    :func:`.rk.solve_ivp_batched` announces all stage points of a step (``prepare``), the frames
    of every stage are computed in one call, and ``stage(i, rows, y)`` uses the ``i``-th.
    """

    def __init__(self, flow: ProbabilityFlow) -> None:
        self.flow = flow
        self._frames: Frame | None = None

    def __call__(self, rows: Tensor, u: Tensor, state: Tensor) -> Tensor:
        return self.evaluate(rows, self.flow.frame(u), state)

    def prepare(self, us: Tensor) -> None:
        """Compute the frames at the points ``us`` ``(S, B)`` of a step's later stages."""
        flat = self.flow.frame(us.reshape(-1))  # SDE coefficients see a 1-d tensor of times
        self._frames = Frame(*(v.reshape(us.shape) for v in flat))

    def stage(self, i: int, rows: Tensor, state: Tensor) -> Tensor:
        """The right-hand side at stage ``i`` of the prepared step."""
        assert self._frames is not None, "prepare() must announce the step first"
        return self.evaluate(rows, Frame(*(v[i] for v in self._frames)), state)

    def evaluate(self, rows: Tensor, fr: Frame, state: Tensor) -> Tensor:
        """The right-hand side at the frame ``fr``."""
        raise NotImplementedError


class _Drift(_StagedRHS):
    """``(rows, u, w) -> dw/du``."""

    def evaluate(self, rows: Tensor, fr: Frame, w: Tensor) -> Tensor:
        flow = self.flow
        x = (w * fr.m[:, None]).reshape(w.shape[0], *flow.event_shape)
        with trusted_times():  # the solver built t: no per-call read of its values
            score = flow.score_fn(x, fr.t)
        if not isinstance(score, Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
            raise ValueError(
                f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}"
            )
        return -fr.a[:, None] * score.reshape(w.shape) - fr.b[:, None] * w


class _WithDivergence(_StagedRHS):
    """``(rows, u, [w, A]) -> [dw/du, -r s tr J]``; ``probes`` ``(P, B, d)`` or ``None``."""

    def __init__(self, flow: ProbabilityFlow, probes: Tensor | None) -> None:
        super().__init__(flow)
        self.probes = probes

    def evaluate(self, rows: Tensor, fr: Frame, state: Tensor) -> Tensor:
        flow = self.flow
        w = state[:, :-1]
        x = (w * fr.m[:, None]).reshape(w.shape[0], *flow.event_shape)
        probes = self.probes
        if probes is not None and rows.numel() != probes.shape[1]:
            probes = probes[:, rows]  # only the unfinished samples' own probes
        with trusted_times():  # the solver built t: no per-call read of its values
            score, tr = score_and_trace(flow.score_fn, x, fr.t, probes)
        out = torch.empty_like(state)
        torch.mul(score.reshape(w.shape), -fr.a[:, None], out=out[:, :-1])
        out[:, :-1].sub_(fr.b[:, None] * w)
        out[:, -1] = fr.c * tr + fr.c0
        return out
