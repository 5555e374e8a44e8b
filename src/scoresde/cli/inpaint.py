"""``scoresde inpaint``: fill in the masked pixels of images with a trained model.

Predictor-corrector imputation with replacement (Song et al. 2021, App. I.2), or twisted SMC
with ``--method smc --particles K``, by :func:`scoresde.inverse.inpaint`: the known pixels are
kept exactly, the missing ones sampled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from ._io import load_image, load_mask, to_training_space, write_npz
from .core import (
    CLIError,
    Command,
    add_checkpoint_argument,
    add_count_argument,
    add_runtime_arguments,
    load_model,
    progress_bar,
    say,
)

__all__ = ["COMMAND"]


def _configure(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p)
    p.add_argument(
        "--image",
        required=True,
        metavar="FILE",
        help="the image(s) to complete: .png/.jpg, or .npy/.npz (N, C, H, W) in [0, 1] or [0, 255]",
    )
    p.add_argument(
        "--mask",
        required=True,
        metavar="FILE",
        help="known pixels: .png (white = known, black = missing) or .npy/.npz "
        "(non-zero = known), broadcastable to the images",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png|FILE.npz",
        help="a PNG grid (rows: masked input, completions, original) or an .npz "
        "with 'completions' (K, N, C, H, W) in [0, 1]",
    )
    add_count_argument(p, "completions per image (default 1)", default=1)
    p.add_argument(
        "--steps", type=int, default=500, metavar="S", help="predictor steps (default 500)"
    )
    correctors = ("langevin", "ald", "none")
    p.add_argument(
        "--corrector",
        default="langevin",
        choices=correctors,
        help="corrector of the PC loop (default langevin)",
    )
    p.add_argument("--snr", type=float, default=0.16, help="corrector signal-to-noise ratio")
    p.add_argument(
        "--method",
        default="replacement",
        choices=("replacement", "smc"),
        help="replacement: PC with replacement (Song et al. App. I; biased when the missing "
        "pixels have a multimodal posterior); smc: twisted SMC with the known pixels held "
        "exactly, exact as --particles grows (default replacement)",
    )
    p.add_argument(
        "--particles",
        type=int,
        default=16,
        metavar="K",
        help="particles per image for --method smc (default 16; cost K x steps)",
    )
    p.add_argument(
        "--twist",
        default="pgdm",
        choices=("pgdm", "tmpd", "none"),
        help="twist of --method smc (default pgdm)",
    )
    p.add_argument(
        "--resample-steps",
        type=int,
        default=1,
        metavar="U",
        help="RePaint: repeat every step U times, jumping back in time in between "
        "(--method replacement; cost U x steps; default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_runtime_arguments(p)


def _write(out: Path, comps: list[Tensor], image: Tensor, known: Tensor) -> None:
    """Write the completions (``[0, 1]``) as ``.npz`` arrays or a PNG grid."""
    from ..plots import image_grid

    if out.suffix.lower() == ".npz":
        write_npz(
            out,
            completions=torch.stack(comps).numpy(),
            image=image.numpy(),
            mask=known.numpy(),
        )
        return
    masked = torch.where(known, image.float(), torch.full_like(image.float(), 0.5))
    rows = [masked, *comps, image.float()]
    title = f"masked / {len(comps)} completion(s) / original"
    image_grid(torch.cat(rows), out, nrow=image.shape[0], title=title)


def _run(args: argparse.Namespace) -> int:
    from ..inverse import inpaint

    trained, device = load_model(
        args, out=(".png", ".npz"), counts=("num_samples", "steps", "particles", "resample_steps")
    )
    out = Path(args.out)
    if not trained.is_image:
        raise CLIError("inpaint needs a model trained on images")
    image = load_image(args.image, trained.event_shape)
    known = torch.broadcast_to(load_mask(args.mask, tuple(image.shape)), image.shape).to(device)
    y = to_training_space(image, trained.data_info).to(device=device, dtype=torch.float32)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    corrector = None if args.corrector == "none" else args.corrector
    smc = args.method == "smc"
    comps = []
    say(args, f"{args.num_samples} completion(s) of {image.shape[0]} image(s), {args.steps} steps")
    bar = progress_bar(args, args.num_samples * args.steps, "inpaint", unit="step")
    for _ in range(args.num_samples):
        x = inpaint(
            trained.score_fn,
            trained.sde,
            y,
            known,
            steps=args.steps,
            corrector=corrector,
            snr=args.snr,
            generator=gen,
            callback=None if bar is None else lambda info: bar.update(info.get("jump", 0) == 0),
            method=args.method,
            particles=args.particles if smc else None,
            twist=args.twist,
            resample_steps=args.resample_steps,
        )
        # known pixels are copied exactly in training space; show them as given
        comps.append(torch.where(known.cpu(), image.float(), trained.to_data(x).cpu()))
    if bar is not None:
        bar.close()
    _write(out, comps, image, known.cpu())
    print(f"wrote {args.num_samples} completion(s) of {image.shape[0]} image(s) to {out}")
    return 0


COMMAND = Command(
    "inpaint",
    "fill in the masked pixels of images with a trained model",
    _configure,
    _run,
    "Predictor-corrector inpainting with replacement (Song et al. 2021, App. I), optionally "
    "RePaint-style (--resample-steps U), or twisted SMC (--method smc --particles K) whose "
    "completions are exact draws as K grows: the known pixels are kept exactly, the missing "
    "ones are sampled.",
)
"""The ``scoresde inpaint`` command."""
