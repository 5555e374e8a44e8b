"""Data: 2-D toy sets, scikit-learn digits, Fashion-MNIST, image folders and arrays.

:func:`load_dataset` is the one entry point; it returns an :class:`ArrayDataset` (a torch
``Dataset`` of ``(x, y)`` items, ``y = -1`` when unlabelled) whose ``info`` is a
:class:`DatasetInfo` (sample shape, range, levels, classes, ``sigma_data``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from .dataset import ArrayDataset, DatasetInfo, make_info, random_flip, scale_quantized
from .sources import (
    FASHION_MNIST_DIR,
    load_array_file,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)
from .toy import TOY_CLASSES, TOY_DATASETS, toy_data, toy_mixture

__all__ = [
    "DATASETS",
    "TOY_DATASETS",
    "IMAGE_DATASETS",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "DatasetInfo",
    "load_dataset",
    "toy_data",
    "toy_mixture",
    "scale_quantized",
    "random_flip",
    "read_idx",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_array_file",
]

IMAGE_DATASETS = ("digits", "fashion-mnist")
"""The built-in image sets."""
DATASETS = TOY_DATASETS + IMAGE_DATASETS
"""Every built-in data set name accepted by :func:`load_dataset`."""
TOY_DEFAULT_N = 50_000
"""Points drawn for a toy set when ``n`` is not given."""


def load_dataset(
    name_or_path: str | Path,
    *,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    dequantize: bool = False,
    random_flip: bool = False,
    resize: Sequence[int] | int | None = None,
    root: str | Path | None = None,
) -> ArrayDataset:
    """Load a built-in data set by name, or the data at a path, as an :class:`ArrayDataset`.

    Args:
        name_or_path: one of :data:`DATASETS` (``moons``, ``swissroll``, ``8gaussians``,
            ``checkerboard``, ``pinwheel``, ``spirals``, ``rings``, ``digits``,
            ``fashion-mnist``), a folder of PNG/JPEG images, or a ``.npy``/``.npz`` file.
        split: ``"train"`` or ``"test"`` for the built-in image sets (``"all"`` for digits);
            toy sets draw the test split from another seed.
        n: number of points for a toy set (default 50000); for other data, keep the first
            ``n`` samples.
        seed: seed of a toy set's draw.
        dequantize: add uniform noise to quantised data on access (for likelihood training).
        random_flip: flip images left-right with probability 1/2 on access.
        resize: resize the images of a folder to ``(H, W)`` (needed when their sizes differ).
        root: folder holding the Fashion-MNIST files (default Debian's, see
            :data:`FASHION_MNIST_DIR`).

    Raises:
        ValueError: an unknown name (with the closest match), an empty data set, images of
            mixed sizes, unsupported arrays.
        FileNotFoundError: a missing path or missing Fashion-MNIST files (with the install
            command).
    """
    key = str(name_or_path)
    if n is not None and int(n) < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    if key in TOY_DATASETS:
        split_seed = seed if split == "train" else seed + 1_000_003
        x, y = toy_data(
            key, TOY_DEFAULT_N if n is None else int(n), seed=split_seed, return_labels=True
        )  # type: ignore[misc]
        info = make_info(key, x, y, levels=None, num_classes=TOY_CLASSES[key])
        return ArrayDataset(x, y, info, dequantize=dequantize, random_flip=random_flip)
    if key in IMAGE_DATASETS:
        splits = ("train", "test", "all") if key == "digits" else ("train", "test")
        if split not in splits:
            raise ValueError(f"unknown split {split!r} for {key}; choose one of {list(splits)}")
        data, labels, levels = (load_digits(split) if key == "digits"
                                else load_fashion_mnist(split, root))  # fmt: skip
        num_classes = 10
    else:
        data, labels, levels = _load_path(key, resize)
        num_classes = None
    if n is not None:
        data = data[: int(n)]
        labels = None if labels is None else labels[: int(n)]
    info = make_info(key, data, labels, levels=levels, num_classes=num_classes)
    return ArrayDataset(data, labels, info, dequantize=dequantize, random_flip=random_flip)


def _load_path(key: str, resize: Sequence[int] | int | None) -> tuple:  # type: ignore[type-arg]
    path = Path(key).expanduser()
    if path.is_dir():
        return load_image_folder(path, resize)
    if path.is_file():
        if path.suffix in (".npy", ".npz"):
            return load_array_file(path)
        raise ValueError(f"cannot read {path}: give a .npy or .npz file or a folder of images")
    looks_like_path = any(c in key for c in "/\\.") or key.startswith("~")
    if looks_like_path:
        raise FileNotFoundError(f"no such file or folder: {path}")
    norm = key.lower().replace("_", "-").replace(" ", "")
    close = [name for name in DATASETS if norm and (norm in name or name in norm)]
    close = close or difflib.get_close_matches(norm, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown data set {key!r}: not a built-in name {list(DATASETS)} and no "
        f"file or folder of that name exists.{hint}"
    )
