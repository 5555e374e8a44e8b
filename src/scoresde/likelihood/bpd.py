"""Bits per dimension of discrete data from a continuous density, and uniform dequantisation.

Integer data ``k in {0, ..., bins - 1}^D`` is dequantised to ``x = lo + (k + u) w / bins`` with
``u ~ U[0, 1)^D`` and ``w = hi - lo``, so each integer owns a cell of volume ``(w / bins)^D``.
For a continuous model density ``p`` of ``x`` (Theis, van den Oord & Bethge 2016, eq. 7)::

    log P(k) = log int_cell p  >=  E_u[log p(x)] + D log(w / bins),

so the (upper bound on the) discrete negative log-likelihood in bits per dimension is::

    bpd = (-log p(x) / D + log(bins / w)) / log 2.

With 256 bins that offset is ``log2(256) = 8`` bits for data in ``[0, 1]`` and ``7`` for data in
``[-1, 1]`` (the ``[0, 1] -> [-1, 1]`` rescaling doubles lengths: its Jacobian adds
``D log 2`` nats to ``-log p``, i.e. one bit per dimension, here folded into ``w = 2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_tensor

__all__ = ["bits_per_dim", "dequantize"]


def _check_range(data_range: Sequence[float]) -> tuple[float, float]:
    if len(data_range) != 2:
        raise ValueError(f"data_range must be (lo, hi), e.g. (0, 1) or (-1, 1); got {data_range}")
    lo, hi = float(data_range[0]), float(data_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2 (256 for 8-bit data), got {bins!r}")
    return bins


def bits_per_dim(
    log_prob: Tensor,
    x_shape: Sequence[int],
    *,
    data_range: Sequence[float] = (0.0, 1.0),
    bins: int = 256,
) -> Tensor:
    """Bits per dimension ``(-log_prob / D + log(bins / (hi - lo))) / log 2`` per sample.

    Args:
        log_prob: continuous log-density in nats of dequantised data, shape ``(B,)`` (e.g.
            ``log_likelihood(...).log_prob``).
        x_shape: shape of the batch ``x`` it was computed on, ``(B, *event_shape)``;
            ``D = prod(event_shape)``.
        data_range: the interval ``(lo, hi)`` the ``bins`` levels were mapped onto:
            ``(0, 1)`` (offset 8 bits for 256 bins) or ``(-1, 1)`` (offset 7 bits).
        bins: number of discrete levels per dimension (256 for 8-bit images).

    Returns:
        ``(B,)`` bits per dimension: an upper bound on the discrete model's code length when
        ``x`` was uniformly dequantised (:func:`dequantize`).
    """
    check_tensor("log_prob", log_prob, finite=False)
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 2 or shape[0] != log_prob.shape[0] or log_prob.dim() != 1:
        raise ValueError(
            f"x_shape must be the batch shape (B, *event_shape) of x with B = len(log_prob); "
            f"got x_shape={shape} and log_prob of shape {tuple(log_prob.shape)}"
        )
    lo, hi = _check_range(data_range)
    dim = math.prod(shape[1:])
    offset = math.log(_check_bins(bins) / (hi - lo))
    return (-log_prob / dim + offset) / math.log(2.0)


def dequantize(
    x: Tensor,
    *,
    bins: int = 256,
    data_range: Sequence[float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniformly dequantise integer data: ``lo + (k + u) (hi - lo) / bins``, ``u ~ U[0, 1)``.

    Args:
        x: integer tensor (e.g. ``uint8`` images) with values in ``[0, bins - 1]``.
        bins: number of levels (256 for 8-bit data).
        data_range: the interval ``(lo, hi)`` to map onto (``(0, 1)`` or ``(-1, 1)``).
        generator: source of the uniform noise.
        dtype: floating dtype of the result.

    Returns:
        A ``dtype`` tensor shaped like ``x`` inside ``[lo, hi)``; pass the same ``bins`` and
        ``data_range`` to :func:`bits_per_dim`.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of integers, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"x must hold integers (e.g. uint8 pixels), got dtype {x.dtype}; "
            f"to dequantise floats in [0, 1] use (x * 255).round().to(torch.uint8)"
        )
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be floating point, got {dtype}")
    bins = _check_bins(bins)
    lo, hi = _check_range(data_range)
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= bins):
        raise ValueError(
            f"x must lie in [0, {bins - 1}] for bins={bins}, "
            f"got values in [{int(x.min())}, {int(x.max())}]"
        )
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=dtype).to(x.device)
    return lo + (x.to(dtype) + u) * ((hi - lo) / bins)
