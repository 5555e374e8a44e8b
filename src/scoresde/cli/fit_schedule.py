"""``scoresde fit-schedule``: fit a sampler's step schedules to a trained model, in its run folder.

For each ``--steps K`` it runs :func:`scoresde.fit_schedule` (the grid matched to a tight
probability-flow ODE solution from the same starting noises, LD3-style) and stores the fitted
times in ``RUN/schedules.json`` (:mod:`._schedules`, atomic rewrite). ``scoresde sample --ckpt RUN
--sampler S --steps K`` then uses the stored schedule and says so; ``--schedule`` overrides it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._schedules import read_schedules, schedules_path, store_schedule
from .core import (
    CLIError,
    Command,
    add_checkpoint_argument,
    add_count_argument,
    add_runtime_arguments,
    load_model,
    say,
)

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    from ..sampling import available_samplers

    add_checkpoint_argument(p)
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        required=True,
        metavar="K",
        help="the step counts to fit, e.g. --steps 5 10 20 (fast: NFE K + 1)",
    )
    p.add_argument(
        "--sampler",
        default="fast",
        choices=[s for s in available_samplers() if s != "ode"],
        help="the fixed-step sampler to fit (default fast)",
    )
    add_count_argument(p, "starting noises of each fit (default 512)", default=512)
    p.add_argument("--seed", type=int, default=0, help="seed of the fit (default 0)")
    p.add_argument(
        "--max-calls",
        type=int,
        default=2000,
        metavar="C",
        help="the most batched network calls of each fit (default 2000)",
    )
    add_runtime_arguments(p)


def _fit_one(args: argparse.Namespace, trained: Any, device: Any, steps: int) -> dict[str, Any]:
    """One fit; the entry stored for it."""
    import torch

    from ..sampling import fit_schedule

    try:
        res = fit_schedule(
            trained.score_fn, trained.sde, steps, sampler=args.sampler, n=args.num_samples,
            generator=torch.Generator(device).manual_seed(args.seed), device=device,
            event_shape=trained.event_shape, max_calls=args.max_calls, return_info=True,
        )  # fmt: skip
    except ValueError as err:
        raise CLIError(str(err)) from err
    return {
        "times": list(res.schedule.times or ()), "sde": res.schedule.sde,
        "step": trained.step, "raw_weights": bool(args.raw_weights), "n": args.num_samples,
        "seed": args.seed, "calls": res.calls, "seconds": round(res.seconds, 3),
        "loss_default": res.loss_default, "loss_fitted": res.loss_fitted,
        "holdout_default": res.holdout_default, "holdout_fitted": res.holdout_fitted,
        "default_times": list(res.default_times),
    }  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.steps):
        raise CLIError(f"--steps must be positive integers, got {args.steps}")
    trained, device = load_model(args, counts=("num_samples", "max_calls"))
    path = schedules_path(trained, args.ckpt)
    read_schedules(path)  # a corrupt file: the error now, before any fit
    for steps in dict.fromkeys(args.steps):  # each once, in the order given
        say(args, f"fitting {args.sampler} with {steps} steps on {args.num_samples} noises")
        entry = _fit_one(args, trained, device, steps)
        store_schedule(path, args.sampler, steps, entry)
        change = (
            f"objective {entry['loss_default']:.3g} -> {entry['loss_fitted']:.3g}"
            if entry["loss_fitted"] < entry["loss_default"]
            else "the default grid kept"
        )
        print(
            f"fitted {args.sampler} with {steps} steps ({change}; {entry['calls']} network "
            f"calls, {entry['seconds']:.1f} s); stored in {path}"
        )
    return 0


COMMAND = Command(
    "fit-schedule",
    "fit a sampler's step schedules to a trained model and store them in its run folder",
    _configure,
    _run,
    "Choose the step times of a fixed-step sampler for this model (scoresde.fit_schedule: "
    "the grid matched to a tight probability-flow ODE solution from the same starting noises) "
    "for each --steps K, and store them in RUN/schedules.json; scoresde sample --steps K with "
    "the same --sampler then uses them (--schedule overrides).",
)
"""The ``scoresde fit-schedule`` command."""
