"""Crash-safe training checkpoints: safetensors weights plus the rest, verified on load.

A checkpoint is a directory ``<run>/checkpoints/step_<N>/`` holding

* ``model.safetensors`` and ``ema.safetensors``: the raw and the EMA network weights;
* ``state.pt``: everything else needed to continue exactly (optimizer, grad scaler, step,
  RNG states of every rank, data order), loaded with ``torch.load(weights_only=True)``;
* ``config.json``: the training configuration that built the run;
* ``manifest.json``: written last; the format tag, the step, and the size and SHA-256 of every
  other file.

The directory is assembled under a temporary name and renamed into place, so a crash leaves
either the previous checkpoint set or the complete new one. Loading checks the manifest, so a
truncated, corrupted or foreign checkpoint is refused with a :class:`CheckpointError` that says
which file is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_checkpoint",
    "prune_checkpoints",
    "atomic_write_bytes",
    "atomic_write_text",
]

FORMAT = "scoresde-checkpoint"
"""The format tag every manifest carries."""
FORMAT_VERSION = 1
"""The manifest version this code reads and writes."""

_MANIFEST = "manifest.json"
_T = TypeVar("_T")
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupted or not a scoresde checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    """The checkpoint directory."""
    step: int
    """Number of optimizer steps taken when it was written."""
    config: dict[str, Any]
    """The training configuration (``config.json``)."""
    model: dict[str, Tensor]
    """Raw network weights (CPU tensors)."""
    ema: dict[str, Tensor]
    """EMA network weights (CPU tensors); use these for sampling."""
    state: dict[str, Any] | None
    """Optimizer, RNG and data-order state, or ``None`` when loaded with ``state=False``."""


# ------------------------------------------------------------------------------------------------
# atomic file writing


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _new_temp(parent: Path, prefix: str, suffix: str, make: Callable[[str], _T]) -> tuple[_T, Path]:
    """Create a new, uniquely named file or folder ``parent/<prefix><random><suffix>``."""
    for _ in range(100):
        name = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return make(str(name)), name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary name in {str(parent)!r}")


def _new_temp_file(parent: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Open a new temporary file for writing; its mode is what a plain ``open()`` gives.

    ``tempfile.mkstemp`` makes files ``0600`` whatever the umask, and a file renamed into place
    keeps that. Creating it with mode ``0666`` lets the kernel apply the umask (and a folder's
    default ACL) exactly as for ``open(path, "w")``, with no read-and-restore of the
    process-wide umask (which another thread could observe).
    """
    return _new_temp(parent, prefix, suffix, lambda name: os.open(name, _FILE_FLAGS, 0o666))


def _new_temp_dir(parent: Path, prefix: str) -> Path:
    """Make a new temporary folder; its mode is what a plain ``mkdir`` gives (not ``0700``)."""
    return _new_temp(parent, prefix, "", lambda name: os.mkdir(name, 0o777))[1]


def _write_fd(fd: int, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to the open file ``fd``, give it ``mode`` if set, fsync and close it."""
    with os.fdopen(fd, "wb") as fh:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fh.fileno(), mode)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (mode as a plain ``open()``) and fsync it."""
    _write_fd(os.open(path, _FILE_FLAGS, 0o666), data)


def _existing_mode(path: Path) -> int | None:
    """The permission bits of the regular file ``path``, or ``None`` if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the permissions a plain ``open(path, "wb")`` would give it: those of the
    file it replaces, else ``0666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path.parent, f".{path.name}.")
    try:
        _write_fd(fd, data, _existing_mode(path))  # open() keeps an existing file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (temporary file + rename)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cpu_weights(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies that do not share storage (safetensors requires it)."""
    out: dict[str, Tensor] = {}
    for name, value in weights.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"weight {name!r} must be a tensor, got {type(value).__name__}")
        out[name] = value.detach().to("cpu", copy=True).contiguous()
    return out


# ------------------------------------------------------------------------------------------------
# saving


def save_checkpoint(
    root: str | os.PathLike[str],
    step: int,
    *,
    model: Mapping[str, Tensor],
    ema: Mapping[str, Tensor],
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint ``root/step_<step>`` atomically and return its path.

    Args:
        root: the folder holding the checkpoints of one run (``<run>/checkpoints``).
        step: the optimizer step count (names the checkpoint).
        model: raw network weights (a state dict of tensors).
        ema: EMA network weights (a state dict of tensors).
        state: the rest (optimizer state, RNG states, ...); only tensors, numbers, strings,
            lists, tuples and dicts, so that it loads with ``weights_only=True``.
        config: the JSON-serialisable training configuration.
        keep_last: if given, delete all but the newest ``keep_last`` checkpoints afterwards.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = _new_temp_dir(root, f".tmp-{final.name}-")
    try:
        meta = {"format": FORMAT, "step": str(step)}
        # safetensors' own save_file writes 0600 files: write its bytes like every other file
        _write_new(tmp / "model.safetensors", save(_cpu_weights(model), metadata=meta))
        _write_new(tmp / "ema.safetensors", save(_cpu_weights(ema), metadata=meta))
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        _write_new(tmp / "state.pt", buf.getvalue())
        _write_new(tmp / "config.json", _json_bytes(config))
        files = {}
        for f in sorted(tmp.iterdir()):
            files[f.name] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step, "files": files}
        _write_new(tmp / _MANIFEST, _json_bytes(manifest))
        _fsync_dir(tmp)
        _replace_dir(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        prune_checkpoints(root, keep_last)
    return final


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(value), indent=2, sort_keys=True).encode("utf-8")


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first, then removed."""
    if not dst.exists():
        os.rename(src, dst)
        return
    trash = _new_temp_dir(dst.parent, f".old-{dst.name}-")
    os.rename(dst, trash / dst.name)
    os.rename(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def prune_checkpoints(root: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints in ``root`` (and stale temp dirs).

    Returns the deleted paths.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(root)
    removed = []
    for stale in root.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


# ------------------------------------------------------------------------------------------------
# finding and loading


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint directories ``step_<N>`` in ``root``, oldest first (unverified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _STEP_DIR.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint directory in ``root``, or ``None`` when there is none."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Find the checkpoint directory a path points at.

    Accepts a run folder (newest checkpoint), a ``checkpoints`` folder, a checkpoint folder or a
    file inside one; raises :class:`CheckpointError` when none is found.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {str(p)!r} does not exist")
    if p.is_file():
        if (p.parent / _MANIFEST).is_file():
            return p.parent
        raise CheckpointError(
            f"{str(p)!r} is not part of a scoresde checkpoint (no {_MANIFEST} beside it); "
            f"pass a checkpoint written by `scoresde train`"
        )
    if (p / _MANIFEST).is_file() or _STEP_DIR.match(p.name):
        return p
    for folder in (p / "checkpoints", p):
        last = latest_checkpoint(folder)
        if last is not None:
            return last
    raise CheckpointError(
        f"no scoresde checkpoint in {str(p)!r} (looked for {_MANIFEST} and "
        f"checkpoints/step_*/); pass a run folder written by `scoresde train`"
    )


def _read_manifest(ckpt: Path) -> dict[str, Any]:
    mpath = ckpt / _MANIFEST
    if not mpath.is_file():
        raise CheckpointError(
            f"{str(ckpt)!r} is not a scoresde checkpoint: {_MANIFEST} is missing "
            f"(an interrupted write or a foreign folder)"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} has an unreadable {_MANIFEST}: {err}"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(ckpt)!r} is not a scoresde checkpoint (manifest format is "
            f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"expected {FORMAT!r})"
        )
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} has format version {manifest.get('version')!r}; this "
            f"scoresde reads version {FORMAT_VERSION}"
        )
    return manifest


def _verify(ckpt: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    needed = {"model.safetensors", "ema.safetensors", "state.pt", "config.json"}
    if not isinstance(files, dict) or not needed <= set(files):
        raise CheckpointError(f"checkpoint {str(ckpt)!r} has an incomplete manifest")
    for name, info in files.items():
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(ckpt)!r} is incomplete: {name} is missing")
        size = f.stat().st_size
        if size != info.get("bytes"):
            raise CheckpointError(
                f"checkpoint {str(ckpt)!r} is corrupted: {name} has {size} bytes, the manifest "
                f"says {info.get('bytes')} (truncated or modified); delete this checkpoint and "
                f"use an earlier one"
            )
        if _sha256(f) != info.get("sha256"):
            raise CheckpointError(
                f"checkpoint {str(ckpt)!r} is corrupted: the SHA-256 of {name} does not match "
                f"the manifest; delete this checkpoint and use an earlier one"
            )


def _load_weights(f: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(f), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:  # pragma: no cover - hash caught it
        raise CheckpointError(f"cannot read weights {str(f)!r}: {err}") from err


def load_checkpoint(path: str | os.PathLike[str], *, state: bool = True) -> Checkpoint:
    """Load and verify a checkpoint (see :func:`resolve_checkpoint` for accepted paths).

    Every file is checked against the manifest's size and SHA-256 before it is read.
    ``state=False`` skips the optimizer/RNG state (enough for sampling).

    Raises:
        CheckpointError: missing, incomplete, corrupted or foreign checkpoint.
    """
    ckpt = resolve_checkpoint(path)
    manifest = _read_manifest(ckpt)
    _verify(ckpt, manifest)
    config = json.loads((ckpt / "config.json").read_text())
    extra: dict[str, Any] | None = None
    if state:
        try:
            extra = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # pragma: no cover - hash checked; unpickling refused
            raise CheckpointError(f"cannot read {str(ckpt / 'state.pt')!r}: {err}") from err
    return Checkpoint(
        path=ckpt,
        step=int(manifest["step"]),
        config=config,
        model=_load_weights(ckpt / "model.safetensors"),
        ema=_load_weights(ckpt / "ema.safetensors"),
        state=extra,
    )
