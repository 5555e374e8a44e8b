"""Issue 17, real processes: two gloo ranks on the CPU against one process, resume, dying ranks.

- ``sample`` under ``torchrun --nproc_per_node=2`` writes the file one process writes, bit for
  bit (odd counts, a last short shard, a rank with fewer shards);
- ``likelihood`` gives every data point the value one process gives it;
- ``eval`` gives the same JSON metrics;
- the Python API (:mod:`scoresde.shard`) over ``torch.multiprocessing`` matches one process;
- a run killed by SIGKILL resumes (``--resume``) to the same file;
- a rank killed mid-run ends the run with a clear message and no output file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import ONE_THREAD_ENV as ENV
from helpers import run_scoresde as scoresde
from scoresde.train import TrainConfig, Trainer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo")]

CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale_tr") / "moons"
    cfg = TrainConfig(data="moons", data_kwargs={"n": 256}, out=str(out), steps=30,
                      batch_size=32, progress=False, sample_n=0, tensorboard=False,
                      model_kwargs={"hidden": 16, "depth": 2}, device="cpu")  # fmt: skip
    Trainer(cfg).fit()
    return out


@pytest.mark.parametrize("n, batch", [(11, 3), (5, 4), (8, 4)])
def test_two_ranks_sample_the_file_one_process_samples(
    run: Path, tmp_path: Path, n: int, batch: int
) -> None:
    argv = ["sample", "--ckpt", run, "--num-samples", n, "--batch-size", batch, "--steps", 7, *CPU]
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    scoresde(*argv, "--out", one)
    proc = scoresde(*argv, "--out", two, nproc=2)
    assert proc.stdout.count(f"wrote {n} samples") == 1  # rank 0 alone writes
    assert np.array_equal(np.load(one)["samples"], np.load(two)["samples"])
    assert one.read_bytes() == two.read_bytes()


def test_two_ranks_give_each_point_the_likelihood_of_one_process(run: Path, tmp_path: Path) -> None:
    argv = ["likelihood", "--ckpt", run, "--num-samples", 9, "--batch-size", 2, "--rtol", 1e-4,
            "--atol", 1e-4, "--divergence", "hutchinson", *CPU]  # fmt: skip
    scoresde(*argv, "--points", tmp_path / "one.npz", "--out", tmp_path / "one.json")
    scoresde(*argv, "--points", tmp_path / "two.npz", "--out", tmp_path / "two.json", nproc=2)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert np.array_equal(one["log_prob"], two["log_prob"]) and one["log_prob"].shape == (9,)
    assert np.array_equal(one["nfe"], two["nfe"])  # every rank ran its own adaptive solves
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert (a.pop("processes"), b.pop("processes")) == (1, 2) and a == b


def test_two_ranks_eval_like_one_process(run: Path, tmp_path: Path) -> None:
    argv = ["eval", "--ckpt", run, "--num-samples", 50, "--batch-size", 7, "--steps", 5,
            "--bpd-n", 5, "--likelihood-batch-size", 2, "--rtol", 1e-3, "--atol", 1e-3,
            "--kid-subsets", 4, *CPU]  # fmt: skip
    scoresde(*argv, "--out", tmp_path / "one.json")
    scoresde(*argv, "--out", tmp_path / "two.json", nproc=2)
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert a["metrics"] == b["metrics"] and a["likelihood"] == b["likelihood"]
    assert (a["processes"], b["processes"]) == (1, 2)
    assert (tmp_path / "two.md").read_text() == (tmp_path / "one.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from scoresde.sde import VPSDE
    from scoresde.shard import log_likelihood_sharded, sample_sharded
    from scoresde.targets import GaussianMixture
    from scoresde.train import cleanup_distributed, setup_distributed

    setup_distributed("cpu")
    sde, gm = VPSDE(), GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])
    s = sample_sharded(gm.score_fn(sde), sde, (13, 2), seed=4, shard_size=3, steps=9,
                       folder=Path(out) / "s")  # fmt: skip
    x = gm.sample(7, torch.Generator().manual_seed(1), dtype=torch.float64)
    ll = log_likelihood_sharded(gm.score_fn(sde), sde, x, seed=1, shard_size=2, rtol=1e-4,
                                atol=1e-4, folder=Path(out) / "l")  # fmt: skip
    if rank == 0:
        torch.save({"s": s.arrays["samples"], "l": ll.arrays["log_prob"]}, Path(out) / "r.pt")
    else:
        assert s.arrays is None and ll.arrays is None
    cleanup_distributed()


def test_python_api_over_two_processes_matches_one(tmp_path: Path) -> None:
    from scoresde.sde import VPSDE
    from scoresde.shard import log_likelihood_sharded, sample_sharded
    from scoresde.targets import GaussianMixture

    mp.spawn(_api_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "r.pt", weights_only=True)
    sde, gm = VPSDE(), GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])
    s = sample_sharded(gm.score_fn(sde), sde, (13, 2), seed=4, shard_size=3, steps=9)
    x = gm.sample(7, torch.Generator().manual_seed(1), dtype=torch.float64)
    ll = log_likelihood_sharded(gm.score_fn(sde), sde, x, seed=1, shard_size=2, rtol=1e-4,
                                atol=1e-4)  # fmt: skip
    assert torch.equal(two["s"], s.arrays["samples"]) and torch.equal(
        two["l"], ll.arrays["log_prob"]
    )


SLOW_SAMPLE = ["--num-samples", 40, "--batch-size", 4, "--steps", 1500, *CPU]


def _start(run: Path, out: Path, nproc: int) -> subprocess.Popen[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc else [sys.executable]  # fmt: skip
    argv = ["sample", "--ckpt", run, *SLOW_SAMPLE, "--out", out]
    return subprocess.Popen([*launcher, "-m", "scoresde", *map(str, argv)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _wait_for_shards(folder: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while len(list(folder.glob("shard-*.safetensors"))) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def _rank_of(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


def test_a_killed_run_resumes_to_the_same_file(run: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    scoresde("sample", "--ckpt", run, *SLOW_SAMPLE, "--out", full)
    proc = _start(run, part, nproc=0)
    shards = Path(str(part) + ".shards")
    _wait_for_shards(shards, 2, proc)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.communicate()
    done = len(list(shards.glob("shard-*.safetensors")))
    assert not part.exists() and 2 <= done < 10
    res = scoresde("sample", "--ckpt", run, *SLOW_SAMPLE, "--out", part, "--resume", nproc=2)
    assert part.read_bytes() == full.read_bytes() and not shards.exists()
    assert "wrote 40 samples" in res.stdout


def test_a_dying_rank_ends_the_run_with_a_clear_message_and_no_output(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.npz"
    proc = _start(run, out, nproc=2)
    shards = Path(str(out) + ".shards")
    _wait_for_shards(shards, 1, proc)
    workers = {_rank_of(p): p for p in _children(proc.pid)}
    os.kill(workers[1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and not out.exists()
    assert "scoresde sample: error: " in stderr and "--resume" in stderr, stderr[-3000:]
    assert "shards are finished in" in stderr
    assert "wrote" not in stdout
