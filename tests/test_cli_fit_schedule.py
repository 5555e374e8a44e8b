"""``scoresde fit-schedule`` stores fitted schedules in the run folder; ``sample`` uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scoresde import cli
from scoresde.checkpoint import load_checkpoint

TINY_MLP = ["--set", "model_kwargs={hidden: 16, depth: 1}", "--no-progress"]
FIT = ["--n", 16, "--max-calls", 260, "--no-progress"]


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "run"
    assert run("train", "--data", "moons", "--out", out, "--steps", 5, "--batch-size", 32,
               "--device", "cpu", "--set", "sample_n=0", "--set", "data_kwargs.n=500",
               *TINY_MLP) == 0  # fmt: skip
    return out


def test_fit_schedule_stores_and_sample_uses_it(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scoresde.checkpoint as ckpt

    writes: list[Path] = []
    real = ckpt.atomic_write_text

    def spy(path: Path, text: str) -> Path:
        writes.append(Path(path))
        return real(path, text)

    monkeypatch.setattr(ckpt, "atomic_write_text", spy)
    capsys.readouterr()
    assert run("fit-schedule", "--ckpt", tiny_run, "--steps", 3, 4, *FIT) == 0
    path = tiny_run / "schedules.json"
    assert writes == [path, path]  # one atomic rewrite per fitted step count
    out = capsys.readouterr().out
    assert out.count("stored in") == 2 and "fitted fast with 3 steps" in out
    data = json.loads(path.read_text())
    entry = data["schedules"]["fast"]["4"]
    times = entry["times"]
    assert len(times) == 5 and all(a > b for a, b in zip(times, times[1:], strict=False))
    assert entry["step"] == load_checkpoint(tiny_run, state=False).step and entry["calls"] <= 260

    npz = tmp_path / "s.npz"
    assert run("sample", "--ckpt", tiny_run, "--n", 8, "--out", npz, "--steps", 4,
               "--sampler", "fast", "--no-progress") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "using the schedule fitted for fast with 4 steps" in err and str(path) in err
    fitted = np.load(npz)["samples"]
    for flag in ("default", "logsnr"):  # an explicit --schedule overrides the stored one
        assert run("sample", "--ckpt", tiny_run, "--n", 8, "--out", npz, "--steps", 4,
                   "--sampler", "fast", "--schedule", flag, "--no-progress") == 0  # fmt: skip
        assert "using the schedule" not in capsys.readouterr().err
    assert not np.array_equal(np.load(npz)["samples"], fitted)
    assert run("sample", "--ckpt", tiny_run, "--n", 8, "--out", npz, "--steps", 6,
               "--sampler", "fast", "--no-progress") == 0  # fmt: skip
    assert "using the schedule" not in capsys.readouterr().err  # none stored for 6 steps

    ev = tmp_path / "ev.json"  # scoresde eval samples the same way as scoresde sample
    assert run("eval", "--ckpt", tiny_run, "--n", 16, "--steps", 4, "--sampler", "fast",
               "--bpd-n", 0, "--out", ev, "--samples", tmp_path / "ev.npz", "--no-progress",
               "--device", "cpu") == 0  # fmt: skip
    assert "scoresde eval: using the schedule fitted for fast with 4 steps" in (
        capsys.readouterr().err
    )


def test_corrupt_schedules_file_is_one_clear_error(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tiny_run / "schedules.json"
    saved = path.read_text() if path.exists() else None
    try:
        for bad in ("{not json", json.dumps({"format": "other"}),
                    json.dumps({"format": "scoresde-schedules",
                                "schedules": {"fast": {"4": {"times": "x"}}}})):  # fmt: skip
            path.write_text(bad)
            capsys.readouterr()
            code = run("sample", "--ckpt", tiny_run, "--n", 4, "--out", tmp_path / "s.npz",
                       "--steps", 4, "--sampler", "fast", "--no-progress")  # fmt: skip
            err = capsys.readouterr().err
            assert code == 1 and err.count("\n") == 1, err
            assert f"{path} is not a valid schedules file" in err and "delete it" in err
            assert run("fit-schedule", "--ckpt", tiny_run, "--steps", 2, *FIT) == 1
            assert "is not a valid schedules file" in capsys.readouterr().err
    finally:
        if saved is None:
            path.unlink()
        else:
            path.write_text(saved)


def test_bad_options_are_clear(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert run("fit-schedule", "--ckpt", tiny_run, "--steps", 0, *FIT) == 1
    assert "--steps must be positive" in capsys.readouterr().err
    assert run("fit-schedule", "--ckpt", tiny_run, "--steps", 3, "--n", 8,
               "--max-calls", 20, "--no-progress") == 1  # fmt: skip
    assert "max_calls=20 is below" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("fit-schedule", "--ckpt", tiny_run, "--steps", 3, "--sampler", "ode")


def test_a_schedule_of_another_checkpoint_step_is_not_used(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tiny_run / "schedules.json"
    saved = path.read_text() if path.exists() else None
    times = [80.0, 1.0, 0.1, 0.01]
    table = {"fast": {"3": {"times": times, "sde": None, "step": 10**6}}}
    path.write_text(json.dumps({"format": "scoresde-schedules", "schedules": table}))
    try:
        assert run("sample", "--ckpt", tiny_run, "--n", 4, "--out", tmp_path / "s.npz",
                   "--steps", 3, "--sampler", "fast", "--no-progress") == 0  # fmt: skip
        err = capsys.readouterr().err
        assert "not using the schedule stored" in err and "step 1000000" in err
    finally:
        if saved is None:
            path.unlink()
        else:
            path.write_text(saved)
