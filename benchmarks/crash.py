"""Crash benchmark: SIGKILL a real ``scoresde train`` process at random points, resume, compare.

For each run, ``python -m scoresde train`` starts on a tiny MLP (checkpoint every 3 steps, so
kills often land inside a checkpoint write or a prune) and is killed with SIGKILL after a random
delay; the newest checkpoint on disk must load and verify; ``scoresde train --resume`` (or a
fresh start if no checkpoint was written yet) finishes the run; the final weights, EMA weights
and optimizer state must equal those of an uninterrupted run bit for bit (CPU,
``deterministic=true``). Some runs are killed twice.

    python benchmarks/crash.py --runs 12
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _shared import write_text
from scoresde.checkpoint import latest_checkpoint, load_checkpoint

STEPS = 300


def _argv(data: Path, out: Path, resume: bool) -> list[str]:
    argv = [sys.executable, "-m", "scoresde", "train", "--data", str(data), "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "32", "--lr", "1e-3", "--warmup-steps", "20",
            "--ckpt-every", "3", "--keep-last", "2", "--log-every", "3", "--device", "cpu",
            "--no-progress", "--set", "sample_n=0", "--set", "tensorboard=false",
            "--set", "deterministic=true",
            "--set", "model_kwargs={hidden: 16, depth: 2, dropout: 0.1}"]  # fmt: skip
    return [*argv, "--resume"] if resume else argv


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(data: Path, out: Path, resume: bool, kill_after: float | None) -> tuple[bool, float]:
    """Run training; SIGKILL it ``kill_after`` s after its first log line. (killed, seconds)."""
    proc = subprocess.Popen(
        _argv(data, out, resume), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    proc.stderr.readline()  # "scoresde train: MLP ..." : the model is built, training starts
    t0 = time.perf_counter()
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"training failed: {err.decode()[-500:]}")
        return False, time.perf_counter() - t0
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL, time.perf_counter() - t0


def _same(a: Path, b: Path) -> bool:
    ca = load_checkpoint(latest_checkpoint(a / "checkpoints"))  # type: ignore[arg-type]
    cb = load_checkpoint(latest_checkpoint(b / "checkpoints"))  # type: ignore[arg-type]
    same = ca.step == cb.step == STEPS
    same &= all(torch.equal(ca.model[k], cb.model[k]) for k in ca.model)
    same &= all(torch.equal(ca.ema[k], cb.ema[k]) for k in ca.ema)
    sa, sb = ca.state["optimizer"]["state"], cb.state["optimizer"]["state"]  # type: ignore[index]
    same &= all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    return bool(same)


def main() -> None:
    """Run the benchmark and print one line per run and a summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the per-run results here")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="scoresde-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.npy"
    np.save(data, np.random.default_rng(0).standard_normal((512, 2)).astype(np.float32))
    _, ref_seconds = _train(data, work / "ref", False, None)  # training only, no start-up
    fit = load_checkpoint(latest_checkpoint(work / "ref" / "checkpoints"))  # type: ignore[arg-type]
    assert fit.step == STEPS
    rng = random.Random(args.seed)
    rows = []
    for run in range(args.runs):
        out = work / f"run{run:02d}"
        kills = 1 + (run % 3 == 2)  # every third run is killed twice
        steps_at_kill, intact = [], True
        for _ in range(kills):
            resume = latest_checkpoint(out / "checkpoints") is not None
            killed, _ = _train(data, out, resume, rng.uniform(0.0, 0.8 * ref_seconds))
            last = latest_checkpoint(out / "checkpoints")
            try:
                steps_at_kill.append(load_checkpoint(last).step if last else 0)
            except ValueError as err:  # a damaged newest checkpoint: the failure we look for
                intact = False
                steps_at_kill.append(-1)
                print(f"run {run}: newest checkpoint damaged: {err}")
            if not killed:
                steps_at_kill[-1] = STEPS
        if intact:
            _train(data, out, latest_checkpoint(out / "checkpoints") is not None, None)
        same = intact and _same(work / "ref", out)
        stray = sorted(p.name for p in (out / "checkpoints").glob(".*")) if intact else []
        rows.append({"run": run, "killed_at_steps": steps_at_kill, "intact": intact,
                     "identical": same, "stray_temp_dirs": stray})  # fmt: skip
        print(f"run {run:2d}: killed after checkpoint steps {steps_at_kill}, intact {intact}, "
              f"identical weights {same}, temp dirs left {stray}")  # fmt: skip
    ok = sum(r["identical"] for r in rows)
    mid = sum(any(0 < s < STEPS for s in r["killed_at_steps"]) for r in rows)
    print(f"{ok}/{len(rows)} runs resumed to bit-identical weights; {mid} killed mid-run; "
          f"uninterrupted training {ref_seconds:.1f} s (after start-up)")  # fmt: skip
    if args.json:
        write_text(args.json, json.dumps({"runs": rows, "ref_s": ref_seconds}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    if ok != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
