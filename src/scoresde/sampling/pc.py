"""Predictor-corrector sampling and annealed Langevin dynamics (Song et al. 2021, Alg. 1-3).

:func:`pc_loop` is the loop itself, shared by the ``pc`` and ``langevin`` samplers and by
imputation (:func:`scoresde.inverse.inpaint`), which passes a projection that replaces the known
part of the state (Song et al. 2021, App. I).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .._checks import check_choice, check_int, check_positive
from ..sde import SDE
from .base import Context, get_sampler, register
from .correctors import CORRECTORS, Corrector
from .endpoint import starts_at_prior
from .predictors import PREDICTORS, Step, prior_predictor_step

__all__ = ["pc", "langevin", "PCSteps", "pc_steps", "pc_loop"]

Projection = Callable[[Tensor, Tensor], Tensor]
"""``project(x, t) -> x``: applied before the corrector steps at ``t`` and after each of them."""


@dataclass(frozen=True)
class PCSteps:
    """The steps of a predictor-corrector run: a predictor, a corrector and its settings."""

    predictor: Step | None
    corrector: Corrector | None
    snr: float
    corrector_steps: int
    batch_averaged: bool = False


def pc_steps(
    sde: SDE,
    predictor: str | None,
    corrector: str | None,
    snr: float,
    corrector_steps: int,
    batch_averaged: bool = False,
) -> PCSteps:
    """Look the predictor and corrector up by name and check the settings (``ValueError``)."""
    pred = PREDICTORS[check_choice("predictor", predictor, PREDICTORS)] if predictor else None
    corr = CORRECTORS[check_choice("corrector", corrector, CORRECTORS)] if corrector else None
    if pred is None and corr is None:
        raise ValueError("pc needs a predictor or a corrector; both are None")
    if predictor == "ancestral":
        get_sampler("ancestral").check(sde, {})
    n_corr = check_int("corrector_steps", corrector_steps, 0)
    return PCSteps(pred, corr, check_positive("snr", snr), n_corr, batch_averaged)


def _correct(
    ctx: Context,
    x: Tensor,
    t: Tensor,
    alpha: Tensor | float,
    steps: PCSteps,
    project: Projection | None,
) -> tuple[Tensor, Tensor]:
    """``corrector_steps`` corrector steps at time ``t``; returns the state and its mean."""
    x_mean = x
    if steps.corrector is None:
        return x, x_mean
    for _ in range(steps.corrector_steps):
        x, x_mean = steps.corrector(ctx, x, t, alpha, steps.snr, steps.batch_averaged)
        if project is not None:
            x = project(x, t)
    return x, x_mean


def pc_loop(
    ctx: Context, x: Tensor, times: Tensor, steps: PCSteps, project: Projection | None = None
) -> Tensor:
    """At every time of ``times``: corrector steps, then one predictor step (Alg. 1).

    ``alpha = (s(t_next) / s(t))^2`` scales the corrector's step (:mod:`.correctors`). Without
    a predictor the state is rescaled by ``s(t_next) / s(t)`` between times, and the corrector
    runs once more at the final time (annealed Langevin dynamics, Alg. 3). With ``project``, the
    state is projected before the corrector steps at each time and after each of them. Returns
    the noise-free mean of the last step. From ``T`` of a flow path (``s(T) = 0``) the corrector
    runs with ``alpha = 1`` on the exact prior and the first predictor step is the closed form
    of :func:`.predictors.prior_predictor_step` (the probability flow's without a predictor).
    """
    sde, n = ctx.sde, times.numel() - 1
    at_prior = starts_at_prior(ctx, times)
    for i in range(n):
        t, t_next = times[i], times[i + 1]
        if project is not None:
            x = project(x, t)
        first = at_prior and i == 0
        alpha = 1.0 if first else (sde.scale(t_next) / sde.scale(t)) ** 2
        x, x_mean = _correct(ctx, x, t, alpha, steps, project)
        if first:
            stochastic = steps.predictor is not None
            x, x_mean = prior_predictor_step(ctx, x, t, t_next, stochastic, i == n - 1)
        elif steps.predictor is not None:
            x, x_mean = steps.predictor(ctx, x, t, t_next, i == n - 1)
        else:  # carry the state to the next noise level's scale
            ratio = sde.scale(t_next) / sde.scale(t)
            x, x_mean = x * ratio, x_mean * ratio
        ctx.report(i, t_next, x, x_mean=x_mean)
    if steps.predictor is None:  # Langevin at the final time, ending on the mean
        _, x = _correct(ctx, x, times[-1], 1.0, steps, project)
    return x


@register("pc", order=1, stochastic=True)
def pc(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    predictor: str | None = "reverse_diffusion",
    corrector: str | None = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    batch_averaged: bool = False,
) -> Tensor:
    """Predictor-corrector: at each time, Langevin corrector steps, then a predictor step.

    Options:
        predictor: ``"euler_maruyama"``, ``"reverse_diffusion"``, ``"ancestral"`` (VP/VE) or
            ``None`` (corrector only).
        corrector: ``"langevin"`` (signal-to-noise step size), ``"ald"`` (annealed Langevin
            step size) or ``None`` (predictor only).
        snr: the corrector's signal-to-noise ratio ``r``.
        corrector_steps: Langevin steps per time.
        batch_averaged: average the Langevin norms over the batch (reference behaviour); the
            default uses per-sample step sizes.
    """
    steps = pc_steps(ctx.sde, predictor, corrector, snr, corrector_steps, batch_averaged)
    return pc_loop(ctx, x, times, steps)


@register("langevin", order=1, stochastic=True)
def langevin(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    corrector: str = "ald",
    snr: float = 0.3,
    corrector_steps: int = 2,
    batch_averaged: bool = False,
) -> Tensor:
    """Annealed Langevin dynamics: corrector steps only, at every time of the grid.

    ``corrector_steps`` Langevin steps at each time; equivalent to ``pc`` with
    ``predictor=None``. Between noise levels the state is rescaled by ``s(t_next) / s(t)``.
    Returns the mean of the final Langevin step at ``eps``. The default corrector is NCSN's
    annealed step size (``"ald"``, Song & Ermon 2019): the signal-to-noise rule of
    ``"langevin"`` barely moves samples far out in the prior's tail (its move shrinks like
    ``1 / ||score||``), so without a predictor it needs many more steps.
    """
    if corrector is None:
        raise ValueError("langevin needs a corrector: 'langevin' or 'ald'")
    steps = pc_steps(ctx.sde, None, corrector, snr, corrector_steps, batch_averaged)
    return pc_loop(ctx, x, times, steps)
