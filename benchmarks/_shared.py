"""Helpers shared by the benchmark scripts: one k-diffusion loader, one table writer, atomic
writes through the library's own helper, timing and logging.

Benchmarks import it as ``from _shared import ...`` (each script runs with ``benchmarks/`` on
``sys.path``, as ``python benchmarks/<name>.py`` does).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scoresde.checkpoint import atomic_write_text

__all__ = [
    "load_kdiffusion_sampling",
    "fmt",
    "markdown_table",
    "markdown_row",
    "fmt_fixed",
    "write_text",
    "log",
    "best_of",
]


def load_kdiffusion_sampling() -> tuple[Any, str]:
    """``k_diffusion.sampling`` and how it was loaded, or ``(None, why)`` when it is missing.

    k-diffusion's package ``__init__`` imports torchvision, which cannot be installed beside the
    local CPU torch; its ``sampling.py`` needs only ``utils.append_dims``, so the module is
    loaded by path with that one helper provided.
    """
    try:
        import k_diffusion.sampling as kds  # type: ignore[import-not-found]

        return kds, "import k_diffusion.sampling"
    except Exception:
        pass
    spec0 = importlib.util.find_spec("k_diffusion")
    if spec0 is None or not spec0.submodule_search_locations:
        return None, "k-diffusion not installed (pip install --no-deps k-diffusion; torchsde)"
    root = Path(list(spec0.submodule_search_locations)[0])
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(v: torch.Tensor, n: int) -> torch.Tensor:
        return v[(...,) + (None,) * (n - v.ndim)]

    utils.append_dims = append_dims  # type: ignore[attr-defined]
    pkg.utils = utils  # type: ignore[attr-defined]
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", root / "sampling.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = mod
    spec.loader.exec_module(mod)
    return mod, "sampling.py loaded by path (utils.append_dims provided; torchvision missing)"


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats in ``digits`` significant figures, ``nan`` for non-finite values."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.{digits}g}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A Markdown table of ``rows`` under ``header`` (cells through :func:`fmt`)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c, digits) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temporary file, then rename), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def log(msg: str) -> None:
    """A progress line on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def best_of(n: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """The fastest wall time of ``n`` calls of ``fn(*args, **kwargs)`` and the last result."""
    best, out = math.inf, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, out


def markdown_row(cells: Sequence[Any], digits: int = 3) -> str:
    """One row of a Markdown table (cells through :func:`fmt`), for tables printed row by row."""
    return "| " + " | ".join(fmt(c, digits) for c in cells) + " |"


def fmt_fixed(v: Any, decimals: int = 1) -> str:
    """A table cell: floats with ``decimals`` digits after the point, ``nan`` if non-finite."""
    if isinstance(v, float):
        return f"{v:.{decimals}f}" if math.isfinite(v) else "nan"
    return str(v)
