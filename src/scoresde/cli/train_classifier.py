"""``scoresde train-classifier``: a noise-conditional classifier for classifier guidance.

Trains ``p_t(class | x_t)`` (:class:`scoresde.guidance.NoiseConditionalClassifier`) on a trained
model's labelled training data perturbed by its SDE (Song et al. 2021, App. I.1) and writes it
with :func:`scoresde.guidance.save_classifier`; ``scoresde sample --class K --classifier FILE``
uses it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..guidance import NoiseConditionalClassifier, save_classifier, train_classifier
from .core import CLIError, Command, add_checkpoint_argument, add_runtime_arguments, load_model, say

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p, "the score model whose SDE and labelled training data are used")
    p.add_argument(
        "--out", required=True, metavar="FILE.safetensors", help="where to write the classifier"
    )
    p.add_argument("--steps", type=int, default=4000, help="optimiser steps (default 4000)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    p.add_argument("--depth", type=int, default=3, help="residual blocks (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_runtime_arguments(p, raw_weights=False)


def _run(args: argparse.Namespace) -> int:
    from ..train.build import load_train_data

    trained, device = load_model(args, out=(".safetensors",), counts=("steps", "batch_size"))
    out = Path(args.out)
    data = load_train_data(trained.config)
    if data.labels is None:
        raise CLIError(f"the training data {trained.config.data!r} have no labels")
    x, labels = data.tensors().to(device), data.labels.to(device)
    torch.manual_seed(args.seed)
    clf = NoiseConditionalClassifier(
        trained.sde,
        trained.event_shape,
        int(labels.max()) + 1,
        hidden=args.hidden,
        depth=args.depth,
        sigma_data=float(trained.data_info["sigma_data"]),
    ).to(device)
    say(
        args,
        f"training a {clf.num_classes}-class classifier for {args.steps} steps (batch "
        f"{args.batch_size}) on {device}",
    )
    losses = train_classifier(
        clf,
        trained.sde,
        x,
        labels,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        generator=torch.Generator(device=device).manual_seed(args.seed),
    )
    save_classifier(
        clf, args.out, {"sde": trained.config.sde, "sde_kwargs": trained.config.sde_kwargs}
    )
    tail = losses[-min(100, len(losses)) :]
    print(
        f"trained a {clf.num_classes}-class noise-conditional classifier for {args.steps} "
        f"steps (final loss {sum(tail) / len(tail):.4f}); wrote {out}"
    )
    return 0


COMMAND = Command(
    "train-classifier",
    "train a noise-conditional classifier for classifier guidance",
    _configure,
    _run,
    "Train p_t(class | x_t) on the model's labelled training data perturbed by its "
    "SDE; use it with 'scoresde sample --class K --classifier FILE'.",
)
"""The ``scoresde train-classifier`` command."""
