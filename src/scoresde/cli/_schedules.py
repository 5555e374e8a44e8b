"""Fitted step schedules stored in a run folder: ``RUN/schedules.json``.

Written by ``scoresde fit-schedule`` (:func:`scoresde.fit_schedule`), read by ``scoresde
sample``. The file maps sampler name -> step count -> the fitted times with what they were fitted
for (SDE, checkpoint step, EMA or raw weights) and what the fit found; it is rewritten atomically
(:func:`scoresde.checkpoint.atomic_write_text`), entries of other samplers and step counts kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core import CLIError

if TYPE_CHECKING:
    from ..sampling import Schedule
    from ..train import TrainedModel

__all__ = [
    "SCHEDULES_FILE",
    "schedules_path",
    "read_schedules",
    "store_schedule",
    "stored_schedule",
    "add_schedule_argument",
    "schedule_options",
]

SCHEDULES_FILE = "schedules.json"
FORMAT = "scoresde-schedules"


def schedules_path(trained: TrainedModel, ckpt: str) -> Path:
    """``RUN/schedules.json`` of the run ``--ckpt`` points into (or of the folder it names)."""
    path = getattr(trained, "path", None)
    folder = Path(path) if path is not None else Path(ckpt)
    if folder.is_file():
        folder = folder.parent
    if folder.parent.name == "checkpoints":  # RUN/checkpoints/step_N
        folder = folder.parent.parent
    return folder / SCHEDULES_FILE


def _corrupt(path: Path, why: str) -> CLIError:
    return CLIError(
        f"{path} is not a valid schedules file ({why}); delete it and store the schedules "
        f"again with 'scoresde fit-schedule --ckpt RUN --steps K ...'"
    )


def read_schedules(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The stored schedules by sampler and step count (empty when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _corrupt(path, f"unreadable: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _corrupt(path, f"no 'format': '{FORMAT}'")
    table = data.get("schedules")
    ok = isinstance(table, dict) and all(
        isinstance(by_steps, dict)
        and all(isinstance(e, dict) and _valid_times(e.get("times")) for e in by_steps.values())
        for by_steps in table.values()
    )
    if not ok:
        raise _corrupt(path, "'schedules' must map sampler -> steps -> {'times': [...], ...}")
    return table  # type: ignore[return-value]


def _valid_times(times: object) -> bool:
    return (
        isinstance(times, list)
        and len(times) >= 2
        and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times)
    )


def store_schedule(path: Path, sampler: str, steps: int, entry: dict[str, Any]) -> None:
    """Add (or replace) the schedule of ``sampler`` with ``steps`` steps; atomic rewrite."""
    from ..checkpoint import atomic_write_text

    table = read_schedules(path)
    table.setdefault(sampler, {})[str(steps)] = entry
    text = json.dumps({"format": FORMAT, "version": 1, "schedules": table}, indent=1)
    atomic_write_text(path, text + "\n")


def stored_schedule(
    trained: TrainedModel, ckpt: str, sampler: str, steps: int, raw_weights: bool
) -> tuple[Schedule | None, str]:
    """The stored schedule for ``sampler`` and ``steps`` of this checkpoint, and a note.

    ``None`` with an empty note when there is none; ``None`` with a note when the one stored
    belongs to another checkpoint step or weights (it is not used then).
    """
    from ..sampling import Schedule

    path = schedules_path(trained, ckpt)
    entry = read_schedules(path).get(sampler, {}).get(str(steps))
    if entry is None:
        return None, ""
    made_for = (entry.get("step"), bool(entry.get("raw_weights", False)))
    if made_for != (trained.step, raw_weights):
        return None, (
            f"not using the schedule stored in {path} for {sampler} with {steps} steps: it was "
            f"fitted for checkpoint step {made_for[0]} ({'raw' if made_for[1] else 'EMA'} "
            f"weights); run scoresde fit-schedule again for this one"
        )
    if len(entry["times"]) != steps + 1:
        raise _corrupt(path, f"the entry for {sampler} with {steps} steps has "
                             f"{len(entry['times'])} times, not {steps + 1}")  # fmt: skip
    try:
        sched = Schedule.from_times(entry["times"], entry.get("sde"), sampler)
    except ValueError as err:
        raise _corrupt(path, str(err)) from err
    return sched, f"using the schedule fitted for {sampler} with {steps} steps from {path}"


def add_schedule_argument(p: argparse.ArgumentParser) -> None:
    """``--schedule``: a named schedule, ``default`` (the sampler's own), else the stored one."""
    from ..sampling.schedules import SCHEDULES

    p.add_argument(
        "--schedule",
        default=None,
        choices=(*SCHEDULES, "default"),
        help="step schedule: a named one, or default (the sampler's own); without it, the "
        "schedule 'scoresde fit-schedule' stored in the run folder for this --sampler and "
        "--steps, else the sampler's own",
    )


def schedule_options(
    args: argparse.Namespace, trained: TrainedModel, command: str
) -> dict[str, Any]:
    """``schedule=`` for :func:`scoresde.sample`: ``--schedule``, else a stored fitted one.

    Using a stored schedule (or skipping one fitted for other weights) is said on stderr, once
    under torchrun.
    """
    if args.schedule is not None:
        return {} if args.schedule == "default" else {"schedule": args.schedule}
    raw = bool(getattr(args, "raw_weights", False))
    sched, note = stored_schedule(trained, args.ckpt, args.sampler, args.steps, raw)
    if note and os.environ.get("RANK", "0") == "0":
        print(f"scoresde {command}: {note}", file=sys.stderr)
    return {} if sched is None else {"schedule": sched}
