"""``scoresde eval``: draw samples from a trained model and score them, in one command.

Sample quality in a feature space (:mod:`scoresde.features`: raw coordinates for
low-dimensional data, the features of a classifier trained and cached on the training split
of digits or Fashion-MNIST, or Inception-v3 for FID/KID when its weights are on disk):

- the Fréchet distance of Gaussians fitted to both sets (Heusel et al. 2017, eq. 6);
- improved precision and recall by k-NN manifolds (Kynkäänniemi et al. 2019);
- the kernel distance, unbiased MMD² with the cubic kernel (KID, Bińkowski et al. 2018);

and the likelihood of the test split by the probability-flow ODE (Song et al. 2021, sec. 4.3):
NLL and, for quantised data, bits/dim. Sampling and likelihood run in shards across the
processes of ``torchrun`` with ``--resume`` (:mod:`scoresde.shard`); rank 0 computes the
metrics and writes ``--out`` (JSON) and a Markdown table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._io import write_npz
from ._scale import (
    add_sampler_arguments,
    add_shard_arguments,
    add_solver_arguments,
    dataset_likelihood,
    draw_samples,
    likelihood_summary,
    load_eval_data,
    model_fingerprint,
    process_group,
    remove_shards,
    shard_folder,
)
from ._schedules import add_schedule_argument, schedule_options
from .core import (
    CLIError,
    Command,
    add_checkpoint_argument,
    add_count_argument,
    add_runtime_arguments,
    check_counts,
    check_out,
    load_model,
    progress_enabled,
    say,
)

if TYPE_CHECKING:
    from ..features import FeatureSpace
    from ..train import TrainedModel
    from ..train.distributed import DistInfo

__all__ = ["COMMAND"]


def _configure_sampling(p: argparse.ArgumentParser) -> None:
    add_sampler_arguments(p)
    add_schedule_argument(p)
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the samples, reference subset, KID subsets, dequantisation and probes "
        "(default 0)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="B",
        help="samples per batch and per shard (default 1000)",
    )


def _configure_metrics(p: argparse.ArgumentParser) -> None:
    from ..features import FEATURE_KINDS

    p.add_argument(
        "--features",
        choices=FEATURE_KINDS,
        default="auto",
        help="feature space of the Fréchet distance, precision/recall and KID "
        "(default auto: a cached classifier for digits and Fashion-MNIST, raw "
        "coordinates otherwise)",
    )
    p.add_argument(
        "--fid",
        action="store_true",
        help="also FID and KID with Inception-v3 (torch-fidelity or torchmetrics, "
        "and the weights file already on disk: nothing is downloaded)",
    )
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="the Inception-v3 weights file for --fid (default: "
        "$SCORESDE_INCEPTION_WEIGHTS, else torch hub's checkpoints folder)",
    )
    p.add_argument(
        "--ref-split",
        default="auto",
        choices=("auto", "train", "test", "all"),
        help="split of the reference data (default auto: train for image sets, "
        "an independent draw (test) for toy sets); at most N points",
    )
    p.add_argument(
        "--nearest-k",
        type=int,
        default=3,
        metavar="K",
        help="neighbour rank of the precision/recall manifolds (default 3)",
    )
    p.add_argument(
        "--kid-subsets", type=int, default=100, help="KID: number of subsets (default 100)"
    )
    p.add_argument(
        "--kid-subset-size",
        type=int,
        default=1000,
        help="KID: samples per subset (default 1000, at most the set sizes)",
    )


def _configure_likelihood(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bpd-n",
        type=int,
        default=1000,
        metavar="M",
        help="test points for the NLL / bits per dim (default 1000, at most the "
        "test split; 0 skips the likelihood)",
    )
    p.add_argument(
        "--likelihood-batch-size",
        type=int,
        default=256,
        metavar="B",
        help="points per ODE solve and per shard (default 256)",
    )
    add_solver_arguments(p)


def _configure(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p)
    p.add_argument(
        "--data", metavar="NAME|PATH", help="the reference data (default: the training data set)"
    )
    add_count_argument(p, "samples to draw and score", required=True)
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.json",
        help="the results as JSON; a Markdown table goes beside it (FILE.md)",
    )
    p.add_argument(
        "--samples", metavar="FILE.npz", help="also keep the samples (data space) under 'samples'"
    )
    _configure_sampling(p)
    _configure_metrics(p)
    _configure_likelihood(p)
    add_shard_arguments(p)
    add_runtime_arguments(p)


def _reference(
    args: argparse.Namespace, trained: TrainedModel, name: str, n: int
) -> tuple[str, Tensor]:
    """The reference set: ``n`` points of ``--ref-split`` (a seeded subset), training space."""
    from ..data import TOY_DATASETS

    toy = name in TOY_DATASETS
    split = args.ref_split if args.ref_split != "auto" else ("test" if toy else "train")
    ds = load_eval_data(name, split, trained, n=n if toy else None)
    x = ds.tensors()
    if len(x) > n:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[:n]
        x = x[pick.sort().values]
    return split, x


def _scores(args: argparse.Namespace, space: FeatureSpace, xs: Tensor, ref: Tensor) -> dict:
    """Fréchet distance, precision/recall and KID of ``xs`` against ``ref`` in ``space``."""
    from ..metrics import frechet_from_samples, kernel_distance, precision_recall

    fs, fr = space(xs), space(ref)
    pr = precision_recall(fr, fs, k=args.nearest_k)
    gen = torch.Generator().manual_seed(args.seed)
    kid = kernel_distance(
        fr, fs, subsets=args.kid_subsets, subset_size=args.kid_subset_size, generator=gen
    )
    return {
        "frechet": frechet_from_samples(fs, fr),
        "precision": pr.precision,
        "recall": pr.recall,
        "kid": kid.mean,
        "kid_std": kid.std,
        "kid_subset_size": kid.subset_size,
    }


def _sample_metrics(
    args: argparse.Namespace, trained: TrainedModel, name: str, xs: Tensor, info: DistInfo
) -> dict[str, Any]:
    """Everything measured on the samples (rank 0)."""
    from ..features import feature_space, inception_features

    split, ref = _reference(args, trained, name, len(xs))
    say(args, f"scoring {len(xs)} samples against {len(ref)} points of {name} ({split})")
    space = feature_space(
        args.features,
        name,
        is_image=trained.is_image,
        device=info.device,
        progress=progress_enabled(args),
    )
    out: dict[str, Any] = {
        "reference": {"data": name, "split": split, "n": len(ref)},
        "features": {"space": space.name, **space.info},
        "metrics": _scores(args, space, xs, ref),
    }
    if args.fid:
        lo, hi = (-1.0, 1.0) if trained.data_info.get("levels") is not None else (0.0, 1.0)
        inc = inception_features(args.inception_weights, device=info.device, data_range=(lo, hi))
        sc = _scores(args, inc, xs, ref)
        out["metrics"].update(
            fid=sc["frechet"], kid_inception=sc["kid"], kid_inception_std=sc["kid_std"]
        )
    return out


def _likelihood(
    args: argparse.Namespace, trained: TrainedModel, name: str, info: DistInfo
) -> dict[str, Any] | None:
    """NLL / bits per dim of the first ``--bpd-n`` test points (sharded); rank 0's summary."""
    if args.bpd_n == 0:
        return None
    ds = load_eval_data(name, "test", trained)
    n = min(args.bpd_n, len(ds))
    largs = argparse.Namespace(
        **{**vars(args), "batch_size": args.likelihood_batch_size, "split": "test"}
    )
    folder = shard_folder(args, info, "likelihood")
    arrays, settings = dataset_likelihood(largs, trained, ds, n, info, folder)
    if arrays is None:
        return None
    return {"split": "test", **settings, **likelihood_summary(arrays, trained, ds.info.levels)}


_ROWS = (
    ("frechet", "Fréchet distance ({space})"),
    ("precision", "precision (k={k})"),
    ("recall", "recall (k={k})"),
    ("kid", "KID ({space})"),
    ("fid", "FID (Inception-v3)"),
    ("kid_inception", "KID (Inception-v3)"),
)


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table (metric, value)."""
    m, space = result["metrics"], result["features"]["space"]
    rows = [
        (label.format(space=space, k=result["nearest_k"]), f"{m[key]:.6g}")
        for key, label in _ROWS
        if key in m
    ]
    lk = result.get("likelihood")
    if lk is not None:
        rows.append(
            (
                "NLL (nats per sample, test)",
                f"{lk['nll_nats']:.6g} ± {lk['nll_nats_stderr'] or 0:.2g}",
            )
        )
        if "bits_per_dim" in lk:
            rows.append(
                (
                    "bits/dim (test, dequantised)",
                    f"{lk['bits_per_dim']:.6g} ± {lk['bits_per_dim_stderr'] or 0:.2g}",
                )
            )
    head = (
        f"{result['n_samples']} samples of {result['checkpoint']} (step {result['step']}), "
        f"{result['sampler']} with {result['steps']} steps, against {result['reference']['n']} "
        f"points of {result['reference']['data']} ({result['reference']['split']})"
    )
    lines = [head, "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def _check(args: argparse.Namespace) -> None:
    check_out(args.out, (".json",))
    if args.samples:
        check_out(args.samples, (".npz",))
    check_counts(
        args,
        "num_samples",
        "steps",
        "batch_size",
        "nearest_k",
        "kid_subsets",
        "kid_subset_size",
        "likelihood_batch_size",
    )
    if args.bpd_n < 0:
        raise CLIError(f"--bpd-n must be 0 (skip) or a positive integer, got {args.bpd_n}")
    if args.num_samples <= args.nearest_k:
        raise CLIError(f"--num-samples must exceed --nearest-k ({args.nearest_k})")
    if args.fid:  # before the samples are drawn, not after
        from ..features import check_inception

        check_inception(args.inception_weights)


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from ..checkpoint import atomic_write_text

    table = markdown(result)
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), table)
    print(table, end="")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def _run(args: argparse.Namespace) -> int:
    _check(args)
    with process_group(args) as info:
        trained, _ = load_model(args)
        name = args.data or trained.data_info.get("name")
        if not name:
            raise CLIError("--data is required (the checkpoint does not name its data set)")
        t0 = time.perf_counter()
        folder = shard_folder(args, info, "samples")
        xs = draw_samples(
            args,
            trained,
            trained.score_fn,
            info,
            folder,
            model_fingerprint(args, trained),
            **schedule_options(args, trained, "eval"),
        )
        t1 = time.perf_counter()
        lk = _likelihood(args, trained, str(name), info)
        if xs is None:  # ranks > 0: their shards are written
            return 0
        t2 = time.perf_counter()
        if args.samples:
            write_npz(Path(args.samples), samples=trained.to_data(xs).numpy())
        result: dict[str, Any] = {
            "checkpoint": str(trained.path),
            "step": trained.step,
            "n_samples": len(xs),
            "sampler": args.sampler,
            "steps": args.steps,
            "seed": args.seed,
            "processes": info.world_size,
            "nearest_k": args.nearest_k,
            **_sample_metrics(args, trained, str(name), xs, info),
            "likelihood": lk,
        }
        result["seconds"] = {
            "sampling": t1 - t0,
            "likelihood": t2 - t1,
            "metrics": time.perf_counter() - t2,
        }
        _write(args, result)
        for stage in ("samples", "likelihood"):
            remove_shards(shard_folder(args, info, stage))
        base = shard_folder(args, info)
        if base is not None and base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    return 0


COMMAND = Command(
    "eval",
    "sample a trained model and score it (Fréchet, precision/recall, KID, FID, bits/dim)",
    _configure,
    _run,
    "Draw --num-samples samples and score them against the data: Fréchet distance, "
    "precision/recall (k-NN manifolds) and KID in a feature space, FID/KID with Inception-v3 "
    "(--fid), and NLL / bits per dim of the test split. Under torchrun the samples and test "
    "points are shared among the processes.",
    distributed=True,
)
"""The ``scoresde eval`` command."""
