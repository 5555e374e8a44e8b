"""`scoresde distill`, `train --objective consistency`, `sample --sampler consistency`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoresde import cli
from scoresde.train import load_trained

TINY = ["--set", "model_kwargs={hidden: 16, depth: 1}", "--set", "data_kwargs.n=1000",
        "--batch-size", 64, "--device", "cpu", "--log-every", 10, "--no-progress"]  # fmt: skip


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def _one_line_error(capsys: pytest.CaptureFixture, message: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


def test_distill_sample_resume_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher, student = tmp_path / "teacher", tmp_path / "cd"
    # a VP teacher that only reaches sigma(T) = 3.6: a student on EDM's [0.002, 80] cannot use it
    assert run("train", "--data", "moons", "--out", teacher, "--steps", 20, "--set",
               "sde_kwargs={beta_max: 5.0}", "--set", "sample_n=0", *TINY) == 0  # fmt: skip
    assert run("distill", "--teacher", teacher, "--out", student, "--steps", 20,
               "--no-progress") == 0  # fmt: skip
    assert "distill: trained 20 steps" in capsys.readouterr().out
    assert (student / "metrics.csv").is_file() and any((student / "tb").iterdir())
    cfg = load_trained(student).config
    assert cfg.objective == "consistency" and cfg.teacher
    for steps in (1, 2):
        npz = tmp_path / f"s{steps}.npz"
        assert run("sample", "--ckpt", student, "--n", 30, "--out", npz, "--steps", steps,
                   "--sampler", "consistency") == 0  # fmt: skip
        x = np.load(npz)["samples"]
        assert x.shape == (30, 2) and np.isfinite(x).all()
    # the run resumes like any other
    assert run("train", "--resume", "--out", student, "--steps", 30, "--no-progress") == 0
    assert "step_00000030" in capsys.readouterr().out

    # bad input: one line each
    assert run("sample", "--ckpt", teacher, "--n", 4, "--out", tmp_path / "a.npz",
               "--sampler", "consistency") == 1  # fmt: skip
    _one_line_error(capsys, "needs a consistency model")
    assert run("distill", "--teacher", student, "--out", tmp_path / "x", "--steps", 5) == 1
    _one_line_error(capsys, "not a score model")
    assert run("distill", "--teacher", tmp_path / "nothing", "--out", tmp_path / "y") == 1
    _one_line_error(capsys, "does not exist")
    assert run("distill", "--teacher", teacher, "--out", tmp_path / "z", "--steps", 5,
               "--set", "sde=edm", "--set", "sde_kwargs={}") == 1  # fmt: skip
    _one_line_error(capsys, "the student needs")


def test_train_objective_consistency(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ct"
    assert run("train", "--data", "moons", "--out", out, "--steps", 20, "--objective",
               "consistency", "--sde", "edm", "--set", "sample_n=0", *TINY) == 0  # fmt: skip
    npz = tmp_path / "s.npz"
    assert run("sample", "--ckpt", out, "--n", 20, "--out", npz, "--steps", 1,
               "--sampler", "consistency") == 0  # fmt: skip
    assert np.isfinite(np.load(npz)["samples"]).all()
