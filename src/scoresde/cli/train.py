"""``scoresde train``: train a score model by denoising score matching (Song et al. 2021, eq. 7).

The options are generated from :class:`~scoresde.train.TrainConfig`'s fields: field
``batch_size`` is ``--batch-size``; its type gives the argparse type (``bool`` fields are
``--flag``/``--no-flag`` switches, ``X | None`` fields also take ``none``), :data:`CHOICES`
its choices and :data:`~scoresde.train.config.FIELD_HELP` its help. Fields in
:data:`NOT_FLAGS` have no option (``--set`` and ``--config`` reach every field). Settings merge as
defaults < resumed checkpoint < ``--config`` file < flags < ``--set`` items.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..train.config import CHOICES, FIELD_HELP, TrainConfig
from .core import CLIError, Command

if TYPE_CHECKING:
    from ..train import TrainResult

__all__ = ["COMMAND", "NOT_FLAGS", "flag_fields", "train_config_from_args", "summary"]

NOT_FLAGS = ("data_kwargs", "sde_kwargs", "model_kwargs", "betas")
"""TrainConfig fields without an option of their own: mappings and pairs (use ``--set``)."""

_REQUIRED = ("data", "out")
"""Fields the command needs from the command line or ``--config`` (no default)."""


def flag_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The TrainConfig fields that are ``scoresde train`` options, in ``--help`` order.

    Raises ``TypeError`` for a field that is neither in ``FIELD_HELP`` nor in :data:`NOT_FLAGS`.
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in fields:
        if name not in FIELD_HELP and name not in NOT_FLAGS:
            raise TypeError(f"TrainConfig.{name} needs a FIELD_HELP entry or a place in NOT_FLAGS")
    unknown = set(FIELD_HELP) - set(fields)
    if unknown:
        raise TypeError(f"FIELD_HELP names fields TrainConfig does not have: {sorted(unknown)}")
    return tuple(fields[name] for name in FIELD_HELP)


def _number_or_none(text: str) -> float | None:
    """An argparse type: a float, or ``none``/``null`` for ``None``."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _value_type(name: str, hint: Any) -> Callable[[str], Any]:
    """The argparse type of a field of type ``hint``."""
    if hint in (int, float, str):
        return hint  # type: ignore[no-any-return]
    if isinstance(hint, types.UnionType) and set(typing.get_args(hint)) == {float, type(None)}:
        return _number_or_none
    raise TypeError(f"TrainConfig.{name} of type {hint} cannot be an option; add it to NOT_FLAGS")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _add_field_option(
    group: argparse._ArgumentGroup,
    f: dataclasses.Field[Any],
    hint: Any,
    choices: dict[str, tuple[str, ...]],
) -> None:
    """Add the option of field ``f`` (absent from the namespace unless given)."""
    doc = FIELD_HELP[f.name]
    note = f"default {_shown(f.default)}"
    if f.name in _REQUIRED:
        note = "required, here or in --config"
    kwargs: dict[str, Any] = {"help": f"{doc.text} ({note})", "default": argparse.SUPPRESS}
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _value_type(f.name, hint)
        kwargs["metavar"] = doc.metavar
        kwargs["choices"] = choices.get(f.name)
    group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, **kwargs)


def _configure(p: argparse.ArgumentParser) -> None:
    from ..sampling import available_samplers

    hints = typing.get_type_hints(TrainConfig)
    choices = {**CHOICES, "sampler": tuple(available_samplers())}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in flag_fields():
        title = FIELD_HELP[f.name].group
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        _add_field_option(groups[title], f, hints[f.name], choices)
    what, logs = groups[FIELD_HELP["data"].group], groups[FIELD_HELP["ckpt_every"].group]
    what.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML file of training settings (any TrainConfig field); flags given on "
        "the command line override it",
    )
    logs.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint (settings come "
        "from the checkpoint; --steps may be raised)",
    )
    logs.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any TrainConfig field (VALUE is YAML; a.b=v sets one entry of a "
        "mapping, e.g. model_kwargs.hidden=256); repeatable, applied last",
    )


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given as options (``--grad-clip 0`` turns clipping off)."""
    flags = {f.name: getattr(args, f.name) for f in flag_fields() if hasattr(args, f.name)}
    if flags.get("grad_clip") == 0:
        flags["grad_clip"] = None
    return flags


def _resumed_values(out: str | None) -> dict[str, Any]:
    """The settings of the run in ``out`` that ``--resume`` continues.

    Raises :class:`CLIError` when there is no run to resume: no ``--out``, no such folder, or
    no checkpoint in it (checked first: without a run, no other option matters).
    """
    from ..checkpoint import load_checkpoint
    from ..train.restore import resume_checkpoint

    if not out:
        raise CLIError("--resume needs --out, the folder of the run to continue")
    try:
        last = resume_checkpoint(out)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return dict(load_checkpoint(last, state=False).config["train"])


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < resumed checkpoint < ``--config`` file < flags < ``--set`` items."""
    flags = _flag_values(args)
    from_file = TrainConfig.read_yaml(args.config) if args.config else {}
    values: dict[str, Any] = {}
    if args.resume:
        values.update(_resumed_values(flags.get("out") or from_file.get("out")))
    values.update(from_file)
    values.update(flags)
    missing = [f"--{k}" for k in _REQUIRED if not values.get(k)]
    if missing:
        raise CLIError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"required (on the command line or in --config)"
        )
    cfg = TrainConfig.from_dict(values)
    if args.set:
        cfg = cfg.apply_overrides(args.set)
    return cfg


def summary(result: TrainResult, steps: int) -> str:
    """The line ``scoresde train`` prints about a finished :meth:`Trainer.fit` of ``steps``.

    Counts the steps of this call (and, after a resume, the run's total and its cumulative
    time); says so when a resumed run was already at ``steps`` and nothing was trained.
    """
    if result.steps_run == 0:
        return (
            f"nothing to train: the run in {result.out} is already at step {result.step} "
            f"(--steps {steps}); newest checkpoint {result.checkpoint}. Raise --steps to "
            f"train further"
        )
    if result.start_step == 0:
        done = f"trained {result.steps_run} steps in {result.seconds:.1f} s"
    else:
        done = (
            f"trained {result.steps_run} steps (from step {result.start_step} to "
            f"{result.step}) in {result.seconds:.1f} s; the run has {result.step} steps in "
            f"{result.total_seconds:.1f} s"
        )
    return f"{done}; final loss {result.loss:.4g}; checkpoint {result.checkpoint}"


def _run(args: argparse.Namespace) -> int:
    from ..train import Trainer

    cfg = train_config_from_args(args)
    result = Trainer(cfg, resume=args.resume).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary(result, cfg.steps))
        if result.samples is not None:
            print(f"samples: {result.samples}")
    return 0


COMMAND = Command(
    "train",
    "train a score model on a data set",
    _configure,
    _run,
    "Train a score model by denoising score matching. Runs under "
    "`torchrun --nproc_per_node=N -m scoresde train ...` with DDP.",
    distributed=True,
)
"""The ``scoresde train`` command."""
