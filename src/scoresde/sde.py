"""Forward SDEs with affine drift, their Gaussian perturbation kernels, reverse SDE and PF ODE.

Every forward SDE here has the form ``dx = f(t) x dt + g(t) dw`` and so a Gaussian perturbation
kernel ``p(x_t | x_0) = N(s(t) x_0, s(t)^2 sigma(t)^2 I)`` (Sarkka & Solin 2019, eqs. 5.50-5.51;
in the ``s``/``sigma`` form of Karras et al. 2022, eq. 4 and App. B.2) with::

    s(t) = exp(int_0^t f),      sigma(t)^2 = int_0^t (g / s)^2      (+ sigma(0)^2 for VE),
    f(t) = s'(t) / s(t),         g(t) = s(t) sqrt(2 sigma'(t) sigma(t)).

``s`` is the *scale* and ``sigma`` the *noise level* of the scaled variable ``x / s``; the
marginal standard deviation is ``s * sigma`` and the signal-to-noise ratio is ``1 / sigma^2``.
All SDEs share that description, so every sampler, the likelihood and the losses are written once
against it (no ``isinstance`` on SDE classes anywhere).

Two layers:

* the public, checked methods (``drift``, ``diffusion``, ``marginal``, ``perturb``, ...) accept a
  float or a ``(B,)`` tensor ``t``, validate it, and follow ``x``'s device and dtype;
* the coefficient methods (``scale``, ``sigma``, ``f``, ``g2``, ``sigma_deriv``, ``sigma_inv``)
  take a tensor ``t`` and do no checking: samplers call them in their inner loops.

Flow paths (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023) are members of the
same family: an interpolant ``x_t = alpha(t) x0 + beta(t) z`` is ``s = alpha``, ``sigma = beta /
alpha`` (:class:`InterpolantSDE`, :class:`RectifiedFlow`). Where ``alpha(T) = 0`` (zero terminal
SNR) the prior ``N(0, beta(T)^2 I)`` is exactly ``p_T``, but ``sigma(T) = inf``, ``f(T) = -inf``
and ``g(T)^2 = inf``: the score there is ``-x / beta(T)^2`` whatever the data, so Tweedie's
``E[x0 | x_T]`` cannot be read from it. Score functions that can give it carry a ``denoise(x, t)``
method (:class:`ScoreWithDenoiser`, :func:`denoiser_of`); the samplers and the likelihood take
their step from ``T`` in closed form with it (:meth:`ReverseSDE.prior_drift`,
:meth:`ReverseSDE.prior_step`), never by moving ``T``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import check_nonnegative, check_positive, times_trusted

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""A score function ``score_fn(x, t) -> Tensor`` shaped like ``x``; ``t`` is a ``(B,)`` tensor."""

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "EDMSDE",
    "AffineSDE",
    "InterpolantSDE",
    "RectifiedFlow",
    "ReverseSDE",
    "ScoreWithDenoiser",
    "denoiser_of",
    "EulerStep",
    "Marginal",
    "ScoreFn",
    "bcast",
]


class Marginal(NamedTuple):
    """The Gaussian perturbation kernel at time ``t``: ``x_t = mean + std * z``."""

    mean: Tensor
    """``s(t) x_0``, shaped like ``x_0``."""
    std: Tensor
    """``s(t) sigma(t)``, shaped ``(B,)``."""


class ScoreWithDenoiser:
    """A score function that also gives Tweedie's denoiser ``E[x0 | x_t = x]``.

    ``fn(x, t)`` is the score; ``fn.denoise(x, t)`` the posterior mean, which must be defined at
    every ``t`` in ``[0, T]``, also where ``s(t) = 0`` (the end point of a flow path, where the
    score ``-x / std(T)^2`` says nothing about the data; Lin et al. 2024, sec. 3). Samplers and
    the likelihood call ``denoise`` only there. ``ScoreModel.score_fn()`` and
    ``GaussianMixture.score_fn(sde)`` return such functions.
    """

    def __init__(self, score: ScoreFn, denoise: ScoreFn) -> None:
        if not callable(score) or not callable(denoise):
            raise TypeError("score and denoise must be callables of (x, t)")
        self.score = score
        self.denoise = denoise

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The score at ``(x, t)``."""
        return self.score(x, t)


def denoiser_of(score_fn: object) -> ScoreFn | None:
    """The ``denoise(x, t)`` of a score function (see :class:`ScoreWithDenoiser`), or ``None``."""
    den = getattr(score_fn, "denoise", None)
    return den if callable(den) else None


def bcast(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient ``(B,)`` (or a scalar) to broadcast against ``x``."""
    if c.dim() == 0:
        return c
    return c.reshape(c.shape[0], *([1] * (x.dim() - 1)))


class SDE(ABC):
    """A forward SDE ``dx = f(t) x dt + g(t) dw`` on ``t in [0, T]``.

    Subclasses give the closed forms of ``s(t)``, ``sigma(t)``, ``f(t)``, ``g(t)^2``,
    ``sigma'(t)`` and the inverse ``t(sigma)``; everything else is derived here.
    """

    T: float = 1.0
    """End time of the forward process."""
    eps: float = 1e-3
    """Default smallest time for sampling (the SDE may be singular at 0)."""
    default_schedule: str = "uniform"
    """Step schedule the samplers use when none is given."""

    # ----------------------------------------------------------------------------------------
    # coefficients (tensor t, unchecked)
    @abstractmethod
    def scale(self, t: Tensor) -> Tensor:
        """The mean coefficient ``s(t)`` of the perturbation kernel."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """The noise level ``sigma(t)`` of ``x / s(t)`` (marginal std is ``s * sigma``)."""

    @abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """The drift coefficient ``f(t) = s'(t) / s(t)``."""

    @abstractmethod
    def g2(self, t: Tensor) -> Tensor:
        """The squared diffusion ``g(t)^2 = s(t)^2 * 2 sigma'(t) sigma(t)``."""

    @abstractmethod
    def sigma_deriv(self, t: Tensor) -> Tensor:
        """The time derivative ``sigma'(t)``."""

    @abstractmethod
    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """The time ``t`` at which the noise level equals ``sigma`` (inverse of ``sigma(t)``)."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at ``T``."""
        t = torch.tensor(self.T, dtype=torch.float64)
        return float(self.std(t))

    @property
    def zero_terminal_snr(self) -> bool:
        """Whether ``s(T) = 0`` exactly: the prior is ``p_T`` and ``x_T`` is free of the data.

        Flow paths such as :class:`RectifiedFlow` (Lin et al. 2024 call it zero terminal SNR);
        their ``sigma(T)`` is infinite and the samplers step from ``T`` in closed form.
        """
        return float(self.scale(torch.tensor(self.T, dtype=torch.float64))) == 0.0

    def std(self, t: Tensor) -> Tensor:
        """Marginal standard deviation ``s(t) sigma(t)``."""
        return self.scale(t) * self.sigma(t)

    def scale_deriv(self, t: Tensor) -> Tensor:
        """``s'(t) = f(t) s(t)``."""
        return self.f(t) * self.scale(t)

    def std_deriv(self, t: Tensor) -> Tensor:
        """The time derivative of the marginal std, ``(s sigma)' = s' sigma + s sigma'``."""
        return self.scale_deriv(t) * self.sigma(t) + self.scale(t) * self.sigma_deriv(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """Log signal-to-noise ratio ``lambda(t) = -2 log sigma(t)``."""
        return -2.0 * torch.log(self.sigma(t))

    def tweedie(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie's posterior mean ``E[x0 | x_t = x] = x / s + s sigma^2 score`` (unchecked).

        ``t`` is a scalar or ``(B,)`` and ``score`` the score at ``(x, t)``. In the scaled
        variable ``x_hat = x / s`` this is EDM's denoiser ``D(x_hat; sigma)``. Undefined where
        ``s(t) = 0`` (``T`` of a flow path): there use a :class:`ScoreWithDenoiser`'s
        ``denoise``.
        """
        s, sig = self.scale(t), self.sigma(t)
        return x / bcast(s, x) + bcast(s * sig**2, x) * score

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`."""
        return self.sigma_inv(torch.exp(-0.5 * log_snr))

    # ----------------------------------------------------------------------------------------
    # public, checked API
    def time(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Validate ``t`` against ``x`` and return it as a ``(B,)`` tensor on x's device/dtype.

        Raises ``ValueError`` when ``t`` lies outside ``[0, T]`` or its batch size differs from
        ``x``'s.
        """
        batch = x.shape[0] if x.dim() > 0 else 1
        if isinstance(t, Tensor):
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != batch):
                raise ValueError(
                    f"t must be a float or a tensor of shape ({batch},) matching the batch size "
                    f"of x {tuple(x.shape)}; got t of shape {tuple(t.shape)}"
                )
            tt = t.to(device=x.device, dtype=x.dtype).expand(batch)
            if tt.numel() and not times_trusted():  # reading t would synchronise a GPU
                lo, hi = float(tt.min()), float(tt.max())
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    raise ValueError("t contains NaN or infinite values")
                self._check_range(lo, hi)
            return tt
        value = float(t)
        self._check_range(value, value)
        return torch.full((batch,), value, device=x.device, dtype=x.dtype)

    def _check_range(self, lo: float, hi: float) -> None:
        slack = 1e-6 * self.T
        if lo < -slack or hi > self.T + slack or math.isnan(lo) or math.isnan(hi):
            raise ValueError(
                f"t must lie in [0, T] = [0, {self.T}] for {type(self).__name__}; "
                f"got values in [{lo}, {hi}]"
            )

    def _scalar_time(self, t: float | Tensor, like: Tensor | None) -> Tensor:
        if like is not None:
            ref = like
        elif isinstance(t, Tensor):
            ref = t if t.is_floating_point() else t.double()
        else:
            ref = torch.zeros((), dtype=torch.get_default_dtype())
        if isinstance(t, Tensor) and t.dim() == 1:
            return self.time(t, t.to(ref.dtype))
        tt = self.time(t, ref.reshape(1))
        return tt[0]

    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Forward drift ``f(t) x``, shaped like ``x``."""
        tt = self.time(t, x)
        return bcast(self.f(tt), x) * x

    def diffusion(self, t: float | Tensor, like: Tensor | None = None) -> Tensor:
        """Forward diffusion ``g(t)``: shape ``(B,)`` for a tensor ``t``, a scalar for a float.

        The result follows ``like``'s dtype/device when given, else ``t``'s.
        """
        tt = self._scalar_time(t, like)
        return torch.sqrt(self.g2(tt))

    def marginal(self, x0: Tensor, t: float | Tensor) -> Marginal:
        """Mean ``s(t) x0`` and std ``s(t) sigma(t)`` (shape ``(B,)``) of ``p(x_t | x0)``."""
        tt = self.time(t, x0)
        return Marginal(bcast(self.scale(tt), x0) * x0, self.std(tt))

    def perturb(self, x0: Tensor, t: float | Tensor, noise: Tensor | None = None) -> Tensor:
        """A draw ``x_t = s(t) x0 + s(t) sigma(t) noise`` from the perturbation kernel."""
        if noise is None:
            noise = torch.randn_like(x0)
        elif noise.shape != x0.shape:
            raise ValueError(
                f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
        mean, std = self.marginal(x0, t)
        return mean + bcast(std, x0) * noise

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the prior ``N(0, prior_std^2 I)``."""
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of ``z`` under the prior, one value per sample (shape ``(B,)``)."""
        d = z[0].numel()
        var = self.prior_std**2
        sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
        return -0.5 * sq / var - 0.5 * d * math.log(2 * math.pi * var)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (Anderson 1982) or the probability-flow ODE driven by a score."""
        return ReverseSDE(self, score_fn, probability_flow)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, object]:
        return {}


class EulerStep(NamedTuple):
    """One Euler(-Maruyama) step of a reverse process: ``x_next = mean + std * z``."""

    mean: Tensor
    """``x + drift(x, t) h`` with ``h = t_next - t``, shaped like ``x``."""
    std: Tensor
    """``g(t) sqrt(-h)`` (zero for the probability-flow ODE), broadcastable against ``x``."""


class ReverseSDE:
    """Reverse-time SDE ``dx = [f x - g^2 score] dt + g dw_bar``, or the probability-flow ODE.

    The reverse SDE is Anderson (1982), as used by Song et al. (2021, eq. 6); with
    ``probability_flow=True`` it is the probability-flow ODE ``dx = [f x - g^2 score / 2] dt``
    (Song et al. 2021, eq. 13), which has no noise. Time runs backwards: integrate from ``T``
    to ``eps`` with negative ``dt``. The samplers that step in time (``euler_maruyama``,
    ``ode_heun``, ``ode``) and the SMC moves take their drift from here; the noise-level samplers
    step the same ODE in the form of :mod:`scoresde.sampling.sigma`.

    Times: a float (range-checked), a 0-d tensor or a ``(B,)`` tensor. Tensor times are used as
    given, without reading their values (no device synchronisation in a sampler's loop); the
    coefficients follow the time's shape and the score is called with ``t`` expanded to ``(B,)``.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow

    def _time(self, t: float | Tensor, x: Tensor | None) -> Tensor:
        """``t`` as a tensor on ``x``'s device and dtype (0-d for a float)."""
        if not isinstance(t, Tensor):
            value = float(t)
            self.sde._check_range(value, value)
            if x is None:
                return torch.tensor(value, dtype=torch.get_default_dtype())
            return torch.tensor(value, device=x.device, dtype=x.dtype)
        if t.dim() > 1 or (x is not None and t.dim() == 1 and t.shape[0] != x.shape[0]):
            shape = "" if x is None else f" matching the batch size of x {tuple(x.shape)}"
            raise ValueError(
                f"t must be a float, a 0-d or a (B,) tensor{shape}, got {tuple(t.shape)}"
            )
        return t if x is None else t.to(device=x.device, dtype=x.dtype)

    def _score(self, x: Tensor, t: Tensor, score: Tensor | None) -> Tensor:
        return self.score_fn(x, t.expand(x.shape[0])) if score is None else score

    def _drift(self, x: Tensor, t: Tensor, g2: Tensor, score: Tensor) -> Tensor:
        c = 0.5 if self.probability_flow else 1.0
        return bcast(self.sde.f(t), x) * x - c * bcast(g2, x) * score

    def drift(self, x: Tensor, t: float | Tensor, score: Tensor | None = None) -> Tensor:
        """Drift of the reverse process at ``(x, t)``: ``f x - g^2 score`` (``/ 2`` for the ODE).

        ``score``: the score at ``(x, t)`` when the caller has it already (not evaluated again).
        """
        tt = self._time(t, x)
        return self._drift(x, tt, self.sde.g2(tt), self._score(x, tt, score))

    def diffusion(self, t: float | Tensor) -> Tensor:
        """Diffusion ``g(t)`` of the reverse process (zero for the probability-flow ODE).

        Shaped like ``t`` (0-d for a float).
        """
        g = torch.sqrt(self.sde.g2(self._time(t, None)))
        return torch.zeros_like(g) if self.probability_flow else g

    def euler_step(
        self, x: Tensor, t: float | Tensor, t_next: float | Tensor, score: Tensor | None = None
    ) -> EulerStep:
        """Euler-Maruyama from ``t`` to ``t_next < t`` (Song et al. 2021, eq. 6 discretised).

        ``x_next = x + drift(x, t) h + g(t) sqrt(-h) z`` with ``h = t_next - t < 0``; returns
        the mean and the std of that Gaussian step (``std = 0`` for the probability-flow ODE,
        where it is Euler's method). ``score``: the score at ``(x, t)`` if already evaluated.
        """
        tt = self._time(t, x)
        h = self._time(t_next, x) - tt
        g2 = self.sde.g2(tt)
        mean = x + self._drift(x, tt, g2, self._score(x, tt, score)) * bcast(h, x)
        if self.probability_flow:
            return EulerStep(mean, torch.zeros_like(bcast(g2, x)))
        return EulerStep(mean, torch.sqrt(bcast(g2 * -h, x)))

    # ----------------------------------------------------------------------------------------
    # the end point of a flow path, s(t) = 0 (closed forms; see the module docstring)
    def prior_drift(self, x: Tensor, t: float | Tensor, denoised: Tensor) -> Tensor:
        """Probability-flow drift at a time where ``s(t) = 0``: ``s' D + (std'/std) x``.

        The PF drift of any affine SDE is ``s' D - std std' score`` with ``D = E[x0 | x]``
        (the velocity ``E[dx_t/dt | x_t]`` of the interpolant ``x_t = s x0 + std z``, Lipman et
        al. 2023, eq. 8); where ``s = 0`` the score is ``-x / std^2`` exactly. ``denoised`` is
        ``D`` at ``(x, t)`` (``denoise`` of a :class:`ScoreWithDenoiser`). The reverse SDE has
        no finite drift there (``g^2 = inf``): use :meth:`prior_step`.
        """
        if not self.probability_flow:
            raise ValueError(
                "the reverse SDE has no finite drift where s(t) = 0 (g(t)^2 = inf); use "
                "prior_step, or the probability-flow ODE"
            )
        tt = self._time(t, x)
        sde = self.sde
        return (
            bcast(sde.scale_deriv(tt), x) * denoised + bcast(sde.std_deriv(tt) / sde.std(tt), x) * x
        )

    def prior_step(
        self, x: Tensor, t: float | Tensor, t_next: float | Tensor, denoised: Tensor
    ) -> EulerStep:
        """The step from a time ``t`` where ``s(t) = 0`` to ``t_next < t``, in closed form.

        With ``D`` frozen at ``denoised = E[x0 | x_t]``, the reverse SDE and the PF ODE are
        linear and solved exactly (the exponential integrators of DDIM / DPM-Solver++(1) and of
        SDE-DPM-Solver++(1), Lu et al. 2022, in the limit ``sigma(t) -> inf``): the probability
        flow gives ``x' = s' D + std' x / std(t)`` (``std = 0`` returned), the reverse SDE the
        Gaussian ``x' = s' D + std' z`` (``mean = s' D``, ``std = std'``): its infinite
        diffusion at ``t`` forgets ``x``.
        """
        tt = self._time(t, x)
        tn = self._time(t_next, x)
        sde = self.sde
        mean = bcast(sde.scale(tn), x) * denoised
        std_next = bcast(sde.std(tn), x)
        if self.probability_flow:
            out = mean + std_next / bcast(sde.std(tt), x) * x
            return EulerStep(out, torch.zeros_like(std_next))
        return EulerStep(mean, std_next)


# --------------------------------------------------------------------------------------------
# the concrete SDEs


class VESDE(SDE):
    """Variance exploding SDE (SMLD/NCSN): ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    ``dx = sigma(t) sqrt(2 log(sigma_max/sigma_min)) dw``, ``s = 1``, prior ``N(0, sigma_max^2)``.
    The marginal std is ``sigma(t)``, i.e. ``x(0)`` is the data perturbed at ``sigma_min``.
    """

    eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _params(self) -> dict[str, object]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @property
    def prior_std(self) -> float:
        """``sigma_max``."""
        return self.sigma_max

    def scale(self, t: Tensor) -> Tensor:
        """``s(t) = 1``."""
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def f(self, t: Tensor) -> Tensor:
        """``f = 0``."""
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = 2 sigma(t)^2 log(sigma_max / sigma_min)``."""
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma' = sigma log(sigma_max / sigma_min)``."""
        return self.sigma(t) * self._log_ratio

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t = log(sigma / sigma_min) / log(sigma_max / sigma_min)``."""
        return torch.log(sigma / self.sigma_min) / self._log_ratio


class _LinearBeta(SDE):
    """Shared parts of VP and sub-VP: ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_nonnegative("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_min > self.beta_max:
            raise ValueError(
                f"beta_min must be <= beta_max (0 <= beta_min <= beta_max), "
                f"got beta_min={beta_min}, beta_max={beta_max}"
            )

    def _params(self) -> dict[str, object]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    @property
    def prior_std(self) -> float:
        """1: the prior is the standard normal."""
        return 1.0

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, linear from ``beta_min`` to ``beta_max``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_int(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _t_from_beta_int(self, b: Tensor) -> Tensor:
        # root of (Δ/2) t^2 + beta_min t - b = 0, in the cancellation-free form
        delta = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * delta * b))

    def scale(self, t: Tensor) -> Tensor:
        """``s(t) = exp(-B(t) / 2)``."""
        return torch.exp(-0.5 * self.beta_int(t))

    def f(self, t: Tensor) -> Tensor:
        """``f = -beta(t) / 2``."""
        return -0.5 * self.beta(t)


class VPSDE(_LinearBeta):
    """Variance preserving SDE (DDPM): ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``.

    Marginal ``N(e^{-B/2} x0, (1 - e^{-B}) I)``, ``B(t) = int_0^t beta``, prior ``N(0, I)``.
    """

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sqrt(e^{B(t)} - 1)``."""
        return torch.sqrt(torch.expm1(self.beta_int(t)))

    def std(self, t: Tensor) -> Tensor:
        """``sqrt(1 - e^{-B(t)})`` (computed without cancellation)."""
        return torch.sqrt(-torch.expm1(-self.beta_int(t)))

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = beta(t)``."""
        return self.beta(t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma' = beta e^{B} / (2 sigma)``."""
        return self.beta(t) * torch.exp(self.beta_int(t)) / (2.0 * self.sigma(t))

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t`` with ``B(t) = log(1 + sigma^2)``."""
        return self._t_from_beta_int(torch.log1p(sigma**2))


class SubVPSDE(_LinearBeta):
    """Sub-VP SDE: ``dx = -beta x / 2 dt + sqrt(beta (1 - e^{-2B})) dw``.

    Marginal ``N(e^{-B/2} x0, (1 - e^{-B})^2 I)``: the std is ``1 - e^{-B}``, not its square
    root. Prior ``N(0, I)``.
    """

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = 2 sinh(B(t) / 2)``."""
        return 2.0 * torch.sinh(0.5 * self.beta_int(t))

    def std(self, t: Tensor) -> Tensor:
        """``1 - e^{-B(t)}``."""
        return -torch.expm1(-self.beta_int(t))

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = beta(t) (1 - e^{-2 B(t)})``."""
        return self.beta(t) * -torch.expm1(-2.0 * self.beta_int(t))

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma' = beta cosh(B / 2)``."""
        return self.beta(t) * torch.cosh(0.5 * self.beta_int(t))

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t`` with ``B(t) = 2 asinh(sigma / 2)``."""
        return self._t_from_beta_int(2.0 * torch.asinh(0.5 * sigma))


class EDMSDE(SDE):
    """The EDM SDE (Karras et al. 2022): ``s(t) = 1``, ``sigma(t) = t``, ``dx = sqrt(2t) dw``.

    Time is the noise level: ``T = sigma_max``, ``eps = sigma_min``; prior ``N(0, sigma_max^2)``.
    Sampled on Karras' rho = 7 schedule by default.
    """

    default_schedule = "karras"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        self.T = self.sigma_max
        self.eps = self.sigma_min

    def _params(self) -> dict[str, object]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @property
    def prior_std(self) -> float:
        """``sigma_max``."""
        return self.sigma_max

    def scale(self, t: Tensor) -> Tensor:
        """``s = 1``."""
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = t``."""
        return t

    def f(self, t: Tensor) -> Tensor:
        """``f = 0``."""
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = 2 t``."""
        return 2.0 * t

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma' = 1``."""
        return torch.ones_like(t)

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t = sigma``."""
        return sigma


def _derivative(fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    """Elementwise derivative of a scalar function of time by autograd."""
    with torch.enable_grad():
        tt = t.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(fn(tt).sum(), tt)
    return d


class AffineSDE(SDE):
    """The general affine SDE built from a scale ``s(t)`` and a noise level ``sigma(t)``.

    ``f = s'/s`` and ``g = s sqrt(2 sigma' sigma)`` (Karras et al. 2022, App. B.2). ``scale`` and
    ``sigma`` are callables on tensors of times (differentiable by autograd unless the derivatives
    are given); ``sigma`` must increase on ``[0, T]`` and ``s`` must be positive. ``sigma_inv`` is
    found by bisection when not given.
    """

    def __init__(
        self,
        scale: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        *,
        T: float = 1.0,
        eps: float = 1e-3,
        scale_deriv: Callable[[Tensor], Tensor] | None = None,
        sigma_deriv: Callable[[Tensor], Tensor] | None = None,
        sigma_inv: Callable[[Tensor], Tensor] | None = None,
        prior_std: float | None = None,
        default_schedule: str = "uniform",
    ) -> None:
        self.T = check_positive("T", T)
        self.eps = check_positive("eps", eps)
        if self.eps >= self.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {T}), got eps={eps}")
        self._scale, self._sigma = scale, sigma
        self._scale_deriv, self._sigma_deriv, self._sigma_inv = scale_deriv, sigma_deriv, sigma_inv
        self.default_schedule = default_schedule
        grid = torch.linspace(self.eps, self.T, 257, dtype=torch.float64)
        s, sg = scale(grid), sigma(grid)
        if not bool(torch.isfinite(s).all() & (s > 0).all()):
            raise ValueError("scale(t) must be finite and > 0 on [eps, T]")
        if not bool(torch.isfinite(sg).all() & (sg >= 0).all() & (sg.diff() > 0).all()):
            raise ValueError("sigma(t) must be finite, >= 0 and strictly increasing on [eps, T]")
        self._prior_std = (
            float(s[-1] * sg[-1]) if prior_std is None else check_positive("prior_std", prior_std)
        )

    @property
    def prior_std(self) -> float:
        """``s(T) sigma(T)`` unless given."""
        return self._prior_std

    def scale(self, t: Tensor) -> Tensor:
        """The user's ``s(t)``."""
        return self._scale(t)

    def sigma(self, t: Tensor) -> Tensor:
        """The user's ``sigma(t)``."""
        return self._sigma(t)

    def scale_deriv(self, t: Tensor) -> Tensor:
        """``s'(t)`` (given, or by autograd)."""
        if self._scale_deriv is not None:
            return self._scale_deriv(t)
        return _derivative(self._scale, t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma'(t)`` (given, or by autograd)."""
        if self._sigma_deriv is not None:
            return self._sigma_deriv(t)
        return _derivative(self._sigma, t)

    def f(self, t: Tensor) -> Tensor:
        """``f = s' / s``."""
        return self.scale_deriv(t) / self.scale(t)

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = 2 s^2 sigma' sigma``."""
        return 2.0 * self.scale(t) ** 2 * self.sigma_deriv(t) * self.sigma(t)

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """The user's inverse, else bisection on ``[0, T]`` (64 halvings)."""
        if self._sigma_inv is not None:
            return self._sigma_inv(sigma)
        lo = torch.zeros_like(sigma)
        hi = torch.full_like(sigma, self.T)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            below = self.sigma(mid) < sigma
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @classmethod
    def from_interpolant(
        cls,
        alpha: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        *,
        T: float = 1.0,
        eps: float = 1e-3,
        alpha_deriv: Callable[[Tensor], Tensor] | None = None,
        sigma_deriv: Callable[[Tensor], Tensor] | None = None,
        default_schedule: str = "uniform",
    ) -> InterpolantSDE:
        """The affine SDE of the interpolant ``x_t = alpha(t) x0 + sigma(t) z``.

        ``s = alpha`` and the noise level is ``sigma / alpha`` (Kingma et al. 2021; Albergo &
        Vanden-Eijnden 2023; Lipman et al. 2024, sec. 4.8). ``alpha(T) = 0`` is allowed (a flow
        path with the exact prior ``N(0, sigma(T)^2 I)``); an ``alpha(T)`` within ``1e-12`` of
        zero, such as ``cos(pi / 2)``, is taken as exactly zero at ``T``. E.g. the cosine path
        ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``. See :class:`InterpolantSDE`.
        """
        return InterpolantSDE(
            alpha,
            sigma,
            T=T,
            eps=eps,
            alpha_deriv=alpha_deriv,
            sigma_deriv=sigma_deriv,
            default_schedule=default_schedule,
        )


_SNAP_ZERO = 1e-12
"""Relative size below which an interpolant's ``alpha(T)`` is taken as exactly zero."""


class InterpolantSDE(AffineSDE):
    """An affine SDE given by its interpolant ``x_t = alpha(t) x0 + beta(t) z``.

    ``s = alpha``, ``std = beta`` and ``sigma = beta / alpha``, with ``f = alpha' / alpha`` and
    ``g^2 = 2 beta (beta' - beta alpha' / alpha)`` (Karras et al. 2022, App. B.2, in these
    variables). ``alpha`` must be positive on ``[eps, T)`` and may vanish at ``T``; ``beta``
    positive and ``beta / alpha`` strictly increasing. Derivatives are given or taken by
    autograd. Build one with :meth:`AffineSDE.from_interpolant`.
    """

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor],
        beta: Callable[[Tensor], Tensor],
        *,
        T: float = 1.0,
        eps: float = 1e-3,
        alpha_deriv: Callable[[Tensor], Tensor] | None = None,
        sigma_deriv: Callable[[Tensor], Tensor] | None = None,
        default_schedule: str = "uniform",
    ) -> None:
        self.T = check_positive("T", T)
        self.eps = check_positive("eps", eps)
        if self.eps >= self.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {T}), got eps={eps}")
        if not callable(alpha) or not callable(beta):
            raise TypeError("alpha and sigma must be callables of a tensor of times")
        self._beta, self._beta_deriv = beta, sigma_deriv
        # AffineSDE's hooks: s = alpha (its derivative and f = s'/s are inherited)
        self._scale, self._scale_deriv = alpha, alpha_deriv
        self._sigma, self._sigma_deriv, self._sigma_inv = self.sigma, None, None
        self.default_schedule = default_schedule
        grid = torch.linspace(self.eps, self.T, 257, dtype=torch.float64)
        a, b = alpha(grid), beta(grid)
        self._snap = bool(abs(float(a[-1])) <= _SNAP_ZERO * float(a.abs().max()))
        if self._snap:
            a = torch.cat([a[:-1], a.new_zeros(1)])
        if not bool(torch.isfinite(a).all() & (a[:-1] > 0).all() & (a[-1] >= 0)):
            raise ValueError("alpha(t) must be finite, > 0 on [eps, T) and >= 0 at T")
        if not bool(torch.isfinite(b).all() & (b > 0).all()):
            raise ValueError("sigma(t) must be finite and > 0 on [eps, T]")
        if not bool(((b / a)[:-1].diff() > 0).all() & (b[-1] * a[-2] > b[-2] * a[-1])):
            raise ValueError("sigma(t) / alpha(t) must be strictly increasing on [eps, T]")
        self._prior_std = float(b[-1])

    def _params(self) -> dict[str, object]:
        return {"T": self.T, "eps": self.eps}

    def scale(self, t: Tensor) -> Tensor:
        """``s = alpha(t)`` (exactly 0 at ``T`` when ``alpha(T)`` rounds to 0)."""
        a = self._scale(t)
        return torch.where(t >= self.T, torch.zeros_like(a), a) if self._snap else a

    def std(self, t: Tensor) -> Tensor:
        """``beta(t)``: the marginal std, finite at ``T``."""
        return self._beta(t)

    def sigma(self, t: Tensor) -> Tensor:
        """``beta / alpha`` (``inf`` where ``alpha = 0``)."""
        return self.std(t) / self.scale(t)

    def std_deriv(self, t: Tensor) -> Tensor:
        """``beta'(t)`` (given, or by autograd)."""
        if self._beta_deriv is not None:
            return self._beta_deriv(t)
        return _derivative(self._beta, t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``(beta' alpha - beta alpha') / alpha^2``."""
        a = self.scale(t)
        return (self.std_deriv(t) * a - self.std(t) * self.scale_deriv(t)) / a**2

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = 2 beta (beta' - beta alpha' / alpha)`` (``inf`` where ``alpha = 0``)."""
        b = self.std(t)
        return 2.0 * b * (self.std_deriv(t) - b * self.f(t))


class RectifiedFlow(InterpolantSDE):
    """Rectified flow: ``x_t = (1 - t) x0 + t z`` on ``[0, 1]`` (Liu et al. 2023).

    Also conditional flow matching's optimal-transport path with ``sigma_min = 0`` (Lipman et
    al. 2023, eq. 20, with time reversed: here data at ``t = 0``, noise at ``t = T = 1``, as in
    the score-SDE convention). ``s = 1 - t``, ``std = t``, ``sigma = t / (1 - t)``; the prior
    is exactly ``N(0, I)``. Its velocity ``dx_t/dt = z - x0`` is the ``"flow"``
    parameterisation; ``f = -1/(1 - t)``, ``g^2 = 2t/(1 - t)`` and ``sigma`` are infinite at
    ``T``, where samplers and the likelihood use closed forms.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__(
            lambda t: 1.0 - t,
            lambda t: t,
            T=1.0,
            eps=eps,
            alpha_deriv=lambda t: -torch.ones_like(t),
            sigma_deriv=torch.ones_like,
        )

    def _params(self) -> dict[str, object]:
        return {} if self.eps == 1e-3 else {"eps": self.eps}

    def sigma(self, t: Tensor) -> Tensor:
        """``t / (1 - t)``."""
        return t / (1.0 - t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``1 / (1 - t)^2``."""
        return (1.0 - t) ** -2

    def f(self, t: Tensor) -> Tensor:
        """``-1 / (1 - t)``."""
        return -1.0 / (1.0 - t)

    def g2(self, t: Tensor) -> Tensor:
        """``2 t / (1 - t)``."""
        return 2.0 * t / (1.0 - t)

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t = sigma / (1 + sigma) = 1 / (1 + 1/sigma)`` (``1`` at ``sigma = inf``)."""
        return 1.0 / (1.0 + 1.0 / sigma)
