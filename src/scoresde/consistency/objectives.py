"""Consistency losses: distillation (CD), training from scratch (iCT) and ECT fine-tuning.

Each objective maps a batch of clean data ``x0`` to a scalar loss
``E[lambda d(f_theta(x_{n+1}, sigma_{n+1}), f_target(x_n, sigma_n))]`` (Song et al. 2023,
eq. 10 and 11) and differs in how the pair of noise levels and the earlier point ``x_n`` are
made:

* :class:`Distillation` (CD): Karras grid of ``N`` levels, ``n`` uniform, ``x_n`` from one
  probability-flow ODE step of a teacher score (Heun or Euler in sigma, or any callable step);
  the target network is an EMA of the student (``target_decay``).
* :class:`ConsistencyTraining` (iCT, Song & Dhariwal 2023): ``x_n = x0 + sigma_n z`` with the
  same ``z``; no EMA target (stop-gradient of the student itself); pseudo-Huber loss with
  ``c = 0.00054 sqrt(d)``; weights ``1 / (sigma_{n+1} - sigma_n)``; ``n`` drawn from the
  discretised log-normal ``N(-1.1, 2.0^2)`` of ``log sigma``; the doubling curriculum
  ``N(k) = min(s0 2^floor(k / K'), s1) + 1``, ``K' = floor(K / (log2(s1 / s0) + 1))``.
* :class:`ECT` (Geng et al. 2024): ``sigma_t`` log-normal, ``sigma_r = sigma_t (1 - n(sigma_t)
  / q^stage)``, ``n(s) = 1 + 8 sigmoid(-s)``, clamped at ``sigma_min`` (stage 0 is denoising
  score matching), weights ``1 / (sigma_t - sigma_r)``, pseudo-Huber; started from a trained
  score model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice
from ..sde import SDE, ScoreFn, bcast
from .model import ConsistencyModel, sigma_range

__all__ = [
    "pseudo_huber",
    "karras_sigmas",
    "ict_discretisation",
    "Distillation",
    "ConsistencyTraining",
    "ECT",
    "TeacherStep",
    "LOSSES",
    "TEACHER_STEPS",
]

LOSSES = ("pseudo_huber", "squared")
TEACHER_STEPS = ("heun", "euler")
TeacherStep = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``step(x_hat, sigma, sigma_next) -> x_hat at sigma_next`` (per-sample ``(B,)`` levels)."""


def pseudo_huber(a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """``sqrt(||a - b||^2 + c^2) - c`` per sample; ``c = 0.00054 sqrt(d)`` (iCT, sec. 3.3)."""
    d = a[0].numel()
    c = 0.00054 * math.sqrt(d) if c is None else c
    return torch.sqrt((a - b).pow(2).flatten(1).sum(1) + c * c) - c


def _distance(kind: str, a: Tensor, b: Tensor) -> Tensor:
    if kind == "pseudo_huber":
        return pseudo_huber(a, b)
    return (a - b).pow(2).flatten(1).mean(1)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """``n`` increasing noise levels ``sigma_1 = sigma_min, ..., sigma_n = sigma_max`` (float64).

    Karras et al. 2022, eq. 5 (the grid of Song et al. 2023, sec. 5).
    """
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + i * (hi - lo)) ** rho


def ict_discretisation(step: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """The number of levels ``N(k)`` of iCT's doubling curriculum at step ``k`` of ``K``."""
    k_prime = max(1, math.floor(total / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (step // k_prime), s1) + 1


def _noised(x0: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    return x0 + bcast(sigma, x0) * z


class _Objective:
    """The shared part: the student, its loss kind and the pair loss."""

    def __init__(self, student: ConsistencyModel, loss: str) -> None:
        if not isinstance(student, ConsistencyModel):
            raise TypeError(
                f"student must be a scoresde.consistency.ConsistencyModel, got "
                f"{type(student).__name__}"
            )
        self.student, self.loss_kind = student, check_choice("loss", loss, LOSSES)

    def pair_loss(
        self, x_next: Tensor, s_next: Tensor, target: Tensor, weight: Tensor | None
    ) -> Tensor:
        """``mean(weight * d(f_theta(x_{n+1}, sigma_{n+1}), target))``."""
        out = self.student(x_next, s_next.to(x_next.dtype))
        per = _distance(self.loss_kind, out, target)
        return (per if weight is None else per * weight.to(per.dtype)).mean()

    def after_step(self) -> None:
        """Called after each optimiser step (the EMA target of :class:`Distillation`)."""


class Distillation(_Objective):
    """Consistency distillation from a teacher score (Song et al. 2023, Algorithm 2).

    Args:
        teacher: the teacher's score ``score(x, t)`` for ``teacher_sde``.
        teacher_sde: its SDE; the student's noise range must lie inside its sigma range.
        student: the :class:`ConsistencyModel` being trained.
        n_levels: ``N`` of the Karras grid (18 in the paper).
        teacher_step: ``"heun"`` (2 teacher evaluations), ``"euler"`` or a callable
            :data:`TeacherStep` (e.g. a step built from any library ODE update).
        loss: ``"pseudo_huber"`` or ``"squared"``.
        target_decay: the EMA decay ``mu`` of the target network (0: the student itself).
    """

    def __init__(
        self,
        teacher: ScoreFn,
        teacher_sde: SDE,
        student: ConsistencyModel,
        *,
        n_levels: int = 18,
        teacher_step: str | TeacherStep = "heun",
        loss: str = "squared",
        target_decay: float = 0.95,
    ) -> None:
        super().__init__(student, loss)
        check_student_fits(teacher_sde, student)
        if n_levels < 2 or not 0.0 <= target_decay < 1.0:
            raise ValueError(
                f"n_levels must be >= 2 and target_decay in [0, 1), got {n_levels}, {target_decay}"
            )
        self.teacher, self.teacher_sde = teacher, teacher_sde
        if not callable(teacher_step):
            check_choice("teacher_step", teacher_step, TEACHER_STEPS)
        self.step_fn = teacher_step
        self.sigmas = karras_sigmas(n_levels, student.sigma_min, student.sigma_max)
        self.decay = target_decay
        self.target = copy.deepcopy(student).requires_grad_(False) if target_decay else student

    def teacher_denoise(self, x_hat: Tensor, sigma: Tensor) -> Tensor:
        """The teacher's Tweedie denoiser ``x_hat + s sigma^2 score(s x_hat, t(sigma))``."""
        sde = self.teacher_sde
        t = sde.sigma_inv(sigma)
        s = bcast(sde.scale(t), x_hat)
        return x_hat + s * bcast(sigma, x_hat) ** 2 * self.teacher(s * x_hat, t)

    def ode_step(self, x_hat: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        """One PF-ODE step of the teacher from ``sigma`` down to ``sigma_next`` (EDM Alg. 1)."""
        if callable(self.step_fn):
            return self.step_fn(x_hat, sigma, sigma_next)
        h = bcast(sigma_next - sigma, x_hat)
        d = (x_hat - self.teacher_denoise(x_hat, sigma)) / bcast(sigma, x_hat)
        x_next = x_hat + h * d
        if self.step_fn == "euler":
            return x_next
        d2 = (x_next - self.teacher_denoise(x_next, sigma_next)) / bcast(sigma_next, x_hat)
        return x_hat + h * 0.5 * (d + d2)

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The CD loss of the batch ``x0``."""
        b = x0.shape[0]
        dev = x0.device
        n = torch.randint(0, len(self.sigmas) - 1, (b,), generator=generator, device=dev)
        sig = self.sigmas.to(device=dev, dtype=x0.dtype)
        s_n, s_next = sig[n], sig[n + 1]
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=dev)
        x_next = _noised(x0, s_next, z)
        with torch.no_grad():
            x_n = self.ode_step(x_next, s_next, s_n)
            target = self.target(x_n, s_n)
        return self.pair_loss(x_next, s_next, target, None)

    @torch.no_grad()
    def reset_target(self) -> None:
        """Set the EMA target to the student's current weights (after loading weights)."""
        if self.target is not self.student:
            self.target.load_state_dict(self.student.state_dict())

    @torch.no_grad()
    def after_step(self) -> None:
        """``theta^- <- mu theta^- + (1 - mu) theta`` (Algorithm 2, last line)."""
        if self.target is self.student:
            return
        for p_t, p in zip(self.target.parameters(), self.student.parameters(), strict=True):
            p_t.lerp_(p.detach(), 1.0 - self.decay)


def _lognormal_weights(sig: Tensor, p_mean: float, p_std: float) -> Tensor:
    """The iCT probabilities of the intervals ``[sigma_n, sigma_{n+1}]`` (log-normal mass)."""
    cdf = torch.erf((torch.log(sig) - p_mean) / (math.sqrt(2.0) * p_std))
    return (cdf[1:] - cdf[:-1]).clamp_min(1e-12)


class ConsistencyTraining(_Objective):
    """Improved consistency training with no teacher (iCT, Song & Dhariwal 2023).

    Args:
        student: the :class:`ConsistencyModel` being trained.
        total_steps: ``K``, the length of the run (sets the doubling curriculum).
        s0, s1: the curriculum's first and last numbers of intervals (10, 1280).
        p_mean, p_std: the log-normal of ``log sigma`` (-1.1, 2.0).
        loss: ``"pseudo_huber"`` (the paper's) or ``"squared"``.
    """

    def __init__(
        self,
        student: ConsistencyModel,
        total_steps: int,
        *,
        s0: int = 10,
        s1: int = 1280,
        p_mean: float = -1.1,
        p_std: float = 2.0,
        loss: str = "pseudo_huber",
    ) -> None:
        super().__init__(student, loss)
        self.total, self.s0, self.s1 = int(total_steps), s0, s1
        self.p_mean, self.p_std = p_mean, p_std
        self.step = 0
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _grid(self, levels: int) -> tuple[Tensor, Tensor]:
        if levels not in self._cache:
            sig = karras_sigmas(levels, self.student.sigma_min, self.student.sigma_max)
            self._cache[levels] = sig, _lognormal_weights(sig, self.p_mean, self.p_std)
        return self._cache[levels]

    def __call__(
        self, x0: Tensor, generator: torch.Generator | None = None, z: Tensor | None = None
    ) -> Tensor:
        """The iCT loss of the batch ``x0`` at the current curriculum step."""
        sig, prob = self._grid(ict_discretisation(self.step, self.total, self.s0, self.s1))
        dev = x0.device
        n = torch.multinomial(prob.to(dev), x0.shape[0], replacement=True, generator=generator)
        sig = sig.to(device=dev, dtype=x0.dtype)
        s_n, s_next = sig[n], sig[n + 1]
        if z is None:
            z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=dev)
        with torch.no_grad():
            target = self.student(_noised(x0, s_n, z), s_n)
        return self.pair_loss(_noised(x0, s_next, z), s_next, target, 1.0 / (s_next - s_n))

    def after_step(self) -> None:
        """Advance the curriculum."""
        self.step += 1


class ECT(ConsistencyTraining):
    """Easy consistency tuning (Geng et al. 2024): CT in continuous time from a score model.

    ``total_steps`` is split into ``stages`` equal stages; at stage ``a`` the gap is
    ``sigma_t - sigma_r = sigma_t n(sigma_t) / q^a``, ``n(s) = 1 + 8 sigmoid(-s)``, ``q = 2``.
    """

    def __init__(
        self, student: ConsistencyModel, total_steps: int, *, stages: int = 8, **kw: Any
    ) -> None:
        super().__init__(student, total_steps, **kw)
        self.stages = max(1, int(stages))

    def __call__(
        self, x0: Tensor, generator: torch.Generator | None = None, z: Tensor | None = None
    ) -> Tensor:
        """The ECT loss of the batch ``x0`` at the current stage."""
        st = self.student
        b, dev, dt = x0.shape[0], x0.device, x0.dtype
        log_t = self.p_mean + self.p_std * torch.randn(b, generator=generator, dtype=dt, device=dev)
        s_t = log_t.exp().clamp(st.sigma_min * 1.001, st.sigma_max)
        stage = min(self.step * self.stages // max(self.total, 1), self.stages - 1)
        gap = s_t * (1.0 + 8.0 * torch.sigmoid(-s_t)) / 2.0 ** (stage + 1)
        s_r = torch.clamp(s_t - gap, min=st.sigma_min)
        if z is None:
            z = torch.randn(x0.shape, generator=generator, dtype=dt, device=dev)
        with torch.no_grad():
            target = st(_noised(x0, s_r, z), s_r)
        return self.pair_loss(_noised(x0, s_t, z), s_t, target, 1.0 / (s_t - s_r))


def check_student_fits(teacher_sde: SDE, student: ConsistencyModel) -> None:
    """One-line ``ValueError`` if the student's noise range leaves the teacher SDE's."""
    lo, hi = sigma_range(teacher_sde)
    if not (lo <= student.sigma_min and student.sigma_max <= hi):
        raise ValueError(
            f"the teacher's {type(teacher_sde).__name__} reaches noise levels [{lo:.4g}, "
            f"{hi:.4g}] but the student needs [{student.sigma_min:.4g}, "
            f"{student.sigma_max:.4g}]; build the student with sigma_min/sigma_max inside the "
            f"teacher's range"
        )
