"""Samplers benchmark: time per step outside the model, scoresde against diffusers and k-diffusion.

Each library's sampling loop runs 50 steps at batch 256 with the same small MLP (3 -> 64 -> 64
-> 2, SiLU) as the model on the EDM noise range (sigma in [0.002, 80]); the time spent inside
the MLP is measured and subtracted, leaving the loop's own cost per model call (best of 15).

Run: ``python benchmarks/samplers_overhead.py [--out DIR]``; writes ``samplers_overhead.json``
and ``samplers_overhead.md`` (the table) into ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import markdown_table, write_text
from samplers_peers import SIGMA_MAX, SIGMA_MIN, load_peers

OURS = ("euler", "dpm_solver", "heun", "euler_maruyama", "ddim")
K_LOOPS = ("euler", "dpmpp_2m", "heun")
DIFFUSERS_LOOPS = ("Euler", "DPMSolverMultistep", "DDIM")


class TimedMLP:
    """The model of every loop: a small MLP of ``(x, noise level)`` that times its own calls."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 2),
        )
        self.spent, self.calls = 0.0, 0

    def __call__(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.net(torch.cat([x, c.reshape(-1, 1).expand(x.shape[0], 1)], 1))
        self.spent += time.perf_counter() - t0
        self.calls += 1
        return out

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A stable score from the MLP (its output as a denoiser): ``(D - x) / sigma^2``."""
        return (self(x, t) - x) / (t[:, None] ** 2)

    def outside(self, fn: Callable[[], Any], repeats: int = 15) -> float:
        """Best over ``repeats`` runs of ``fn`` of the microseconds per call spent outside."""
        best = float("inf")
        for _ in range(repeats):
            self.spent, self.calls = 0.0, 0
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            total = time.perf_counter() - t0
            best = min(best, (total - self.spent) / max(self.calls, 1) * 1e6)
        return best


def diffusers_loop(make: Callable[[], Any], mlp: TimedMLP, steps: int, batch: int) -> None:
    """A diffusers scheduler's loop with the MLP as its model."""
    sch = make()
    sch.set_timesteps(steps)
    x = torch.randn(batch, 2)
    for t in sch.timesteps:
        inp = sch.scale_model_input(x, t)
        x = sch.step(mlp(inp, t.float().expand(batch)), t, x).prev_sample


def overhead(
    ks: Any, dsch: dict[str, Callable[[], Any]], steps: int = 50, batch: int = 256
) -> dict[str, float]:
    """Microseconds per step outside the model call, with a small MLP as the model."""
    mlp = TimedMLP()
    sde = S.EDMSDE(SIGMA_MIN, SIGMA_MAX)
    out: dict[str, float] = {}
    for name in OURS:
        out[f"scoresde:{name}"] = mlp.outside(
            lambda name=name: S.sample(
                mlp.score, sde, (batch, 2), sampler=name, steps=steps,
                generator=torch.Generator().manual_seed(0),
            )
        )  # fmt: skip
    if ks is not None:
        sig = ks.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX)
        for name in K_LOOPS:
            fn = getattr(ks, f"sample_{name}")
            out[f"k-diffusion:{name}"] = mlp.outside(
                lambda fn=fn: fn(mlp, torch.randn(batch, 2) * SIGMA_MAX, sig, disable=True)
            )
    for name in (n for n in DIFFUSERS_LOOPS if n in dsch):
        out[f"diffusers:{name}"] = mlp.outside(
            lambda make=dsch[name]: diffusers_loop(make, mlp, steps, batch)
        )
    return out


def report(results: dict[str, float]) -> str:
    """The Markdown table (for ``benchmarks/RESULTS.md``)."""
    rows = [[k, f"{v:.0f}"] for k, v in results.items()]
    title = "\n### Overhead per step outside the model (µs, small MLP, batch 256, CPU)\n"
    return title + "\n" + markdown_table(["loop", "µs / step"], rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Measure every loop; write ``samplers_overhead.json`` / ``.md`` and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = overhead(*load_peers())
    write_text(Path(args.out) / "samplers_overhead.json", json.dumps(results, indent=1))
    md = report(results)
    write_text(Path(args.out) / "samplers_overhead.md", md)
    print(md)
    return results


if __name__ == "__main__":
    main()
