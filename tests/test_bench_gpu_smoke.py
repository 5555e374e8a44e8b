"""Smoke test of benchmarks/gpu.py: every part runs on the CPU at tiny sizes and reports.

The driver runs in this process (no subprocess): ``gpu.main`` with ``--smoke`` on small
synthetic Fashion-MNIST IDX files, so the fashion part runs too.
"""

from __future__ import annotations

import importlib.util
import json
import math
import runpy
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import scoresde

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:  # the benchmarks import their helpers as top-level modules
    sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

import gpu  # noqa: E402
import gpu_common  # noqa: E402
import gpu_fashion  # noqa: E402
import gpu_report  # noqa: E402

PART_SCRIPTS = {"train": "gpu_train.py", "sample": "gpu_sample.py",
                "likelihood": "gpu_likelihood.py", "fashion": "gpu_fashion.py"}  # fmt: skip


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes (the Fashion-MNIST format)."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path) -> Path:
    """512 training and 64 test images of noise with labels 0-9, as Fashion-MNIST files."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in (("train", 512), ("t10k", 64)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def _ok(rows: list[dict]) -> list[dict]:
    failed = [r for r in rows if "error" in r]
    assert not failed, f"measurements failed: {failed}"
    return rows


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("gpu_smoke")
    out, data = root / "out", _fake_fashion(root / "fashion")
    argv = ["--smoke", "--device", "cpu", "--part", "all", "--out", str(out)]
    returned = gpu.main([*argv, "--data-dir", str(data)])
    written = json.loads((out / "gpu.json").read_text())
    assert written == returned
    return written, out


def test_meta_and_markdown(report: tuple[dict, Path]) -> None:
    data, out = report
    for part in ("train", "sample", "likelihood", "fashion"):
        assert "error" not in data[part], data[part].get("error")
        meta = data[part]["meta"]
        assert meta["device"] == "CPU" and meta["smoke"] is True
        assert meta["torch"] and meta["date_utc"].endswith("UTC")
    md = (out / "gpu.md").read_text()
    assert md == gpu_report.markdown(data)
    assert md.startswith("## GPU performance (issue #6)")
    for title in ("Training throughput", "Sampler overhead", "Likelihood", "Fashion-MNIST"):
        assert f"### {title}" in md
    assert "| scoresde Trainer | 3x8x8 | 4 |" in md and "| fast | 3 | 4 |" in md
    assert not list(out.glob("*.tmp")), "atomic writes leave no temporary files"


def test_train_part(report: tuple[dict, Path]) -> None:
    part = report[0]["train"]
    rows = _ok(part["rows"])
    names = {(r["name"], tuple(r["shape"])) for r in rows}
    assert ("scoresde Trainer", (3, 8, 8)) in names
    assert ("scoresde Trainer", (1, 28, 28)) in names
    assert ("bare loop", (3, 8, 8)) in names and ("bare loop + clip + EMA", (3, 8, 8)) in names
    assert all(_positive(r["images_per_s"]) and _positive(r["params_m"]) for r in rows)
    if part["diffusers"].startswith("diffusers not installed"):
        assert not any(r["name"].startswith("diffusers") for r in rows)
    else:
        assert sum(r["name"].startswith("diffusers UNet2DModel") for r in rows) == 2


def test_sample_part(report: tuple[dict, Path]) -> None:
    part = report[0]["sample"]
    rows = _ok(part["rows"])
    fixed = [s for s in scoresde.available_samplers() if s != "ode"]
    got = {(r["sampler"], r["steps"]) for r in rows}
    assert {(s, n) for s in fixed for n in (2, 3)} <= got
    for r in rows:
        assert r["nfe"] >= r["steps"] and _positive(r["wall_ms"]) and _positive(r["net_forward_ms"])
        assert math.isclose(
            r["overhead_pct"], 100 * (r["wall_ms"] / (r["nfe"] * r["net_forward_ms"]) - 1)
        )
    if not part["diffusers"].startswith("diffusers not installed"):
        assert {("diffusers DPMSolverMultistep", 2), ("diffusers DPMSolverMultistep", 3)} <= got


def test_likelihood_part(report: tuple[dict, Path]) -> None:
    part = report[0]["likelihood"]
    rows = {r["method"]: r for r in _ok(part["rows"])}
    ours = rows["scoresde log_likelihood"]
    assert ours["calls"] > 0 and _positive(ours["fwd_vjp_ms"]) and _positive(ours["bpd_mean"])
    if importlib.util.find_spec("scipy") is None:
        assert part["scipy"].startswith("SciPy baseline skipped")
        return
    assert "scipy" not in part, part.get("scipy")  # SciPy is there: the baseline must run
    ref = rows["SciPy RK45 round trip"]
    assert ref["calls"] > 0 and _positive(ref["call_vs_fwd_vjp"])
    # same network, same data: the two estimates agree to the Hutchinson noise
    assert abs(ref["bpd_mean"] - ours["bpd_mean"]) < 0.5


def test_fashion_part(report: tuple[dict, Path]) -> None:
    data, out = report
    part = data["fashion"]
    assert "skipped" not in part, part.get("skipped")
    run = part["run"]
    assert run["steps"] == 3 and len(run["loss_history"]) == 1
    assert 0 <= run["classifier_accuracy"] <= 1 and run["reference_frechet"] >= 0
    rows = _ok(part["rows"])
    assert [(q["sampler"], q["steps"]) for q in rows] == [
        ("fast", 2),
        ("fast", 3),
        ("euler_maruyama", 4),
    ]
    assert all(q["frechet"] >= 0 and 0 < q["confidence"] <= 1 for q in rows)
    assert _positive(part["bpd"]["mean"]) and part["bpd"]["n"] == 2
    assert part["grid"].startswith("grid skipped") or (out / "fashion_grid.png").stat().st_size


def test_missing_fashion_files_skip_the_part(tmp_path: Path) -> None:
    part = gpu_common.Part(lambda result: None)
    cpu = torch.device("cpu")
    got = gpu_fashion.part_fashion(gpu_common.SMOKE, cpu, 0.1, str(tmp_path), tmp_path, part)
    assert got["skipped"].startswith("Fashion-MNIST files not found") and not got["rows"]
    assert gpu_report.md_fashion(got) == [f"- skipped: {got['skipped']}"]


def test_unknown_part_is_refused() -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(["--part", "trian"])
    assert gpu.parse_args(["--part", "sample,likelihood"]).parts == ("sample", "likelihood")


@pytest.mark.parametrize("name", sorted(PART_SCRIPTS))
def test_part_script_runs_its_part(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, bool]] = []

    def run_part(name: str, sizes: object, device: object, args: object, report: object) -> None:
        ran.append((name, args.smoke))  # type: ignore[attr-defined]

    monkeypatch.setattr(gpu, "run_part", run_part)
    argv = [PART_SCRIPTS[name], "--smoke", "--device", "cpu", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCH / PART_SCRIPTS[name]), run_name="__main__")
    assert ran == [(name, True)]


def test_merge_combines_runs(report: tuple[dict, Path], tmp_path: Path) -> None:
    data, out = report
    merged = gpu.main(
        ["--merge", str(out / "gpu.json"), str(out / "gpu.json"), "--out", str(tmp_path)]
    )
    for part in ("train", "sample", "likelihood", "fashion"):
        assert len(merged[part]["rows"]) == 2 * len(data[part]["rows"])
        assert "warning" not in merged[part]  # one device
    assert json.loads((tmp_path / "gpu.json").read_text()) == merged
    assert (tmp_path / "gpu.md").read_text().startswith("## GPU performance (issue #6)")


def test_a_part_run_again_adds_its_rows(report: tuple[dict, Path], tmp_path: Path) -> None:
    data = report[0]
    (tmp_path / "gpu.json").write_text(json.dumps({"likelihood": data["likelihood"]}))
    again = gpu.main(["--smoke", "--device", "cpu", "--part", "likelihood", "--out", str(tmp_path)])
    assert len(again["likelihood"]["rows"]) == 2 * len(data["likelihood"]["rows"])
    assert set(again) == {"likelihood", "meta"}
