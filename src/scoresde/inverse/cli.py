"""Command-line parts of the inverse-problems work: ``inpaint``, ``train-classifier``, guidance.

``scoresde inpaint`` and ``scoresde train-classifier`` are defined here, and the classifier
guidance used by ``scoresde sample --class K --classifier FILE``.

Imported by :mod:`scoresde.cli` as a plugin; the commands register themselves here.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cli import CLIError, add_checkpoint_argument, add_runtime_arguments, register_command
from ..guidance import NoiseConditionalClassifier, classifier_guidance, train_classifier
from ..sde import ScoreFn

__all__ = [
    "load_image",
    "load_mask",
    "to_training_space",
    "save_classifier",
    "load_classifier",
    "classifier_guided_score",
]

CLASSIFIER_FORMAT = "scoresde-noise-classifier-1"
"""The ``format`` entry in a saved classifier's metadata."""


# ------------------------------------------------------------------------------------------------
# image and mask files


def _read_array(path: Path) -> Tensor:
    import numpy as np

    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            arr = np.asarray(im.convert(mode), dtype=np.float64) / 255.0
        t = torch.from_numpy(arr)
        return t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = [k for k in ("image", "images", "x", "mask", "arr_0") if k in z] or list(z)
            arr = z[keys[0]]
    else:
        raise CLIError(f"cannot read {path}: use a .png/.jpg image or a .npy/.npz array")
    t = torch.from_numpy(np.asarray(arr)).double()
    while t.dim() < 4:
        t = t[None]
    return t


def load_image(path: str | Path, event_shape: tuple[int, ...]) -> Tensor:
    """Read images ``(N, C, H, W)`` with values in ``[0, 1]`` matching ``event_shape``.

    PNG/JPEG files are read as grey or RGB and divided by 255; ``.npy``/``.npz`` arrays shaped
    ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` are taken as they are if their values lie in
    ``[0, 1]`` and divided by 255 if they lie in ``[0, 255]``. A grey image for an RGB model
    (or the reverse) is converted; the spatial size must match the model's.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image file not found: {p}")
    x = _read_array(p)
    if float(x.max()) > 1.0 + 1e-9:
        if float(x.min()) < 0 or float(x.max()) > 255:
            raise CLIError(f"{p}: values must lie in [0, 1] or [0, 255]")
        x = x / 255.0
    if float(x.min()) < 0:
        raise CLIError(f"{p}: values must lie in [0, 1] or [0, 255]")
    c, h, w = event_shape
    if x.shape[1] != c:
        if x.shape[1] == 3 and c == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise CLIError(f"{p} has {x.shape[1]} channels; the model needs {c}")
    if tuple(x.shape[2:]) != (h, w):
        raise CLIError(
            f"{p} is {x.shape[2]}x{x.shape[3]} (HxW); the model's images are "
            f"{h}x{w}: resize the image first"
        )
    return x


def load_mask(path: str | Path, image_shape: tuple[int, ...]) -> Tensor:
    """Read a mask (1/white = known, 0/black = missing) broadcastable to ``image_shape``.

    A PNG is thresholded at half intensity (colour masks by their mean); arrays are known where
    non-zero.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"mask file not found: {p}")
    m = _read_array(p)
    if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
        m = m.mean(1, keepdim=True) > 0.5
    else:
        m = m != 0
    try:
        torch.broadcast_shapes(m.shape, image_shape)
    except RuntimeError:
        raise CLIError(
            f"mask {p} of shape {tuple(m.shape[1:])} does not fit images of shape "
            f"{tuple(image_shape[1:])}"
        ) from None
    if bool(m.all()):
        raise CLIError(
            f"mask {p} marks every pixel as known: nothing to inpaint (white = known, "
            f"black = missing)"
        )
    return m


def to_training_space(x: Tensor, data_info: dict[str, Any]) -> Tensor:
    """Map ``[0, 1]`` images to the model's training space (``[-1, 1]`` for quantised data)."""
    return x * 2.0 - 1.0 if data_info.get("levels") is not None else x


# ------------------------------------------------------------------------------------------------
# scoresde inpaint


def _configure_inpaint(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--n", type=int, default=1, metavar="K", help="completions per image (default 1)"
    )
    p.add_argument(
        "--steps", type=int, default=500, metavar="S", help="predictor steps (default 500)"
    )
    p.add_argument(
        "--corrector",
        default="langevin",
        choices=("langevin", "ald", "none"),
        help="corrector of the PC loop (default langevin)",
    )
    p.add_argument("--snr", type=float, default=0.16, help="corrector signal-to-noise ratio")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_runtime_arguments(p)


def _run_inpaint(args: argparse.Namespace) -> int:
    from ..checkpoint import atomic_write_bytes
    from ..plots import image_grid
    from ..train import load_trained
    from ..train.distributed import resolve_device
    from .impute import inpaint

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise CLIError(f"--out must end in .png or .npz, got {args.out!r}")
    if args.n < 1 or args.steps < 1:
        raise CLIError("--n and --steps must be positive integers")
    device = resolve_device(args.device)
    trained = load_trained(args.ckpt, device=device, ema=not args.raw_weights)
    if not trained.is_image:
        raise CLIError("inpaint needs a model trained on images")
    image = load_image(args.image, trained.event_shape)
    mask = load_mask(args.mask, tuple(image.shape))
    known = torch.broadcast_to(mask, image.shape).to(device)
    y = to_training_space(image, trained.data_info).to(device=device, dtype=torch.float32)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    corrector = None if args.corrector == "none" else args.corrector
    comps = [
        trained.to_data(
            inpaint(
                trained.score_fn,
                trained.sde,
                y,
                known,
                steps=args.steps,
                corrector=corrector,
                snr=args.snr,
                generator=gen,
            )
        ).cpu()
        for _ in range(args.n)
    ]
    # known pixels are copied exactly in training space; show them as given
    comps = [torch.where(known.cpu(), image.float(), c) for c in comps]
    if out.suffix.lower() == ".npz":
        import numpy as np

        buf = io.BytesIO()
        np.savez(
            buf,
            completions=torch.stack(comps).numpy(),
            image=image.numpy(),
            mask=known.cpu().numpy(),
        )
        atomic_write_bytes(out, buf.getvalue())
    else:
        masked = torch.where(known.cpu(), image.float(), torch.full_like(image.float(), 0.5))
        rows = [masked, *comps, image.float()]
        image_grid(
            torch.cat(rows),
            out,
            nrow=image.shape[0],
            title=f"masked / {args.n} completion(s) / original",
        )
    print(f"wrote {args.n} completion(s) of {image.shape[0]} image(s) to {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# scoresde train-classifier and classifier guidance for scoresde sample


def save_classifier(
    clf: NoiseConditionalClassifier, path: str | Path, sde_config: dict[str, Any]
) -> Path:
    """Write a classifier's weights and constructor settings to one ``.safetensors`` file."""
    from safetensors.torch import save

    from ..checkpoint import atomic_write_bytes

    meta = {
        "format": CLASSIFIER_FORMAT,
        "event_shape": list(clf.event_shape),
        "num_classes": clf.num_classes,
        "hidden": clf.inp.out_features,
        "depth": len(clf.blocks),
        "sigma_data": clf.sigma_data,
        "sde": sde_config,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata={"config": json.dumps(meta)}))


def load_classifier(
    path: str | Path, sde: Any, device: str | torch.device = "cpu"
) -> NoiseConditionalClassifier:
    """Load a classifier written by :func:`save_classifier` for the score model's ``sde``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"classifier file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["config"])
        if meta.get("format") != CLASSIFIER_FORMAT:
            raise KeyError("format")
        clf = NoiseConditionalClassifier(
            sde,
            meta["event_shape"],
            meta["num_classes"],
            hidden=meta["hidden"],
            depth=meta["depth"],
            sigma_data=meta["sigma_data"],
        )
        clf.load_state_dict(load_file(str(p)))
    except Exception as err:  # safetensors raises its own error type on foreign files
        raise CLIError(
            f"{p} is not a scoresde noise-conditional classifier ({err}); write one "
            f"with 'scoresde train-classifier'"
        ) from None
    return clf.to(device).eval()


def classifier_guided_score(
    trained: Any, classifier_path: str | Path, label: int, scale: float
) -> ScoreFn:
    """The classifier-guided score of a loaded model for class ``label``."""
    device = next(trained.model.parameters()).device
    clf = load_classifier(classifier_path, trained.sde, device)
    if tuple(clf.event_shape) != tuple(trained.event_shape):
        raise CLIError(
            f"the classifier was trained on samples of shape {clf.event_shape}, the "
            f"model draws {trained.event_shape}"
        )
    if not 0 <= label < clf.num_classes:
        raise CLIError(f"--class must lie in [0, {clf.num_classes - 1}], got {label}")
    return classifier_guidance(trained.score_fn, clf, label, scale)


def _configure_train_classifier(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ckpt",
        required=True,
        metavar="DIR|FILE",
        help="the score model whose SDE and labelled training data are used",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE.safetensors", help="where to write the classifier"
    )
    p.add_argument("--steps", type=int, default=4000, help="optimiser steps (default 4000)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    p.add_argument("--depth", type=int, default=3, help="residual blocks (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_runtime_arguments(p, raw_weights=False)


def _run_train_classifier(args: argparse.Namespace) -> int:
    from ..train import load_trained
    from ..train.build import load_train_data
    from ..train.distributed import resolve_device

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise CLIError(f"--out must end in .safetensors, got {args.out!r}")
    if args.steps < 1 or args.batch_size < 1:
        raise CLIError("--steps and --batch-size must be positive integers")
    device = resolve_device(args.device)
    trained = load_trained(args.ckpt, device=device)
    data = load_train_data(trained.config)
    if data.labels is None:
        raise CLIError(f"the training data {trained.config.data!r} have no labels")
    x = data.tensors().to(device)
    labels = data.labels.to(device)
    torch.manual_seed(args.seed)
    clf = NoiseConditionalClassifier(
        trained.sde,
        trained.event_shape,
        int(labels.max()) + 1,
        hidden=args.hidden,
        depth=args.depth,
        sigma_data=float(trained.data_info["sigma_data"]),
    )
    clf = clf.to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    losses = train_classifier(
        clf,
        trained.sde,
        x,
        labels,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        generator=gen,
    )
    sde_cfg = {"sde": trained.config.sde, "sde_kwargs": trained.config.sde_kwargs}
    save_classifier(clf, out, sde_cfg)
    tail = losses[-min(100, len(losses)) :]
    print(
        f"trained a {clf.num_classes}-class noise-conditional classifier for {args.steps} "
        f"steps (final loss {sum(tail) / len(tail):.4f}); wrote {out}"
    )
    return 0


register_command(
    "inpaint",
    help="fill in the masked pixels of images with a trained model",
    description="Predictor-corrector inpainting with replacement (Song et al. 2021, App. I): "
    "the known pixels are kept exactly, the missing ones are sampled.",
    configure=_configure_inpaint,
    run=_run_inpaint,
)
register_command(
    "train-classifier",
    help="train a noise-conditional classifier for classifier guidance",
    description="Train p_t(class | x_t) on the model's labelled training data perturbed by its "
    "SDE; use it with 'scoresde sample --class K --classifier FILE'.",
    configure=_configure_train_classifier,
    run=_run_train_classifier,
)
