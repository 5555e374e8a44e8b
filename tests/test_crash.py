"""Crash safety: a training process killed with SIGKILL resumes to bit-identical weights.

A forked child trains a tiny network (checkpoint every 3 steps, so kills often land inside a
checkpoint write or a prune); the parent kills it with SIGKILL after a seeded random delay,
checks that the newest checkpoint on disk loads and verifies, resumes the run in-process to the
end and compares every weight, the EMA and the optimizer state with an uninterrupted run
(CPU, ``deterministic=True``). ``benchmarks/crash.py`` does the same with 10+ real
``scoresde train`` processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scoresde.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from scoresde.train import TrainConfig, Trainer, read_metrics

pytestmark = [
    pytest.mark.slow,  # child processes killed with SIGKILL: `make test-all`
    pytest.mark.skipif(
        sys.platform == "win32" or "fork" not in mp.get_all_start_methods(),
        reason="needs fork and POSIX signals",
    ),
]

STEPS = 240
X = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    """The trainer's deterministic-algorithms switch does not leak to other tests."""
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(det)


def _cfg(out: Path) -> TrainConfig:
    return TrainConfig(
        out=str(out), steps=STEPS, batch_size=32, lr=1e-3, warmup_steps=20, ckpt_every=3,
        keep_last=2, log_every=3, progress=False, tensorboard=False, sample_n=0,
        deterministic=True, model_kwargs={"hidden": 16, "depth": 2, "dropout": 0.1},
    )  # fmt: skip


def _child(out: Path, ready: mp.synchronize.Event) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(_cfg(out), X)
    ready.set()
    trainer.fit()


def _kill_during_training(out: Path, delay: float) -> bool:
    """Start a training child, SIGKILL it ``delay`` s after its first checkpoint.

    Returns whether it was still running.
    """
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_child, args=(out, ready))
    proc.start()
    assert ready.wait(60), "the training child did not start"
    deadline = time.monotonic() + 60
    while not list_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
        time.sleep(0.005)  # the random delay counts from the first checkpoint on
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(30)
    return proc.exitcode == -signal.SIGKILL


def _newest(run: Path) -> Path:
    last = latest_checkpoint(run / "checkpoints")
    assert last is not None, f"no checkpoint in {run}"
    return last


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(_newest(a)), load_checkpoint(_newest(b))
    assert ca.step == cb.step == STEPS
    for key in ca.model:
        assert torch.equal(ca.model[key], cb.model[key]), key
        assert torch.equal(ca.ema[key], cb.ema[key]), key
    assert ca.state is not None and cb.state is not None
    for k, st in ca.state["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], cb.state["optimizer"]["state"][k]["exp_avg"])
    rows_a, rows_b = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]  # no lost/duplicated rows
    # a logged loss averages the steps since the last log *in this process*: rows are equal
    # when every checkpoint is on a log boundary (log_every divides ckpt_every here)
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_sigkill_at_random_points_resumes_bit_identically(tmp_path: Path) -> None:
    start = time.perf_counter()
    Trainer(_cfg(tmp_path / "ref"), X).fit()
    fit_seconds = time.perf_counter() - start
    rng = random.Random(20240601)
    killed_at = []
    for run in range(2):
        out = tmp_path / f"crash{run}"
        delay = rng.uniform(0.0, 0.5) * fit_seconds
        was_running = _kill_during_training(out, delay)
        last = latest_checkpoint(out / "checkpoints")
        if last is not None:  # the newest checkpoint on disk is complete and verified
            killed_at.append(load_checkpoint(last).step)
        else:
            killed_at.append(0)
        assert was_running or killed_at[-1] == STEPS, (delay, killed_at)
        result = Trainer(_cfg(out), X, resume=last is not None).fit()
        assert result.step == STEPS
        names = [p.name for p in list_checkpoints(out / "checkpoints")]
        assert names[-1] == f"step_{STEPS:08d}"
        _assert_same_run(tmp_path / "ref", out)
    assert all(s > 0 for s in killed_at) and any(s < STEPS for s in killed_at), killed_at
