"""What ``fast``'s split solver costs per step outside the model, against plain DPM-Solver++.

The model is an exact Gaussian-mixture score (``d`` = 2, 64 and 784; 8 modes), timed by a
wrapper so that its own time is subtracted; ``fast`` runs ``--steps`` steps at batch
``--batch`` with ``split=True`` and ``split=False`` on the same model-chosen grid (the probe
is cached after the first call and not timed). The split adds per step: the Lagrange weights on
the host (float64, ``k + 1 = 9`` variances, up to 3 nodes) and a few ``n x d x 8`` products.

Run: ``python benchmarks/split_overhead.py [--steps 9] [--batch 256] [--out DIR]``; writes
``split_overhead.md`` into ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import markdown_table, write_text
from scoresde.targets import GaussianMixture


class Timed:
    """A score function that measures the time spent inside it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.spent, self.calls = fn, 0.0, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.spent += time.perf_counter() - t0
        self.calls += 1
        return out


def target(d: int) -> GaussianMixture:
    """Eight modes of std 0.1-0.5 at scale 2 in ``d`` dimensions (seed 0)."""
    g = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(8, d, generator=g)
    std = 0.1 + 0.4 * torch.rand(8, generator=g)
    return GaussianMixture(means, std**2)


def per_step(timed: Timed, sde: S.SDE, d: int, steps: int, batch: int, split: bool) -> float:
    """Best of 10: microseconds per score call spent outside the model."""
    best = float("inf")
    for _ in range(10):
        timed.spent, timed.calls = 0.0, 0
        t0 = time.perf_counter()
        S.sample(timed, sde, (batch, d), sampler="fast", steps=steps, split=split,
                 generator=torch.Generator().manual_seed(1))  # fmt: skip
        total = time.perf_counter() - t0
        best = min(best, (total - timed.spent) / timed.calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sde = S.EDMSDE(0.002, 80.0)
    rows = []
    for d in (2, 64, 784):
        timed = Timed(target(d).score_fn(sde))
        S.sample(timed, sde, (8, d), sampler="fast", steps=args.steps)  # probe once (cached)
        plain = per_step(timed, sde, d, args.steps, args.batch, False)
        split = per_step(timed, sde, d, args.steps, args.batch, True)
        rows.append([d, args.batch, args.steps, f"{plain:.0f}", f"{split:.0f}",
                     f"{split - plain:.0f}"])  # fmt: skip
        print(rows[-1], flush=True)
    head = ["d", "batch", "steps", "plain µs/step", "split µs/step", "split extra µs/step"]
    write_text(args.out / "split_overhead.md", markdown_table(head, rows))


if __name__ == "__main__":
    main()
