"""The one sampling entry point, :func:`sample`, and its optional named result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_tensor
from ..sde import SDE, ScoreFn
from .base import Context, get_sampler
from .noise import CounterNoise
from .schedules import Schedule, get_times

__all__ = ["sample", "SampleResult"]


@dataclass
class SampleResult:
    """What :func:`sample` returns with ``return_info=True`` or ``return_trajectory=True``."""

    samples: Tensor
    """The final samples, shaped like the requested batch."""
    nfe: int
    """Number of score-function evaluations (batched calls) that were made."""
    times: Tensor
    """The time grid the sampler visited (``T`` down to ``eps``)."""
    trajectory: Tensor | None = None
    """``(n_states, *shape)``: the initial state and the state after every step, if asked."""


def _resolve(
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    generator: torch.Generator | None,
    x_init: Tensor | None,
) -> tuple[torch.device, torch.dtype]:
    if device is None:
        device = (
            x_init.device
            if x_init is not None
            else (generator.device if generator is not None else torch.device("cpu"))
        )
    if dtype is None:
        dtype = x_init.dtype if x_init is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return torch.device(device), dtype


def _start_std(sde: SDE, t0: float) -> float:
    """The prior's std, rescaled to the noise level of a grid that starts below ``T``."""
    if t0 >= sde.T:
        return sde.prior_std
    a, b = torch.tensor([t0, sde.T], dtype=torch.float64).unbind()
    return sde.prior_std * float(sde.std(a) / sde.std(b))


def _initial_state(
    sde: SDE,
    t0: float,
    shape: tuple[int, ...],
    noise: CounterNoise,
    x_init: Tensor | None,
    dev: torch.device,
    dt: torch.dtype,
) -> Tensor:
    if x_init is None:
        return noise.randn(shape, dev, dt) * _start_std(sde, t0)
    check_tensor("x_init", x_init)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
    return x_init.to(device=dev, dtype=dt)


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
    schedule: str | Schedule | Tensor | None = None,
    rho: float = 7.0,
    eps: float | None = None,
    denoise: bool | None = None,
    x_init: Tensor | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    return_info: bool = False,
    **options: Any,
) -> Any:
    """Draw samples by integrating the reverse SDE / probability-flow ODE from the prior.

    Args:
        score_fn: ``score_fn(x, t)`` with ``t`` a ``(B,)`` tensor (exact or a wrapped network).
        sde: the forward SDE the score belongs to.
        shape: ``(B, *event_shape)`` of the batch to draw.
        sampler: a registered sampler name (see :func:`scoresde.available_samplers`);
            ``"fast"`` is the recommended few-step sampler (NFE 5-20).
        steps: number of steps (intervals) of the time grid from ``T`` to ``eps``.
        generator: the source of all randomness. One seed is drawn from it per call and all
            noise is derived from that seed by a counter-based hash, so sample ``i`` is the same
            whatever the batch size.
        device: where to sample (default: ``x_init``'s, the generator's, or the CPU).
        dtype: the precision to sample in (default: ``x_init``'s or torch's default).
        schedule: a schedule name (``"uniform"``, ``"quadratic"``, ``"karras"``, ``"logsnr"``),
            a :class:`~scoresde.sampling.Schedule`, or a decreasing tensor of times; default:
            the sampler's preferred schedule, else ``sde.default_schedule``.
        rho: Karras' exponent for ``schedule="karras"``.
        eps: the final time (default ``sde.eps``).
        denoise: take one extra score evaluation at ``eps`` and return Tweedie's denoised
            ``E[x_0 | x_eps]`` (an Euler step of the probability-flow ODE to noise level 0).
            Default: the sampler's convention (on for the noise-level samplers ``euler``,
            ``heun``, ``edm``, ``ddim``, ``dpm_solver``, ``fast``; off for the others, which
            end on the noise-free mean of their last step).
        x_init: start from this state at ``T`` instead of a prior draw.
        callback: called after each step with ``{"i", "t", "x", ...}``.
        progress: show a progress bar.
        return_trajectory: also keep the state after every step (implies a
            :class:`SampleResult`).
        return_info: return a :class:`SampleResult` (samples, NFE, times) instead of a tensor.
        **options: options of the chosen sampler (see its docstring).

    Returns:
        The samples, shaped ``shape``, on ``device`` in ``dtype``; a :class:`SampleResult` when
        ``return_info`` or ``return_trajectory`` is set.
    """
    spec = get_sampler(sampler)
    spec.check(sde, options)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    dev, dt = _resolve(device, dtype, generator, x_init)
    if schedule is None:
        schedule = spec.schedule
    times = get_times(sde, steps, schedule, eps=eps, rho=rho, device=dev, dtype=dt)
    noise = CounterNoise.from_generator(generator)
    x = _initial_state(sde, float(times[0]), shape, noise, x_init, dev, dt)
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

    ctx = Context(score_fn, sde, generator, on_step if (bar or user_cb) else None, noise=noise)
    if return_trajectory:
        ctx.trajectory = [x.clone()]
    try:
        x = spec.fn(ctx, x, times, **options)
        if spec.denoise if denoise is None else denoise:
            x = ctx.denoise(x, times[-1])
            ctx.report(times.numel() - 1, torch.zeros_like(times[-1]), x)
    finally:
        if bar is not None:
            bar.close()
    if not (return_info or return_trajectory):
        return x
    traj = torch.stack(ctx.trajectory) if ctx.trajectory is not None else None
    return SampleResult(x, ctx.nfe, times, traj)
