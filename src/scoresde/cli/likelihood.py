"""``scoresde likelihood``: exact log-likelihood of data under a trained model.

The probability-flow ODE's instantaneous change of variables (Song et al. 2021, sec. 4.3 and
App. D.2) by :func:`scoresde.log_likelihood`; bits per dimension for quantised (image) data with
uniform dequantisation (:func:`scoresde.bits_per_dim`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .core import CLIError, Command, add_checkpoint_argument, add_runtime_arguments, load_model

if TYPE_CHECKING:
    from ..data import ArrayDataset
    from ..train import TrainedModel

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
    p.add_argument("--n", type=int, default=512, help="data points to evaluate (default 512)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("--batch-size", type=int, default=256, help="points per ODE solve (default 256)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (1e-5)")
    p.add_argument(
        "--divergence",
        default="auto",
        choices=("auto", "exact", "hutchinson"),
        help="divergence estimator (default auto: exact for <= 16 dimensions)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of dequantisation noise and Hutchinson probes (default 0)",
    )
    add_runtime_arguments(p)


def _dataset(args: argparse.Namespace, trained: TrainedModel) -> tuple[str, ArrayDataset]:
    """The data set to evaluate (``--data`` or the training set), checked against the model."""
    from ..data import load_dataset

    name = args.data or trained.data_info.get("name")
    if not name:
        raise CLIError("--data is required (the checkpoint does not name its data set)")
    try:
        ds = load_dataset(name, split=args.split, n=None)
    except ValueError as err:
        if "split" not in str(err):
            raise
        ds = load_dataset(name, n=None)
    if tuple(ds.info.shape) != tuple(trained.event_shape):
        raise CLIError(
            f"data {name!r} has samples of shape {ds.info.shape} but the model was "
            f"trained on {trained.event_shape}"
        )
    if ds.info.levels is not None:  # uniform dequantisation for a density on [-1, 1)
        ds.dequantize = True
    return str(name), ds


def _log_probs(
    args: argparse.Namespace,
    trained: TrainedModel,
    x: Tensor,
    div: str,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[Tensor, Tensor, float]:
    """Log-densities and NFEs of the rows of ``x``, in batches of ``--batch-size``; and ``eps``.

    On a CPU the probes come from ``gen``; on a GPU from a generator per batch.
    """
    from ..likelihood import log_likelihood

    eps = max(1e-5, trained.sde.eps if trained.config.sde == "edm" else 1e-5)
    logp, nfe = [], []
    for start in range(0, len(x), args.batch_size):
        if device.type != "cpu":
            gen = torch.Generator(device=device).manual_seed(args.seed + start)
        res = log_likelihood(
            trained.score_fn,
            trained.sde,
            x[start : start + args.batch_size].to(device),
            rtol=args.rtol,
            atol=args.atol,
            divergence=div,
            eps=eps,
            generator=gen,
        )
        logp.append(res.log_prob.double().cpu())
        nfe.append(res.nfe.double())
    return torch.cat(logp), torch.cat(nfe), eps


def _stderr(values: Tensor) -> float | None:
    n = len(values)
    return float(values.std() / math.sqrt(n)) if n > 1 else None


def _bits_per_dim(result: dict[str, Any], lp: Tensor, shape: tuple[int, ...], levels: int) -> str:
    """Add bits/dim (uniform dequantisation of ``levels`` levels) to ``result``; its summary."""
    from ..likelihood import bits_per_dim

    bpd = bits_per_dim(lp, (len(lp), *shape), data_range=(-1.0, 1.0), bins=levels)
    result["bits_per_dim"] = float(bpd.mean())
    result["bits_per_dim_stderr"] = _stderr(bpd)
    result["levels"] = levels
    return f", {result['bits_per_dim']:.4f} bits/dim ({levels} levels, dequantised)"


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import atomic_write_text

    trained, device = load_model(args, out=(".json",), counts=("n", "batch_size"))
    name, ds = _dataset(args, trained)
    n = min(args.n, len(ds))
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    x, _ = ds.get_batch(torch.arange(n), gen)  # dequantisation noise, then the CPU probes
    dim = math.prod(trained.event_shape)
    div = args.divergence if args.divergence != "auto" else ("exact" if dim <= 16 else "hutchinson")
    lp, nfe, eps = _log_probs(args, trained, x, div, gen, device)
    result: dict[str, Any] = {
        "checkpoint": str(trained.path), "step": trained.step, "data": name,
        "split": args.split, "n": n, "dimensions": dim, "divergence": div, "eps": eps,
        "nll_nats": float(-lp.mean()), "nll_nats_stderr": _stderr(-lp),
        "nfe_mean": float(nfe.mean()), "rtol": args.rtol, "atol": args.atol,
    }  # fmt: skip
    line = f"NLL {result['nll_nats']:.4f} nats per sample"
    if ds.info.levels is not None:
        line += _bits_per_dim(result, lp, trained.event_shape, ds.info.levels)
    print(f"{line} on {n} points of {name} ({args.split})")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


COMMAND = Command(
    "likelihood",
    "exact NLL / bits per dim of data under a trained model",
    _configure,
    _run,
    "Log-likelihood by the probability-flow ODE; bits/dim for "
    "quantised (image) data with uniform dequantisation.",
)
"""The ``scoresde likelihood`` command."""
