"""``scoresde distill``: consistency distillation of a trained score model into a new run.

Consistency distillation (Song et al. 2023, Alg. 2): the new run trains a consistency model
``f(x, sigma)`` (:mod:`scoresde.consistency`) on the teacher's data, each pair of neighbouring
noise levels joined by one Heun step of the teacher's probability-flow ODE, against an EMA
target. The run is an ordinary training run (``objective="consistency"``, ``teacher=RUN``):
checkpoints, metrics.csv, TensorBoard, ``scoresde train --resume --out RUN2``; it is sampled
with ``scoresde sample --ckpt RUN2 --sampler consistency --steps 1``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .core import CLIError, Command, add_new_run_arguments

if TYPE_CHECKING:
    from ..train import TrainConfig, TrainedModel

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, metavar="RUN", help="the score-model run")
    p.add_argument("--out", required=True, metavar="RUN2", help="run folder of the student")
    p.add_argument(
        "--steps", type=int, default=None, metavar="N", help="training steps (default: teacher's)"
    )
    add_new_run_arguments(p, cite="Song et al. 2023")


def _check(args: argparse.Namespace, teacher: TrainedModel) -> None:
    from ..checkpoint import latest_checkpoint

    if args.steps is not None and args.steps < 1:
        raise CLIError("--steps must be a positive integer")
    if teacher.config.objective != "dsm":
        raise CLIError(
            f"{args.teacher!r} is a {teacher.config.objective} model, not a score model; "
            "distil from a run trained with scoresde train (objective dsm)"
        )
    if teacher.config.class_conditional:
        raise CLIError("distilling a class-conditional teacher is not supported")
    if latest_checkpoint(Path(args.out) / "checkpoints") is not None:
        raise CLIError(
            f"{args.out!r} already holds checkpoints; continue it with scoresde train --resume "
            "or choose a new --out"
        )


def _student_config(args: argparse.Namespace, teacher: TrainedModel) -> TrainConfig:
    cfg = teacher.config.replace(
        out=str(args.out),
        objective="consistency",
        teacher=str(teacher.path),
        steps=args.steps or teacher.config.steps,
        progress=not args.no_progress,
        sample_n=0,
    )
    return cfg.apply_overrides(args.set) if args.set else cfg


def _run(args: argparse.Namespace) -> int:
    from ..consistency import Distillation
    from ..train import Trainer, load_trained
    from ..train.distributed import resolve_device

    teacher = load_trained(args.teacher, device=resolve_device(args.device))
    _check(args, teacher)
    try:
        trainer = Trainer(_student_config(args, teacher))
    except ValueError as err:  # e.g. a --set sde whose noise range the teacher lacks
        raise CLIError(str(err)) from err
    if args.init == "teacher":
        weights = teacher.model.net.state_dict()
        trainer.net.load_state_dict(weights)
        trainer.ema.load_state_dict(weights, 0)
        if isinstance(trainer.consistency, Distillation):
            trainer.consistency.reset_target()  # the EMA target starts from the teacher too
    result = trainer.fit()
    print(
        f"distill: trained {result.step} steps in {result.seconds:.1f} s; final loss "
        f"{result.loss:.4g}; checkpoint {result.checkpoint}; sample it with scoresde sample "
        f"--ckpt {args.out} --sampler consistency --steps 1"
    )
    return 0


COMMAND = Command(
    "distill",
    "distil a score model into a one/few-step consistency model",
    _configure,
    _run,
    "Consistency distillation (Song et al. 2023): train a consistency model on the teacher's "
    "data with one Heun step of the teacher's ODE between neighbouring noise levels. The run "
    "in OUT is sampled with scoresde sample --ckpt OUT --sampler consistency --steps 1.",
)
"""The ``scoresde distill`` command."""
