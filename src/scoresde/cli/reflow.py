"""``scoresde reflow``: straighten a rectified flow by training on its own ODE's pairs.

Reflow (Liu et al. 2023, "Flow straight and fast", sec. 2.3 and Alg. 1): draw noise ``z``, map it
through the teacher's probability-flow ODE to a sample ``x = Phi(z)``, and train the next
rectified flow on the fixed pairs ``(x, z)`` (``coupling="pairs"``,
:mod:`scoresde.train.coupling`). The new flow transports the same marginals along straighter
paths, so few-step and one-step Euler sampling improve. The pairs are written to
``OUT/pairs.npz`` (the new run's ``data``), the student starts from the teacher's weights unless
``--init scratch``, and ``scoresde train --resume --out OUT`` continues it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .core import CLIError, Command, add_new_run_arguments

if TYPE_CHECKING:
    from ..train import TrainConfig, TrainedModel

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher", required=True, metavar="RUN", help="the rectified-flow run to straighten"
    )
    p.add_argument("--out", required=True, metavar="RUN2", help="run folder of the new flow")
    p.add_argument(
        "--pairs", type=int, required=True, metavar="N", help="(noise, sample) pairs to draw"
    )
    p.add_argument(
        "--sampler",
        default="heun",
        metavar="NAME",
        help="deterministic sampler of the teacher's ODE (default heun)",
    )
    p.add_argument(
        "--sampler-steps", type=int, default=32, metavar="K", help="its steps (default 32)"
    )
    p.add_argument(
        "--steps", type=int, default=None, metavar="N", help="training steps (default: teacher's)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
    add_new_run_arguments(p, cite="Liu et al. 2023")


def _check(args: argparse.Namespace, teacher: TrainedModel) -> None:
    from ..checkpoint import latest_checkpoint
    from ..sampling import get_sampler

    if args.pairs < 1 or args.sampler_steps < 1 or (args.steps is not None and args.steps < 1):
        raise CLIError("--pairs, --sampler-steps and --steps must be positive integers")
    if not teacher.sde.zero_terminal_snr or teacher.config.sde != "rectified_flow":
        raise CLIError(
            f"reflow needs a rectified-flow teacher (trained with --sde rectified_flow); "
            f"{args.teacher!r} uses --sde {teacher.config.sde}"
        )
    if teacher.config.class_conditional:
        raise CLIError("reflow of a class-conditional teacher is not supported")
    if get_sampler(args.sampler).stochastic:
        raise CLIError(
            f"--sampler {args.sampler!r} is stochastic; reflow needs the teacher's ODE "
            "(heun, euler, ode, ode_heun, dpm_solver, fast, ...)"
        )
    if latest_checkpoint(Path(args.out) / "checkpoints") is not None:
        raise CLIError(
            f"{args.out!r} already holds checkpoints; continue it with scoresde train --resume "
            "or choose a new --out"
        )


def draw_pairs(
    teacher: TrainedModel, n: int, sampler: str, steps: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noise draws ``z ~ N(0, I)`` and their images ``x = Phi(z)`` by the teacher's ODE."""
    from ..sampling import sample

    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn((n, *teacher.event_shape), generator=gen) * teacher.sde.prior_std
    x = sample(
        teacher.score_fn,
        teacher.sde,
        tuple(z.shape),
        sampler=sampler,
        steps=steps,
        x_init=z.to(device),
        device=device,
        batch_size=4096,
    )
    return z, x.cpu()


def _student_config(args: argparse.Namespace, teacher: TrainedModel, pairs: Path) -> TrainConfig:
    cfg = teacher.config.replace(
        data=str(pairs),
        data_kwargs={},
        out=str(args.out),
        coupling="pairs",
        steps=args.steps or teacher.config.steps,
        progress=not args.no_progress,
    )
    return cfg.apply_overrides(args.set) if args.set else cfg


def _run(args: argparse.Namespace) -> int:
    from ..data.dataset import DatasetInfo
    from ..train import Trainer, load_trained
    from ..train.coupling import save_pairs
    from ..train.distributed import resolve_device

    device = resolve_device(args.device)
    teacher = load_trained(args.teacher, device=device)
    _check(args, teacher)
    z, x = draw_pairs(teacher, args.pairs, args.sampler, args.sampler_steps, args.seed, device)
    names = {f.name for f in dataclasses.fields(DatasetInfo)}
    meta = {k: v for k, v in teacher.data_info.items() if k in names}
    meta.update(shape=tuple(meta["shape"]), data_range=tuple(meta["data_range"]), n=args.pairs)
    pairs = save_pairs(Path(args.out) / "pairs.npz", z, x, DatasetInfo(**meta))
    print(
        f"wrote {args.pairs} pairs of {teacher.path} ({args.sampler}, {args.sampler_steps} steps)"
    )
    trainer = Trainer(_student_config(args, teacher, pairs))
    if args.init == "teacher":  # Liu et al. fine-tune the k-th flow from the (k-1)-th
        weights = teacher.model.net.state_dict()
        trainer.net.load_state_dict(weights)
        trainer.ema.load_state_dict(weights, 0)
    result = trainer.fit()
    print(
        f"reflow: trained {result.step} steps in {result.seconds:.1f} s; final loss "
        f"{result.loss:.4g}; checkpoint {result.checkpoint}"
    )
    return 0


COMMAND = Command(
    "reflow",
    "straighten a rectified flow on (noise, sample) pairs of its ODE",
    _configure,
    _run,
    "Reflow (Liu et al. 2023): draw --pairs noise samples, map them through the teacher's "
    "ODE, and train the next rectified flow on the pairs, so that few-step sampling is "
    "straighter. Writes OUT/pairs.npz and the run in OUT.",
)
"""The ``scoresde reflow`` command."""
