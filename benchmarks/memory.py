"""Peak memory of sampling and likelihood against the number of samples, chunked or not.

Each measurement runs in a fresh process and reads its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``); the peak of the same call on 100 samples (imports,
code, allocator pools) is subtracted, and so is the result itself (``N x d`` floats, which any
caller must hold), leaving the *working* memory. With ``batch_size=`` the working memory stays
flat as the count grows; without it, it grows linearly. Exact score of a 64-D, 8-component
Gaussian mixture on the VP SDE; float32; CPU, one thread.

    python benchmarks/memory.py            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _shared import markdown_row, markdown_table

DIM, MODES = 64, 8


def _measure(kind: str, n: int, batch_size: int | None) -> dict[str, float]:
    """Run inside the child: one call, then report peak RSS (MiB) and seconds."""
    import torch

    import scoresde as S
    from scoresde.targets import GaussianMixture

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(3 * torch.randn(MODES, DIM, generator=g), variances=[0.5] * MODES)
    sde = S.VPSDE()
    start = time.perf_counter()
    if kind == "sample":
        S.sample(gm.score_fn(sde), sde, (n, DIM), sampler="euler_maruyama", steps=20,
                 generator=g, dtype=torch.float32, batch_size=batch_size)  # fmt: skip
    else:
        x = gm.sample(n, g).float()
        S.log_likelihood(gm.score_fn(sde), sde, x, rtol=1e-3, atol=1e-3, generator=g,
                         batch_size=batch_size)  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_mib": peak, "seconds": seconds}


def _child(kind: str, n: int, batch_size: int | None) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, __file__, "--child", kind, str(n), str(batch_size or 0)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print a Markdown table of working memory (MiB) against count."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--sample-counts", default="1000,10000,100000")
    p.add_argument("--likelihood-counts", default="1000,10000,40000")
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args()
    if args.child:
        kind, n, bs = args.child
        print(json.dumps(_measure(kind, int(n), int(bs) or None)))
        return
    print(f"d = {DIM}, float32; working memory = peak RSS - peak RSS of the same call on 100 "
          "samples - the result's size\n")  # fmt: skip
    header = ["call", "N", "result MiB", "working MiB, one batch",
              f"working MiB, batch_size={args.batch_size}", "seconds (one / chunked)"]  # fmt: skip
    print(markdown_table(header, []))
    for kind, counts in (("sample", args.sample_counts), ("likelihood", args.likelihood_counts)):
        base = _child(kind, 100, None)["peak_mib"]
        for n in (int(c) for c in counts.split(",")):
            result = n * DIM * 4 / 2**20 * (1 if kind == "sample" else 2)  # x and latent
            one = _child(kind, n, None)
            chunked = _child(kind, n, args.batch_size)
            w1 = one["peak_mib"] - base - result
            w2 = chunked["peak_mib"] - base - result
            seconds = f"{one['seconds']:.1f} / {chunked['seconds']:.1f}"
            row = [kind, n, f"{result:.1f}", f"{w1:.1f}", f"{w2:.1f}", seconds]
            print(markdown_row(row), flush=True)


if __name__ == "__main__":
    main()
