"""An in-memory data set with its metadata, scaling to ``[-1, 1]``, flips and dequantisation.

Quantised data (images) are kept as integers in ``[0, levels)`` and scaled on access:

* plain: ``x = 2 k / (levels - 1) - 1``, exactly ``[-1, 1]`` (DDPM's convention);
* dequantised (uniform, Theis et al. 2016): ``x = 2 (k + u) / levels - 1`` with
  ``u ~ U[0, 1)``, a continuous density on ``[-1, 1)`` whose log-likelihood bounds the discrete
  one; bits/dim then adds ``log2(levels / 2)`` per dimension for the ``[-1, 1]`` scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DatasetInfo", "ArrayDataset", "scale_quantized", "random_flip"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer, samplers and likelihood need to know about a data set."""

    name: str
    """The built-in name or the path the data came from."""
    shape: tuple[int, ...]
    """Shape of one sample: ``(d,)`` for flat data, ``(C, H, W)`` for images."""
    n: int
    """Number of samples."""
    is_image: bool
    """Whether samples are ``(C, H, W)`` images (plots as grids, flips make sense)."""
    data_range: tuple[float, float]
    """Range of the scaled data: ``(-1, 1)`` for quantised data, else the observed min/max."""
    levels: int | None
    """Number of quantisation levels of the raw data (256 for 8-bit images, 17 for digits);
    ``None`` for continuous data."""
    num_classes: int | None
    """Number of label classes, or ``None`` when the data are unlabelled."""
    sigma_data: float
    """Standard deviation of the scaled data over all values (for ``ScoreModel(sigma_data=)``)."""

    @property
    def dim(self) -> int:
        """Number of values per sample."""
        return math.prod(self.shape)

    def bits_per_dim_offset(self) -> float:
        """``log2(levels / 2)``: add to a ``[-1, 1]``-space NLL in bits/dim for the raw data."""
        if self.levels is None:
            raise ValueError(f"data set {self.name!r} is continuous; bits/dim needs quantised data")
        return math.log2(self.levels / 2)


def scale_quantized(
    k: Tensor,
    levels: int,
    *,
    dequantize: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Map integers ``k`` in ``[0, levels)`` to ``[-1, 1]``, optionally with uniform noise.

    See the module docstring for the two formulas.
    """
    kf = k.to(dtype)
    if not dequantize:
        return kf * (2.0 / (levels - 1)) - 1.0
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=dtype)
    return (kf + u) * (2.0 / levels) - 1.0


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Flip each image of the batch ``(B, C, H, W)`` left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class ArrayDataset(Dataset[tuple[Tensor, Tensor]]):
    """Samples held in memory; items are ``(x, y)`` with ``y = -1`` for unlabelled data.

    ``data`` is either float (already scaled; returned as is) or integer with ``info.levels``
    (scaled on access by :func:`scale_quantized`). ``dequantize`` and ``random_flip`` apply on
    access: per item with the global generator in :meth:`__getitem__` (what a ``DataLoader``
    with a ``DistributedSampler`` uses), or batch-wise with an explicit generator in
    :meth:`get_batch` (the fast path for in-memory training).
    """

    def __init__(
        self,
        data: Tensor,
        labels: Tensor | None,
        info: DatasetInfo,
        *,
        dequantize: bool = False,
        random_flip: bool = False,
    ) -> None:
        if data.shape[0] == 0:
            raise ValueError(f"data set {info.name!r} is empty")
        if labels is not None and labels.shape != (data.shape[0],):
            raise ValueError(
                f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}"
            )
        if data.is_floating_point() and dequantize:
            raise ValueError(
                f"dequantize needs quantised (integer) data; {info.name!r} is continuous"
            )
        if random_flip and not info.is_image:
            raise ValueError(
                f"random_flip needs images (C, H, W); {info.name!r} has samples of "
                f"shape {info.shape}"
            )
        if not data.is_floating_point() and info.levels is None:
            raise ValueError("integer data need info.levels")
        self.data = data
        self.labels = labels
        self.info = info
        self.dequantize = dequantize
        self.random_flip = random_flip

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.get_batch(torch.tensor([int(index)]))
        label = torch.tensor(-1) if y is None else y[0]
        return x[0], label

    def get_batch(
        self, indices: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The scaled, augmented samples at ``indices`` and their labels (or ``None``).

        The result lives where ``self.data`` lives (move the data set with :meth:`to`); the
        generator must be on that device too.
        """
        raw = self.data[indices]
        x = self._scale(raw, self.dequantize, generator)
        if self.random_flip:
            x = random_flip(x, generator)
        y = None if self.labels is None else self.labels[indices]
        return x, y

    def tensors(self) -> Tensor:
        """All samples scaled to ``[-1, 1]`` without augmentation (for metrics, likelihood)."""
        return self._scale(self.data, False, None)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """A copy of this data set with its tensors on ``device``."""
        labels = None if self.labels is None else self.labels.to(device)
        return ArrayDataset(
            self.data.to(device),
            labels,
            self.info,
            dequantize=self.dequantize,
            random_flip=self.random_flip,
        )

    def _scale(self, raw: Tensor, dequantize: bool, generator: torch.Generator | None) -> Tensor:
        if raw.is_floating_point():
            return raw
        assert self.info.levels is not None
        return scale_quantized(raw, self.info.levels, dequantize=dequantize, generator=generator)


def make_info(
    name: str,
    data: Tensor,
    labels: Tensor | None,
    *,
    levels: int | None,
    num_classes: int | None = None,
) -> DatasetInfo:
    """Describe ``data`` (integer with ``levels``, or float) in a :class:`DatasetInfo`."""
    if data.shape[0] == 0:
        raise ValueError(f"data set {name!r} is empty")
    scaled = data[:10000]
    if levels is not None:
        scaled = scale_quantized(scaled, levels)
        data_range = (-1.0, 1.0)
    else:
        data_range = (float(data.min()), float(data.max()))
    if labels is not None and num_classes is None:
        num_classes = int(labels.max()) + 1
    return DatasetInfo(
        name=name,
        shape=tuple(int(s) for s in data.shape[1:]),
        n=int(data.shape[0]),
        is_image=data.dim() == 4,
        data_range=data_range,
        levels=levels,
        num_classes=num_classes,
        sigma_data=float(scaled.double().std()),
    )
