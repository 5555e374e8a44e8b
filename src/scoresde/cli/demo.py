"""``scoresde demo``: train, sample and plot on built-in data on a CPU (:mod:`scoresde.demo`)."""

from __future__ import annotations

import argparse

from .core import Command

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run of the same pipeline (poor quality; for tests)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")


def _run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0


COMMAND = Command(
    "demo",
    "train on a 2-D toy set and on 8x8 digits, sample, plot (CPU)",
    _configure,
    _run,
)
"""The ``scoresde demo`` command."""
