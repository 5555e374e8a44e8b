"""Issue 19, item 9: every ``scoresde`` command runs through ``torchrun`` (real processes).

``torchrun --standalone --nproc_per_node=1 -m scoresde <command> ...`` for each command, with
the options a user passes (``--num-samples`` rather than ``--n``, which torchrun's own parser
takes for an abbreviation of its options). A one-process command under two processes runs on
rank 0 alone and writes its output once.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import run_scoresde

pytestmark = pytest.mark.slow  # real torchrun launches: `make test-all`

TINY = ["--device", "cpu", "--no-progress", "--no-tensorboard", "--sample-n", "0",
        "--batch-size", "16", "--steps", "2"]  # fmt: skip


def torchrun(*argv: object, nproc: int = 1) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=N -m scoresde ARGV`` (torchrun's entry point)."""
    return run_scoresde(*argv, nproc=nproc)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny runs on moons (points) and digits (images with labels), trained under torchrun."""
    w = tmp_path_factory.mktemp("torchrun")
    torchrun("train", "--data", "moons", "--out", w / "moons", "--set",
             "model_kwargs={hidden: 8, depth: 1}", "--set", "data_kwargs.n=256", *TINY)  # fmt: skip
    torchrun("train", "--data", "digits", "--out", w / "digits", "--set",
             "model_kwargs={channels: 8, num_res_blocks: 1}", *TINY)  # fmt: skip
    return w


def test_sample_and_likelihood_through_torchrun(runs: Path) -> None:
    npz = runs / "s.npz"
    proc = torchrun("sample", "--ckpt", runs / "moons", "--num-samples", 8, "--steps", 3,
                    "--out", npz)  # fmt: skip
    assert "wrote 8 samples" in proc.stdout
    assert np.load(npz)["samples"].shape == (8, 2)
    js = runs / "ll.json"
    torchrun("likelihood", "--ckpt", runs / "moons", "--num-samples=4", "--rtol", "1e-2",
             "--atol", "1e-2", "--out", js)  # fmt: skip
    assert json.loads(js.read_text())["n"] == 4


def test_inpaint_train_classifier_and_demo_through_torchrun(runs: Path) -> None:
    image, mask = runs / "img.npy", runs / "mask.npy"
    np.save(image, np.random.default_rng(0).random((1, 1, 8, 8)))
    known = np.ones((1, 1, 8, 8))
    known[..., 4:] = 0
    np.save(mask, known)
    out = runs / "ip.npz"
    torchrun("inpaint", "--ckpt", runs / "digits", "--image", image, "--mask", mask,
             "--num-samples", 2, "--steps", 2, "--out", out)  # fmt: skip
    assert np.load(out)["completions"].shape == (2, 1, 1, 8, 8)
    clf = runs / "clf.safetensors"
    torchrun("train-classifier", "--ckpt", runs / "digits", "--steps", 3, "--batch-size", 8,
             "--hidden", 16, "--depth", 1, "--device", "cpu", "--out", clf)  # fmt: skip
    assert clf.is_file()
    torchrun("demo", "--quick", "--out", runs / "demo")
    assert (runs / "demo" / "samples.png").is_file()


def test_a_one_process_command_under_two_processes_runs_on_rank_0(runs: Path) -> None:
    out = runs / "two.safetensors"
    proc = torchrun("train-classifier", "--ckpt", runs / "digits", "--steps", 2, "--batch-size", 8,
                    "--hidden", 16, "--depth", 1, "--device", "cpu", "--out", out,
                    nproc=2)  # fmt: skip
    assert "rank 0 does the work" in proc.stderr
    assert out.is_file()
