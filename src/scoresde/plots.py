"""PNG plots for training and the demo (matplotlib, Agg backend; written atomically).

* :func:`scatter`: 2-D samples; :func:`scatter_compare`: 2-D data beside 2-D samples;
* :func:`image_grid`: a grid of images in ``[0, 1]``;
* :func:`trajectory_plot`: snapshots of the reverse diffusion from noise to data;
* :func:`loss_curve`: training loss against step (log scale, with a moving average).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes

__all__ = ["scatter", "scatter_compare", "image_grid", "make_grid", "trajectory_plot", "loss_curve"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _points(x: Tensor, name: str) -> Tensor:
    x = x.detach().float().cpu().reshape(x.shape[0], -1)
    if x.shape[1] < 2:
        raise ValueError(
            f"{name} must have at least 2 values per sample to scatter, got shape {tuple(x.shape)}"
        )
    return x[:, :2]


def _limits(*sets: Tensor) -> tuple[float, float, float, float]:
    allx = torch.cat(sets)
    lo = torch.quantile(allx, 0.002, dim=0)
    hi = torch.quantile(allx, 0.998, dim=0)
    pad = 0.08 * (hi - lo).clamp_min(1e-6)
    lo, hi = lo - pad, hi + pad
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _scatter_on(ax: Any, pts: Any, limits: tuple[float, float, float, float], colour: str) -> None:
    """Small translucent points on ``ax`` within ``limits = (x0, x1, y0, y1)``, equal aspect."""
    x0, x1, y0, y1 = limits
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=colour, linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")


def scatter_compare(
    data: Tensor,
    samples: Tensor,
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] = ("data", "samples"),
    suptitle: str | None = None,
) -> Path:
    """Scatter the first two coordinates of ``data`` beside ``samples`` on the same axes."""
    d, s = _points(data, "data"), _points(samples, "samples")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharex=True, sharey=True, layout="constrained")
    limits = _limits(d, s)
    for ax, pts, title, colour in zip(
        axes, (d, s), titles, ("tab:blue", "tab:orange"), strict=True
    ):
        _scatter_on(ax, pts, limits, colour)
        ax.set_title(f"{title} (n={len(pts)})")
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def scatter(x: Tensor, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Scatter the first two coordinates of the samples ``x``."""
    pts = _points(x, "x")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _scatter_on(ax, pts, _limits(pts), "tab:orange")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 1) -> Tensor:
    """Tile images ``(N, C, H, W)`` (values in ``[0, 1]``) into one ``(H', W', C)`` array."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid.permute(1, 2, 0)


def image_grid(
    images: Tensor,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    title: str | None = None,
) -> Path:
    """Save images ``(N, C, H, W)`` with values in ``[0, 1]`` as one grid PNG."""
    grid = make_grid(images, nrow)
    plt = _pyplot()
    h, w = grid.shape[:2]
    scale = 6.0 / max(h, w)
    fig, ax = plt.subplots(figsize=(max(2.0, w * scale), max(2.0, h * scale)))
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def trajectory_plot(
    snapshots: Sequence[Tensor],
    times: Sequence[float],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Plot reverse-diffusion snapshots (2-D points or images) from ``t = T`` down to ``eps``.

    ``snapshots[i]`` is the batch at time ``times[i]``; points are scattered on shared axes,
    images show their first sample at each time.
    """
    if len(snapshots) != len(times) or not snapshots:
        raise ValueError("give one time per snapshot (and at least one snapshot)")
    plt = _pyplot()
    k = len(snapshots)
    is_image = snapshots[0].dim() == 4
    fig, axes = plt.subplots(1, k, figsize=(2.3 * k, 2.7), squeeze=False, layout="constrained")
    axes = axes[0]
    if is_image:
        for ax, x, t in zip(axes, snapshots, times, strict=True):
            img = make_grid(x[:16].clamp(0, 1), nrow=4)
            ax.imshow(
                img[..., 0].numpy() if img.shape[2] == 1 else img.numpy(),
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_title(f"t = {t:.3g}")
            ax.axis("off")
    else:
        pts = [_points(x, "snapshot") for x in snapshots]
        x0, x1, y0, y1 = _limits(pts[-1])
        for ax, p, t in zip(axes, pts, times, strict=True):
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4, linewidths=0)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_title(f"t = {t:.3g}")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def loss_curve(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    title: str = "training loss",
) -> Path:
    """Plot ``{name: (steps, losses)}`` on a log-scale loss axis, one panel per curve."""
    if not curves:
        raise ValueError("give at least one curve")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (name, (steps, losses)) in zip(axes[0], curves.items(), strict=True):
        s = torch.as_tensor(list(steps), dtype=torch.float64)
        v = torch.as_tensor(list(losses), dtype=torch.float64)
        ax.plot(s, v, lw=0.8, alpha=0.5, label="logged")
        if len(v) >= 5:
            k = max(2, len(v) // 20)
            smooth = torch.nn.functional.avg_pool1d(v[None, None], k, 1).flatten()
            ax.plot(s[k - 1 :], smooth, lw=1.6, label=f"moving mean ({k})")
        if bool((v > 0).all()):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
