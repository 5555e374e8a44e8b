"""Fuzzing the ``scoresde`` command: bad input ends with one error line and leaves no files.

Each example takes a working command line and breaks one thing (a missing, truncated or foreign
checkpoint, a bad data file, an unwritable output, a bad number, an unknown name or device). The
command must exit with a non-zero status and exactly one ``scoresde <cmd>: error: ...`` line on
stderr (no traceback, no "internal error"), and must not leave any new file behind.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoresde import cli
from scoresde.train import TrainConfig, Trainer

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = ["--device", "cpu", "--no-progress", "--set", "sample_n=0", "--set",
        "model_kwargs={hidden: 8, depth: 1}", "--set", "tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a good tiny run and a zoo of broken inputs."""
    from PIL import Image

    w = tmp_path_factory.mktemp("cli_ws")
    cfg = TrainConfig(out=str(w / "run"), steps=2, batch_size=8, progress=False, sample_n=0,
                      tensorboard=False, model_kwargs={"hidden": 8, "depth": 1})  # fmt: skip
    Trainer(cfg, torch.randn(64, 2, generator=torch.Generator().manual_seed(0))).fit()
    ckpt = next((w / "run" / "checkpoints").iterdir())
    bad = w / "bad"
    bad.mkdir()
    for name, file, keep in (("trunc", "model.safetensors", 0.5), ("trunc_ema", "ema.safetensors",
                             0.01), ("trunc_state", "state.pt", 0.3), ("badjson",
                             "manifest.json", 0.5)):  # fmt: skip
        shutil.copytree(ckpt, bad / name)
        raw = (bad / name / file).read_bytes()
        (bad / name / file).write_bytes(raw[: int(len(raw) * keep)])
    shutil.copytree(ckpt, bad / "nomanifest")
    (bad / "nomanifest" / "manifest.json").unlink()
    (bad / "foreign.safetensors").write_bytes(os.urandom(300))
    torch.save({"a": 1}, bad / "torchsave.pt")
    (bad / "emptydir").mkdir()
    (w / "afile").write_text("x")
    np.save(bad / "nan.npy", np.full((50, 2), np.nan, dtype=np.float32))
    np.save(bad / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    np.save(bad / "int.npy", np.ones((50, 2), dtype=np.int64))
    np.save(bad / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(bad / "flat.npy", np.ones(50, dtype=np.float32))
    (bad / "junk.npy").write_bytes(b"garbage")
    np.savez(bad / "noarr.npz")
    (bad / "mixed").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "mixed" / "a.png")
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(bad / "mixed" / "b.png")
    (bad / "noimages").mkdir()
    (bad / "badimg").mkdir()
    (bad / "badimg" / "x.png").write_bytes(b"not a png")
    (bad / "cfg_syntax.yaml").write_text("steps: [1, 2\n")
    (bad / "cfg_list.yaml").write_text("- 1\n- 2\n")
    (bad / "cfg_key.yaml").write_text("stepz: 3\n")
    return w


def _label(value: str) -> str:
    """A case name that does not depend on the workspace path."""
    return "/".join(Path(value).parts[-2:]) if "/" in value else value


def _cases(w: Path) -> dict[str, list[str]]:
    """Command lines that must fail: (train | sample | likelihood) with one thing broken."""
    b, o = w / "bad", w / "out"
    train = ["train", "--steps", "2", "--batch-size", "8", *TINY]
    sample = ["sample", "--n", "4", "--steps", "2"]
    ll = ["likelihood", "--n", "4", "--rtol", "1e-2", "--atol", "1e-2"]
    run = str(w / "run")
    cases: dict[str, list[str]] = {}
    for data in ("mons", "nope/x.npy", "nan.npy", "empty.npy", "int.npy", "obj.npy", "flat.npy",
                 "junk.npy", "noarr.npz", "mixed", "noimages", "badimg"):  # fmt: skip
        path = str(b / data) if "." in data or (b / data).exists() else data
        cases[f"train data {data}"] = [*train, "--data", path, "--out", str(o / "t")]
    for cfg in ("cfg_syntax.yaml", "cfg_list.yaml", "cfg_key.yaml", "missing.yaml"):
        cases[f"train config {cfg}"] = [*train, "--data", "moons", "--out", str(o / "t"),
                                        "--config", str(b / cfg)]  # fmt: skip
    for item in ("lr=abc", "lrr=1", "lr", "sde_kwargs={beta_max: -1}", "sde_kwargs={betamax: 3}",
                 "model_kwargs={hiden: 3}", "model_kwargs={hidden: -3}", "data_kwargs={foo: 1}",
                 "data_kwargs={n: 0}", "sde=vq", "ema_decay=1.5", "weighting=sigma"):  # fmt: skip
        cases[f"train set {item}"] = [*train, "--data", "moons", "--out", str(o / "t"),
                                      "--set", item]  # fmt: skip
    for flag, value in (("--device", "meta"), ("--device", "bogus"), ("--device", "cuda:3"),
                        ("--steps", "0"), ("--steps", "-5"), ("--batch-size", "100000"),
                        ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--sde", "vq"),
                        ("--ema-decay", "1"), ("--ckpt-every", "0")):  # fmt: skip
        cases[f"train {flag} {value}"] = [*train, "--data", "moons", "--out", str(o / "t"),
                                          flag, value]  # fmt: skip
    cases["train out under a file"] = [*train, "--data", "moons", "--out", str(w / "afile" / "r")]
    cases["train resume nothing"] = [*train, "--data", "moons", "--out", str(o / "t"), "--resume"]
    for ck in ("nope", "bad/trunc", "bad/trunc_ema", "bad/trunc_state", "bad/badjson",
               "bad/nomanifest", "bad/foreign.safetensors", "bad/torchsave.pt", "bad/emptydir",
               "afile"):  # fmt: skip
        cases[f"sample ckpt {ck}"] = [*sample, "--ckpt", str(w / ck), "--out", str(o / "s.npz")]
        cases[f"likelihood ckpt {ck}"] = [*ll, "--ckpt", str(w / ck)]
    for out in (w / "afile" / "s.npz", Path("/proc/s.npz"), Path("/proc/x/s.png"),
                o / "s.txt", w / "run"):  # fmt: skip
        cases[f"sample out {out.name}"] = [*sample, "--ckpt", run, "--out", str(out)]
    for flag, value in (("--n", "0"), ("--n", "-1"), ("--steps", "0"), ("--batch-size", "0"),
                        ("--device", "meta"), ("--device", "bogus"), ("--device", "cuda:3"),
                        ("--sampler", "eulr"), ("--class", "1"), ("--guidance", "2"),
                        ("--seed", "x"), ("--steps", "1.5")):  # fmt: skip
        cases[f"sample {flag} {value}"] = [*sample, "--ckpt", run, "--out", str(o / "s.npz"),
                                           flag, value]  # fmt: skip
    to_s = [*sample, "--ckpt", run, "--out", str(o / "s.npz"), "--class", "1", "--classifier"]
    cases["sample classifier missing"] = [*to_s, str(b / "no.safetensors")]
    cases["sample classifier foreign"] = [*to_s, str(b / "foreign.safetensors")]
    for flag, value in (("--data", "mons"), ("--data", "digits"), ("--data", str(b / "nan.npy")),
                        ("--data", str(b / "empty.npy")), ("--out", str(w / "afile" / "x.json")),
                        ("--out", str(o / "x.txt")), ("--rtol", "-1"), ("--rtol", "nan"),
                        ("--atol", "0"), ("--device", "meta"), ("--n", "0"),
                        ("--divergence", "hutch"), ("--split", "val")):  # fmt: skip
        cases[f"likelihood {flag} {_label(value)}"] = [*ll, "--ckpt", run, flag, value]
    img = ["--image", str(b / "nan.npy"), "--mask", str(b / "nan.npy")]
    cases["inpaint on points"] = ["inpaint", "--ckpt", run, "--out", str(o / "i.npz"), *img]
    cases["unknown command"] = ["trian"]
    cases["unknown option"] = ["sample", "--ckpt", run, "--n", "4", "--out", "x.npz", "--stepz"]
    return cases


CASE_NAMES = sorted(_cases(Path("/w")))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse usage errors
            rc = int(exc.code) if isinstance(exc.code, int) else 1
    return rc, err.getvalue()


def _check_failure(name: str, rc: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert rc not in (0, None), f"{name}: exit status {rc}, stderr {err!r}"
    assert "Traceback" not in err and "internal error" not in err, f"{name}: {err}"
    assert len(errors) == 1 and errors[0].startswith("scoresde"), f"{name}: {err!r}"
    assert errors[0] == lines[-1], f"{name}: the error must be the last line: {err!r}"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_command_lines_fail_with_one_line(
    name: str, ws: Path, fuzz_cases: collections.Counter[str]
) -> None:
    fuzz_cases["cli"] += 1
    argv = _cases(ws)[name]
    before = _files(ws)
    rc, err = _run_cli(argv)
    _check_failure(name, rc, err)
    new = _files(ws) - before
    assert not new, f"{name}: left files behind: {sorted(new)}"
    if (ws / "out").exists():  # an empty folder may have been made for the output
        assert not any(p.is_file() for p in (ws / "out").rglob("*"))


@FUZZ
@given(
    n=st.integers(-5, 0),
    steps=st.one_of(st.integers(-5, 0), st.sampled_from(["x", "1e3", "", "2.5"])),
    batch=st.one_of(st.integers(-5, 0), st.sampled_from(["-", "inf"])),
    which=st.integers(0, 2),
)
def test_bad_numbers_are_refused(
    n: int, steps: int | str, batch: int | str, which: int, ws: Path,
    fuzz_cases: collections.Counter[str],
) -> None:  # fmt: skip
    """Non-positive or non-integer counts in any one of --n/--steps/--batch-size."""
    fuzz_cases["cli"] += 1
    args = {"--n": "4", "--steps": "2", "--batch-size": "2"}
    key, value = [("--n", n), ("--steps", steps), ("--batch-size", batch)][which]
    args[key] = str(value)
    out = ws / "out" / "num.npz"
    argv = ["sample", "--ckpt", str(ws / "run"), "--out", str(out)]
    argv += [x for kv in args.items() for x in kv]
    rc, err = _run_cli(argv)
    _check_failure(" ".join(argv), rc, err)
    assert not out.exists()


@pytest.mark.slow  # a real `python -m scoresde` process: `make test-all`
def test_real_process_prints_one_line(ws: Path, fuzz_cases: collections.Counter[str]) -> None:
    """The same in a real ``python -m scoresde`` process (exit status, stderr)."""
    fuzz_cases["cli"] += 1
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoresde",
            "sample",
            "--ckpt",
            str(ws / "bad" / "trunc"),
            "--n",
            "2",
            "--out",
            str(ws / "out" / "p.npz"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    _check_failure("subprocess", proc.returncode, proc.stderr)
    assert "truncated" in proc.stderr and not (ws / "out" / "p.npz").exists()
