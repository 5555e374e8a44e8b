"""The probability-flow ODE in the likelihood solver's variables, with its divergence.

The PF ODE of an affine SDE (Song et al. 2021, eq. 13) is ``dx/dt = f x - g^2 score / 2``. With
``x = s(t) y`` it is free of the linear drift, ``dy/dt = -s sigma (d sigma/dt) score(s y, t)``,
and for any monotone reparameterisation ``u`` of the noise level::

    dy/du = -r(u) score(s y, t(u)),      r = s sigma (d sigma / du).

The solver integrates in ``u = sigma / (kappa + sigma)`` (``kappa`` = :data:`SIGMA_FRAC_KAPPA`),
a bounded variable on ``[0, 1)``: linear in ``sigma`` below the data scale ``kappa``, and
``1 - u ~ kappa / sigma`` above it. Its state is ``w = y / k`` with ``k = sqrt(1 + sigma^2)``
(``w = x`` for VP), which stays O(1) at every noise level::

    dw/du = -(r / k) score - w (d log k / du).

The divergence of the flow of N(0, I) data, ``d sigma (d sigma/du) / (1 + sigma^2)``, is taken
out of the integrand and added back in closed form (``d/2 log(1 + sigma^2)``), so the
integrand is the data's deviation from a unit Gaussian. By the instantaneous change of variables
(Chen et al. 2018; Song et al. 2021, eq. 39), with
``A = int_{u(eps)}^{u(T)} [-r s tr(d score/dx) - rho] du`` (``rho`` that Gaussian part)::

    log p_eps(x) = log p_T(x_T) + A + d (log s(T) - log s(eps)) + int rho du.

The hooks :meth:`ProbabilityFlow.time_and_sigma`, :meth:`~ProbabilityFlow.dsigma_du`,
:meth:`~ProbabilityFlow.normaliser` and the two Gaussian terms each hold one of these equations,
so another variable or state is a subclass that overrides them.

Flow paths with ``s(T) = 0`` (:class:`DenoiserFlow`). At ``T`` of
:class:`~scoresde.RectifiedFlow`, ``u = 1`` and ``sigma = inf``; the score form above is
``inf - inf`` there. With ``score = (s D - x) / std^2`` (Tweedie) and ``q = sqrt((1 - u)^2 +
kappa^2 u^2)`` the same ODE reads, for ``w = x / m``, ``m = sqrt(s^2 + std^2)`` (``= s k``)::

    dw/du = -(D - (s/m) w) / (u q),        s/m = (1 - u) / q,
    d log p / du (in w) = -(m tr(dD/dx) - d s/m) / (u q),
    log p_eps(x) = log p_T(x_T) + A + d (log m(T) - log m(eps)),

every coefficient finite on ``(0, 1]``. ``(s/m) w`` is the denoiser of unit-Gaussian data, so the
integrand is again the data's deviation from a unit Gaussian. ``D`` and its divergence come from
the score function's ``denoise(x, t)`` (:class:`~scoresde.sde.ScoreWithDenoiser`), so the solve
starts (or ends) at ``T`` exactly with the exact prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from .._checks import trusted_times
from ..sde import SDE, ScoreFn, denoiser_of
from .divergence import check_score, score_and_trace

__all__ = [
    "SIGMA_FRAC_KAPPA",
    "ProbabilityFlow",
    "DenoiserFlow",
    "Frame",
    "probability_flow",
    "u_of_sigma",
    "sigma_of_u",
]

SIGMA_FRAC_KAPPA = 0.6
"""Noise level at which ``u = sigma / (kappa + sigma)`` turns from ``~ sigma`` to
``~ 1 - kappa / sigma``: about the scale of data in [-1, 1]."""

Num = TypeVar("Num", float, Tensor)


def u_of_sigma(sigma: Num) -> Num:
    """The integration variable ``u = sigma / (kappa + sigma)`` (floats or tensors)."""
    return sigma / (SIGMA_FRAC_KAPPA + sigma)


def sigma_of_u(u: Num) -> Num:
    """``sigma = kappa u / (1 - u)``, the inverse of :func:`u_of_sigma`."""
    return SIGMA_FRAC_KAPPA * u / (1.0 - u)


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
    """The PF ODE of ``sde`` driven by ``score_fn``, in ``u = sigma / (kappa + sigma)`` and ``w``.

    The solver state is ``(B, d)``, or ``(B, d + 1)`` with the running log-density term ``A``
    in the last column (:meth:`drift_and_divergence`).
    """

    score_fn: ScoreFn
    sde: SDE
    event_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        """Dimension ``d`` of one sample."""
        return math.prod(self.event_shape)

    # ------------------------------------------------------------------------------------------
    # the integration variable u = sigma / (kappa + sigma)
    def u_of_t(self, t: Tensor) -> Tensor:
        """The integration variable at time ``t``."""
        return u_of_sigma(self.sde.sigma(t))

    def sigma_of_u(self, u: Tensor) -> Tensor:
        """``sigma = kappa u / (1 - u)``, the inverse of :meth:`u_of_t`'s map."""
        return sigma_of_u(u)

    def dsigma_du(self, t: Tensor, sigma: Tensor) -> Tensor:
        """``d sigma / du = (kappa + sigma)^2 / kappa`` at time ``t`` and noise level ``sigma``."""
        return (SIGMA_FRAC_KAPPA + sigma) ** 2 / SIGMA_FRAC_KAPPA

    def time_and_sigma(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The time and the noise level at ``u``.

        Rounding of ``u -> sigma -> t`` (float32 near the bounded ``u``'s end) must not leave
        ``[0, T]``: ``t`` is clamped there.
        """
        sigma = self.sigma_of_u(u)
        return self.sde.sigma_inv(sigma).clamp(0.0, self.sde.T), sigma

    def t_of_u(self, u: Tensor) -> Tensor:
        """The time at integration variable ``u``."""
        return self.time_and_sigma(u)[0]

    # ------------------------------------------------------------------------------------------
    # the state w = x / (s k), k = sqrt(1 + sigma^2), and the unit-Gaussian part of the divergence
    def normaliser(self, t: Tensor, sigma: Tensor, dsig: Tensor) -> tuple[Tensor, Tensor]:
        """``(k, d log k / du)`` of the state ``w = y / k`` (``dsig = d sigma / du``)."""
        one_plus = 1.0 + sigma * sigma
        return torch.sqrt(one_plus), sigma * dsig / one_plus

    def state_normaliser(self, t: Tensor) -> Tensor:
        """``k`` at time ``t``: ``sqrt(1 + sigma(t)^2)``."""
        return torch.sqrt(1.0 + self.sde.sigma(t) ** 2)

    def gaussian_rate(self, s: Tensor, sigma: Tensor, rate: Tensor) -> Tensor:
        """``rho``: the unit-Gaussian part ``-d r / (s (1 + sigma^2))`` taken out of ``dA/du``."""
        return -self.dim * rate / (s * (1.0 + sigma * sigma))

    def gaussian_integral(self, t0: Tensor, t1: Tensor) -> Tensor:
        """``int rho du`` in closed form: ``d/2 (log(1 + sigma(t1)^2) - log(1 + sigma(t0)^2))``."""
        sde = self.sde
        return 0.5 * self.dim * (torch.log1p(sde.sigma(t1) ** 2) - torch.log1p(sde.sigma(t0) ** 2))

    def frame(self, u: Tensor) -> Frame:
        """All per-sample coefficients at ``u`` (computed once per evaluation)."""
        t, sigma = self.time_and_sigma(u)
        s = self.sde.scale(t)
        dsig = self.dsigma_du(t, sigma)
        rate = s * sigma * dsig
        k, dlogk = self.normaliser(t, sigma, dsig)
        return Frame(t, s * k, rate / k, dlogk, -rate * s, self.gaussian_rate(s, sigma, rate))

    # ------------------------------------------------------------------------------------------
    # state <-> data
    def to_state(self, x: Tensor, t: Tensor) -> Tensor:
        """Flatten ``x`` at time ``t`` to the solver's state ``x / (s k)``."""
        m = self.sde.scale(t) * self.state_normaliser(t)
        return x.reshape(x.shape[0], -1) / m[:, None]

    def from_state(self, w: Tensor, t: Tensor) -> Tensor:
        """The data-space tensor ``s k w`` at time ``t`` from the solver's state."""
        m = self.sde.scale(t) * self.state_normaliser(t)
        return (w * m[:, None]).reshape(w.shape[0], *self.event_shape)

    def log_scale_correction(self, t0: Tensor, t1: Tensor) -> Tensor:
        """``d (log s(t1) - log s(t0)) + int rho du``: the closed-form terms of the log-density."""
        sde = self.sde
        out = self.dim * (torch.log(sde.scale(t1)) - torch.log(sde.scale(t0)))
        return out + self.gaussian_integral(t0, t1)

    # ------------------------------------------------------------------------------------------
    # right-hand sides
    def drift(self) -> _Drift:
        """The right-hand side ``(rows, u, w) -> dw/du`` (no divergence): encode/decode."""
        return _Drift(self)

    def drift_and_divergence(self, probes: Tensor | None) -> _WithDivergence:
        """The right-hand side of the augmented state ``[w, A]`` using ``probes``."""
        return _WithDivergence(self, probes)


class DenoiserFlow(ProbabilityFlow):
    """The PF ODE of a flow path (``s(T) = 0``) in ``u`` and ``w``, driven by the denoiser.

    ``score_fn`` here is the denoiser ``D(x, t) = E[x0 | x_t = x]``; the frame holds the
    coefficients of the module docstring's ``D`` form (``dw/du = -a D - b w``,
    ``dA/du = c tr(dD/dx) + c0``), finite up to and at ``u = 1``.
    """

    def u_of_t(self, t: Tensor) -> Tensor:
        """``u = 1 / (1 + kappa / sigma)``: 1 at ``sigma = inf``."""
        return 1.0 / (1.0 + SIGMA_FRAC_KAPPA / self.sde.sigma(t))

    def scale_and_norm(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, m)`` at time ``t``: the scale and ``m = sqrt(s^2 + std^2)``."""
        s = self.sde.scale(t)
        return s, torch.sqrt(s * s + self.sde.std(t) ** 2)

    def frame(self, u: Tensor) -> Frame:
        """The ``D``-form coefficients at ``u`` (module docstring)."""
        t = self.t_of_u(u)
        m = self.scale_and_norm(t)[1]
        q = torch.sqrt((1.0 - u) ** 2 + (SIGMA_FRAC_KAPPA * u) ** 2)
        a = 1.0 / (u * q)
        gauss = (1.0 - u) / q * a  # (s/m) / (u q)
        return Frame(t, m, a, -gauss, -m * a, self.dim * gauss)

    def to_state(self, x: Tensor, t: Tensor) -> Tensor:
        """Flatten ``x`` at time ``t`` to the state ``x / m``."""
        return x.reshape(x.shape[0], -1) / self.scale_and_norm(t)[1][:, None]

    def from_state(self, w: Tensor, t: Tensor) -> Tensor:
        """The data-space tensor ``m w`` at time ``t``."""
        m = self.scale_and_norm(t)[1]
        return (w * m[:, None]).reshape(w.shape[0], *self.event_shape)

    def log_scale_correction(self, t0: Tensor, t1: Tensor) -> Tensor:
        """``d (log m(t1) - log m(t0))``: the closed-form term of the log-density."""
        return self.dim * (
            torch.log(self.scale_and_norm(t1)[1]) - torch.log(self.scale_and_norm(t0)[1])
        )


NO_DENOISER = (
    "{sde} has s(T) = 0: the probability-flow ODE at t = T needs E[x0 | x_T] from "
    "score_fn.denoise(x, t) (the score there is -x / std(T)^2 whatever the data); pass a "
    "ScoreModel's score_fn(), a GaussianMixture's score_fn(sde), "
    "scoresde.parameterize.from_velocity(v, sde) or a scoresde.sde.ScoreWithDenoiser"
)
"""The error for a score function without ``denoise`` on a flow path."""


def probability_flow(score_fn: ScoreFn, sde: SDE, event_shape: tuple[int, ...]) -> ProbabilityFlow:
    """The PF ODE of ``sde``: :class:`DenoiserFlow` where ``s(T) = 0``, else the score form.

    Raises ``ValueError`` on a flow path when ``score_fn`` has no ``denoise`` method.
    """
    if not sde.zero_terminal_snr:
        return ProbabilityFlow(score_fn, sde, event_shape)
    denoise = denoiser_of(score_fn)
    if denoise is None:
        raise ValueError(NO_DENOISER.format(sde=sde))
    return DenoiserFlow(denoise, sde, event_shape)


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

    def data(self, w: Tensor, fr: Frame) -> Tensor:
        """The data-space ``x = m w`` at the frame ``fr``, shaped ``(B, *event_shape)``."""
        return (w * fr.m[:, None]).reshape(w.shape[0], *self.flow.event_shape)


class _Drift(_StagedRHS):
    """``(rows, u, w) -> dw/du``."""

    def evaluate(self, rows: Tensor, fr: Frame, w: Tensor) -> Tensor:
        x = self.data(w, fr)
        with trusted_times():  # the solver built t: no per-call read of its values
            score = check_score(self.flow.score_fn(x, fr.t), x)
        return -fr.a[:, None] * score.reshape(w.shape) - fr.b[:, None] * w


class _WithDivergence(_StagedRHS):
    """``(rows, u, [w, A]) -> [dw/du, -r s tr J + rho]``; ``probes`` ``(P, B, d)`` or ``None``."""

    def __init__(self, flow: ProbabilityFlow, probes: Tensor | None) -> None:
        super().__init__(flow)
        self.probes = probes

    def evaluate(self, rows: Tensor, fr: Frame, state: Tensor) -> Tensor:
        w = state[:, :-1]
        x = self.data(w, fr)
        probes = self.probes
        if probes is not None and rows.numel() != probes.shape[1]:
            probes = probes[:, rows]  # only the unfinished samples' own probes
        with trusted_times():  # the solver built t: no per-call read of its values
            score, tr = score_and_trace(self.flow.score_fn, x, fr.t, probes)
        out = torch.empty_like(state)
        torch.mul(score.reshape(w.shape), -fr.a[:, None], out=out[:, :-1])
        out[:, :-1].sub_(fr.b[:, None] * w)
        out[:, -1] = fr.c * tr + fr.c0
        return out
