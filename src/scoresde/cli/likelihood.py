"""``scoresde likelihood``: exact log-likelihood of data under a trained model.

The probability-flow ODE's instantaneous change of variables (Song et al. 2021, sec. 4.3 and
App. D.2) by :func:`scoresde.log_likelihood`; bits per dimension for quantised (image) data with
uniform dequantisation (:func:`scoresde.bits_per_dim`). Runs in shards of ``--batch-size``
points across the processes of ``torchrun`` (:mod:`scoresde.shard`), with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._io import write_npz
from ._scale import (
    CALIBRATION_POINTS,
    add_shard_arguments,
    add_solver_arguments,
    dataset_likelihood,
    likelihood_summary,
    load_eval_data,
    process_group,
    remove_shards,
    shard_folder,
)
from .core import (
    CLIError,
    Command,
    add_checkpoint_argument,
    add_count_argument,
    add_runtime_arguments,
    check_out,
    load_model,
)

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p)
    p.add_argument(
        "--data",
        metavar="NAME|PATH",
        help="data to evaluate (default: the training data set's test split)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "test", "all"),
        help="split of a built-in data set (default test; toy sets: an independent draw)",
    )
    add_count_argument(p, "data points to evaluate (default 512)", default=512)
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument(
        "--points",
        metavar="FILE.npz",
        help="also write each point's log-density (nats, 'log_prob') and NFE ('nfe')",
    )
    p.add_argument("--batch-size", type=int, default=256, help="points per ODE solve (default 256)")
    add_solver_arguments(p)
    p.add_argument(
        "--fit-grid",
        type=int,
        metavar="NFE",
        default=None,
        help="solve on a fixed grid of NFE batched score calls fitted to the model on the first "
        "128 points (scoresde.likelihood.fit_grid; rank 0 fits it, every process uses it): the "
        "same calls for every point, no per-step synchronisation; --rtol/--atol are then "
        "unused (default: the adaptive solver)",
    )
    p.add_argument(
        "--grid-method",
        choices=("auto", "expint4", "dopri5"),
        default="auto",
        help="how the --fit-grid grid steps: expint4 (the exponential multistep "
        "predictor-corrector, 1 call a step), dopri5 (6 calls a step) or auto (default: expint4, "
        "dopri5 on flow paths, where expint4 cannot start)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of dequantisation noise and Hutchinson probes (default 0); each point's "
        "result is the same for any number of processes",
    )
    add_shard_arguments(p)
    add_runtime_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import atomic_write_text

    with process_group(args) as info:
        trained, _ = load_model(args, out=(".json",), counts=("num_samples", "batch_size"))
        if args.points:
            check_out(args.points, (".npz",))
        name = args.data or trained.data_info.get("name")
        if not name:
            raise CLIError("--data is required (the checkpoint does not name its data set)")
        ds = load_eval_data(str(name), args.split, trained)
        n = min(args.num_samples, len(ds))
        folder = shard_folder(args, info)
        arrays, settings = dataset_likelihood(args, trained, ds, n, info, folder)
        if arrays is None:  # ranks > 0: their shards are written
            return 0
        result: dict[str, Any] = {
            "checkpoint": str(trained.path), "step": trained.step, "data": name,
            "split": args.split, "seed": args.seed, "processes": info.world_size,
            **settings, **likelihood_summary(arrays, trained, ds.info.levels),
        }  # fmt: skip
        line = f"NLL {result['nll_nats']:.4f} nats per sample"
        if "bits_per_dim" in result:
            line += (
                f", {result['bits_per_dim']:.4f} bits/dim ({ds.info.levels} levels, dequantised)"
            )
        print(f"{line} on {n} points of {name} ({args.split})")
        if "grid" in result:
            g = result["grid"]
            print(f"fixed grid: {g['nfe']} batched score calls per solve, fitted on "
                  f"{min(n, CALIBRATION_POINTS)} points: calibration error "
                  f"{g['calibration_error_bits_per_dim']:.2e} bits/dim (uniform nodes "
                  f"{g['uniform_error_bits_per_dim']:.2e}), fit cost {g['fit_calls']} "
                  f"batched calls")  # fmt: skip
        if args.points:
            write_npz(Path(args.points), **{k: v.numpy() for k, v in arrays.items()})
            print(f"wrote {args.points}")
        if args.out:
            atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.out}")
        remove_shards(folder)
    return 0


COMMAND = Command(
    "likelihood",
    "exact NLL / bits per dim of data under a trained model",
    _configure,
    _run,
    "Log-likelihood by the probability-flow ODE; bits/dim for quantised (image) data with "
    "uniform dequantisation. Under torchrun the points are shared among the processes.",
    distributed=True,
)
"""The ``scoresde likelihood`` command."""
