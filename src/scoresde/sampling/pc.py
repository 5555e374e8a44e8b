"""Predictor-corrector sampling and annealed Langevin dynamics (Song et al. 2021, Alg. 1-3)."""

from __future__ import annotations

from torch import Tensor

from .._checks import check_choice, check_int, check_positive
from .base import Context, register
from .correctors import CORRECTORS
from .predictors import PREDICTORS

__all__ = ["pc", "langevin"]

_PC_OPTIONS = ("predictor", "corrector", "snr", "corrector_steps", "batch_averaged")


def _alpha(ctx: Context, t: Tensor, t_next: Tensor | None) -> Tensor | float:
    if t_next is None:
        return 1.0
    return (ctx.sde.scale(t_next) / ctx.sde.scale(t)) ** 2


@register(
    "pc",
    order=1,
    stochastic=True,
    options=_PC_OPTIONS,
    description="predictor-corrector: a predictor step then Langevin corrector steps",
)
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
    """Predictor-corrector sampler: at each time, corrector steps then one predictor step.

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
    pred = PREDICTORS[check_choice("predictor", predictor, PREDICTORS)] if predictor else None
    corr = CORRECTORS[check_choice("corrector", corrector, CORRECTORS)] if corrector else None
    if pred is None and corr is None:
        raise ValueError("pc needs a predictor or a corrector; both are None")
    if predictor == "ancestral":
        from .base import get_sampler

        get_sampler("ancestral").check(ctx.sde, {})
    snr = check_positive("snr", snr)
    n_corr = check_int("corrector_steps", corrector_steps, 0)
    n = times.numel() - 1
    for i in range(n):
        t, t_next = times[i], times[i + 1]
        x_mean = x
        if corr is not None:
            for _ in range(n_corr):
                x, x_mean = corr(ctx, x, t, _alpha(ctx, t, t_next), snr, batch_averaged)
        if pred is not None:
            x, x_mean = pred(ctx, x, t, t_next, i == n - 1)
        else:  # carry the state to the next noise level's scale
            ratio = ctx.sde.scale(t_next) / ctx.sde.scale(t)
            x, x_mean = x * ratio, x_mean * ratio
        ctx.report(i, t_next, x, x_mean=x_mean)
    if pred is None and corr is not None:  # Langevin at the final time, ending on the mean
        t = times[-1]
        for _ in range(n_corr):
            x, x_mean = corr(ctx, x, t, 1.0, snr, batch_averaged)
        x = x_mean
    return x


@register(
    "langevin",
    order=1,
    stochastic=True,
    options=("corrector", "snr", "corrector_steps", "batch_averaged"),
    description="annealed Langevin dynamics (corrector only)",
)
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
    """Annealed Langevin dynamics: ``corrector_steps`` Langevin steps at every time of the grid.

    Equivalent to ``pc`` with ``predictor=None``; between noise levels the state is rescaled
    by ``s(t_next) / s(t)``. Returns the mean of the final Langevin step at ``eps``. The
    default corrector is NCSN's annealed step size (``"ald"``): the signal-to-noise rule of
    ``"langevin"`` barely moves samples far out in the prior's tail (its move shrinks like
    ``1 / ||score||``), so without a predictor it needs many more steps.
    """
    if corrector is None:
        raise ValueError("langevin needs a corrector: 'langevin' or 'ald'")
    return pc(
        ctx,
        x,
        times,
        predictor=None,
        corrector=corrector,
        snr=snr,
        corrector_steps=corrector_steps,
        batch_averaged=batch_averaged,
    )
