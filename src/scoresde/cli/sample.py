"""``scoresde sample``: draw samples from a trained model by a reverse-time SDE or ODE solver.

Unconditional, class-conditional with classifier-free guidance ``u + w (c − u)``
(:func:`scoresde.guidance.cfg_from_labels`, Ho & Salimans 2022), or classifier-guided with a
noise-conditional classifier (Song et al. 2021, sec. 5); the samplers are those of
:func:`scoresde.sample`. Writes a PNG (image grid or scatter plot) or an ``.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..sde import ScoreFn
from ._io import write_npz
from .core import CLIError, Command, add_checkpoint_argument, add_runtime_arguments, load_model

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
        "conditional c and unconditional u scores; 1 (default) is the conditional score, "
        "0 the unconditional one, W > 1 extrapolates",
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
        help="classifier guidance scale with --classifier (default 1)",
    )


def _configure(p: argparse.ArgumentParser) -> None:
    from ..sampling import available_samplers
    from ..sampling.api import PRECISIONS

    add_checkpoint_argument(p)
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of samples")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png|FILE.npz",
        help="a PNG (image grid or 2-D scatter) or an .npz holding the raw samples "
        "(data space) under 'samples' (and 'labels' with --class)",
    )
    p.add_argument(
        "--sampler",
        default="euler_maruyama",
        choices=available_samplers(),
        help="sampler (default euler_maruyama)",
    )
    p.add_argument(
        "--steps", type=int, default=500, metavar="K", help="sampler steps (default 500)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="B",
        help="samples drawn per batch (default 1000; seeded samples do not depend on it)",
    )
    _configure_guidance(p)
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="autocast dtype of the network calls (default fp32; bf16 is ~2x faster on recent "
        "GPUs; the sampler's updates stay in fp32)",
    )
    add_runtime_arguments(p)


def _score(args: argparse.Namespace, trained: TrainedModel) -> ScoreFn:
    """The score to sample: guided by ``--classifier``, or the model's with ``--guidance``."""
    from ..guidance import classifier_guided_score

    if args.classifier is not None:
        if args.label is None:
            raise CLIError("--classifier needs --class")
        if args.guidance != 1.0:
            raise CLIError("--guidance needs a class-conditional model, not --classifier")
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
    return trained.model.score_fn(args.label, guidance=args.guidance)


def _write(args: argparse.Namespace, trained: TrainedModel, xs: Tensor) -> None:
    """Write the samples (data space) as ``.npz`` arrays or a plot."""
    from .. import plots

    out = Path(args.out)
    title = f"{args.n} samples ({args.sampler}, {args.steps} steps)"
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


def _run(args: argparse.Namespace) -> int:
    from ..sampling import sample

    trained, device = load_model(args, out=(".png", ".npz"), counts=("n", "steps", "batch_size"))
    score = _score(args, trained)
    x = sample(  # chunks of --batch-size; the samples do not depend on it
        score,
        trained.sde,
        (args.n, *trained.event_shape),
        sampler=args.sampler,
        steps=args.steps,
        generator=torch.Generator(device=device).manual_seed(args.seed),
        device=device,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    _write(args, trained, trained.to_data(x).cpu())
    return 0


COMMAND = Command(
    "sample",
    "draw samples from a trained model",
    _configure,
    _run,
    "Draw samples by a reverse-time SDE or probability-flow ODE solver, optionally of one "
    "class with classifier-free or classifier guidance.",
)
"""The ``scoresde sample`` command."""
