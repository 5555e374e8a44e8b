"""Consistency models: one- and few-step generation (Song et al. 2023; Song & Dhariwal 2023).

* :class:`ConsistencyModel` -- ``f(x_hat, sigma)`` around any score model, on any SDE through
  its sigma-space, with ``f(x, sigma_min) = x`` exactly; ``model.score_fn()`` is what
  ``scoresde.sample(..., sampler="consistency")`` takes (with ``steps >= 2`` the re-noise
  levels are read off the model: :func:`scoresde.sampling.consistency.consistency_schedule`).
* :func:`distill` (CD from any score function, Heun/Euler or a callable teacher step, EMA
  target, pseudo-Huber or squared loss), :func:`consistency_train` (iCT: no teacher, no EMA
  target, pseudo-Huber, log-normal levels, doubling curriculum), :func:`ect_finetune` (ECT from
  a trained score model); the objectives themselves are :class:`Distillation`,
  :class:`ConsistencyTraining` and :class:`ECT`.
"""

from .fit import FitResult, consistency_train, distill, ect_finetune, fit
from .model import ConsistencyFunction, ConsistencyModel, sigma_range
from .objectives import (
    ECT,
    ConsistencyTraining,
    Distillation,
    check_student_fits,
    ict_discretisation,
    karras_sigmas,
    pseudo_huber,
)

__all__ = [
    "ConsistencyModel",
    "ConsistencyFunction",
    "sigma_range",
    "Distillation",
    "ConsistencyTraining",
    "ECT",
    "check_student_fits",
    "pseudo_huber",
    "karras_sigmas",
    "ict_discretisation",
    "FitResult",
    "fit",
    "distill",
    "consistency_train",
    "ect_finetune",
]
