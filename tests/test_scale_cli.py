"""Issue 17, the commands in one process: sample/likelihood in shards, --resume, eval.

Two-process runs through torchrun are in ``test_scale_torchrun.py`` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde.shard as shard_mod
from scoresde.cli import main
from scoresde.features import INCEPTION_WEIGHTS_FILE
from scoresde.sampling import sample
from scoresde.shard import shard_seed
from scoresde.train import TrainConfig, Trainer, load_trained

CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny moons run (2 steps): its samples are far from the data, which is fine here."""
    out = tmp_path_factory.mktemp("scale") / "moons"
    cfg = TrainConfig(data="moons", data_kwargs={"n": 256}, out=str(out), steps=2,
                      batch_size=16, progress=False, sample_n=0, tensorboard=False,
                      model_kwargs={"hidden": 8, "depth": 1}, device="cpu")  # fmt: skip
    Trainer(cfg).fit()
    return out


def test_sample_command_equals_one_batched_sample_call(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(run), "--n", "7", "--batch-size", "3", "--steps", "6",
                 "--out", str(out), *CPU]) == 0  # fmt: skip
    tm = load_trained(run)
    ref = sample(tm.score_fn, tm.sde, (7, 2), steps=6, batch_size=3,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert np.array_equal(np.load(out)["samples"], tm.to_data(ref).numpy())
    assert not Path(str(out) + ".shards").exists()  # removed once the output is written


def test_an_interrupted_sample_run_resumes_to_the_same_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--ckpt", str(run), "--num-samples", "11", "--batch-size", "3",
            "--steps", "4", *CPU]  # fmt: skip
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    assert main([*argv, "--out", str(full)]) == 0
    calls = {"n": 0}
    real_sample = shard_mod.sample

    def dies_on_the_third_shard(*a: object, **k: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process is stopped mid-run
        return real_sample(*a, **k)

    monkeypatch.setattr(shard_mod, "sample", dies_on_the_third_shard)
    assert main([*argv, "--out", str(part)]) == 130
    shards = Path(str(part) + ".shards")
    assert not part.exists() and len(list(shards.glob("shard-*.safetensors"))) == 2
    monkeypatch.setattr(shard_mod, "sample", real_sample)
    capsys.readouterr()
    assert main([*argv, "--out", str(part)]) == 1  # a plain rerun must say it continues
    assert "rerun with --resume" in capsys.readouterr().err
    assert main([*argv, "--out", str(part), "--steps", "5", "--resume"]) == 1
    assert "different run" in capsys.readouterr().err
    assert main([*argv, "--out", str(part), "--resume"]) == 0
    assert part.read_bytes() == full.read_bytes() and not shards.exists()


def test_likelihood_points_do_not_depend_on_the_shard_runner(run: Path, tmp_path: Path) -> None:
    from scoresde.data import load_dataset
    from scoresde.likelihood import log_likelihood

    pts = tmp_path / "p.npz"
    assert main(["likelihood", "--ckpt", str(run), "--n", "5", "--batch-size", "2", "--rtol",
                 "1e-3", "--atol", "1e-3", "--points", str(pts), *CPU]) == 0  # fmt: skip
    got = np.load(pts)
    tm = load_trained(run)
    x = load_dataset("moons", split="test", n=None).tensors()[:5]
    for start in (0, 2, 4):
        gen = torch.Generator().manual_seed(shard_seed(0, start))
        one = log_likelihood(tm.score_fn, tm.sde, x[start : start + 2], rtol=1e-3, atol=1e-3,
                             divergence="exact", generator=gen)  # fmt: skip
        assert np.array_equal(got["log_prob"][start : start + 2], one.log_prob.double().numpy())


def test_eval_writes_json_and_a_markdown_table(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ev.json"
    assert main(["eval", "--ckpt", str(run), "--n", "60", "--batch-size", "25", "--steps", "5",
                 "--bpd-n", "6", "--likelihood-batch-size", "4", "--rtol", "1e-3", "--atol",
                 "1e-3", "--kid-subsets", "5", "--out", str(out), "--samples",
                 str(tmp_path / "x.npz"), *CPU]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert res["features"]["space"] == "raw" and res["reference"] == {
        "data": "moons", "split": "test", "n": 60}  # fmt: skip
    assert m["frechet"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["kid_subset_size"] == 60 and "fid" not in m
    assert res["likelihood"]["n"] == 6 and res["likelihood"]["nfe_mean"] > 0
    assert "bits_per_dim" not in res["likelihood"]  # continuous data: nats only
    table = out.with_suffix(".md").read_text()
    assert "| Fréchet distance (raw) |" in table and "| precision (k=3) |" in table
    assert np.load(tmp_path / "x.npz")["samples"].shape == (60, 2)
    assert not Path(str(out) + ".shards").exists()


def test_eval_fid_without_inception_weights_fails_first_and_names_the_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "ev.json"
    rc = main(["eval", "--ckpt", str(run), "--n", "10", "--fid", "--out", str(out), *CPU])
    err = capsys.readouterr().err
    assert rc == 1 and INCEPTION_WEIGHTS_FILE in err and "downloads nothing" in err
    assert not out.exists() and not Path(str(out) + ".shards").exists()
