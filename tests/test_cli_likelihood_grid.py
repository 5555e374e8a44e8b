"""``scoresde likelihood --fit-grid NFE``: a fitted fixed grid from the command line (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scoresde import cli


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def test_likelihood_fit_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "moons"
    assert run("train", "--data", "moons", "--out", out, "--steps", 20, "--batch-size", 64,
               "--seed", 3, "--device", "cpu", "--set", "sample_n=0", "--set",
               "data_kwargs.n=500", "--set", "model_kwargs={hidden: 16, depth: 1}",
               "--no-progress") == 0  # fmt: skip
    capsys.readouterr()
    js, npz = tmp_path / "ll.json", tmp_path / "pts.npz"
    argv = ("likelihood", "--ckpt", out, "--n", 24, "--batch-size", 10, "--fit-grid", 18)
    assert run(*argv, "--out", js, "--points", npz) == 0
    printed = capsys.readouterr().out
    assert "fixed grid: 18 batched score calls per solve, fitted on 24 points" in printed
    result = json.loads(js.read_text())
    grid = result["grid"]
    assert grid["nfe"] == 18 and grid["method"] == "expint4" and len(grid["nodes_u"]) == 18
    assert np.all(np.diff(grid["nodes_u"]) > 0) and grid["fit_calls"] > 0
    assert grid["calibration_error_bits_per_dim"] <= grid["uniform_error_bits_per_dim"]
    assert result["nfe_mean"] == 18.0 and np.isfinite(result["nll_nats"])
    assert (np.load(npz)["nfe"] == 18).all()  # every point: the same calls, any chunk

    # the same run again gives the same grid and log-densities (seeded fit and probes)
    js2 = tmp_path / "ll2.json"
    assert run(*argv, "--out", js2) == 0
    again = json.loads(js2.read_text())
    assert again["grid"] == grid and again["nll_nats"] == result["nll_nats"]

    # against the adaptive solver at a tight tolerance: close at 18 calls per point
    js3 = tmp_path / "ll3.json"
    assert run("likelihood", "--ckpt", out, "--n", 24, "--rtol", 1e-7, "--atol", 1e-7,
               "--out", js3) == 0  # fmt: skip
    tight = json.loads(js3.read_text())
    assert abs(tight["nll_nats"] - result["nll_nats"]) < 0.05
    assert tight["nfe_mean"] > 18

    # a Runge-Kutta grid: dopri5, 6 calls a step, as close
    js4 = tmp_path / "ll4.json"
    assert run(*argv, "--grid-method", "dopri5", "--out", js4) == 0
    rk = json.loads(js4.read_text())
    assert rk["grid"]["method"] == "dopri5" and len(rk["grid"]["nodes_u"]) == 4
    assert rk["nfe_mean"] == 18.0
    assert abs(tight["nll_nats"] - rk["nll_nats"]) < 0.05

    capsys.readouterr()
    assert run("likelihood", "--ckpt", out, "--n", 4, "--fit-grid", 1) == 1
    assert "--fit-grid: nfe=1 is below one expint4 step" in capsys.readouterr().err
    assert (
        run("likelihood", "--ckpt", out, "--n", 4, "--fit-grid", 3, "--grid-method", "dopri5") == 1
    )
    assert "--fit-grid: nfe=3 is below one dopri5 step" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_grid_under_torchrun_matches_one_process(tmp_path: Path) -> None:
    # rank 0 fits, the grid is broadcast: the same grid and bit-identical log-densities
    from helpers import run_scoresde

    out = tmp_path / "moons"
    run_scoresde("train", "--data", "moons", "--out", out, "--steps", 10, "--batch-size", 32,
                 "--device", "cpu", "--set", "sample_n=0", "--set", "data_kwargs.n=300",
                 "--set", "model_kwargs={hidden: 16, depth: 1}", "--no-progress")  # fmt: skip
    results = []
    for nproc in (0, 2):
        js = tmp_path / f"ll{nproc}.json"
        run_scoresde("likelihood", "--ckpt", out, "--num-samples", 40, "--batch-size", 8,
                     "--fit-grid", 18, "--out", js, "--no-progress", nproc=nproc)  # fmt: skip
        results.append(json.loads(js.read_text()))
    one, two = results
    assert two["processes"] == 2 and two["grid"] == one["grid"]
    assert two["nll_nats"] == one["nll_nats"] and two["nfe_mean"] == 18.0
