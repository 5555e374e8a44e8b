"""Scale-out benchmark: samples/s with 1 and 2 processes on the CPU, and the gather overhead.

1. Throughput: a small digits U-Net (trained for a few steps: the speed does not depend on the
   weights) draws ``--n`` samples with Euler-Maruyama through :func:`scoresde.shard.sample_sharded`
   in shards of ``--batch`` samples, under ``torchrun --nproc_per_node=K`` for K = 1 and 2 (one
   intra-op thread per process, torchrun's default), and in one process with two threads
   (what a user of a 2-core machine gets without torchrun; one shard only, since two threads
   can crawl on a loaded machine). Each run is timed inside the
   workers from the first shard to the written ``.npz`` (process start and model loading
   excluded), best of ``--repeats``; the outputs of K = 1 and 2 are checked to be equal bit for
   bit. Ideal speed-up of K = 2 over K = 1: 2x.
2. Gather overhead: the part of a run that is not sampling -- writing each shard atomically,
   waiting for the other rank, rank 0 reading and joining the shards, writing the output --
   for the runs above, and for a run of trivial shards (zeros) of ``--gather-mb`` megabytes,
   where it is all there is (MB/s).

Run: ``python benchmarks/scale_out.py [--quick]``; prints Markdown tables (copy them into
``benchmarks/RESULTS.md``). The machine's other load shows in the 2-process numbers; the
script prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import log, markdown_table  # noqa: E402


def _worker(a: argparse.Namespace) -> None:
    """One rank: sharded sampling (or trivial shards) timed from the first shard to the file."""
    from scoresde.checkpoint import atomic_write_bytes
    from scoresde.shard import ShardFolder, ShardPlan, run_shards, sample_sharded
    from scoresde.train import cleanup_distributed, load_trained, setup_distributed

    torch.set_num_threads(a.threads)
    info = setup_distributed("cpu")
    out, folder = Path(a.out), Path(a.out + ".shards")
    if a.mode == "sample":
        tm = load_trained(a.ckpt)
        t0 = time.perf_counter()
        res = sample_sharded(tm.score_fn, tm.sde, (a.n, *tm.event_shape), seed=0,
                             shard_size=a.batch, folder=folder, steps=a.steps)  # fmt: skip
    else:  # trivial shards: what gathering costs by itself
        per = (a.mb * 2**20) // (a.n * 4)
        plan = ShardPlan(a.n, a.batch)
        t0 = time.perf_counter()
        res = run_shards(plan, lambda s, e: {"samples": torch.zeros(e - s, per)},
                         ShardFolder(folder, {"mode": "gather"}, plan))  # fmt: skip
    if info.is_main:
        t1 = time.perf_counter()
        import io

        buf = io.BytesIO()
        np.savez(buf, samples=res.arrays["samples"].numpy())
        atomic_write_bytes(out, buf.getvalue())
        t2 = time.perf_counter()
        ShardFolder(folder, {}, ShardPlan(1, 1)).remove()
        row = {"world": info.world_size, "threads": a.threads, "total": t2 - t0,
               "write": t2 - t1, **res.seconds}  # fmt: skip
        print("RESULT " + json.dumps(row), flush=True)
    cleanup_distributed()


def _launch(k: int, threads: int, argv: list[str]) -> dict[str, float]:
    """Run this script's worker under torchrun with ``k`` processes; rank 0's timings."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={k}", __file__, "--worker", f"--threads={threads}",
           *argv]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _train(root: Path) -> Path:
    from scoresde.train import TrainConfig, Trainer

    out = root / "digits"
    cfg = TrainConfig(data="digits", out=str(out), steps=2, batch_size=16, progress=False,
                      sample_n=0, tensorboard=False, device="cpu",
                      model_kwargs={"channels": 16, "num_res_blocks": 1})  # fmt: skip
    Trainer(cfg).fit()
    return out


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["total"])


def _throughput(a: argparse.Namespace, root: Path) -> tuple[str, list[dict[str, float]]]:
    ckpt = _train(root)
    base = ["--mode", "sample", "--ckpt", str(ckpt), "--num-samples", str(a.n),
            "--batch", str(a.batch), "--steps", str(a.steps)]  # fmt: skip
    results, files = [], {}
    for k, threads in ((1, 1), (2, 1), (1, 2)):
        out = root / f"s_{k}_{threads}.npz"
        runs = []
        for rep in range(a.repeats if threads == 1 else 1):
            log(f"sampling: {k} process(es) x {threads} thread(s), repeat {rep + 1}")
            argv = [*base, "--out", str(out)]
            if threads > 1:  # one shard: two threads can be very slow on a loaded machine
                argv[argv.index("--num-samples") + 1] = str(a.batch)
            runs.append(_launch(k, threads, argv))
            log(f"  {runs[-1]}")
        files[(k, threads)] = np.load(out)["samples"]
        results.append(_best(runs))
    same = bool(np.array_equal(files[(1, 1)], files[(2, 1)]))
    t1 = results[0]["total"]
    rows = []
    for r in results:
        overhead, n = r["total"] - r["compute"], a.n if r["threads"] == 1 else a.batch
        rows.append([f"{r['world']} x {r['threads']}", n / r["total"], t1 * n / a.n / r["total"],
                     r["compute"], r.get("wait", 0.0), r.get("gather", 0.0), r["write"],
                     100 * overhead / r["total"]])  # fmt: skip
    header = ["processes x threads", "samples/s", "speed-up vs 1 x 1", "compute s",
              "wait s", "gather s", "write s", "not sampling %"]  # fmt: skip
    text = (f"Sampling {a.n} digits (8x8 U-Net, 16 channels), Euler-Maruyama {a.steps} steps, "
            f"shards of {a.batch} (1 x 2 threads: one shard); K=2 output equals K=1 bit for "
            f"bit: {same}\n\n"
            + markdown_table(header, rows))  # fmt: skip
    return text, results


def _gather(a: argparse.Namespace, root: Path) -> str:
    rows = []
    for k in (1, 2):
        log(f"gather: {a.gather_mb} MB of trivial shards over {k} process(es)")
        argv = ["--mode", "gather", "--num-samples", "20000", "--batch", "1000",
                "--mb", str(a.gather_mb), "--out", str(root / f"g{k}.npz")]  # fmt: skip
        r = _best([_launch(k, 1, argv) for _ in range(a.repeats)])
        log(f"  {r}")
        rows.append([k, a.gather_mb, r["compute"], r.get("wait", 0.0), r.get("gather", 0.0),
                     r["write"], r["total"], a.gather_mb / r["total"]])  # fmt: skip
    header = ["processes", "MB", "write shards s", "wait s", "read+join s", "write output s",
              "total s", "MB/s"]  # fmt: skip
    return (f"Gathering trivial shards (20 shards of zeros, {a.gather_mb} MB in all)\n\n"
            + markdown_table(header, rows))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    p.add_argument("--num-samples", dest="n", type=int, default=1024, help="samples (1024)")
    p.add_argument("--batch", type=int, default=128, help="shard size (default 128)")
    p.add_argument("--steps", type=int, default=100, help="sampler steps (default 100)")
    p.add_argument("--repeats", type=int, default=2, help="best of (default 2)")
    p.add_argument("--gather-mb", type=int, default=64, help="size of the gather test (64 MB)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="sample", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mb", type=int, default=64, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        _worker(a)
        return
    if a.quick:
        a.n, a.steps, a.repeats, a.gather_mb = 256, 40, 1, 16
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        text, _ = _throughput(a, Path(tmp))
        gather = _gather(a, Path(tmp))
    print(f"Machine: {os.cpu_count()} CPUs, load average before the run {load[0]:.1f}, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")  # fmt: skip
    print(text + "\n\n" + gather)


if __name__ == "__main__":
    main()
