"""The `scoresde` command line end to end on built-in data, its errors and its help."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scoresde import cli
from scoresde.checkpoint import load_checkpoint

TINY_MLP = ["--set", "model_kwargs={hidden: 16, depth: 1}", "--no-progress"]
TINY_UNET = ["--set", "model_kwargs={channels: 8, num_res_blocks: 1}", "--no-progress"]


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def test_train_sample_likelihood_on_moons(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "moons"
    assert run("train", "--data", "moons", "--out", out, "--steps", 30, "--batch-size", 64,
               "--seed", 3, "--device", "cpu", "--log-every", 10, "--set", "sample_steps=5",
               "--set", "data_kwargs.n=2000", *TINY_MLP) == 0  # fmt: skip
    assert "trained 30 steps" in capsys.readouterr().out
    assert (out / "samples" / "step_00000030.png").is_file()
    assert (out / "metrics.csv").is_file() and any((out / "tb").iterdir())

    npz = tmp_path / "s.npz"
    assert run("sample", "--ckpt", out, "--n", 50, "--out", npz, "--steps", 10,
               "--batch-size", 20) == 0  # fmt: skip
    samples = np.load(npz)["samples"]
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    npz16 = tmp_path / "s16.npz"
    assert run("sample", "--ckpt", out, "--n", 50, "--out", npz16, "--steps", 10,
               "--batch-size", 20, "--precision", "bf16") == 0  # fmt: skip
    low = np.load(npz16)["samples"]  # the network in bf16, the same seeded noise
    assert 0 < np.abs(low - samples).max() < 0.2
    png = tmp_path / "s.png"
    ckpt_file = out / "checkpoints" / "step_00000030" / "ema.safetensors"
    assert run("sample", "--ckpt", ckpt_file, "--n", 20, "--out", png, "--steps", 5,
               "--sampler", "ode_heun") == 0  # fmt: skip
    assert png.stat().st_size > 1000

    js = tmp_path / "ll.json"
    assert run("likelihood", "--ckpt", out, "--n", 16, "--out", js, "--rtol", 1e-3,
               "--atol", 1e-3) == 0  # fmt: skip
    result = json.loads(js.read_text())
    assert result["n"] == 16 and result["data"] == "moons" and result["divergence"] == "exact"
    assert np.isfinite(result["nll_nats"]) and result["nfe_mean"] > 0


def test_digits_unet_class_conditional(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "digits"
    assert run("train", "--data", "digits", "--out", out, "--steps", 3, "--batch-size", 16,
               "--class-conditional", "--set", "sample_n=0", *TINY_UNET) == 0  # fmt: skip
    npz = tmp_path / "d.npz"
    assert run("sample", "--ckpt", out, "--n", 4, "--out", npz, "--steps", 3, "--class", 7,
               "--guidance", 2.0) == 0  # fmt: skip
    f = np.load(npz)
    assert f["samples"].shape == (4, 1, 8, 8) and (f["labels"] == 7).all()
    assert f["samples"].min() >= 0.0 and f["samples"].max() <= 1.0  # data space [0, 1]
    png = tmp_path / "d.png"
    assert run("sample", "--ckpt", out, "--n", 4, "--out", png, "--steps", 2) == 0
    assert png.is_file()
    js = tmp_path / "d.json"
    assert run("likelihood", "--ckpt", out, "--n", 2, "--out", js, "--rtol", 1e-2,
               "--atol", 1e-2) == 0  # fmt: skip
    assert np.isfinite(json.loads(js.read_text())["bits_per_dim"])
    capsys.readouterr()
    assert run("sample", "--ckpt", out, "--n", 4, "--out", png, "--class", 12) == 1
    assert "--class must lie in [0, 9]" in capsys.readouterr().err


def test_config_file_flags_and_set_precedence_and_resume(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "run"
    cfg.write_text(f"data: moons\nout: {out}\nsteps: 5\nbatch_size: 64\nlr: 3e-3\n"
                   f"data_kwargs: {{n: 1000}}\nmodel_kwargs: {{hidden: 16, depth: 1}}\n"
                   f"sample_n: 0\n")  # fmt: skip
    assert run("train", "--config", cfg, "--steps", 6, "--set", "steps=4", "--no-progress") == 0
    ckpt = load_checkpoint(out)
    assert ckpt.step == 4 and ckpt.config["train"]["lr"] == 3e-3
    assert ckpt.config["train"]["batch_size"] == 64
    # resume needs only --out; the settings come from the checkpoint, --steps may grow
    assert run("train", "--out", out, "--resume", "--steps", 6, "--no-progress") == 0
    assert load_checkpoint(out).step == 6


def test_errors_are_one_line_with_nonzero_status(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cases = [
        (["train", "--data", "moonz", "--out", tmp_path / "x"], "Did you mean 'moons'?"),
        (["train", "--out", tmp_path / "x"], "--data is required"),
        (["train", "--data", tmp_path / "none.npy", "--out", tmp_path / "x"], "no such file"),
        (["train", "--data", "moons", "--out", tmp_path / "x", "--set", "stepz=3"],
         "Did you mean 'steps'?"),
        (["sample", "--ckpt", tmp_path / "nothing", "--n", 2, "--out", tmp_path / "a.png"],
         "does not exist"),
        (["sample", "--ckpt", tmp_path, "--n", 2, "--out", tmp_path / "a.jpg"],
         "--out must end in .png or .npz"),
        (["likelihood", "--ckpt", tmp_path, "--out", tmp_path / "a.txt"], "FILE.json"),
    ]  # fmt: skip
    for argv, message in cases:
        assert run(*argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert message.replace("FILE.json", ".json") in err, (argv, err)
    with pytest.raises(SystemExit) as exc:  # usage errors: argparse's status 2, one line
        run("train", "--sde", "foo")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'foo'" in err


@pytest.mark.slow  # a real `python -m scoresde` process: `make test-all`
def test_real_process_exit_status_and_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scoresde", "sample", "--ckpt", "/nonexistent/run", "--n", "2",
         "--out", "x.png"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("scoresde sample: error: checkpoint path")


def test_every_option_is_documented() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "sample", "likelihood", "demo"} <= set(sub.choices)
    required = {"train": {"--data", "--out", "--sde", "--steps", "--batch-size", "--config",
                          "--resume", "--device", "--seed"},
                "sample": {"--ckpt", "--num-samples", "--n", "--out", "--sampler", "--steps"},
                "likelihood": {"--ckpt", "--data", "--out"}, "demo": {"--out"}}  # fmt: skip
    for name, p in sub.choices.items():
        flags = {o for a in p._actions for o in a.option_strings}
        assert required.get(name, set()) <= flags, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, (name, action.option_strings)
        assert p.format_help()


def test_register_command_adds_a_subcommand(capsys: pytest.CaptureFixture) -> None:
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("--word", default="hi", help="the word to print back")

    def run_echo(args: argparse.Namespace) -> int:
        if args.word == "bad":
            raise ValueError("bad word")
        print(args.word)
        return 0

    cli.register_command("echo-test", help="print a word", configure=configure, run=run_echo)
    try:
        assert run("echo-test", "--word", "hello") == 0
        assert capsys.readouterr().out == "hello\n"
        assert run("echo-test", "--word", "bad") == 1
        assert capsys.readouterr().err == "scoresde echo-test: error: bad word\n"
    finally:
        cli.core._COMMANDS.pop("echo-test")


def test_demo_quick_writes_every_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert run("demo", "--quick", "--out", out) == 0
    text = capsys.readouterr().out
    assert "sliced W2" in text and "classifier confidence" in text
    for name in ("samples.png", "trajectory.png", "loss.png", "digits_samples.png",
                 "digits_data.png", "digits_trajectory.png"):  # fmt: skip
        assert (out / name).stat().st_size > 2000, name
