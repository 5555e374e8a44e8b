"""``scoresde sample``: draw samples from a trained model by a reverse-time SDE or ODE solver.

Unconditional, class-conditional with classifier-free guidance ``u + w (c − u)``
(:func:`scoresde.guidance.cfg_from_labels`, Ho & Salimans 2022), or classifier-guided with a
noise-conditional classifier (Song et al. 2021, sec. 5); the samplers are those of
:func:`scoresde.sample`. Writes a PNG (image grid or scatter plot) or an ``.npz``. Runs in
shards of ``--batch-size`` samples across the processes of ``torchrun`` (:mod:`scoresde.shard`),
with ``--resume``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from ..sde import ScoreFn
from ._io import write_npz
from ._scale import (
    add_sampler_arguments,
    add_shard_arguments,
    draw_samples,
    model_fingerprint,
    process_group,
    remove_shards,
    shard_folder,
)
from ._schedules import add_schedule_argument, schedule_options
from .core import (
    CLIError,
    Command,
    add_checkpoint_argument,
    add_count_argument,
    add_runtime_arguments,
    load_model,
)

if TYPE_CHECKING:
    from ..train import TrainedModel

__all__ = ["COMMAND"]


def _configure_guidance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        metavar="K",
        help="draw class K (class-conditional models, or --classifier)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        metavar="W",
        help="classifier-free guidance weight with --class: the score u + W (c - u) of the "
        "conditional c and unconditional u scores, i.e. of p(x) p(K|x)^W; 1 (default) is the "
        "conditional score, 0 the unconditional one, W > 1 sharpens class K, W < 0 pushes "
        "samples away from class K (negative guidance)",
    )
    p.add_argument(
        "--classifier",
        default=None,
        metavar="FILE.safetensors",
        help="classifier guidance with --class for an unconditional model: a "
        "noise-conditional classifier from 'scoresde train-classifier'",
    )
    p.add_argument(
        "--classifier-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="classifier guidance scale with --classifier: the score of p(x) p(K|x)^S "
        "(default 1; S < 0 pushes samples away from class K)",
    )


class _SamplerHelp(argparse.Action):
    """``--help-sampler [NAME]``: ask for :func:`scoresde.sampler_help` instead of samples.

    Answered by the command once every option is read, so a ``--sampler`` given after it
    counts; the options sampling needs (``--ckpt``, ``--num-samples``, ``--out``) are then not
    required.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        for action in parser._actions:
            action.required = False
        setattr(namespace, self.dest, values if isinstance(values, str) else "")


def _configure(p: argparse.ArgumentParser) -> None:

    add_checkpoint_argument(p)
    add_count_argument(p, "number of samples", required=True)
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png|FILE.npz",
        help="a PNG (image grid or 2-D scatter) or an .npz holding the raw samples "
        "(data space) under 'samples' (and 'labels' with --class)",
    )
    add_sampler_arguments(p)
    p.add_argument(
        "--help-sampler",
        nargs="?",
        const=None,
        default=argparse.SUPPRESS,
        action=_SamplerHelp,
        metavar="NAME",
        help="show what sampler NAME (default: the --sampler) does and its "
        "options (keyword arguments of scoresde.sample), then exit",
    )
    add_schedule_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="B",
        help="samples drawn per batch, also the shard of a process (default 1000); seeded "
        "samples are the same for any number of processes (bit for bit on a CPU) and, "
        "up to a network's rounding per batch size, for any batch size",
    )
    _configure_guidance(p)
    add_shard_arguments(p)
    add_runtime_arguments(p)


def _score(args: argparse.Namespace, trained: TrainedModel) -> ScoreFn:
    """The score to sample: guided by ``--classifier``, or the model's with ``--guidance``."""
    from ..guidance import classifier_guided_score

    objective = getattr(getattr(trained, "config", None), "objective", "dsm")
    if args.sampler == "consistency" and objective != "consistency":
        raise CLIError(
            f"--sampler consistency needs a consistency model (a run of scoresde distill or "
            f"train --objective consistency); {str(args.ckpt)!r} is a score model: choose "
            f"another sampler or distill it first"
        )
    if args.classifier is not None:
        if args.label is None:
            raise CLIError("--classifier needs --class")
        if args.guidance != 1.0:
            raise CLIError("--guidance needs a class-conditional model, not --classifier")
        _note_negative(args, "--classifier-scale", args.classifier_scale)
        return classifier_guided_score(trained, args.classifier, args.label, args.classifier_scale)
    if args.label is None:
        if args.guidance != 1.0:
            raise CLIError("--guidance needs --class")
    elif trained.num_classes is None or not trained.config.class_conditional:
        raise CLIError(
            "--class needs a class-conditional model (train with --class-conditional) or "
            "--classifier FILE"
        )
    elif not 0 <= args.label < trained.num_classes:
        raise CLIError(f"--class must lie in [0, {trained.num_classes - 1}], got {args.label}")
    if args.label is not None:
        _note_negative(args, "--guidance", args.guidance)
    if objective == "consistency":  # carries f(x, sigma) for --sampler consistency
        return trained.score_fn
    return trained.model.score_fn(args.label, guidance=args.guidance)


def _note_negative(args: argparse.Namespace, flag: str, weight: float) -> None:
    """Say on stderr that a negative guidance weight samples away from the class (allowed)."""
    if weight < 0 and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(
            f"scoresde sample: note: {flag} {weight:g} < 0 samples away from class "
            f"{args.label} (the score of p(x) p({args.label}|x)^{weight:g})",
            file=sys.stderr,
        )


def _write(args: argparse.Namespace, trained: TrainedModel, xs: Tensor) -> None:
    """Write the samples (data space) as ``.npz`` arrays or a plot."""
    from .. import plots

    out = Path(args.out)
    title = f"{len(xs)} samples ({args.sampler}, {args.steps} steps)"
    if out.suffix.lower() == ".npz":
        arrays = {"samples": xs.numpy()}
        if args.label is not None:
            arrays["labels"] = np.full(len(xs), args.label, dtype=np.int64)
        write_npz(out, **arrays)
    elif trained.is_image:
        plots.image_grid(xs, out, title=title)
    else:
        plots.scatter(xs, out, title=title)
    print(f"wrote {len(xs)} samples of shape {tuple(xs.shape[1:])} to {out}")


def _fingerprint(args: argparse.Namespace, trained: TrainedModel) -> dict[str, Any]:
    """What identifies a sampling run for ``--resume`` besides the sampler and seed."""
    clf = None if args.classifier is None else str(Path(args.classifier).resolve())
    return {
        **model_fingerprint(args, trained), "label": args.label, "guidance": args.guidance,
        "classifier": clf, "classifier_scale": args.classifier_scale,
    }  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from ..sampling.base import sampler_help

    if getattr(args, "help_sampler", None) is not None:
        print(sampler_help(args.help_sampler or args.sampler), end="")
        return 0
    with process_group(args) as info:
        trained, _ = load_model(
            args, out=(".png", ".npz"), counts=("num_samples", "steps", "batch_size")
        )
        score = _score(args, trained)
        sched = schedule_options(args, trained, "sample")
        folder = shard_folder(args, info)
        fp = _fingerprint(args, trained)
        xs = draw_samples(args, trained, score, info, folder, fp, **sched)
        if xs is not None:  # rank 0 writes the samples; the shards go once they are safe
            _write(args, trained, trained.to_data(xs))
            remove_shards(folder)
    return 0


COMMAND = Command(
    "sample",
    "draw samples from a trained model",
    _configure,
    _run,
    "Draw samples by a reverse-time SDE or probability-flow ODE solver, optionally of one "
    "class with classifier-free or classifier guidance. Under torchrun the batches are shared "
    "among the processes and rank 0 writes the same file as one process.",
    distributed=True,
)
"""The ``scoresde sample`` command."""
