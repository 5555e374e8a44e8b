"""The core of the ``scoresde`` command: the subcommand registry, shared options, ``main``.

A subcommand is a :class:`Command` (its options and what it runs), added with
:func:`register_command`; :func:`build_parser` builds one ``argparse`` parser over all of them and
:func:`main` runs one. Every failure the user can fix ends the command with exit status 1 and one
line on stderr (``scoresde <command>: error: ...``), never a traceback; ``SCORESDE_DEBUG=1``
shows the traceback. This module imports no command: the command modules import it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

    from ..train import TrainedModel

__all__ = [
    "CLIError",
    "Command",
    "register_command",
    "add_command",
    "add_checkpoint_argument",
    "add_count_argument",
    "add_runtime_arguments",
    "add_new_run_arguments",
    "progress_enabled",
    "progress_bar",
    "say",
    "check_out",
    "check_counts",
    "load_model",
    "build_parser",
    "main",
]


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
    distributed: bool = False
    """Whether the command works with several processes (``torchrun``, DDP). A command that
    does not runs on rank 0 alone: the other ranks exit at once with status 0."""


_COMMANDS: dict[str, Command] = {}


def add_command(command: Command) -> Command:
    """Add ``command`` to the ``scoresde`` command (replacing one of the same name); return it."""
    name = command.name
    if not name or not name.replace("-", "").isalnum():
        raise ValueError(f"command name must be alphanumeric (dashes allowed), got {name!r}")
    _COMMANDS[name] = command
    return command


def register_command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    description: str | None = None,
    distributed: bool = False,
) -> Command:
    """Add the subcommand ``scoresde <name>`` (e.g. ``inpaint``); returns it.

    ``configure(parser)`` adds the options, ``run(args)`` does the work; raise ``ValueError``,
    ``FileNotFoundError`` or :class:`CLIError` for errors the user can fix. ``distributed``:
    see :attr:`Command.distributed`. Option names must pass through ``torchrun``'s parser
    (no prefix of two of its options, such as ``--n``).
    """
    return add_command(Command(name, help, configure, run, description, distributed))


# ------------------------------------------------------------------------------------------------
# options and checks shared by the commands


def add_checkpoint_argument(
    p: argparse.ArgumentParser,
    help: str = "a run folder (newest checkpoint), a checkpoint folder, or a file in one",
) -> None:
    """Add the ``--ckpt DIR|FILE`` option shared by the commands that load a trained model."""
    p.add_argument("--ckpt", required=True, metavar="DIR|FILE", help=help)


def add_count_argument(p: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """Add ``--num-samples N`` (alias ``--n``) shared by the commands that draw or read ``N``.

    The value lands in ``args.num_samples``. ``--n`` is kept for single-process use: under
    ``torchrun`` it cannot pass, since torchrun's own parser reads it as an ambiguous
    abbreviation of its ``--nnodes``/``--nproc-per-node``/... options.
    """
    p.add_argument(
        "--num-samples",
        "--n",
        dest="num_samples",
        type=int,
        metavar="N",
        help=f"{help} (--n: a short alias, not under torchrun)",
        **kwargs,
    )


def add_new_run_arguments(p: argparse.ArgumentParser, *, cite: str) -> None:
    """``--init``, ``--set``, ``--device``, ``--no-progress``: a new run trained from a teacher run.

    ``cite`` names the paper whose recipe starts the student from the teacher's weights.
    """
    p.add_argument(
        "--init",
        choices=("teacher", "scratch"),
        default="teacher",
        help=f"start from the teacher's EMA weights (default, as {cite}) or from scratch",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any TrainConfig field of the new run (as scoresde train --set)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:K")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_runtime_arguments(p: argparse.ArgumentParser, *, raw_weights: bool = True) -> None:
    """Add ``--device``, ``--progress`` (and ``--raw-weights``): the commands that run a model."""
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:K")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars and a line for each long step on stderr (default: when stderr "
        "is a terminal)",
    )
    if raw_weights:
        p.add_argument(
            "--raw-weights",
            action="store_true",
            help="use the raw weights instead of the EMA weights",
        )


def progress_enabled(args: argparse.Namespace) -> bool:
    """Whether to show progress: ``--progress``/``--no-progress``, else if stderr is a terminal."""
    flag = getattr(args, "progress", None)
    return bool(flag) if flag is not None else sys.stderr.isatty()


def say(args: argparse.Namespace, text: str) -> None:
    """Print ``scoresde <command>: text`` on stderr when progress is shown (a long step starts)."""
    if progress_enabled(args):
        print(f"scoresde {args.command}: {text}", file=sys.stderr, flush=True)


def progress_bar(args: argparse.Namespace, total: int, desc: str, unit: str = "it") -> Any:
    """A tqdm bar on stderr over ``total`` units when progress is shown, else ``None``."""
    if not progress_enabled(args):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def check_out(path: str, suffixes: Sequence[str]) -> Path:
    """Return ``--out`` as a path; raise :class:`CLIError` unless it ends in one of ``suffixes``."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise CLIError(f"--out must end in {' or '.join(suffixes)}, got {path!r}")
    return out


def check_counts(args: argparse.Namespace, *names: str) -> None:
    """Raise :class:`CLIError` unless each option ``names`` (dests, e.g. ``batch_size``) is >= 1."""
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def load_model(
    args: argparse.Namespace, *, out: Sequence[str] = (), counts: Sequence[str] = ()
) -> tuple[TrainedModel, torch.device]:
    """Check a command's options, then load the trained model of ``--ckpt`` onto ``--device``.

    Args:
        args: the parsed options (``--ckpt``, ``--device``, optionally ``--raw-weights``).
        out: the suffixes ``--out`` may end in (checked when ``--out`` is given).
        counts: options (dests) that must be positive integers.

    Returns:
        The :class:`~scoresde.train.TrainedModel` (EMA weights unless ``--raw-weights``) and
        the device.
    """
    from ..train import load_trained
    from ..train.distributed import resolve_device

    if out and getattr(args, "out", None) is not None:
        check_out(args.out, out)
    check_counts(args, *counts)
    device = resolve_device(args.device)
    from .. import interop  # a local diffusers folder (diffusers is imported only there)

    if interop.is_diffusers_folder(args.ckpt):
        return interop.load_for_cli(args.ckpt, device), device  # type: ignore[return-value]
    ema = not getattr(args, "raw_weights", False)
    return load_trained(args.ckpt, device=device, ema=ema), device


# ------------------------------------------------------------------------------------------------
# the parser and main


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see prog --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` argument parser with every registered subcommand."""
    from .. import __version__

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


def _other_rank(name: str) -> bool:
    """Whether this process is a rank > 0 of a ``torchrun`` launch of a one-process command.

    Such a command runs on rank 0 alone (rank 0 says so); the other ranks skip it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or _COMMANDS[name].distributed:
        return False
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"scoresde {name}: note: this command runs in one process; of the {world} "
            f"processes torchrun started, rank 0 does the work and the others exit",
            file=sys.stderr,
        )
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scoresde`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    prog = f"scoresde {args.command}"
    if _other_rank(args.command):
        return 0
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
