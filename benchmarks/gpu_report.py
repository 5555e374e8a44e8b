"""The one report writer of ``benchmarks/gpu.py``: ``gpu.json`` (every number) and ``gpu.md``.

``gpu.md`` holds one Markdown table per part for ``benchmarks/RESULTS.md``, headed by the
device, torch version and UTC date of the run. A ``gpu.json`` already in the output folder is
kept: a part run again adds its rows after the earlier ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import scoresde
from _shared import fmt_fixed, markdown_table, write_text

PARTS = ("train", "sample", "likelihood", "fashion")


def meta(device: torch.device, smoke: bool) -> dict[str, Any]:
    """Device name, versions and date of this run."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "scoresde": scoresde.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": smoke,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "argv": sys.argv[1:],
    }


def as_json(obj: Any) -> Any:
    """Dataclasses, tuples and tensors as JSON-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: as_json(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): as_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_json(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; floats with one decimal unless formatted already."""
    return markdown_table(header, [[fmt_fixed(c) for c in r] for r in rows]).split("\n")


def errors(rows: list[Any]) -> list[str]:
    """Lines for the measurements that failed."""
    return [f"- {r['name']}: **error** {r['error']}" for r in rows if "error" in r]


def ok_rows(part: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``part`` whose measurement did not fail."""
    return [r for r in part["rows"] if "error" not in r]


def md_train(part: dict[str, Any]) -> list[str]:
    """Training-throughput table."""
    lines = table(
        ["what", "shape", "batch", "params (M)", "compile", "images/s", "ms/step"],
        [[r["name"], "x".join(map(str, r["shape"])), r["batch"], fmt_fixed(r["params_m"], 2),
          r["compiled"], r["images_per_s"], fmt_fixed(r["step_ms"], 2)] for r in ok_rows(part)],
    )  # fmt: skip
    return lines + errors(part["rows"]) + [f"- diffusers: {part.get('diffusers', '')}"]


def md_sample(part: dict[str, Any]) -> list[str]:
    """Sampler-overhead table."""
    lines = table(
        ["sampler", "steps", "NFE", "wall (ms)", "net fwd (ms)", "overhead vs net (%)",
         "overhead vs score (%)"],
        [[r["sampler"], r["steps"], r["nfe"], r["wall_ms"], fmt_fixed(r["net_forward_ms"], 2),
          r["overhead_pct"], r["overhead_vs_score_pct"]] for r in ok_rows(part)],
    )  # fmt: skip
    return lines + errors(part["rows"]) + [f"- diffusers: {part.get('diffusers', '')}"]


def md_likelihood(part: dict[str, Any]) -> list[str]:
    """Likelihood table."""
    lines = table(
        ["method", "batch", "rtol", "calls", "NFE/sample", "wall (s)", "ms/call",
         "fwd+VJP (ms)", "call / (fwd+VJP)", "bits/dim", "note"],
        [[r["method"], r["batch"], f"{r['rtol']:g}", r["calls"], r["nfe_mean"],
          fmt_fixed(r["wall_s"], 2), r["per_call_ms"], r["fwd_vjp_ms"],
          fmt_fixed(r["call_vs_fwd_vjp"], 2), fmt_fixed(r["bpd_mean"], 3), r["note"]]
         for r in ok_rows(part)],
    )  # fmt: skip
    return lines + errors(part["rows"]) + ([f"- {part['scipy']}"] if "scipy" in part else [])


def md_fashion_run(part: dict[str, Any]) -> list[str]:
    """The Fashion-MNIST run's summary lines: training, classifier, bits/dim, grid."""
    run = part["run"]
    last_loss = fmt_fixed(run["loss_history"][-1][1], 4) if run["loss_history"] else "n/a"
    lines = [
        f"- trained {run['steps']} steps of batch {run.get('batch', '')} in "
        f"{run['train_seconds']:.0f} s ({run['images_per_s']:.0f} images/s including "
        f"compilation, {run['params_m']:.2f}M params, compile={run['compiled']}); "
        f"last loss {last_loss}",
        f"- classifier test accuracy {run['classifier_accuracy']:.3f}; reference (as many "
        f"training images vs test) Frechet {run['reference_frechet']:.2f}, confidence "
        f"{run['reference_confidence']:.3f}",
    ]
    bpd = part.get("bpd")
    if isinstance(bpd, dict) and "error" not in bpd:
        lines.append(
            f"- test bits/dim {bpd['mean']:.3f} +- {fmt_fixed(bpd['sem'], 3)} on {bpd['n']} "
            f"images (NFE/sample {bpd['nfe_mean']:.0f}, {bpd['seconds']:.0f} s)"
        )
    elif isinstance(bpd, dict):
        lines.append(f"- test bits/dim: **error** {bpd['error']}")
    return lines + [f"- grid: {part.get('grid') or 'not written'}"]


def md_fashion(part: dict[str, Any]) -> list[str]:
    """Fashion-MNIST run summary and quality table."""
    if "skipped" in part:
        return [f"- skipped: {part['skipped']}"]
    if "run" not in part:
        return []
    quality = table(
        ["sampler", "steps", "NFE", "samples", "seconds", "Frechet", "confidence"],
        [[q["sampler"], q["steps"], q["nfe"], q["n"], q["seconds"], fmt_fixed(q["frechet"], 2),
          fmt_fixed(q["confidence"], 3)] for q in ok_rows(part)],
    )  # fmt: skip
    return md_fashion_run(part) + [""] + quality + errors(part["rows"])


TITLES: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "train": ("Training throughput (bf16 autocast, channels-last, fused AdamW)", md_train),
    "sample": ("Sampler overhead (batch 256, bf16)", md_sample),
    "likelihood": ("Likelihood (fp32, Hutchinson)", md_likelihood),
    "fashion": ("Fashion-MNIST run", md_fashion),
}
"""Each part's section title in ``gpu.md`` and the function that renders its lines."""


def markdown(report: dict[str, Any]) -> str:
    """The ``benchmarks/RESULTS.md`` fragment of every part in ``report``."""
    out = ["## GPU performance (issue #6)", ""]
    for key, (title, render) in TITLES.items():
        if key not in report:
            continue
        m = report[key]["meta"]
        out += [f"### {title}", "", f"{m['device']}, torch {m['torch']}, {m['date_utc']}"
                + (" (SMOKE RUN: sizes are tiny, numbers mean nothing)" if m["smoke"] else ""),
                ""]  # fmt: skip
        failed, warning = report[key].get("error"), report[key].get("warning")
        out += render(report[key]) + ([f"- **part error** {failed}"] if failed else [])
        out += ([f"- **warning** {warning}"] if warning else []) + [""]
    return "\n".join(out)


def merge_part(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the rows of an earlier run of the same part kept before its own."""
    if not old:
        return new
    merged = {**old, **new, "rows": old.get("rows", []) + new.get("rows", [])}
    devices = sorted({old["meta"]["device"], new["meta"]["device"]})
    if len(devices) > 1:
        merged["warning"] = f"rows measured on different devices: {devices}"
    return merged


class Report:
    """``gpu.json`` and ``gpu.md`` in the output folder, rewritten after every part.

    A ``gpu.json`` already in the folder is kept: a part run again adds its rows after the
    earlier ones (so ``--compile off`` and ``--compile only`` runs of ``train`` combine).
    """

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta = out, meta
        out.mkdir(parents=True, exist_ok=True)
        path = out / "gpu.json"
        self.earlier: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.data: dict[str, Any] = dict(self.earlier)

    def save(self, part: str, result: dict[str, Any]) -> None:
        """Record ``result`` as ``part`` (with this run's meta) and rewrite both files."""
        new = {"meta": self.meta, **as_json(result)}
        self.data[part] = merge_part(self.earlier.get(part), new)
        self.data["meta"] = self.meta
        self.write()

    def merge_file(self, path: Path) -> None:
        """Add every part of another run's ``gpu.json`` (e.g. one device call's results)."""
        other = json.loads(Path(path).read_text())
        for part in PARTS:
            if part in other:
                self.data[part] = merge_part(self.data.get(part), other[part])
        self.data["meta"] = other.get("meta", self.meta)
        self.write()

    def write(self) -> None:
        """Rewrite ``gpu.json`` and ``gpu.md`` (each atomically)."""
        write_text(self.out / "gpu.json", json.dumps(self.data, indent=1))
        write_text(self.out / "gpu.md", markdown(self.data))
