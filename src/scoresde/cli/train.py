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
from pathlib import Path
from typing import Any

from ..train.config import CHOICES, FIELD_HELP, TrainConfig
from .core import CLIError, Command

__all__ = ["COMMAND", "NOT_FLAGS", "flag_fields", "train_config_from_args"]

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


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < resumed checkpoint < ``--config`` file < flags < ``--set`` items."""
    from ..checkpoint import latest_checkpoint, load_checkpoint

    values: dict[str, Any] = {}
    out = getattr(args, "out", None)
    if args.resume and out:
        last = latest_checkpoint(Path(out) / "checkpoints")
        if last is not None:
            values.update(load_checkpoint(last, state=False).config["train"])
    if args.config:
        values.update(TrainConfig.read_yaml(args.config))
    values.update(_flag_values(args))
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


def _run(args: argparse.Namespace) -> int:
    from ..train import Trainer

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


COMMAND = Command(
    "train",
    "train a score model on a data set",
    _configure,
    _run,
    "Train a score model by denoising score matching. Runs under "
    "`torchrun --nproc_per_node=N -m scoresde train ...` with DDP.",
)
"""The ``scoresde train`` command."""
