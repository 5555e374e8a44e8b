"""Readers for the built-in image sets and for user data: digits, Fashion-MNIST, folders, arrays.

Each reader returns ``(data, labels, levels)``: integer data ``(N, C, H, W)`` in ``[0, levels)``
(or float data, used as is), integer labels ``(N,)`` or ``None``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST_DIR",
    "IMAGE_SUFFIXES",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "load_image_folder",
    "load_array_file",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""
FASHION_MNIST_ENV = "SCORESDE_FASHION_MNIST_DIR"
"""Environment variable that overrides :data:`FASHION_MNIST_DIR`."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File suffixes read from an image folder (case-insensitive)."""

Loaded = tuple[Tensor, Tensor | None, int | None]


def load_digits(split: str = "train") -> Loaded:
    """Scikit-learn's 8x8 handwritten digits: 1797 images ``(N, 1, 8, 8)``, 17 grey levels.

    The set has no official split: ``"train"`` is the first 1500 images, ``"test"`` the last
    297, ``"all"`` every image.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    sl = {"train": slice(0, 1500), "test": slice(1500, None), "all": slice(None)}[split]
    return x[sl].clone(), y[sl].clone(), 17


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (``.gz`` or plain) of unsigned bytes, as in (Fashion-)MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX data are supported, type code {raw[2]}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - header != count:
        raise ValueError(
            f"{path} is truncated or corrupt: the header announces {dims} "
            f"({count} bytes) but {len(raw) - header} bytes follow"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(data.copy())


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """Return the Fashion-MNIST folder: ``root``, ``$SCORESDE_FASHION_MNIST_DIR`` or Debian's."""
    return Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> Loaded:
    """Fashion-MNIST (Xiao et al. 2017) from the IDX files of Debian's ``dataset-fashion-mnist``.

    ``split`` is ``"train"`` (60000 images) or ``"test"`` (10000); images ``(N, 1, 28, 28)``,
    256 levels, labels 0-9. Raises ``FileNotFoundError`` with the install command when the files
    are missing.
    """
    folder = fashion_mnist_dir(root)
    prefix = {"train": "train", "test": "t10k"}[split]
    files = []
    for kind in ("images-idx3", "labels-idx1"):
        stem = folder / f"{prefix}-{kind}-ubyte"
        found = [p for p in (stem.with_name(stem.name + ".gz"), stem) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem.name}.gz not found in {folder}. Install Debian's "
                f"package: `sudo apt-get install dataset-fashion-mnist` (it puts the files in "
                f"{FASHION_MNIST_DIR}), or set ${FASHION_MNIST_ENV} to a folder holding "
                f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz."
            )
        files.append(found[0])
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST files in {folder} disagree: images "
            f"{tuple(images.shape)}, labels {tuple(labels.shape)}"
        )
    return images[:, None].contiguous(), labels.long(), 256


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())  # fmt: skip


def load_image_folder(folder: str | Path, resize: Sequence[int] | int | None = None) -> Loaded:
    """All PNG/JPEG images under ``folder`` (recursively), as ``uint8`` ``(N, C, H, W)``.

    Greyscale images give ``C = 1``; if any image has colour all are read as RGB (alpha is
    dropped). When every image lies in a first-level subfolder, the subfolder names (sorted) are
    the class labels. All images must share one size unless ``resize=(H, W)`` (or an int) is
    given, which resizes each with bicubic filtering.
    """
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError("reading image folders needs Pillow: pip install pillow") from err
    folder = Path(folder)
    files = _image_files(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    headers = [_image_header(p) for p in files]  # (mode, (width, height)), without decoding
    mode = "L" if all(m in grey_modes for m, _ in headers) else "RGB"
    size = None
    if resize is not None:
        h, w = (resize, resize) if isinstance(resize, int) else tuple(resize)
        size = (int(w), int(h))
    else:
        first = headers[0][1]
        for path, (_, other) in zip(files, headers, strict=True):
            if other != first:
                raise ValueError(
                    f"images of different sizes under {folder}: {files[0].name} is "
                    f"{first[0]}x{first[1]} but {path.name} is {other[0]}x{other[1]} "
                    f"(width x height); pass resize=(H, W) to resize them all"
                )
    arrays = []
    for path in files:
        with Image.open(path) as im:
            img = im.convert(mode)
        if size is not None and img.size != size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    data = torch.from_numpy(np.stack(arrays))
    rel = [p.relative_to(folder).parts for p in files]
    labels = None
    if all(len(parts) == 2 for parts in rel):
        classes = sorted({parts[0] for parts in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[parts[0]] for parts in rel], dtype=torch.long)
    return data, labels, 256


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


_DATA_KEYS = ("x", "data", "samples", "images", "arr_0")
_LABEL_KEYS = ("y", "labels", "targets")


def load_array_file(path: str | Path) -> Loaded:
    """Samples from a ``.npy`` array or a ``.npz`` archive.

    In an ``.npz`` the samples are the array named ``x``, ``data``, ``samples``, ``images`` or
    ``arr_0`` (or the only array), the labels ``y``, ``labels`` or ``targets``. ``uint8`` arrays
    are 8-bit images (256 levels, scaled to ``[-1, 1]``); float arrays are used as they are.
    Shapes: ``(N, d)`` flat data, ``(N, H, W)`` single-channel images, ``(N, C, H, W)`` or
    ``(N, H, W, C)`` (``C`` in 1, 3, 4 last and not first) images.
    """
    path = Path(path)
    labels = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                key = next(
                    (k for k in _DATA_KEYS if k in keys), keys[0] if len(keys) == 1 else None
                )
                if key is None:
                    raise ValueError(
                        f"{path} holds arrays {keys}; name the samples one of {list(_DATA_KEYS)}"
                    )
                arr = archive[key]
                lkey = next((k for k in _LABEL_KEYS if k in keys and k != key), None)
                if lkey is not None:
                    labels = torch.from_numpy(np.asarray(archive[lkey]).astype(np.int64))
        else:
            arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if str(path) in str(err):  # our own message
            raise
        raise ValueError(
            f"cannot read {path} as a NumPy array file (numeric .npy/.npz; pickled or object "
            f"arrays are refused): {' '.join(str(err).split()[:12])}"
        ) from None
    data, levels = _array_samples(arr, path)
    return data, labels, levels


def _array_samples(arr: np.ndarray, path: Path) -> tuple[Tensor, int | None]:
    if arr.ndim < 2:
        raise ValueError(
            f"{path}: samples must be an array (N, ...) with a batch axis first, "
            f"got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        levels: int | None = 256
    elif np.issubdtype(arr.dtype, np.floating):
        levels = None
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"{path} contains NaN or infinite values")
    else:
        raise ValueError(
            f"{path}: samples of dtype {arr.dtype} are not supported; use uint8 "
            f"images (0-255) or float data already scaled"
        )
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[1] not in (1, 3, 4) and arr.shape[3] in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim > 4:
        raise ValueError(
            f"{path}: samples must be (N, d), (N, H, W) or (N, C, H, W), got shape {arr.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(arr)), levels
