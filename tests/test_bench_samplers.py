"""Smoke test of benchmarks/samplers_quality.py and samplers_overhead.py at tiny sizes.

Both run in this process (no subprocess). The peers (diffusers, k-diffusion) take part when
they are installed, as in ``make bench``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:  # the benchmarks import their helpers as top-level modules
    sys.path.insert(0, str(BENCH))

import samplers_overhead  # noqa: E402
import samplers_peers  # noqa: E402
import samplers_quality as quality  # noqa: E402


def test_quality_smoke_run(tmp_path: Path) -> None:
    results = quality.main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "samplers_quality.json").read_text()) == results
    ks, dsch = samplers_peers.load_peers()
    assert set(results["targets"]) == set(samplers_peers.TARGETS)
    for res in results["targets"].values():
        rows = res["rows"]
        assert all(r["budget"] == 5 for r in rows)
        sweep = {(r["sampler"], r["schedule"]) for r in rows if r["lib"] == "scoresde"}
        assert sweep == {(s, k) for s in quality.SAMPLERS for k in quality.SCHEDULES}
        searched = [r for r in rows if r["lib"] == "scoresde-search"]
        assert len(searched) == len(quality.FEW_STEP) * len(quality.search_space())
        k_rows = [r for r in rows if r["lib"] == "k-diffusion"]
        assert len(k_rows) == (0 if ks is None else 2 * len(samplers_peers.K_SAMPLERS))
        assert len([r for r in rows if r["lib"] == "diffusers"]) == 2 * len(dsch)
        for lib in ("scoresde-winner", "scoresde-fast"):
            (row,) = [r for r in rows if r["lib"] == lib]
            assert row["seed"] == quality.EVAL_SEED and row["nfe"] <= 5
        assert res["winners"]["5"]["lib"] == "scoresde-winner"
        fast = next(r for r in rows if r["lib"] == "scoresde-fast")
        assert math.isfinite(fast["tv"]) and 0 <= fast["tv"] <= 1 and res["floor"]["tv"] >= 0
    md = (tmp_path / "samplers_quality.md").read_text()
    assert md.startswith("\n### ring2d (n = 128; floor: TV ") and "\n### aniso32d (n = 128" in md
    assert "| NFE | library | sampler | schedule | NFE used | mode TV | Fréchet | SW2 |" in md
    assert "| 5 | scoresde-fast (best tv) | fast | default | " in md
    assert "| library | sampler | schedule | NFE 5 |\n|---|---|---|---|\n" in md
    assert md.rstrip().splitlines()[-1].startswith("Total runtime: ")


def test_metric_cells() -> None:
    assert [quality.metric(v) for v in (0.01234, 4.2e-4, math.inf)] == ["0.0123", "4.2e-04", "inf"]


def test_overhead_small(tmp_path: Path) -> None:
    ks, dsch = samplers_peers.load_peers()
    got = samplers_overhead.overhead(ks, dsch, steps=3, batch=8)
    ours = {f"scoresde:{n}" for n in samplers_overhead.OURS}
    peers = {f"k-diffusion:{n}" for n in samplers_overhead.K_LOOPS} if ks is not None else set()
    peers |= {f"diffusers:{n}" for n in samplers_overhead.DIFFUSERS_LOOPS if n in dsch}
    assert set(got) == ours | peers
    assert all(math.isfinite(v) and v > 0 for v in got.values())
    md = samplers_overhead.report(got)
    assert "| loop | µs / step |\n|---|---|\n| scoresde:euler | " in md
