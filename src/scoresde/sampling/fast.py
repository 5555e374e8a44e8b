"""``sampler="fast"``: the recommended few-step sampler (NFE 5-20).

DPM-Solver++(3M) with the UniC-style corrector (:mod:`.dpm_solver`) on a schedule uniform in
log-SNR that stops at a noise level ``sigma_min > 0`` and ends with the Tweedie step to noise
level 0 (:func:`fast_schedule`).
"""

from __future__ import annotations

from torch import Tensor

from .base import Context, register
from .dpm_solver import dpm_solver
from .schedules import Schedule

__all__ = ["fast", "fast_schedule"]


def fast_schedule(steps: int) -> Schedule:
    """The schedule ``"fast"`` uses unless ``schedule=`` is given, by number of steps.

    Uniform in log-SNR down to ``sigma_min``, then the Tweedie step to 0: up to 5 steps,
    ``sigma_min = 0.15`` and the grid starts at noise level ``sigma_max = 40`` instead of
    ``sigma(T)``; up to 12 steps ``sigma_min = 0.04``, beyond ``0.02``, both from ``T``. These
    levels suit data of roughly unit scale; for other scales pass
    ``schedule=Schedule("logsnr", sigma_min=..., sigma_max=...)`` with ``sigma_min`` near the
    data's finest detail and ``sigma_max`` far above the data's spread. Starting below
    ``sigma(T)`` draws the start from an isotropic Gaussian that only approximates the noised
    data (biased mode masses when the data lie far from the origin). On a flow path
    (``s(T) = 0``, e.g. :class:`~scoresde.RectifiedFlow`) the grid starts at ``T`` exactly,
    where the prior is exact, and ``sigma_max`` is the noise level of its second point.
    """
    if steps <= 5:
        return Schedule("logsnr", sigma_min=0.15, sigma_max=40.0)
    return Schedule("logsnr", sigma_min=0.04 if steps <= 12 else 0.02)


@register("fast", order=3, stochastic=False, denoise=True, schedule=fast_schedule)
def fast(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """The recommended few-step sampler (NFE 5-20): DPM-Solver++(3M) + corrector.

    DPM-Solver++(3M) with the UniC-style corrector on :func:`fast_schedule`.

    ``steps`` solver steps cost ``steps`` score evaluations, plus one for the final Tweedie
    step to noise level 0 (``denoise=True``): ``steps=9`` is NFE 10.
    """
    return dpm_solver(ctx, x, times, order=3, corrector=True)
