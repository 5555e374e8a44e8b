"""Small in-memory training loops for the consistency objectives (no run folder).

``scoresde train --objective consistency`` and ``scoresde distill`` run the same objectives in
the library's :class:`~scoresde.train.Trainer` (checkpoints, metrics, resume); these functions
are for scripts, tests and benchmarks on data held in memory.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..sde import SDE, ScoreFn
from .model import ConsistencyModel
from .objectives import ECT, ConsistencyTraining, Distillation, TeacherStep

__all__ = ["FitResult", "fit", "distill", "consistency_train", "ect_finetune"]


@dataclass
class FitResult:
    """A trained consistency model and its loss history."""

    model: ConsistencyModel
    losses: list[float] = field(default_factory=list)
    """The mean loss of every 100 steps."""
    seconds: float = 0.0
    """Training wall time."""


def fit(
    objective: Distillation | ConsistencyTraining,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Minimise ``objective`` on minibatches of ``data`` for ``steps`` steps.

    Adam with a cosine-decayed ``lr`` and the gradient norm clipped at 1.
    """
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    student = objective.student
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    # cosine decay of the learning rate to 0: the last steps average out the minibatch noise
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * k / steps))
    )
    losses, window, start = [], 0.0, time.perf_counter()
    student.train()
    for k in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        loss = objective(data[idx.to(data.device)], generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        objective.after_step()
        window += float(loss.detach())
        if (k + 1) % 100 == 0 or k + 1 == steps:
            losses.append(window / ((k % 100) + 1))
            window = 0.0
    student.eval()
    return FitResult(student, losses, time.perf_counter() - start)


def distill(
    teacher: ScoreFn,
    sde: SDE,
    student: ConsistencyModel,
    data: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    n_levels: int = 18,
    teacher_step: str | TeacherStep = "heun",
    loss: str = "squared",
    target_decay: float = 0.95,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Consistency distillation (Song et al. 2023, Alg. 2) of ``teacher`` into ``student``.

    ``teacher(x, t)`` is any score function for ``sde`` (a trained model's ``score_fn()``, an
    exact oracle, a pretrained adapter); ``data`` are the clean samples the pairs are made from.
    Raises ``ValueError`` when the student's noise range is not inside ``sde``'s.
    """
    objective = Distillation(
        teacher,
        sde,
        student,
        n_levels=n_levels,
        teacher_step=teacher_step,
        loss=loss,
        target_decay=target_decay,
    )
    return fit(objective, data, steps=steps, batch_size=batch_size, lr=lr, generator=generator)


def consistency_train(
    student: ConsistencyModel,
    data: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    loss: str = "pseudo_huber",
    generator: torch.Generator | None = None,
) -> FitResult:
    """Consistency training with no teacher (iCT, Song & Dhariwal 2023).

    See :class:`~scoresde.consistency.ConsistencyTraining` for the objective.
    """
    objective = ConsistencyTraining(student, steps, loss=loss)
    return fit(objective, data, steps=steps, batch_size=batch_size, lr=lr, generator=generator)


def ect_finetune(
    score_model: nn.Module,
    sde: SDE,
    data: Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 2e-4,
    sigma_data: float = 0.5,
    generator: torch.Generator | None = None,
) -> FitResult:
    """ECT (Geng et al. 2024): a consistency model fine-tuned from a trained score model.

    The student starts as a copy of ``score_model`` (a :class:`~scoresde.ScoreModel`), which
    is already ``f`` at the gap 0; the gap then halves over the stages of :class:`ECT`.
    """
    student = ConsistencyModel(copy.deepcopy(score_model), sde, sigma_data=sigma_data)
    student.requires_grad_(True)
    objective = ECT(student, steps)
    return fit(objective, data, steps=steps, batch_size=batch_size, lr=lr, generator=generator)
