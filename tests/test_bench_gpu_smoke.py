"""Smoke test of benchmarks/gpu.py: every part runs on the CPU at tiny sizes and reports."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import scoresde

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("_bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _ok(rows: list[dict]) -> list[dict]:
    failed = [r for r in rows if "error" in r]
    assert not failed, f"measurements failed: {failed}"
    return rows


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("gpu_smoke")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--part", "all"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), out


def test_meta_and_markdown(report: tuple[dict, Path]) -> None:
    data, out = report
    for part in ("train", "sample", "likelihood", "fashion"):
        assert "error" not in data[part], data[part].get("error")
        meta = data[part]["meta"]
        assert meta["device"] == "CPU" and meta["smoke"] is True
        assert meta["torch"] and meta["date_utc"].endswith("UTC")
    md = (out / "gpu.md").read_text()
    assert md.startswith("## GPU performance (issue #6)")
    for title in ("Training throughput", "Sampler overhead", "Likelihood", "Fashion-MNIST"):
        assert f"### {title}" in md


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
    if "scipy" in part:
        assert part["scipy"].startswith("SciPy baseline skipped")
    else:
        ref = rows["SciPy RK45 round trip"]
        assert ref["calls"] > 0 and _positive(ref["call_vs_fwd_vjp"])
        # same network, same data: the two estimates agree to the Hutchinson noise
        assert abs(ref["bpd_mean"] - ours["bpd_mean"]) < 0.5


def test_fashion_part(report: tuple[dict, Path]) -> None:
    data, out = report
    part = data["fashion"]
    if "skipped" in part:
        assert "Fashion-MNIST files not found" in part["skipped"]
        pytest.skip(part["skipped"])
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


def test_unknown_part_is_refused() -> None:
    gpu = _load_script()
    with pytest.raises(SystemExit):
        gpu.parse_args(["--part", "trian"])
    assert gpu.parse_args(["--part", "sample,likelihood"]).parts == ("sample", "likelihood")


def test_merge_combines_runs(report: tuple[dict, Path], tmp_path: Path) -> None:
    data, out = report
    gpu = _load_script()
    merged = gpu.main(
        ["--merge", str(out / "gpu.json"), str(out / "gpu.json"), "--out", str(tmp_path)]
    )
    for part in ("train", "sample", "likelihood"):
        assert len(merged[part]["rows"]) == 2 * len(data[part]["rows"])
    assert json.loads((tmp_path / "gpu.json").read_text()) == merged
    assert (tmp_path / "gpu.md").read_text().startswith("## GPU performance (issue #6)")
