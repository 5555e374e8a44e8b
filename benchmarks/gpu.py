"""GPU benchmarks for issue #6: training throughput, sampler overhead, likelihood, Fashion-MNIST.

Parts (``--part``, comma-separated, or ``all``):

1. ``train``: images/s of the 35.7M DDPM++ U-Net (``UNet.cifar``) at 32x32x3, batch 128, bf16
   autocast, channels-last, fused AdamW: (i) :class:`scoresde.train.Trainer` (its own per-window
   ``it_per_s`` from ``metrics.csv``, windows after warm-up and compilation), eager and
   ``torch.compile``; (ii) a bare PyTorch loop of the same network and loss, with and without
   the trainer's extra work (gradient clipping + EMA); (iii) diffusers' ``UNet2DModel`` in the
   DDPM CIFAR configuration with diffusers' DDPM epsilon-loss (if ``import diffusers`` works).
   Also (i) at the 28x28x1 Fashion-MNIST shape (the U-Net runs at any size).
2. ``sample``: wall time of ``scoresde.sample`` for every fixed-step sampler at 10 and 20 steps,
   batch 256, the U-Net in bf16 autocast, against ``NFE x`` one network forward at batch 256;
   beside it diffusers' ``DPMSolverMultistepScheduler`` loop with ``UNet2DModel``.
3. ``likelihood``: ``scoresde.log_likelihood`` (Hutchinson, dopri5) with the U-Net at batch 32
   against the SciPy RK45 NumPy round trip of ``benchmarks/likelihood_reference.py``: NFE, wall
   time and the cost of one evaluation against one forward + one VJP.
4. ``fashion``: train on Fashion-MNIST for ``--minutes`` with the Trainer's step, then test-set
   bits/dim (dequantised), an 8x8 sample grid PNG and sample quality of the ``fast`` sampler at
   NFE 10/20/50 against 1000-step Euler-Maruyama: Frechet distance in the penultimate features
   of a small CNN classifier trained here, and its mean confidence.

Timing: ``torch.cuda.synchronize`` around a fixed number of calls after warm-up (compilation is
excluded); medians of repeats. ``--smoke`` shrinks every size so the whole script runs on a CPU
in well under a minute (a correctness check, not a measurement).

Writes ``<out>/gpu.json`` (every number; parts of an earlier run in the same folder are kept)
and ``<out>/gpu.md`` (tables for ``benchmarks/RESULTS.md``) after every part, and
``<out>/fashion_grid.png``.

Run: ``PYTHONPATH=src python benchmarks/gpu.py --part all --out OUT`` (see ``--help``).

Layout: this file is the driver (options, the order of the parts); each part is a script of its
own, ``gpu_train.py``, ``gpu_sample.py``, ``gpu_likelihood.py`` and ``gpu_fashion.py`` (each
also runs alone with this file's options: ``python benchmarks/gpu_sample.py --smoke``), on
``gpu_common.py`` (sizes, timing, the part record) and ``gpu_report.py`` (the one writer of
``gpu.json`` / ``gpu.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from gpu_common import FULL, SMOKE, Part, Sizes, attempt
from gpu_fashion import part_fashion
from gpu_likelihood import part_likelihood
from gpu_report import PARTS, Report, markdown, meta
from gpu_sample import part_sample
from gpu_train import part_train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU correctness check")
    p.add_argument("--part", default="all", help=f"comma-separated of {PARTS} or 'all'")
    p.add_argument("--out", default="benchmarks/out/gpu", help="folder for gpu.json / gpu.md")
    p.add_argument("--minutes", type=float, default=6.0, help="fashion: training wall time")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument(
        "--compile",
        choices=("both", "off", "only"),
        default="both",
        help="torch.compile cases: both, off (eager only), only (compiled only); the fashion "
        "run compiles unless 'off' (smoke: always off)",
    )
    p.add_argument("--quality-n", type=int, default=None, help="fashion: samples per sampler")
    p.add_argument("--bpd-n", type=int, default=None, help="fashion: test images for bits/dim")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only merge these gpu.json files (e.g. of several device calls) into --out",
    )
    args = p.parse_args(argv)
    parts = PARTS if args.part == "all" else tuple(s.strip() for s in args.part.split(","))
    bad = [s for s in parts if s not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; choose from {list(PARTS)} or 'all'")
    args.parts = parts
    return args


def run_sizes(args: argparse.Namespace) -> Sizes:
    """The sizes of this run: :data:`SMOKE` or :data:`FULL` with the command line's overrides."""
    sizes = SMOKE if args.smoke else FULL
    if not args.smoke:
        cases = {"both": (False, True), "off": (False,), "only": (True,)}[args.compile]
        sizes = dataclasses.replace(sizes, compile_cases=cases)
    for name in ("quality_n", "bpd_n"):
        if getattr(args, name) is not None:
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    return sizes


def run_part(
    name: str, sizes: Sizes, device: torch.device, args: argparse.Namespace, report: Report
) -> None:
    """Run one part; its rows (and the part's own error, if it broke) go to ``report``."""
    start = time.perf_counter()
    part = Part(partial(report.save, name))
    minutes = 0.2 if args.smoke else args.minutes
    runner: Callable[[], dict[str, Any]] = {
        "train": partial(part_train, sizes, device, part),
        "sample": partial(part_sample, sizes, device, part),
        "likelihood": partial(part_likelihood, sizes, device, part),
        "fashion": partial(part_fashion, sizes, device, minutes, args.data_dir, report.out, part),
    }[name]
    got = attempt(f"part {name}", runner)
    if "error" in got:  # the part itself broke: keep its rows and the error
        part.result["error"] = got["error"]
    part.save()
    print(f"[gpu.py] part {name} done in {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen parts; returns the report dict (also written to ``--out``)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    sizes = run_sizes(args)
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report = Report(Path(args.out), meta(device, args.smoke))
    if args.merge:
        for path in args.merge:
            report.merge_file(Path(path))
    else:
        for name in args.parts:
            run_part(name, sizes, device, args, report)
    print(markdown(report.data))
    return report.data


if __name__ == "__main__":
    main()
