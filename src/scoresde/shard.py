"""Sharded runs across processes: sampling and likelihood split over ``torchrun`` ranks.

A run of ``n`` items (samples to draw, data points to score) is cut into shards of
``shard_size`` consecutive items (:class:`ShardPlan`); shard ``k`` holds items
``[k * shard_size, (k + 1) * shard_size)``. Every rank computes the shards it is dealt
(round-robin over the shards still missing), writes each one atomically as it finishes
(:class:`ShardFolder`: one safetensors file per shard, named by its index, beside a
``run.json`` that fingerprints the run), and the ranks meet once, at the end: rank 0 then
reads the shards in order and returns the whole result. There is no collective call while the
shards are computed, so an adaptive solver may take a different number of steps on every rank.

Why the result does not depend on the number of processes:

- sampling: shard ``k`` is drawn by :func:`scoresde.sample` with ``noise_offset =
  k * shard_size``, so every sample gets the counter-based noise (``sampling/noise.py``) it
  gets in one process, in a batch of the same rows as one process with ``batch_size =
  shard_size`` — the same network calls on the same rows, hence the same bits on a CPU;
- likelihood: shard ``k`` is one call of :func:`scoresde.log_likelihood` on the same rows with
  its own seed (:func:`shard_seed`), whoever computes it.

A rerun with ``resume=True`` finds the finished shards and computes only the missing ones; a
run whose fingerprint differs is refused. A rank that fails is reported by every rank at the
end (the message names it and says how many shards are kept); under ``torchrun`` a rank that
dies makes torchrun stop the others, which then stop with the same advice. Processes must see
one folder (one machine, or a shared file system).

The caller joins the process group first (:func:`scoresde.train.setup_distributed`, which the
``scoresde`` commands call); without one this is a single process (rank 0 of 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ._version import __version__
from .checkpoint import atomic_write_bytes, atomic_write_text
from .likelihood import log_likelihood
from .sampling import sample
from .sde import SDE, ScoreFn

__all__ = [
    "ShardError",
    "ShardPlan",
    "ShardFolder",
    "ShardResult",
    "process_rank",
    "shard_seed",
    "run_shards",
    "sample_sharded",
    "log_likelihood_sharded",
]

RUN_FILE = "run.json"
"""The run's fingerprint in a shard folder."""
_SHARD_RE = re.compile(r"^shard-(\d{6})\.safetensors$")


class ShardError(RuntimeError):
    """A sharded run cannot start or did not finish (the message says why and what to do)."""


@dataclass(frozen=True)
class ShardPlan:
    """``n`` items cut into shards of ``shard_size`` consecutive items (the last may be short)."""

    n: int
    """Number of items."""
    shard_size: int
    """Items per shard (the batch size of one process)."""

    def __post_init__(self) -> None:
        for name in ("n", "shard_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def count(self) -> int:
        """Number of shards."""
        return -(-self.n // self.shard_size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Items ``[start, stop)`` of shard ``k``."""
        if not 0 <= k < self.count:
            raise IndexError(f"shard {k} out of range: the plan has {self.count} shards")
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.n)

    def deal(self, todo: list[int], rank: int, world: int) -> list[int]:
        """The shards of ``todo`` that ``rank`` of ``world`` computes (round-robin)."""
        return todo[rank::world]


def shard_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for item ``index`` of a run seeded ``seed`` (NumPy's ``SeedSequence``).

    Independent streams per ``(seed, index, stream)``; whoever computes a shard seeds it alike.
    """
    state = np.random.SeedSequence([int(seed) & (2**64 - 1), int(index), int(stream)])
    return int(state.generate_state(1, np.uint64)[0] & np.uint64(2**63 - 1))


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group; ``(0, 1)`` without one.

    Raises :class:`ShardError` when ``torchrun`` started several processes (``WORLD_SIZE > 1``)
    but this one has not joined their group: each would otherwise compute the whole run.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise ShardError(
            f"WORLD_SIZE={world} but this process has not joined the process group: call "
            f"scoresde.train.setup_distributed() first"
        )
    return 0, 1


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class ShardFolder:
    """A folder of finished shards: ``run.json`` and ``shard-000000.safetensors``, ...

    Each shard is written atomically (temporary file, fsync, rename), so a file that exists is
    complete; it records its index, its item range and the run's fingerprint, all checked on
    reading.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: dict[str, Any], plan: ShardPlan):
        self.path = Path(path)
        self.plan = plan
        self.fingerprint = _normalised(
            {**fingerprint, "n": plan.n, "shard_size": plan.shard_size, "scoresde": __version__}
        )
        text = json.dumps(self.fingerprint, sort_keys=True).encode()
        self._tag = hashlib.sha256(text).hexdigest()[:16]

    def file(self, k: int) -> Path:
        """The file of shard ``k``."""
        return self.path / f"shard-{k:06d}.safetensors"

    def prepare(self, resume: bool) -> list[int]:
        """Create the folder, or check it against this run with ``resume``; the finished shards.

        Raises :class:`ShardError` when the folder holds an earlier run and ``resume`` is off,
        or holds a different run.
        """
        meta = self.path / RUN_FILE
        if self.path.exists() and not self.path.is_dir():
            raise ShardError(f"the shard folder {self.path} is a file; remove it or choose another")
        if meta.is_file():
            if not resume:
                raise ShardError(
                    f"{self.path} holds {len(self.finished())} finished shards of an earlier "
                    f"run: rerun with --resume to continue it, or remove the folder"
                )
            self._check_same_run(json.loads(meta.read_text()))
            return self.finished()
        if self.path.exists() and any(self.path.iterdir()):
            raise ShardError(f"{self.path} exists and is not a shard folder; choose another")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n")
        return []

    def _check_same_run(self, old: dict[str, Any]) -> None:
        keys = sorted(set(old) | set(self.fingerprint))
        diff = [k for k in keys if old.get(k) != self.fingerprint.get(k)]
        if diff:
            shown = ", ".join(
                f"{k}: {old.get(k)!r} then, {self.fingerprint.get(k)!r} now" for k in diff[:4]
            )
            raise ShardError(
                f"--resume: {self.path} holds a different run ({shown}); rerun with the "
                f"earlier options, or remove the folder to start afresh"
            )

    def finished(self) -> list[int]:
        """Indices of the shards whose files exist, sorted."""
        if not self.path.is_dir():
            return []
        found = (_SHARD_RE.match(p.name) for p in self.path.iterdir())
        return sorted(k for m in found if m and (k := int(m.group(1))) < self.plan.count)

    def finished_items(self) -> int:
        """Number of items in the finished shards."""
        return sum(b - a for a, b in map(self.plan.bounds, self.finished()))

    def write(self, k: int, arrays: dict[str, Tensor]) -> None:
        """Write shard ``k`` atomically."""
        from safetensors.torch import save

        start, stop = self.plan.bounds(k)
        meta = {"index": str(k), "start": str(start), "stop": str(stop), "run": self._tag}
        tensors = {name: t.detach().cpu().contiguous() for name, t in arrays.items()}
        atomic_write_bytes(self.file(k), save(tensors, metadata=meta))

    def read(self, k: int) -> dict[str, Tensor]:
        """Read shard ``k``, checking that it belongs to this run."""
        from safetensors import safe_open

        start, stop = self.plan.bounds(k)
        with safe_open(str(self.file(k)), framework="pt") as fh:
            meta = fh.metadata() or {}
            arrays = {name: fh.get_tensor(name) for name in fh.keys()}
        want = {"index": str(k), "start": str(start), "stop": str(stop), "run": self._tag}
        if {key: meta.get(key) for key in want} != want or any(
            len(t) != stop - start for t in arrays.values()
        ):
            raise ShardError(
                f"{self.file(k)} does not belong to this run (remove the folder {self.path} "
                f"and start afresh)"
            )
        return arrays

    def remove(self) -> None:
        """Delete the folder (once the run's output is written)."""
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class ShardResult:
    """What :func:`run_shards` returns on every rank."""

    arrays: dict[str, Tensor] | None
    """On rank 0: each array of the shards concatenated in item order; ``None`` elsewhere."""
    computed: int
    """Shards this rank computed."""
    reused: int
    """Shards found finished in the folder (``resume``), on every rank."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of this rank's phases: ``compute``, ``wait`` (for the other ranks at the end)
    and, on rank 0, ``gather`` (reading and joining the shards)."""


class _Terminated(BaseException):
    """SIGTERM arrived (torchrun stops the other ranks this way when one fails)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the shards are computed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _kept(folder: ShardFolder | None) -> str:
    if folder is None:
        return "no shard folder was given, so nothing is kept"
    done = folder.finished()
    return (
        f"{len(done)} of {folder.plan.count} shards are finished in {folder.path}: rerun the "
        f"same command with --resume (Python: resume=True) to compute only the missing ones"
    )


def _agree_on_todo(
    plan: ShardPlan, folder: ShardFolder | None, resume: bool, rank: int, world: int
) -> list[int]:
    """Rank 0 prepares the folder; every rank gets the list of missing shards (or its error)."""
    msg: list[Any] = [None]
    if rank == 0:
        try:
            done = set(folder.prepare(resume)) if folder is not None else set()
            msg = [("ok", [k for k in range(plan.count) if k not in done])]
        except Exception as err:  # every rank must hear of it, not wait for a broadcast
            msg = [("error", str(err) if isinstance(err, ShardError) else f"{folder}: {err}")]
    if world > 1:
        dist.broadcast_object_list(msg, src=0)
    status, payload = msg[0]
    if status == "error":
        raise ShardError(payload)
    return list(payload)


def _compute(
    plan: ShardPlan,
    mine: list[int],
    compute: Callable[[int, int], dict[str, Tensor]],
    folder: ShardFolder | None,
    on_progress: Callable[[int], None] | None,
) -> dict[int, dict[str, Tensor]]:
    """Compute this rank's shards, writing each as it finishes; those kept in memory."""
    kept: dict[int, dict[str, Tensor]] = {}
    own = 0
    for k in mine:
        start, stop = plan.bounds(k)
        arrays = compute(start, stop)
        bad = [name for name, t in arrays.items() if len(t) != stop - start]
        if bad:
            raise ValueError(f"compute({start}, {stop}) returned {bad} without {stop - start} rows")
        if folder is not None:
            folder.write(k, arrays)
        else:
            kept[k] = {name: t.detach().cpu() for name, t in arrays.items()}
        own += stop - start
        if on_progress is not None:
            on_progress(folder.finished_items() if folder is not None else own)
    return kept


def _statuses(status: str | None, world: int, folder: ShardFolder | None) -> list[str | None]:
    """Every rank's status at the end (one collective call)."""
    if world == 1:
        return [status]
    out: list[Any] = [None] * world
    try:
        dist.all_gather_object(out, status)
    except (RuntimeError, ValueError) as err:  # a peer died: gloo/NCCL report a broken link
        raise ShardError(
            f"another process of this run stopped before it finished "
            f"({' '.join(str(err).split())[:200]}); {_kept(folder)}"
        ) from None
    return out


def _assemble(
    plan: ShardPlan, folder: ShardFolder | None, kept: dict[int, dict[str, Tensor]]
) -> dict[str, Tensor]:
    parts = [kept[k] if k in kept else folder.read(k) for k in range(plan.count)]  # type: ignore[union-attr]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def run_shards(
    plan: ShardPlan,
    compute: Callable[[int, int], dict[str, Tensor]],
    folder: ShardFolder | None = None,
    *,
    resume: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Compute the shards of ``plan`` on every rank of the process group; gather on rank 0.

    Args:
        plan: the items and the shard size.
        compute: ``compute(start, stop)`` returns the arrays (each with ``stop - start`` rows)
            of items ``[start, stop)``; it must not call collectives.
        folder: where finished shards go (needed with more than one process, and for
            ``resume``); ``None`` keeps them in memory.
        resume: reuse the shards that ``folder`` already holds (same fingerprint).
        on_progress: called on rank 0 after each of its shards with the number of finished
            items (of all ranks, as the folder shows).

    Returns:
        A :class:`ShardResult`; its ``arrays`` are the joined shards on rank 0. The folder is
        kept: remove it (:meth:`ShardFolder.remove`) once the output is safe.

    Raises:
        ShardError: the folder holds another run, a rank failed (every rank raises, naming it),
            or the run was stopped (SIGTERM, a dead peer); the finished shards stay.
    """
    rank, world = process_rank()
    if world > 1 and folder is None:
        raise ShardError(f"a run over {world} processes needs a shard folder to gather in")
    todo = _agree_on_todo(plan, folder, resume, rank, world)
    mine = plan.deal(todo, rank, world)
    t0, status = time.perf_counter(), None
    kept: dict[int, dict[str, Tensor]] = {}
    with _sigterm_raises():
        try:
            kept = _compute(plan, mine, compute, folder, on_progress if rank == 0 else None)
        except _Terminated:
            raise ShardError(
                f"rank {rank}: stopped by SIGTERM (torchrun stops every process when one "
                f"fails; its summary names the failed rank); {_kept(folder)}"
            ) from None
        except Exception as err:
            if world == 1:
                raise
            status = f"{type(err).__name__}: {' '.join(str(err).split())}"
    t1 = time.perf_counter()
    statuses = _statuses(status, world, folder)
    t2 = time.perf_counter()
    failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
    if failed:
        r, s = failed[0]
        raise ShardError(f"rank {r} of {world} failed: {s}; {_kept(folder)}")
    seconds = {"compute": t1 - t0, "wait": t2 - t1}
    arrays = None
    if rank == 0:
        arrays = _assemble(plan, folder, kept)
        seconds["gather"] = time.perf_counter() - t2
    return ShardResult(arrays, len(mine), plan.count - len(todo), seconds)


def _fingerprint(
    kind: str, seed: int, extra: dict[str, Any] | None, **fields: Any
) -> dict[str, Any]:
    reserved = {"kind", "seed", *fields}
    clash = sorted(reserved & set(extra or {}))
    if clash:
        raise ValueError(f"fingerprint may not set {clash}: they are recorded already")
    return {"kind": kind, "seed": int(seed), **fields, **(extra or {})}


def _no_reserved(options: dict[str, Any], names: tuple[str, ...], instead: str) -> None:
    given = [name for name in names if name in options]
    if given:
        raise TypeError(f"{given} cannot be set in a sharded run: {instead}")


def sample_sharded(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...] | torch.Size,
    *,
    seed: int,
    shard_size: int,
    folder: str | os.PathLike[str] | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> ShardResult:
    """Draw ``shape[0]`` samples across the processes of the group, gathered on rank 0.

    Bit-identical on a CPU, whatever the number of processes, to one process calling
    ``scoresde.sample(score_fn, sde, shape, generator=torch.Generator(device).manual_seed(seed),
    batch_size=shard_size, **options)`` for samplers with a fixed step grid (and for the
    adaptive ``ode`` sampler too, since its batches are the same rows): shard ``k`` is drawn with
    ``noise_offset = k * shard_size`` (counter-based noise) by the same network calls.

    Args:
        score_fn: as for :func:`scoresde.sample` (the same model on every rank).
        sde: the forward SDE.
        shape: ``(n, *event_shape)`` of the whole run.
        seed: the run's seed (the same on every rank).
        shard_size: samples per shard, also the batch size.
        folder: the shard folder (see :class:`ShardFolder`); needed with several processes.
        resume: reuse the finished shards of an interrupted run in ``folder``.
        fingerprint: what else identifies the run for ``resume`` (e.g. the checkpoint); the
            sampler, steps, seed, shape, dtype and options are recorded already.
        on_progress: called on rank 0 with the number of finished samples.
        device: where to sample (each rank its own, e.g. ``cuda:LOCAL_RANK``).
        **options: the other arguments of :func:`scoresde.sample` (``sampler``, ``steps``,
            ``precision``, sampler options ...), but not ``generator``, ``batch_size``,
            ``noise_offset``, ``x_init``, ``return_*``.

    Returns:
        A :class:`ShardResult` whose ``arrays["samples"]`` (rank 0) holds the samples on the CPU.
    """
    _no_reserved(options, ("generator", "batch_size", "noise_offset", "x_init",
                           "return_info", "return_trajectory", "callback"),
                 "pass seed= and shard_size=")  # fmt: skip
    shape = tuple(int(s) for s in shape)
    plan = ShardPlan(shape[0], shard_size)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    recorded = {k: v for k, v in options.items() if k != "progress"}  # not part of the result
    fp = _fingerprint("samples", seed, fingerprint, event_shape=list(shape[1:]),
                      device_type=dev.type, options=recorded)  # fmt: skip

    def compute(start: int, stop: int) -> dict[str, Tensor]:
        gen = torch.Generator(device=dev).manual_seed(seed)  # one seed drawn, as in one process
        x = sample(score_fn, sde, (stop - start, *shape[1:]), generator=gen, device=dev,
                   noise_offset=start, **options)  # fmt: skip
        return {"samples": x}

    store = None if folder is None else ShardFolder(folder, fp, plan)
    return run_shards(plan, compute, store, resume=resume, on_progress=on_progress)


def log_likelihood_sharded(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor | Callable[[int, int], Tensor],
    *,
    seed: int,
    shard_size: int,
    n: int | None = None,
    folder: str | os.PathLike[str] | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> ShardResult:
    """Log-likelihoods of ``n`` data points across the processes of the group, on rank 0.

    Shard ``k`` (points ``[start, stop)``) is one :func:`scoresde.log_likelihood` call on those
    rows with the probe generator seeded ``shard_seed(seed, start)``, whoever computes it: each
    point's result is the same for any number of processes (bit for bit on a CPU). Each rank
    runs its own adaptive solves; the ranks meet only at the end.

    Args:
        score_fn: as for :func:`scoresde.log_likelihood` (the same model on every rank).
        sde: the forward SDE.
        x: the data ``(n, *event_shape)``, or ``x(start, stop)`` returning rows
            ``[start, stop)`` (e.g. dequantised with a per-shard seed), with ``n`` given.
        seed: the run's seed (the same on every rank).
        shard_size: points per shard (and per solve).
        n: the number of points when ``x`` is a function.
        folder: the shard folder (see :class:`ShardFolder`); needed with several processes.
        resume: reuse the finished shards of an interrupted run in ``folder``.
        fingerprint: what else identifies the run for ``resume`` (model, data); the seed,
            device type and options are recorded already.
        on_progress: called on rank 0 with the number of finished points.
        device: where to solve (default: ``x``'s device, else the CPU).
        **options: the other arguments of :func:`scoresde.log_likelihood` (``rtol``,
            ``atol``, ``divergence``, ``eps`` ...), but not ``generator`` or ``batch_size``.

    Returns:
        A :class:`ShardResult` whose ``arrays`` (rank 0) hold ``log_prob`` and ``nfe`` per
        point (float64, CPU).
    """
    _no_reserved(options, ("generator", "batch_size"), "pass seed= and shard_size=")
    if isinstance(x, Tensor):
        data, count = x, len(x)
        rows: Callable[[int, int], Tensor] = lambda a, b: data[a:b]  # noqa: E731
        dev = torch.device(device) if device is not None else x.device
    elif callable(x):
        if n is None:
            raise ValueError("n (the number of points) is required when x is a function")
        rows, count = x, n
        dev = torch.device(device) if device is not None else torch.device("cpu")
    else:
        raise TypeError(f"x must be a tensor or a function (start, stop) -> tensor, got {x!r}")
    plan = ShardPlan(count, shard_size)
    fp = _fingerprint("log_likelihood", seed, fingerprint, device_type=dev.type, options=options)

    def compute(start: int, stop: int) -> dict[str, Tensor]:
        xb = rows(start, stop).to(dev)
        gen = torch.Generator(device=dev).manual_seed(shard_seed(seed, start))
        res = log_likelihood(score_fn, sde, xb, generator=gen, **options)
        return {"log_prob": res.log_prob.double(), "nfe": res.nfe.double()}

    store = None if folder is None else ShardFolder(folder, fp, plan)
    return run_shards(plan, compute, store, resume=resume, on_progress=on_progress)
