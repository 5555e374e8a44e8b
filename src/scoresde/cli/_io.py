"""Files the commands read and write: images and masks for ``inpaint``, ``.npz`` outputs.

Images come as PNG/JPEG or ``.npy``/``.npz`` arrays with values in ``[0, 1]`` or ``[0, 255]``;
masks mark the known pixels (white or non-zero). ``.npz`` outputs are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .core import CLIError

__all__ = ["load_image", "load_mask", "to_training_space", "write_npz"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_image_file(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
        arr = np.asarray(im.convert(mode), dtype=np.float64) / 255.0
    t = torch.from_numpy(arr)
    return t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]


def _read_array(path: Path) -> Tensor:
    """An image or array file as a float64 ``(N, C, H, W)`` tensor (images scaled to [0, 1])."""
    suffix = path.suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return _read_image_file(path)
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


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def _unit_range(x: Tensor, p: Path) -> Tensor:
    """``x`` in ``[0, 1]``, divided by 255 if its values lie in ``[0, 255]``."""
    if float(x.max()) > 1.0 + 1e-9:
        if float(x.min()) < 0 or float(x.max()) > 255:
            raise CLIError(f"{p}: values must lie in [0, 1] or [0, 255]")
        x = x / 255.0
    if float(x.min()) < 0:
        raise CLIError(f"{p}: values must lie in [0, 1] or [0, 255]")
    return x


def load_image(path: str | Path, event_shape: tuple[int, ...]) -> Tensor:
    """Read images ``(N, C, H, W)`` with values in ``[0, 1]`` matching ``event_shape``.

    PNG/JPEG files are read as grey or RGB and divided by 255; ``.npy``/``.npz`` arrays shaped
    ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` are taken as they are if their values lie in
    ``[0, 1]`` and divided by 255 if they lie in ``[0, 255]``. A grey image for an RGB model
    (or the reverse) is converted; the spatial size must match the model's.
    """
    p = _existing(path, "image")
    x = _unit_range(_read_array(p), p)
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
    p = _existing(path, "mask")
    m = _read_array(p)
    m = m.mean(1, keepdim=True) > 0.5 if p.suffix.lower() in _IMAGE_SUFFIXES else m != 0
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
    """Map ``[0, 1]`` images to the model's training space (``[-1, 1]`` for quantised data).

    The inverse of :func:`scoresde.train.to_data_space` on ``[0, 1]``.
    """
    return x * 2.0 - 1.0 if data_info.get("levels") is not None else x


def write_npz(path: Path, **arrays: Any) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically (temporary file and rename)."""
    from ..checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
