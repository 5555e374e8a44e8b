"""The ``scoresde`` command: ``train``, ``sample``, ``likelihood``, ``demo``.

Every failure the user can fix ends the command with exit status 1 and one line on stderr
(``scoresde <command>: error: ...``), never a traceback; ``SCORESDE_DEBUG=1`` shows the traceback.
Other parts of the library add subcommands with :func:`register_command` (modules listed in
:data:`PLUGINS` are imported, if they exist, before the parser is built).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser", "register_command", "Command", "CLIError", "PLUGINS"]

PLUGINS = ("scoresde.inverse.cli",)
"""Modules imported before the parser is built, so they can call :func:`register_command`."""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


@dataclass(frozen=True)
class Command:
    """A ``scoresde`` subcommand."""

    name: str
    """The subcommand (``scoresde <name> ...``)."""
    help: str
    """One line for ``scoresde --help``."""
    configure: Callable[[argparse.ArgumentParser], None]
    """Adds the command's options to its parser (document every option with ``help=``)."""
    run: Callable[[argparse.Namespace], int | None]
    """Runs the command; returns the exit status (``None`` means 0)."""
    description: str | None = None
    """Longer text for ``scoresde <name> --help``."""


_COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    description: str | None = None,
) -> Command:
    """Add the subcommand ``scoresde <name>`` (e.g. ``inpaint``); returns it.

    ``configure(parser)`` adds the options, ``run(args)`` does the work; raise ``ValueError``,
    ``FileNotFoundError`` or :class:`CLIError` for errors the user can fix.
    """
    if not name or not name.replace("-", "").isalnum():
        raise ValueError(f"command name must be alphanumeric (dashes allowed), got {name!r}")
    cmd = Command(name, help, configure, run, description)
    _COMMANDS[name] = cmd
    return cmd


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see prog --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------------------
# train


def _configure_train(p: argparse.ArgumentParser) -> None:
    from .train.config import MODELS, PRECISIONS, SDE_NAMES, WEIGHTINGS

    g = p.add_argument_group("what to train")
    g.add_argument(
        "--data",
        metavar="NAME|PATH",
        help="built-in data set (moons, swissroll, 8gaussians, checkerboard, pinwheel, "
        "spirals, rings, digits, fashion-mnist), a folder of PNG/JPEG images or a "
        ".npy/.npz array file",
    )
    g.add_argument(
        "--out",
        metavar="DIR",
        help="run folder for checkpoints, metrics.csv, TensorBoard logs and samples",
    )
    g.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML file of training settings (any TrainConfig field); flags given on "
        "the command line override it",
    )
    g.add_argument("--sde", choices=SDE_NAMES, help="forward SDE (default vp)")
    g.add_argument(
        "--model",
        choices=MODELS,
        help="network: mlp, unet (small), unet_cifar (35M) or auto (default: MLP for "
        "points, U-Net for images)",
    )
    g.add_argument(
        "--parameterization",
        choices=("auto", "score", "scaled_score", "eps", "x0", "v", "edm"),
        help="what the network predicts (default auto: edm, i.e. EDM preconditioning)",
    )
    g.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        help="loss weighting (default auto: natural for --sde edm with edm, else sigma2)",
    )
    g.add_argument(
        "--class-conditional",
        action="store_true",
        default=None,
        help="condition on the data set's labels (enables sample --class)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default 10000)")
    g.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="global batch size, split over DDP processes (default 128)",
    )
    g.add_argument("--lr", type=float, help="peak learning rate (default 2e-4)")
    g.add_argument(
        "--warmup-steps",
        type=int,
        metavar="N",
        help="linear learning-rate warm-up steps (default 0)",
    )
    g.add_argument(
        "--grad-clip",
        type=float,
        metavar="NORM",
        help="clip the gradient norm (default 1.0; 0 turns clipping off)",
    )
    g.add_argument(
        "--ema-decay",
        type=float,
        metavar="D",
        help="EMA decay of the sampling weights (default 0.999)",
    )
    g.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of weights, data order and loss noise (default 0)",
    )
    g = p.add_argument_group("hardware")
    g.add_argument(
        "--device", metavar="D", help="auto (default: CUDA when available), cpu, cuda or cuda:K"
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast on CUDA (default auto = bf16 when supported; CPU uses fp32)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the network with torch.compile",
    )
    g.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="channels-last memory format for image networks",
    )
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop after M minutes of training with a final checkpoint (default: no limit; "
        "--resume continues)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint (settings come "
        "from the checkpoint; --steps may be raised)",
    )
    g.add_argument(
        "--ckpt-every",
        type=int,
        metavar="N",
        help="checkpoint every N steps and at the end (default 1000)",
    )
    g.add_argument(
        "--keep-last", type=int, metavar="K", help="keep the newest K checkpoints (default 3)"
    )
    g.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        help="log loss/lr/grad norm every N steps (default 50)",
    )
    g.add_argument(
        "--sample-every",
        type=int,
        metavar="N",
        help="write a sample grid every N steps (default 0: only at the end)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any TrainConfig field (VALUE is YAML; a.b=v sets one entry of a "
        "mapping, e.g. model_kwargs.hidden=256); repeatable, applied last",
    )


_TRAIN_FLAGS = {
    "data": "data", "out": "out", "sde": "sde", "model": "model",
    "parameterization": "parameterization", "weighting": "weighting",
    "class_conditional": "class_conditional", "steps": "steps", "batch_size": "batch_size",
    "lr": "lr", "warmup_steps": "warmup_steps", "ema_decay": "ema_decay", "seed": "seed",
    "device": "device", "precision": "precision", "compile": "compile",
    "channels_last": "channels_last", "ckpt_every": "ckpt_every", "keep_last": "keep_last",
    "log_every": "log_every", "sample_every": "sample_every", "max_minutes": "max_minutes",
}  # fmt: skip


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Merge defaults < resumed checkpoint < ``--config`` file < flags < ``--set`` items."""
    from .checkpoint import latest_checkpoint, load_checkpoint
    from .train import TrainConfig

    flags = {
        key: getattr(args, attr)
        for attr, key in _TRAIN_FLAGS.items()
        if getattr(args, attr, None) is not None
    }
    if getattr(args, "grad_clip", None) is not None:
        flags["grad_clip"] = args.grad_clip if args.grad_clip > 0 else None
    if args.no_progress:
        flags["progress"] = False
    values: dict[str, Any] = {}
    if args.resume and args.out:
        last = latest_checkpoint(Path(args.out) / "checkpoints")
        if last is not None:
            values.update(load_checkpoint(last, state=False).config["train"])
    if args.config:
        values.update(TrainConfig.read_yaml(args.config))
    values.update(flags)
    missing = [f"--{k}" for k in ("data", "out") if not values.get(k)]
    if missing:
        raise CLIError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"required (on the command line or in --config)"
        )
    cfg = TrainConfig.from_dict(values)
    if args.set:
        cfg = cfg.apply_overrides(args.set)
    return cfg


def _run_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    cfg = train_config_from_args(args)
    result = Trainer(cfg, resume=args.resume).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained {result.step} steps in {result.seconds:.1f} s; final loss "
            f"{result.loss:.4g}; checkpoint {result.checkpoint}"
        )
        if result.samples is not None:
            print(f"samples: {result.samples}")
    return 0


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    """Add the ``--ckpt DIR|FILE`` option shared by the commands that load a trained model."""
    p.add_argument(
        "--ckpt",
        required=True,
        metavar="DIR|FILE",
        help="a run folder (newest checkpoint), a checkpoint folder, or a file in one",
    )


def add_runtime_arguments(p: argparse.ArgumentParser, *, raw_weights: bool = True) -> None:
    """Add ``--device`` (and ``--raw-weights``) shared by the commands that run a model."""
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:K")
    if raw_weights:
        p.add_argument(
            "--raw-weights",
            action="store_true",
            help="use the raw weights instead of the EMA weights",
        )


# ------------------------------------------------------------------------------------------------
# sample


def _configure_sample(p: argparse.ArgumentParser) -> None:
    from .sampling import available_samplers
    from .sampling.api import PRECISIONS as SAMPLE_PRECISIONS

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
    p.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        metavar="K",
        help="draw class K (class-conditional models only)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        metavar="W",
        help="classifier-free guidance weight with --class (default 0)",
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
    p.add_argument(
        "--precision",
        choices=tuple(SAMPLE_PRECISIONS),
        default="fp32",
        help="autocast dtype of the network calls (default fp32; bf16 is ~2x faster on recent "
        "GPUs; the sampler's updates stay in fp32)",
    )
    add_runtime_arguments(p)


def _check_out(path: str, suffixes: Sequence[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise CLIError(f"--out must end in {' or '.join(suffixes)}, got {path!r}")
    return out


def _run_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import plots
    from .checkpoint import atomic_write_bytes
    from .train import load_trained
    from .train.distributed import resolve_device

    out = _check_out(args.out, (".png", ".npz"))
    for name in ("n", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer")
    device = resolve_device(args.device)
    trained = load_trained(args.ckpt, device=device, ema=not args.raw_weights)
    if args.classifier is not None:
        from .inverse.cli import classifier_guided_score

        if args.label is None:
            raise CLIError("--classifier needs --class")
        score = classifier_guided_score(trained, args.classifier, args.label, args.classifier_scale)
    else:
        if args.label is not None:
            if trained.num_classes is None or not trained.config.class_conditional:
                raise CLIError(
                    "--class needs a class-conditional model (train with "
                    "--class-conditional) or --classifier FILE"
                )
            if not 0 <= args.label < trained.num_classes:
                raise CLIError(
                    f"--class must lie in [0, {trained.num_classes - 1}], got {args.label}"
                )
        elif args.guidance:
            raise CLIError("--guidance needs --class")
        score = trained.model.score_fn(args.label, guidance=args.guidance)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    from .sampling import sample

    x = sample(  # chunks of --batch-size; the samples do not depend on it
        score,
        trained.sde,
        (args.n, *trained.event_shape),
        sampler=args.sampler,
        steps=args.steps,
        generator=gen,
        device=device,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    xs = trained.to_data(x).cpu()
    if out.suffix.lower() == ".npz":
        buf = io.BytesIO()
        arrays = {"samples": xs.numpy()}
        if args.label is not None:
            arrays["labels"] = np.full(len(xs), args.label, dtype=np.int64)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(out, buf.getvalue())
    elif trained.is_image:
        plots.image_grid(xs, out, title=f"{args.n} samples ({args.sampler}, {args.steps} steps)")
    else:
        plots.scatter(xs, out, title=f"{args.n} samples ({args.sampler}, {args.steps} steps)")
    print(f"wrote {len(xs)} samples of shape {tuple(xs.shape[1:])} to {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# likelihood


def _configure_likelihood(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p)
    p.add_argument(
        "--data",
        metavar="NAME|PATH",
        help="data to evaluate (default: the training data set's test split)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "test", "all"),
        help="split of a built-in data set (default test; toy sets: an independent draw)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=512,
        metavar="N",
        help="number of data points to evaluate (default 512)",
    )
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        metavar="B",
        help="points per ODE solve (default 256)",
    )
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (1e-5)")
    p.add_argument(
        "--divergence",
        default="auto",
        choices=("auto", "exact", "hutchinson"),
        help="divergence estimator (default auto: exact for <= 16 dimensions)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of dequantisation noise and Hutchinson probes (default 0)",
    )
    add_runtime_arguments(p)


def _run_likelihood(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import atomic_write_text
    from .data import load_dataset
    from .likelihood import bits_per_dim, log_likelihood
    from .train import load_trained
    from .train.distributed import resolve_device

    if args.out is not None:
        _check_out(args.out, (".json",))
    if args.n < 1 or args.batch_size < 1:
        raise CLIError("--n and --batch-size must be positive integers")
    device = resolve_device(args.device)
    trained = load_trained(args.ckpt, device=device, ema=not args.raw_weights)
    name = args.data or trained.data_info.get("name")
    if not name:
        raise CLIError("--data is required (the checkpoint does not name its data set)")
    levels = None
    try:
        ds = load_dataset(name, split=args.split, n=None)
    except ValueError as err:
        if "split" not in str(err):
            raise
        ds = load_dataset(name, n=None)
    if tuple(ds.info.shape) != tuple(trained.event_shape):
        raise CLIError(
            f"data {name!r} has samples of shape {ds.info.shape} but the model was "
            f"trained on {trained.event_shape}"
        )
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    n = min(args.n, len(ds))
    idx = torch.arange(n)
    levels = ds.info.levels
    if levels is not None:  # uniform dequantisation for a density on [-1, 1)
        ds.dequantize = True
    x, _ = ds.get_batch(idx, gen)
    dim = math.prod(trained.event_shape)
    div = args.divergence if args.divergence != "auto" else ("exact" if dim <= 16 else "hutchinson")
    eps = max(1e-5, trained.sde.eps if trained.config.sde == "edm" else 1e-5)
    score = trained.score_fn
    logp, nfe = [], []
    for start in range(0, n, args.batch_size):
        xb = x[start : start + args.batch_size].to(device)
        res = log_likelihood(
            score,
            trained.sde,
            xb,
            rtol=args.rtol,
            atol=args.atol,
            divergence=div,
            eps=eps,
            generator=gen
            if device.type == "cpu"
            else torch.Generator(device=device).manual_seed(args.seed + start),
        )
        logp.append(res.log_prob.double().cpu())
        nfe.append(res.nfe.double())
    lp = torch.cat(logp)
    nll = -lp
    result: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "step": trained.step,
        "data": str(name),
        "split": args.split,
        "n": n,
        "dimensions": dim,
        "divergence": div,
        "eps": eps,
        "nll_nats": float(nll.mean()),
        "nll_nats_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else None,
        "nfe_mean": float(torch.cat(nfe).mean()),
        "rtol": args.rtol,
        "atol": args.atol,
    }
    line = f"NLL {result['nll_nats']:.4f} nats per sample"
    if levels is not None:
        bpd = bits_per_dim(lp, (n, *trained.event_shape), data_range=(-1.0, 1.0), bins=levels)
        result["bits_per_dim"] = float(bpd.mean())
        result["bits_per_dim_stderr"] = float(bpd.std() / math.sqrt(n)) if n > 1 else None
        result["levels"] = levels
        line += f", {result['bits_per_dim']:.4f} bits/dim ({levels} levels, dequantised)"
    print(f"{line} on {n} points of {name} ({args.split})")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------
# demo


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run of the same pipeline (poor quality; for tests)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0


register_command(
    "train",
    help="train a score model on a data set",
    configure=_configure_train,
    run=_run_train,
    description="Train a score model by denoising score matching. Runs under "
    "`torchrun --nproc_per_node=N -m scoresde train ...` with DDP.",
)
register_command(
    "sample", help="draw samples from a trained model", configure=_configure_sample, run=_run_sample
)
register_command(
    "likelihood",
    help="exact NLL / bits per dim of data under a trained model",
    configure=_configure_likelihood,
    run=_run_likelihood,
    description="Log-likelihood by the probability-flow ODE; bits/dim for "
    "quantised (image) data with uniform dequantisation.",
)
register_command(
    "demo",
    help="train on a 2-D toy set and on 8x8 digits, sample, plot (CPU)",
    configure=_configure_demo,
    run=_run_demo,
)


# ------------------------------------------------------------------------------------------------


def _load_plugins() -> None:
    for mod in PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name is not None and mod.startswith(err.name):
                continue  # the plugin does not exist (yet)
            print(f"scoresde: warning: could not load {mod}: {_one_line(err)}", file=sys.stderr)
        except Exception as err:  # a broken plugin must not break the other commands
            print(f"scoresde: warning: could not load {mod}: {_one_line(err)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` argument parser with every registered subcommand."""
    from . import __version__

    _load_plugins()
    parser = _Parser(prog="scoresde", description="Score-based generative modelling through SDEs.")
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in _COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing entry {text}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scoresde`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    prog = f"scoresde {args.command}"
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, no traceback (SCORESDE_DEBUG=1 for it)
        if os.environ.get("SCORESDE_DEBUG"):
            raise
        expected = isinstance(
            err, (CLIError, ValueError, TypeError, OSError, RuntimeError, KeyError)
        )
        hint = "" if expected else " (an internal error; rerun with SCORESDE_DEBUG=1 and report)"
        print(f"{prog}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return 1
