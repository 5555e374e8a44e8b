"""Issue 19, items 2-9: the rough edges a new user hits on the command line and in training.

Resuming a finished run or a missing one, the summary and the time column after a resume, file
permissions of atomic writes, silent long steps, negative guidance, sampler help, and option
names that pass through ``torchrun``'s own parser. Each test fails on the code before the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde
from scoresde import cli
from scoresde.checkpoint import (
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from scoresde.train import TrainConfig, Trainer, read_metrics

TINY = ["--device", "cpu", "--no-progress", "--no-tensorboard", "--set",
        "model_kwargs={hidden: 16, depth: 1}", "--set", "data_kwargs.n=256", "--sample-n", "0",
        "--batch-size", "32", "--log-every", "2", "--ckpt-every", "2"]  # fmt: skip
TINY_UNET = ["--device", "cpu", "--no-progress", "--no-tensorboard", "--set",
             "model_kwargs={channels: 8, num_res_blocks: 1}", "--sample-n", "0",
             "--batch-size", "16"]  # fmt: skip


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny class-conditional U-Net on 8x8 digits (2 steps), written under umask 022."""
    out = tmp_path_factory.mktemp("rough") / "digits"
    with umask(0o022):
        assert run("train", "--data", "digits", "--out", out, "--steps", 2,
                   "--class-conditional", *TINY_UNET) == 0  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------
# items 2-4: resuming


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert run("train", "--data", "moons", "--out", out, "--steps", 4, *TINY) == 0
    metrics = (out / "metrics.csv").read_text()
    capsys.readouterr()
    for steps in (4, 3):  # at its steps, and beyond them
        assert run("train", "--out", out, "--resume", "--steps", steps, "--no-progress") == 0
        text = capsys.readouterr().out
        assert "nothing to train" in text and "already at step 4" in text, text
        assert str(out / "checkpoints" / "step_00000004") in text
        assert "nan" not in text and "checkpoint None" not in text
    assert (out / "metrics.csv").read_text() == metrics  # nothing logged or rewritten
    result = Trainer(load_checkpoint_config(out, steps=4), resume=True).fit()
    assert result.steps_run == 0 and result.start_step == 4 == result.step
    assert result.checkpoint == out / "checkpoints" / "step_00000004"
    assert np.isfinite(result.loss)  # the last logged loss, not NaN


def load_checkpoint_config(out: Path, **changes: object) -> TrainConfig:
    cfg = TrainConfig.from_dict(load_checkpoint(out, state=False).config["train"])
    return cfg.replace(**changes)


def test_resume_of_a_missing_run_says_there_is_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "nothere": "there is no run folder",
        tmp_path / "empty": "holds no checkpoint",
    }
    for out, what in cases.items():
        assert run("train", "--out", out, "--resume", "--steps", 10) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "nothing to resume" in err and what in err, err
        assert "--data is required" not in err
    assert run("train", "--resume", "--steps", 10) == 1
    assert "--resume needs --out" in capsys.readouterr().err


def test_resume_summary_counts_this_call_and_time_is_cumulative(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert run("train", "--data", "moons", "--out", out, "--steps", 4, *TINY) == 0
    assert "trained 4 steps in" in capsys.readouterr().out
    assert run("train", "--out", out, "--resume", "--steps", 6, "--no-progress") == 0
    text = capsys.readouterr().out
    assert "trained 2 steps (from step 4 to 6)" in text and "the run has 6 steps" in text, text
    s4 = load_checkpoint(out / "checkpoints" / "step_00000004").state
    s6 = load_checkpoint(out / "checkpoints" / "step_00000006").state
    assert s4 is not None and s6 is not None and 0 < s4["seconds"] < s6["seconds"]
    rows = {int(r["step"]): r["seconds"] for r in read_metrics(out / "metrics.csv")}
    assert rows[2] <= rows[4] <= s4["seconds"] <= rows[6] <= s6["seconds"]  # cumulative


def test_time_column_continues_from_metrics_for_checkpoints_without_seconds(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    assert run("train", "--data", "moons", "--out", out, "--steps", 4, *TINY) == 0
    ck = load_checkpoint(out)  # rewrite it as a checkpoint of before the fix (no "seconds")
    assert ck.state is not None
    ck.state.pop("seconds")
    save_checkpoint(out / "checkpoints", 4, model=ck.model, ema=ck.ema, state=ck.state,
                    config=ck.config)  # fmt: skip
    row4 = [r for r in read_metrics(out / "metrics.csv") if r["step"] == 4][0]
    res = Trainer(load_checkpoint_config(out, steps=6), resume=True).fit()
    assert res.steps_run == 2 and res.total_seconds > row4["seconds"]
    row6 = [r for r in read_metrics(out / "metrics.csv") if r["step"] == 6][0]
    assert row6["seconds"] >= row4["seconds"]


# ------------------------------------------------------------------------------------------------
# item 5: permissions of atomic writes


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    for mask in (0o022, 0o027, 0o002):
        with umask(mask):
            f = atomic_write_bytes(tmp_path / f"new_{mask:o}.bin", b"x")
            plain = tmp_path / f"plain_{mask:o}.bin"
            plain.write_bytes(b"x")
            assert mode(f) == mode(plain) == 0o666 & ~mask
            ck = save_checkpoint(tmp_path / f"ck_{mask:o}", 1, model={"w": torch.zeros(2)},
                                 ema={"w": torch.zeros(2)}, state={}, config={})  # fmt: skip
            plain_dir = tmp_path / f"dir_{mask:o}"
            plain_dir.mkdir()
            assert mode(ck) == mode(plain_dir) == 0o777 & ~mask
            for name in ("model.safetensors", "ema.safetensors", "state.pt", "config.json",
                         "manifest.json"):  # fmt: skip
                assert mode(ck / name) == 0o666 & ~mask, (name, oct(mode(ck / name)))
    private = tmp_path / "private.bin"
    private.write_bytes(b"old")
    private.chmod(0o600)
    with umask(0o022):
        atomic_write_bytes(private, b"new")  # open() on an existing file keeps its mode
    assert mode(private) == 0o600 and private.read_bytes() == b"new"


def test_cli_outputs_and_checkpoints_are_readable_by_others(digits: Path, tmp_path: Path) -> None:
    ckpt = next((digits / "checkpoints").iterdir())
    assert mode(ckpt) == 0o755
    assert {mode(f) for f in ckpt.iterdir()} == {0o644}
    image, mask = tmp_path / "img.npy", tmp_path / "mask.npy"
    np.save(image, np.random.default_rng(0).random((1, 1, 8, 8)))
    known = np.ones((1, 1, 8, 8))
    known[..., :4] = 0
    np.save(mask, known)
    outs = [tmp_path / n for n in ("s.png", "s.npz", "ll.json", "ip.npz", "ip.png")]
    with umask(0o022):
        assert run("sample", "--ckpt", digits, "--num-samples", 2, "--steps", 2, "--out",
                   outs[0]) == 0  # fmt: skip
        assert run("sample", "--ckpt", digits, "--num-samples", 2, "--steps", 2, "--out",
                   outs[1]) == 0  # fmt: skip
        assert run("likelihood", "--ckpt", digits, "--num-samples", 2, "--rtol", 1e-2,
                   "--atol", 1e-2, "--out", outs[2]) == 0  # fmt: skip
        for out in outs[3:]:
            assert run("inpaint", "--ckpt", digits, "--image", image, "--mask", mask,
                       "--steps", 2, "--out", out) == 0  # fmt: skip
    assert {mode(p) for p in outs} == {0o644}


# ------------------------------------------------------------------------------------------------
# item 6: long steps say what they do; a cheap grid by default


def test_training_grid_is_cheap_by_default_and_announced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = TrainConfig()
    assert cfg.sampler == "fast" and cfg.sample_steps <= 20
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["train"].format_help().split())
    assert "--sample-n N samples in each grid" in text and "(default 64)" in text
    assert "--sample-steps N sampler steps for the grids (default 10)" in text
    assert "(default fast)" in text
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    res = Trainer(TrainConfig(out=str(tmp_path / "r"), steps=2, batch_size=16, sample_n=8,
                              tensorboard=False, model_kwargs={"hidden": 8, "depth": 1}),
                  data).fit()  # fmt: skip
    err = capsys.readouterr().err
    assert "step 2: sampling 8 points for the grid (fast, 10 steps)" in err
    assert "fast" in err.split("for the grid")[-1]  # the sampler's own progress bar
    assert res.samples is not None and res.samples.is_file()


def test_cli_commands_show_progress_when_asked(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    assert run("sample", "--ckpt", digits, "--num-samples", 3, "--steps", 2, "--out",
               tmp_path / "s.npz", "--progress") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "scoresde sample: drawing 3 samples with euler_maruyama (2 steps" in err
    assert "euler_maruyama" in err.split("on cpu")[-1]  # the bar
    assert run("likelihood", "--ckpt", digits, "--num-samples", 2, "--rtol", 1e-2, "--atol",
               1e-2, "--progress") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "solving the probability-flow ODE for 2 points" in err and "likelihood" in err
    assert run("sample", "--ckpt", digits, "--num-samples", 3, "--steps", 2, "--out",
               tmp_path / "s.npz") == 0  # fmt: skip
    assert capsys.readouterr().err == ""  # not a terminal: quiet


# ------------------------------------------------------------------------------------------------
# item 7: negative guidance is documented and noted


def test_negative_guidance_is_documented_and_noted(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["sample"].format_help().split())
    assert "W < 0 pushes samples away from class K" in text
    capsys.readouterr()
    npz = tmp_path / "neg.npz"
    assert run("sample", "--ckpt", digits, "--num-samples", 2, "--steps", 2, "--class", 3,
               "--guidance", -2, "--out", npz) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "--guidance -2 < 0 samples away from class 3" in err and err.count("\n") == 1
    assert np.isfinite(np.load(npz)["samples"]).all()


# ------------------------------------------------------------------------------------------------
# item 8: sampler options are discoverable


def test_sampler_help_in_python_and_on_the_command_line(
    capsys: pytest.CaptureFixture,
) -> None:
    text = scoresde.sampler_help("pc")
    for word in ("sampler 'pc'", "predictor: str | None = 'reverse_diffusion'",
                 "snr: float = 0.16", "corrector_steps", "Langevin"):  # fmt: skip
        assert word in text, word
    assert "(none)" in scoresde.sampler_help("euler")
    assert "split: bool = True" in scoresde.sampler_help("fast")
    assert "sampler_help" in (scoresde.sample.__doc__ or "")
    with pytest.raises(ValueError, match="unknown sampler"):
        scoresde.sampler_help("pcc")
    for argv in (["--sampler", "pc", "--help-sampler"], ["--help-sampler", "--sampler", "pc"],
                 ["--help-sampler", "pc"]):  # fmt: skip
        assert run("sample", *argv) == 0  # no --ckpt/--out/--num-samples needed
        assert capsys.readouterr().out == text
    assert run("sample", "--help-sampler") == 0
    assert capsys.readouterr().out == scoresde.sampler_help("euler_maruyama")


# ------------------------------------------------------------------------------------------------
# item 9: every option passes through torchrun's parser


def _options() -> dict[str, list[str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [o for a in p._actions for o in a.option_strings if o.startswith("--")]
            for name, p in sub.choices.items()}  # fmt: skip


def test_every_option_passes_through_torchruns_parser() -> None:
    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser()
    options = _options()
    assert {"--num-samples", "--n"} <= set(options["sample"]) & set(options["likelihood"])
    assert {"--num-samples", "--n"} <= set(options["inpaint"])
    checked = 0
    for command, opts in options.items():
        for opt in opts:
            if opt == "--n":  # the single-process alias: documented as not for torchrun
                continue
            for form in ([opt, "1"], [f"{opt}=1"]):
                argv = ["--standalone", "--nproc-per-node=1", "-m", "scoresde", command, *form]
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    try:
                        ns = torchrun.parse_args(argv)
                    except SystemExit:
                        pytest.fail(f"torchrun rejects {command} {form}: {err.getvalue()}")
                assert ns.training_script_args == [command, *form]
                checked += 1
    assert checked > 100


def test_num_samples_and_its_alias(
    tmp_path: Path, digits: Path, capsys: pytest.CaptureFixture
) -> None:
    parser = cli.build_parser()
    for command in ("sample", "likelihood", "inpaint"):
        base = {
            "sample": ["--ckpt", "r", "--out", "x.npz"],
            "likelihood": ["--ckpt", "r"],
            "inpaint": ["--ckpt", "r", "--image", "i", "--mask", "m", "--out", "o.npz"],
        }
        a = parser.parse_args([command, *base[command], "--num-samples", "7"])
        b = parser.parse_args([command, *base[command], "--n", "7"])
        assert a.num_samples == b.num_samples == 7
    capsys.readouterr()
    assert run("sample", "--ckpt", digits, "--num-samples", 0, "--out", tmp_path / "x.npz") == 1
    assert "--num-samples must be a positive integer, got 0" in capsys.readouterr().err
