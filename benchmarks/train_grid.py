"""Cost of the sample grid at the end of ``scoresde train`` on Fashion-MNIST-shaped images.

The grid is ``sample_n`` images from the EMA network of the default model for 28x28 grey images
(``model=auto``: the small U-Net), drawn by ``write_samples``' sampler. Before issue 19 the
defaults were 64 images x 250 Euler-Maruyama steps; now ``fast`` (DPM-Solver++(3M) with the
UniC-style corrector) with 10 steps (NFE 11). The network is untrained (the cost does not depend
on the weights). The 250-step time is ``250 x`` the measured time of one Euler-Maruyama step
unless ``--full`` runs all of it.

    python benchmarks/train_grid.py [--full] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from _shared import log, markdown_table
from scoresde.sampling import sample
from scoresde.train import TrainConfig
from scoresde.train.build import build_score_model, build_sde, net_from_config


def _time(score: object, sde: object, sampler: str, steps: int, n: int) -> float:
    start = time.perf_counter()
    sample(score, sde, (n, 1, 28, 28), sampler=sampler, steps=steps,  # type: ignore[arg-type]
           generator=torch.Generator().manual_seed(0))  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    """Print a Markdown table of the grid's cost for the old and the new defaults."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="run all 250 Euler-Maruyama steps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data="fashion-mnist").resolved()
    net = net_from_config(cfg, (1, 28, 28), is_image=True, num_classes=None).eval()
    sde = build_sde(cfg)
    score = build_score_model(cfg, net, sde, 0.5).score_fn()
    n = cfg.sample_n
    log(f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params, {n} images")
    fast = _time(score, sde, cfg.sampler, cfg.sample_steps, n)
    em_steps = 250 if args.full else 5
    em = _time(score, sde, "euler_maruyama", em_steps, n) * 250 / em_steps
    rows = [
        ["euler_maruyama (before)", 250, 250, f"{em:.1f}" + ("" if args.full else " (est.)")],
        [f"{cfg.sampler} (now)", cfg.sample_steps, cfg.sample_steps + 1, f"{fast:.1f}"],
    ]
    print(markdown_table(["grid sampler", "steps", "NFE", "seconds"], rows))


if __name__ == "__main__":
    main()
