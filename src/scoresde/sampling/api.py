"""The one sampling entry point, :func:`sample`, and its optional named result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_device,
    check_float_dtype,
    check_generator,
    check_output,
    check_shape,
    check_tensor,
    trusted_times,
)
from ..sde import SDE, ScoreFn, denoiser_of
from .base import Context, SamplerSpec, ScheduleContext, get_sampler
from .data_gaussian import DataGaussian
from .noise import CounterNoise
from .profile import StartMoments, start_moments
from .schedules import Schedule, check_steps, get_times

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
    return check_device("device", device), check_float_dtype("dtype", dtype)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision=`` of :func:`sample`: the autocast dtype of the score evaluations."""


class _CheckedScore:
    """``score_fn`` whose every output is checked to be a tensor shaped like ``x`` (no sync).

    It runs under :func:`~scoresde._checks.trusted_times`: the sampler builds the times, so
    score models skip reading them back for their range check.

    With an autocast dtype the call runs under ``torch.autocast`` and its output is cast back
    to ``x``'s dtype, so the sampler's own arithmetic stays in the sampling precision.
    """

    def __init__(self, fn: ScoreFn, autocast: torch.dtype | None = None) -> None:
        self.fn, self.autocast = fn, autocast
        den = denoiser_of(fn)
        if den is not None:  # E[x0 | x_T] where s(T) = 0 (sampling.endpoint), checked alike
            self.denoise = _CheckedScore(den, autocast)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.autocast is None:
            with trusted_times():  # the sampler built t: no per-call read of its values
                return check_output("score_fn", self.fn(x, t), x)
        with torch.autocast(x.device.type, dtype=self.autocast), trusted_times():
            out = self.fn(x, t)
        if isinstance(out, Tensor):
            out = out.to(x.dtype)
        return check_output("score_fn", out, x)


def _start_std(sde: SDE, t0: float) -> float:
    """The prior's std, rescaled to the noise level of a grid that starts below ``T``."""
    if t0 >= sde.T:
        return sde.prior_std
    a, b = torch.tensor([t0, sde.T], dtype=torch.float64).unbind()
    return sde.prior_std * float(sde.std(a) / sde.std(b))


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
    batch_size: int | None = None,
    precision: str = "fp32",
    noise_offset: int = 0,
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
        batch_size: draw at most this many samples at a time (peak memory independent of
            ``shape[0]``); every sample gets the noise it gets in one batch (counter-based
            noise with a per-chunk sample offset), so with a fixed step grid and a score whose
            rows do not depend on the batch (exact scores) the samples are bit-identical; a
            network's matrix kernels may round differently per batch size (last bits only),
            and the adaptive ``ode`` sampler's steps depend on the batch (agrees to its
            tolerance). ``nfe`` then counts the calls of all chunks. Default: one batch.
        precision: ``"fp32"`` (default: ``score_fn`` runs as called), ``"bf16"`` or ``"fp16"``:
            every ``score_fn`` call runs under ``torch.autocast`` with that dtype on the
            sampling device (a network's matmuls and convolutions in reduced precision, about
            2x faster on recent GPUs) and its output is cast back to ``dtype``; the sampler's
            updates stay in ``dtype``. Autocast converts float32 work only (float64 stays as
            it is). On a CPU, bf16 autocast works but is rarely faster.
        noise_offset: the global index of this call's first sample: sample ``i`` gets the
            noise of row ``noise_offset + i`` of one larger run with the same seed, so calls
            with offsets ``0, k, 2k, ...`` and ``k`` rows each give the rows of one call with
            ``batch_size=k`` (how :mod:`scoresde.shard` splits a run across processes).
        **options: options of the chosen sampler: ``scoresde.sampler_help(sampler)`` lists
            them with their defaults and describes the sampler (``scoresde sample --sampler
            NAME --help-sampler`` on the command line).

    Returns:
        The samples, shaped ``shape``, on ``device`` in ``dtype``; a :class:`SampleResult` when
        ``return_info`` or ``return_trajectory`` is set.
    """
    spec = get_sampler(sampler)
    shape = _check_call(spec, score_fn, sde, shape, generator, x_init, precision, batch_size)
    spec.check(sde, options)
    dev, dt = _resolve(device, dtype, generator, x_init)
    checked = _CheckedScore(score_fn, PRECISIONS[precision])
    rows = shape[0] if batch_size is None else min(shape[0], batch_size)
    sctx = ScheduleContext(checked, sde, shape[1:], rows, dev, dt)
    times = _times(spec, sctx, steps, schedule, rho, eps)
    noise = CounterNoise.from_generator(generator)
    if _check_noise_offset(noise_offset):
        noise = CounterNoise(noise.seed, offset=noise_offset)
    run = _Run(spec, checked, sde, generator, callback, progress, return_trajectory, denoise)
    if spec.matched_start:
        moments = start_moments(sctx)
        run.start = moments if x_init is None else None
        run.gaussian = None if moments is None else moments.gaussian
    x, nfe, traj = run.chunks(shape, times, noise, x_init, batch_size, options)
    if not (return_info or return_trajectory):
        return x
    return SampleResult(x, nfe, times, traj)


def _check_call(
    spec: SamplerSpec,
    score_fn: object,
    sde: object,
    shape: object,
    generator: object,
    x_init: object,
    precision: str,
    batch_size: object,
) -> tuple[int, ...]:
    """Check the arguments of :func:`sample` (``TypeError``/``ValueError``); return the shape.

    The sampler's own contract (SDE, options) is checked by :meth:`SamplerSpec.check`.
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    shape = check_shape("shape", shape)
    check_generator("generator", generator)
    if x_init is not None:
        if isinstance(x_init, Tensor):
            check_device("x_init's device", x_init.device)
        x_init = check_tensor("x_init", x_init)
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
    check_choice("precision", precision, PRECISIONS)
    if batch_size is not None:
        _check_batch_size(batch_size)
    return shape


def _check_noise_offset(offset: object) -> int:
    """``noise_offset`` checked to be a non-negative int; returned."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"noise_offset must be a non-negative int, got {offset!r}")
    return offset


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size}")


def _times(
    spec: SamplerSpec,
    ctx: ScheduleContext,
    steps: int,
    schedule: str | Schedule | Tensor | None,
    rho: float,
    eps: float | None,
) -> Tensor:
    """The time grid: the given schedule, else the sampler's preferred one, else the SDE's.

    A sampler's preferred schedule may be a function of the step count and the model
    (``schedule(steps, ctx)``), called here once per :func:`sample` call.
    """
    if schedule is None:
        schedule = spec.schedule
        if callable(schedule):
            schedule = schedule(check_steps(steps), ctx)
    return get_times(ctx.sde, steps, schedule, eps=eps, rho=rho, device=ctx.device, dtype=ctx.dtype)


@dataclass
class _Run:
    """One call of :func:`sample`: its batches through the sampler, with progress and trajectory."""

    spec: SamplerSpec
    score_fn: ScoreFn
    sde: SDE
    generator: torch.Generator | None
    callback: Callable[[dict[str, Any]], None] | None
    progress: bool
    return_trajectory: bool
    denoise: bool | None
    start: StartMoments | None = None
    """The Gaussian start of a sampler with ``matched_start`` (else the prior's)."""
    gaussian: DataGaussian | None = None
    """The data's Gaussian part for a sampler with ``matched_start`` (``Context.gaussian``)."""

    def chunks(
        self,
        shape: tuple[int, ...],
        times: Tensor,
        noise: CounterNoise,
        x_init: Tensor | None,
        batch_size: int | None,
        options: dict[str, Any],
    ) -> tuple[Tensor, int, Tensor | None]:
        """All ``shape[0]`` samples, ``batch_size`` at a time; the samples, NFE and trajectory.

        Chunk ``k`` draws its noise with the sample offset of its first row, so every sample
        gets the noise it gets in one batch.
        """
        n = shape[0]
        chunk = n if batch_size is None else min(batch_size, n)
        out: Tensor | None = None
        trajs, nfe = [], 0
        for start in range(0, n, chunk):
            rows = (min(chunk, n - start), *shape[1:])
            part_noise = noise if start == 0 else CounterNoise(noise.seed, noise.offset + start)
            part_init = None if x_init is None else x_init[start : start + rows[0]]
            x = self._initial_state(rows, part_noise, part_init, times)
            x, calls, traj = self.batch(x, times, part_noise, options)
            if rows[0] < n:  # chunks go straight into one preallocated result
                if out is None:
                    out = x.new_empty(shape)
                out[start : start + rows[0]] = x
            trajs.append(traj)
            nfe += calls
        traj = None if trajs[0] is None else torch.cat(trajs, dim=1)  # type: ignore[arg-type]
        return (x if out is None else out), nfe, traj

    def _initial_state(
        self, shape: tuple[int, ...], noise: CounterNoise, x_init: Tensor | None, times: Tensor
    ) -> Tensor:
        """A prior draw at ``times[0]`` (on ``times``' device and dtype), or ``x_init`` moved.

        With :attr:`start`, the draw is from ``N(s (mean), s^2 (sigma^2 + var) I)`` at
        ``times[0]`` instead: the noised data's mean and variance.
        """
        if x_init is not None:
            return x_init.to(device=times.device, dtype=times.dtype)
        z = noise.randn(shape, times.device, times.dtype)
        if self.start is None:
            return z * _start_std(self.sde, float(times[0]))
        return self.start.draw(self.sde, times[:1], z)

    def batch(
        self,
        x: Tensor,
        times: Tensor,
        noise: CounterNoise,
        options: dict[str, Any],
    ) -> tuple[Tensor, int, Tensor | None]:
        """Integrate ``x`` over ``times``; return the samples, the NFE and the trajectory."""
        bar = self._progress_bar(times.numel() - 1)
        ctx = Context(
            self.score_fn,
            self.sde,
            self.generator,
            self._on_step(bar),
            noise=noise,
            gaussian=self.gaussian,
        )
        if self.return_trajectory:
            ctx.trajectory = [x.clone()]
        try:
            x = self.spec.fn(ctx, x, times, **options)
            if self.spec.denoise if self.denoise is None else self.denoise:
                x = ctx.final_denoise(x, times[-1])
                ctx.report(times.numel() - 1, torch.zeros_like(times[-1]), x)
        finally:
            if bar is not None:
                bar.close()
        _check_finite(self.spec.name, x)
        traj = torch.stack(ctx.trajectory) if ctx.trajectory is not None else None
        return x, ctx.nfe, traj

    def _progress_bar(self, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=self.spec.name, leave=False)

    def _on_step(self, bar: Any) -> Callable[[dict[str, Any]], None] | None:
        """The per-step callback: advance the progress bar, call the user's callback."""
        user_cb = self.callback
        if bar is None and user_cb is None:
            return None

        def on_step(state: dict[str, Any]) -> None:
            if bar is not None:
                bar.update(1)
            if user_cb is not None:
                user_cb(state)

        return on_step


def _check_finite(sampler: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"sampler {sampler!r} produced NaN or infinite values: score_fn returned "
            "non-finite values, or the steps are unstable here (try more steps, another "
            "sampler or float64)"
        )
