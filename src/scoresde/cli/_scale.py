"""Sharded runs of ``sample``, ``likelihood`` and ``eval``, in one process or under torchrun.

The commands share: joining the process group (:func:`process_group`), the ``--resume`` and
``--shard-dir`` options and the shard folder beside ``--out``, the progress bar of a sharded
run (rank 0 shows every rank's finished items), drawing the samples
(:func:`draw_samples`) and scoring a data set (:func:`dataset_likelihood`) through
:mod:`scoresde.shard`. Rank 0 writes the outputs; the other ranks write only shards.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .core import CLIError, progress_bar, progress_enabled, say

if TYPE_CHECKING:
    from ..data import ArrayDataset
    from ..likelihood import LikelihoodGrid
    from ..sde import ScoreFn
    from ..shard import ShardResult
    from ..train import TrainedModel
    from ..train.distributed import DistInfo

__all__ = [
    "DIST_TIMEOUT",
    "add_shard_arguments",
    "add_sampler_arguments",
    "add_solver_arguments",
    "process_group",
    "shard_folder",
    "model_fingerprint",
    "remove_shards",
    "draw_samples",
    "load_eval_data",
    "dataset_likelihood",
    "likelihood_summary",
    "fit_likelihood_grid",
    "CALIBRATION_POINTS",
]

DIST_TIMEOUT = timedelta(hours=12)
"""How long a rank waits for the others at the end of a sharded run."""


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--resume`` and ``--shard-dir`` (the commands that run sharded)."""
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: compute only the shards missing from the shard "
        "folder (the other options must be those of the first run)",
    )
    p.add_argument(
        "--shard-dir",
        metavar="DIR",
        default=None,
        help="where finished shards are written as they complete (default OUT.shards beside "
        "--out; every process must see it); removed once the output is written",
    )


def add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--sampler``, ``--steps`` and ``--precision`` (the commands that draw samples)."""
    from ..sampling import available_samplers
    from ..sampling.api import PRECISIONS

    p.add_argument(
        "--sampler",
        default="euler_maruyama",
        choices=available_samplers(),
        help="sampler (default euler_maruyama; fast: few-step, 10-20 steps); its options: "
        "scoresde sample --help-sampler",
    )
    p.add_argument(
        "--steps", type=int, default=500, metavar="K", help="sampler steps (default 500)"
    )
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="autocast dtype of the network calls (default fp32; bf16 is ~2x faster on recent "
        "GPUs; the sampler's updates stay in fp32)",
    )


def add_solver_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--rtol``, ``--atol`` and ``--divergence`` (the commands that solve the PF ODE)."""
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (1e-5)")
    p.add_argument(
        "--divergence",
        default="auto",
        choices=("auto", "exact", "hutchinson"),
        help="divergence estimator (default auto: exact for <= 16 dimensions)",
    )


@contextmanager
def process_group(args: argparse.Namespace) -> Iterator[DistInfo]:
    """Join torchrun's process group (if any) for the command; ``args.device`` becomes the rank's.

    Each rank on CUDA takes ``cuda:LOCAL_RANK`` for ``--device auto``/``cuda``.
    """
    from ..train.distributed import cleanup_distributed, setup_distributed

    info = setup_distributed(args.device, timeout=DIST_TIMEOUT)
    args.device = str(info.device)
    try:
        yield info
    finally:
        cleanup_distributed()


def shard_folder(args: argparse.Namespace, info: DistInfo, stage: str | None = None) -> Path | None:
    """The shard folder: ``--shard-dir``, else ``OUT.shards`` (``/stage``); ``None`` in memory.

    A single process without ``--out``, ``--shard-dir`` or ``--resume`` keeps shards in memory.
    """
    base: Path | None = None
    if args.shard_dir is not None:
        base = Path(args.shard_dir)
    elif getattr(args, "out", None):
        base = Path(str(args.out) + ".shards")
    if base is None:
        if info.distributed or args.resume:
            raise CLIError(
                "a run over several processes or with --resume needs a shard folder: give "
                "--out (shards go to OUT.shards) or --shard-dir DIR"
            )
        return None
    return base / stage if stage else base


def remove_shards(folder: Path | None) -> None:
    """Delete a shard folder once the output it was gathered into is written."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def model_fingerprint(args: argparse.Namespace, trained: TrainedModel) -> dict[str, Any]:
    """What identifies the model of a run for ``--resume``: checkpoint, step, weights."""
    return {
        "checkpoint": str(Path(trained.path).resolve()),
        "step": trained.step,
        "raw_weights": bool(getattr(args, "raw_weights", False)),
    }


def _progress(
    args: argparse.Namespace, info: DistInfo, total: int, desc: str, unit: str
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A bar on rank 0 over ``total`` items: ``(update(done), close())``."""
    bar = progress_bar(args, total, desc, unit=unit) if info.is_main else None
    if bar is None:
        return None, lambda: None

    def update(done: int) -> None:
        bar.n = done
        bar.refresh()

    def close() -> None:
        bar.update(total - bar.n)
        bar.close()

    return update, close


def _resumed_note(args: argparse.Namespace, info: DistInfo, res: ShardResult, what: str) -> None:
    if info.is_main and res.reused:
        say(args, f"resumed: {res.reused} finished shards of {what} reused")


def draw_samples(
    args: argparse.Namespace,
    trained: TrainedModel,
    score: ScoreFn,
    info: DistInfo,
    folder: Path | None,
    fingerprint: dict[str, Any],
    **options: Any,
) -> Tensor | None:
    """``--num-samples`` samples (training space, CPU) in shards of ``--batch-size``; rank 0.

    Bit-identical to one process on a CPU whatever the number of processes: sample ``i`` is
    drawn with the counter-based noise of index ``i`` in a batch of the same rows. ``options``:
    more arguments of :func:`scoresde.sample` (e.g. ``schedule=``).
    """
    from ..shard import sample_sharded

    n, size = args.num_samples, min(args.batch_size, args.num_samples)
    if info.is_main:
        say(args, f"drawing {n} samples with {args.sampler} ({args.steps} steps, batches of "
                  f"{size}) on {info.world_size} process(es), {info.device}")  # fmt: skip
    update, close = _progress(args, info, n, "samples", "sample")
    res = sample_sharded(
        score, trained.sde, (n, *trained.event_shape), seed=args.seed, shard_size=size,
        folder=folder, resume=args.resume, fingerprint=fingerprint, on_progress=update,
        device=info.device, sampler=args.sampler, steps=args.steps, precision=args.precision,
        progress=progress_enabled(args) and info.is_main, **options,
    )  # fmt: skip
    close()
    _resumed_note(args, info, res, "samples")
    return None if res.arrays is None else res.arrays["samples"]


def load_eval_data(
    name: str, split: str, trained: TrainedModel, n: int | None = None
) -> ArrayDataset:
    """The data set ``name``'s ``split`` (toy sets: an independent draw), checked for shape."""
    from ..data import load_dataset

    try:
        ds = load_dataset(name, split=split, n=n)
    except ValueError as err:
        if "split" not in str(err):
            raise
        ds = load_dataset(name, n=n)
    if tuple(ds.info.shape) != tuple(trained.event_shape):
        raise CLIError(
            f"data {name!r} has samples of shape {ds.info.shape} but the model was "
            f"trained on {trained.event_shape}"
        )
    return ds


def _divergence(choice: str, dim: int) -> str:
    return choice if choice != "auto" else ("exact" if dim <= 16 else "hutchinson")


def dataset_likelihood(
    args: argparse.Namespace,
    trained: TrainedModel,
    ds: ArrayDataset,
    n: int,
    info: DistInfo,
    folder: Path | None,
) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
    """Log-densities and NFEs of the first ``n`` points of ``ds`` in shards of ``--batch-size``.

    Quantised data are dequantised per shard (uniform noise seeded by ``--seed`` and the
    shard's first index), the Hutchinson probes likewise: every point's result is the same for
    any number of processes. Returns the arrays (rank 0) and the settings to report.
    """
    from ..shard import log_likelihood_sharded, shard_seed

    dim = math.prod(trained.event_shape)
    div = _divergence(args.divergence, dim)
    # a pretrained discrete model never saw noise below its first timestep (interop)
    eps = getattr(trained, "likelihood_eps", None) or max(
        1e-5, trained.sde.eps if trained.config.sde == "edm" else 1e-5
    )
    dequantize = ds.info.levels is not None  # a density on [-1, 1): uniform dequantisation
    ds.dequantize = dequantize

    def rows(start: int, stop: int) -> Tensor:
        gen = torch.Generator().manual_seed(shard_seed(args.seed, start, stream=1))
        return ds.get_batch(torch.arange(start, stop), gen)[0]

    if info.is_main:
        say(args, f"solving the probability-flow ODE for {n} points of {ds.info.name} "
                  f"({div} divergence) on {info.world_size} process(es)")  # fmt: skip
    grid = None
    if getattr(args, "fit_grid", None) is not None:
        grid = fit_likelihood_grid(args, trained, rows, n, div, eps, info)
    update, close = _progress(args, info, n, "likelihood", "point")
    fp = {"data": ds.info.name, "split": args.split, "dequantize": dequantize}
    res = log_likelihood_sharded(
        trained.score_fn, trained.sde, rows, n=n, seed=args.seed,
        shard_size=min(args.batch_size, n), folder=folder, resume=args.resume,
        fingerprint={**fp, **model_fingerprint(args, trained)}, on_progress=update,
        device=info.device, rtol=args.rtol, atol=args.atol, divergence=div, eps=eps,
        **({} if grid is None else {"grid": grid}),
    )  # fmt: skip
    close()
    _resumed_note(args, info, res, "the likelihood")
    settings: dict[str, Any] = {"divergence": div, "eps": eps, "rtol": args.rtol, "atol": args.atol}
    if grid is not None:
        settings["grid"] = {
            "nfe": grid.nfe, "method": grid.method, "nodes_u": list(grid.nodes),
            "calibration_error_bits_per_dim": grid.calibration_error,
            "uniform_error_bits_per_dim": grid.uniform_error, "fit_calls": grid.fit_calls,
        }  # fmt: skip
    return res.arrays, settings


CALIBRATION_POINTS = 128
"""Points of the evaluated data (the first ones) that ``--fit-grid`` fits the grid on."""


def fit_likelihood_grid(
    args: argparse.Namespace,
    trained: TrainedModel,
    rows: Callable[[int, int], Tensor],
    n: int,
    divergence: str,
    eps: float,
    info: DistInfo,
) -> LikelihoodGrid:
    """``--fit-grid NFE``: fit a likelihood grid on rank 0, the same one on every rank.

    Rank 0 fits it (:func:`scoresde.likelihood.fit_grid`) on the first
    :data:`CALIBRATION_POINTS` points (dequantised as scored), probes seeded by ``--seed``, and
    sends it to the other ranks, so every rank solves with the same nodes and the same number of
    batched calls. The grid's calls and errors are reported with the result (``settings``).
    """
    from ..likelihood import fit_grid
    from ..likelihood.grid import check_method_for, resolve_method, steps_for
    from ..shard import shard_seed

    try:
        method = resolve_method(getattr(args, "grid_method", "auto"), trained.sde)
        steps_for(args.fit_grid, method)
        check_method_for(method, trained.sde)
    except ValueError as err:
        raise CLIError(f"--fit-grid: {err}") from None
    grid = None
    if info.is_main:
        m = min(CALIBRATION_POINTS, n)
        gen = torch.Generator(device=info.device)
        gen.manual_seed(shard_seed(args.seed, 0, stream=2))
        say(
            args,
            f"fitting a {method} likelihood grid of {args.fit_grid} batched calls on {m} points",
        )
        grid = fit_grid(
            trained.score_fn, trained.sde, rows(0, m).to(info.device), nfe=args.fit_grid,
            divergence=divergence, eps=eps, generator=gen, method=method,
        )  # fmt: skip
    if info.distributed:
        import torch.distributed as dist

        box = [grid]
        dist.broadcast_object_list(box, src=0)
        grid = box[0]
    assert grid is not None
    return grid


def _stderr(values: Tensor) -> float | None:
    n = len(values)
    return float(values.std() / math.sqrt(n)) if n > 1 else None


def likelihood_summary(
    arrays: dict[str, Tensor], trained: TrainedModel, levels: int | None
) -> dict[str, Any]:
    """NLL in nats per sample (and per dimension), bits/dim for quantised data, mean NFE."""
    from ..likelihood import bits_per_dim

    lp = arrays["log_prob"]
    dim = math.prod(trained.event_shape)
    out: dict[str, Any] = {
        "n": len(lp), "dimensions": dim, "nll_nats": float(-lp.mean()),
        "nll_nats_stderr": _stderr(-lp), "nll_nats_per_dim": float(-lp.mean()) / dim,
        "nfe_mean": float(arrays["nfe"].mean()),
    }  # fmt: skip
    if levels is not None:
        shape = (len(lp), *trained.event_shape)
        bpd = bits_per_dim(lp, shape, data_range=(-1.0, 1.0), bins=levels)
        out.update(bits_per_dim=float(bpd.mean()), bits_per_dim_stderr=_stderr(bpd),
                   levels=levels)  # fmt: skip
    return out
