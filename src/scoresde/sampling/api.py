"""The one sampling entry point, :func:`sample`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import check_tensor
from ..sde import SDE, ScoreFn
from .base import Context, get_sampler
from .schedules import get_times

__all__ = ["sample"]


def _resolve(
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    generator: torch.Generator | None,
    x_init: Tensor | None,
) -> tuple[torch.device, torch.dtype]:
    if device is None:
        device = x_init.device if x_init is not None else (
            generator.device if generator is not None else torch.device("cpu"))
    if dtype is None:
        dtype = x_init.dtype if x_init is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return torch.device(device), dtype


@torch.no_grad()
def sample(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...] | torch.Size,
    *,
    sampler: str = "euler_maruyama",
    steps: int = 1000,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    schedule: str | Tensor | None = None,
    eps: float | None = None,
    x_init: Tensor | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    **options: Any,
) -> Tensor:
    """Draw samples by integrating the reverse SDE / probability-flow ODE from the prior.

    Args:
        score_fn: ``score_fn(x, t)`` with ``t`` a ``(B,)`` tensor (exact or a wrapped network).
        sde: the forward SDE the score belongs to.
        shape: ``(B, *event_shape)`` of the batch to draw.
        sampler: a registered sampler name (see :func:`scoresde.available_samplers`).
        steps: number of steps (intervals) of the time grid.
        generator: the source of all randomness (prior draw and sampler noise).
        device, dtype: where and in what precision to sample.
        schedule: a schedule name (``"uniform"``, ``"quadratic"``, ``"karras"``, ``"logsnr"``)
            or a decreasing tensor of times; default ``sde.default_schedule``.
        eps: the final time (default ``sde.eps``).
        x_init: start from this state at ``T`` instead of a prior draw.
        callback: called after each step with ``{"i", "t", "x", ...}``.
        progress: show a progress bar.
        **options: options of the chosen sampler.

    Returns:
        The samples, shaped ``shape``, on ``device`` in ``dtype``.
    """
    spec = get_sampler(sampler)
    spec.check(sde, options)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    dev, dt = _resolve(device, dtype, generator, x_init)
    times = get_times(sde, steps, schedule, eps=eps, device=dev, dtype=dt)
    if x_init is not None:
        check_tensor("x_init", x_init)
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
        x = x_init.to(device=dev, dtype=dt)
    else:
        x = sde.prior_sample(shape, generator=generator, device=dev, dtype=dt)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=times.numel() - 1, desc=sampler, leave=False)
    user_cb = callback

    def on_step(state: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)
        if user_cb is not None:
            user_cb(state)

    ctx = Context(score_fn, sde, generator, on_step if (bar or user_cb) else None)
    try:
        return spec.fn(ctx, x, times, **options)
    finally:
        if bar is not None:
            bar.close()
