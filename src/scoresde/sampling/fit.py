"""Step schedules fitted to a model: :func:`fit_schedule`.

A few-step sampler's error depends on where its steps fall, and the best places depend on the
model (its data scale, the widths of its modes). :func:`fit_schedule` chooses them for the model
at hand the way LD3 (Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs") and
GITS (Chen et al. 2024) do: it draws ``n`` starting noises, solves the probability-flow ODE
from each of them tightly (the *reference*: DPM-Solver++(3M) with ``reference_steps`` steps
uniform in log-SNR, down to the lower of ``eps`` and the default grid's end, then the Tweedie
step to noise level 0), and moves the ``steps`` grid's nodes so that the sampler's outputs from
the same noises come as close as possible to the reference's.

The nodes are parametrised by their log noise level ``u_i = log sigma(t_i)``, ordered; the
first time ``t_0`` stays the default grid's (``T``, or the start ``fast`` picks below it), the
interior nodes move freely between their neighbours and the last one (``fit_end=True``) between
``eps`` and its upper neighbour (for ``fast`` that is the ``sigma_min`` of its final Tweedie
step). The search is derivative free: coordinate (pattern) search that moves each node a
fraction ``h`` of the gap to a neighbour and keeps a move only when the objective falls, halving
``h`` after a sweep without progress (Hooke & Jeeves 1961). It starts from the best of three grids
with the default grid's ends: the sampler's default, nodes uniform in log sigma, and Karras'
``rho = 7`` (EDM eq. 5; on a flow path only the default), so a poor default costs little. Every
candidate grid is one batched :func:`~scoresde.sample` run of the calibration noises (``steps``
NFE for ``fast``), and the search stops before ``max_calls`` batched score calls (reference and
checks included) are spent. The best grid is kept, so the calibration objective never ends worse
than the default's; a held-out quarter of the noises then checks it, and the default grid is
returned if the fitted one is worse there.

The objective: for a deterministic sampler, the mean over the noises of each output's RMS
distance (per coordinate) to its reference (LD3's matching loss with an L2 distance, not
squared). A few noises land in another mode than their reference whatever the grid; a mean of
*squared* distances is dominated by them, and the grid then overfits those noises (measured on
the targets of ``benchmarks/fit_schedule.py`` at NFE 5 and 10, two seeds each: 1.1-40x worse
per-mode Frechet than with this objective, one fit rejected by the held-out check). For a
stochastic sampler (its noise fixed by the generator: common random numbers) paths do not match
the ODE's one by one, so the objective is the squared sliced 2-Wasserstein distance between the
output set and the reference set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import Tensor

from .._checks import check_choice, check_generator, check_int, check_shape
from ..sde import SDE, ScoreFn
from .api import sample
from .base import get_sampler
from .noise import CounterNoise
from .schedules import Schedule, _named_times, get_times

__all__ = ["fit_schedule", "FitResult"]

OBJECTIVES = ("auto", "pathwise", "sliced")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_schedule` returns with ``return_info=True``."""

    schedule: Schedule
    """The fitted schedule (kind ``"fitted"``)."""
    default_times: tuple[float, ...]
    """The sampler's default grid the search started from."""
    calls: int
    """Batched score calls spent (reference, default run, search, held-out check)."""
    seconds: float
    """Wall time of the fit."""
    loss_default: float
    """The objective of the default grid on the calibration noises."""
    loss_fitted: float
    """The objective of the returned grid on the calibration noises."""
    holdout_default: float | None
    """The objective of the default grid on the held-out noises (``None``: no held-out set)."""
    holdout_fitted: float | None
    """The objective of the returned grid on the held-out noises."""
    evaluations: int
    """Candidate grids tried."""


class _Counted:
    """``score_fn`` counting its batched calls (its ``denoise``/``consistency`` too)."""

    def __init__(self, fn: ScoreFn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(x, t)

    def __getattr__(self, name: str) -> Any:
        if name == "fn":  # not set yet (copying); never forward it
            raise AttributeError(name)
        attr = getattr(self.fn, name)
        if name in ("denoise", "consistency") and callable(attr):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attr(*args, **kwargs)

            return counted
        return attr


@dataclass
class _Problem:
    """The calibration and held-out noises with their reference outputs, and the objective."""

    score: _Counted
    sde: SDE
    sampler: str
    options: dict[str, Any]
    seed: int
    device: torch.device
    dtype: torch.dtype
    x_init: Tensor
    reference: Tensor
    n_cal: int
    sliced: bool
    dirs: Tensor | None = None
    per_eval: int = 0
    evaluations: int = 0

    def run(self, times: Tensor, rows: slice) -> Tensor:
        """The sampler's outputs on ``times`` from the noises ``rows`` (same noise every time)."""
        gen = torch.Generator(self.device).manual_seed(self.seed)
        x0 = self.x_init[rows]
        return sample(
            self.score, self.sde, tuple(x0.shape), sampler=self.sampler, steps=times.numel() - 1,
            schedule=times, x_init=x0, generator=gen, noise_offset=rows.start or 0,
            device=self.device, dtype=self.dtype, **self.options,
        )  # fmt: skip

    def loss_of(self, out: Tensor, rows: slice) -> float:
        """The objective of outputs ``out`` of the noises ``rows`` (float64)."""
        ref = self.reference[rows].reshape(out.shape[0], -1).double()
        x = out.reshape(out.shape[0], -1).double()
        if not self.sliced:  # mean RMS distance: robust to the few noises that change mode
            return float((x - ref).pow(2).mean(1).sqrt().mean())
        assert self.dirs is not None
        px, pr = (x @ self.dirs).sort(0).values, (ref @ self.dirs).sort(0).values
        return float((px - pr).pow(2).mean())

    def loss(self, times: Tensor, rows: slice) -> float:
        """The objective of grid ``times``; ``inf`` where the sampler fails on it."""
        self.evaluations += 1
        try:
            out = self.run(times, rows)
        except ValueError:  # a grid too fine for the dtype, or non-finite outputs
            return math.inf
        return self.loss_of(out, rows)


def _check(
    score_fn: object, sde: object, steps: object, sampler: str, n: object, objective: str
) -> None:
    """One clear error for each bad argument of :func:`fit_schedule`."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    check_int("steps", steps, 1)
    check_int("n", n, 2)
    check_choice("objective", objective, OBJECTIVES)
    spec = get_sampler(sampler)
    if sampler == "ode":
        raise ValueError(
            "sampler 'ode' is adaptive: it chooses its own steps, so there is no grid to fit; "
            "fit a fixed-step sampler such as 'fast', 'dpm_solver' or 'heun'"
        )
    if not spec.supports(sde):
        raise ValueError(f"sampler {sampler!r} does not support {sde!r}: {spec.requirement}")


def _reference(
    prob: _Problem, t0: float, t_end: float, steps: int
) -> Tensor:  # the tight ODE solution from the same starting states
    """DPM-Solver++(3M), ``steps`` steps uniform in log-SNR from ``t0`` to ``t_end``, Tweedie."""
    sde = prob.sde
    sig0 = float(sde.sigma(torch.tensor(t0, dtype=torch.float64)))
    hi = None if t0 >= sde.T or not math.isfinite(sig0) else sig0
    times = get_times(sde, steps, Schedule("logsnr", sigma_max=hi), eps=t_end, dtype=torch.float64)
    times[0] = t0
    return sample(
        prob.score, sde, tuple(prob.x_init.shape), sampler="dpm_solver", steps=steps,
        schedule=times, x_init=prob.x_init, order=3, denoise=True, device=prob.device,
        dtype=prob.dtype,
    )  # fmt: skip


def _to_times(sde: SDE, t0: float, u: list[float]) -> Tensor:
    """The grid ``t_0, t(exp(u_1)), ...`` in float64."""
    sig = torch.tensor(u, dtype=torch.float64).exp()
    return torch.cat([torch.tensor([t0], dtype=torch.float64), sde.sigma_inv(sig)])


def _moves(u: list[float], i: int, h: float, lo: float, top: float) -> list[list[float]]:
    """Node ``i`` moved a fraction ``h`` of the gap towards each neighbour (order kept)."""
    up = top if i == 0 else u[i - 1]
    down = u[i + 1] if i + 1 < len(u) else lo
    gap_up, gap_down = up - u[i], u[i] - down
    if not math.isfinite(gap_up):  # the first node of a flow path: sigma(T) = inf
        gap_up = gap_down if math.isfinite(gap_down) and gap_down > 0 else 1.0
    out = []
    for step in (h * gap_up, -h * gap_down):
        if step != 0.0:
            cand = list(u)
            cand[i] = u[i] + step
            out.append(cand)
    return out


def _search(
    prob: _Problem,
    t0: float,
    start: tuple[list[float], float],
    lo: float,
    nodes: range,
    budget: int,
) -> tuple[list[float], float]:
    """Coordinate pattern search over ``nodes`` of ``u`` (calibration rows) within ``budget``.

    ``start``: the nodes to start from and their objective.
    """
    cal = slice(0, prob.n_cal)
    top = float(prob.sde.sigma(torch.tensor(t0, dtype=torch.float64)).log())
    u, best = start
    h = 0.3
    while h > 1 / 64:
        improved = False
        for i in nodes:
            for cand in _moves(u, i, h, lo, top):
                if prob.score.calls + prob.per_eval > budget:
                    return u, best
                loss = prob.loss(_to_times(prob.sde, t0, cand), cal)
                if loss < best:
                    u, best, improved = cand, loss, True
                    break
        if not improved:
            h /= 2
    return u, best


def _setup(
    counted: _Counted,
    sde: SDE,
    steps: int,
    sampler: str,
    n: int,
    event_shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    sliced: bool,
    options: dict[str, Any],
) -> tuple[_Problem, Tensor]:
    """The default run: the problem (its reference still to compute) and the default grid."""
    seed = CounterNoise.from_generator(generator).seed  # one draw, on the generator's device
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if device is None and generator is not None:
        dev = generator.device
    gen = torch.Generator(dev).manual_seed(seed)
    res = sample(
        counted, sde, (n, *event_shape), sampler=sampler, steps=steps, generator=gen,
        device=dev, dtype=dtype, return_trajectory=True, **options,
    )  # fmt: skip
    assert res.trajectory is not None
    x_init = res.trajectory[0]
    dirs = None
    if sliced:
        d = x_init[0].numel()
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(d, 64, generator=g, dtype=torch.float64)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(dev)
    n_cal = n - n // 4 if n >= 8 else n
    prob = _Problem(
        counted, sde, sampler, options, seed, dev, x_init.dtype, x_init, x_init, n_cal, sliced,
        dirs, per_eval=res.nfe,
    )  # fmt: skip
    return prob, res.times.double().cpu()


@overload
def fit_schedule(
    score_fn: ScoreFn, sde: SDE, steps: int, *, sampler: str = ..., n: int = ...,
    generator: torch.Generator | None = ..., event_shape: tuple[int, ...] | torch.Size,
    eps: float | None = ..., fit_end: bool = ..., max_calls: int = ...,
    reference_steps: int = ..., objective: str = ..., device: torch.device | str | None = ...,
    dtype: torch.dtype | None = ..., return_info: Literal[False] = ..., **options: Any,
) -> Schedule: ...  # fmt: skip


@overload
def fit_schedule(
    score_fn: ScoreFn, sde: SDE, steps: int, *, sampler: str = ..., n: int = ...,
    generator: torch.Generator | None = ..., event_shape: tuple[int, ...] | torch.Size,
    eps: float | None = ..., fit_end: bool = ..., max_calls: int = ...,
    reference_steps: int = ..., objective: str = ..., device: torch.device | str | None = ...,
    dtype: torch.dtype | None = ..., return_info: Literal[True], **options: Any,
) -> FitResult: ...  # fmt: skip


@torch.no_grad()
def fit_schedule(
    score_fn: ScoreFn,
    sde: SDE,
    steps: int,
    *,
    sampler: str = "fast",
    n: int = 512,
    generator: torch.Generator | None = None,
    event_shape: tuple[int, ...] | torch.Size,
    eps: float | None = None,
    fit_end: bool = True,
    max_calls: int = 2000,
    reference_steps: int = 128,
    objective: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    return_info: bool = False,
    **options: Any,
) -> Schedule | FitResult:
    """Fit the ``steps``-step grid of ``sampler`` to the model by matching a tight ODE solution.

    LD3-style (Tong et al. 2024): the grid's nodes (log noise levels, order kept) are moved by
    derivative-free coordinate search from the sampler's default grid so that the sampler's
    outputs from ``n`` fixed starting noises approach a 128-step DPM-Solver++(3M) solution of
    the probability-flow ODE (Song et al. 2021, eq. 13) from the same noises; see the module
    docstring. Use the result with ``scoresde.sample(..., sampler=sampler, steps=steps,
    schedule=fitted)``.

    Args:
        score_fn: ``score_fn(x, t)`` (exact or a wrapped network), as for :func:`sample`.
        sde: the forward SDE; the fitted schedule is valid for this SDE only.
        steps: the sampler's number of steps (``fast``: NFE ``steps + 1``).
        sampler: any fixed-step registered sampler (not the adaptive ``ode``). Stochastic ones
            are fitted with their noise fixed by ``generator`` against the sliced Wasserstein
            distance to the reference set (``objective="auto"``).
        n: starting noises; a quarter of them (``n >= 8``) is held out to check the fit.
            Fewer noises make each call cheaper but the grid overfits them: fitted on 64
            noises, a 4-step grid for a 4-D Gaussian came out worse than the default on fresh
            noises, on 256 better; at NFE 10 on the benchmark mixtures 512 (default) gave
            clearly better grids than 256, at NFE 5 about the same.
        generator: makes the fit deterministic (one seed is drawn from it).
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(3, 32, 32)``.
        eps: the lowest final time the fit may choose (default ``sde.eps``).
        fit_end: also fit the last time (for ``fast``, its Tweedie step's ``sigma_min``);
            the first time always stays the default grid's.
        max_calls: the most batched score calls the whole fit may spend (at least the
            reference's ``reference_steps + 1`` and four runs of the sampler).
        reference_steps: steps of the reference solution.
        objective: ``"pathwise"`` (mean RMS distance to each sample's reference),
            ``"sliced"`` (squared sliced 2-Wasserstein distance between the sets) or
            ``"auto"``: pathwise for deterministic samplers, sliced for stochastic ones.
        device: where to sample (default: the generator's, else the CPU).
        dtype: the sampling dtype (default torch's).
        return_info: return a :class:`FitResult` (with the cost and the objective values)
            instead of the :class:`Schedule`.
        **options: the sampler's options, as for :func:`sample`.

    Returns:
        A :class:`~scoresde.sampling.Schedule` of kind ``"fitted"`` holding ``steps + 1``
        strictly decreasing times inside ``[eps, T]`` (the SDE and the sampler recorded).
    """
    _check(score_fn, sde, steps, sampler, n, objective)
    check_generator("generator", generator)
    if not isinstance(event_shape, (tuple, list, torch.Size)):
        raise TypeError(f"event_shape must be a tuple of ints, e.g. (2,), got {event_shape!r}")
    try:
        shape = check_shape("event_shape", (1, *event_shape))[1:]
    except (TypeError, ValueError):
        raise ValueError(
            f"event_shape must hold positive ints (the shape of one sample, e.g. (2,)), "
            f"got {tuple(event_shape)}"
        ) from None
    check_int("max_calls", max_calls, 1)
    check_int("reference_steps", reference_steps, 8)
    sliced = objective == "sliced" or (objective == "auto" and get_sampler(sampler).stochastic)
    start = time.perf_counter()
    counted = _Counted(score_fn)
    t_lo = float(sde.eps if eps is None else eps)
    if not 0 < t_lo < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {t_lo}")
    prob, t_def = _setup(
        counted, sde, steps, sampler, n, shape, generator, device, dtype, sliced, options
    )
    t_ref = min(t_lo, float(t_def[-1]))  # the reference ends at the lower end
    holdout = prob.n_cal < n
    need = counted.calls + reference_steps + 1 + (3 if holdout else 1) * prob.per_eval
    if need > max_calls:
        raise ValueError(
            f"max_calls={max_calls} is below the {need} batched calls this fit needs at least "
            f"(reference {reference_steps + 1}, {prob.per_eval} per run of {sampler!r}); raise "
            "max_calls or lower reference_steps"
        )
    prob.reference = _reference(prob, float(t_def[0]), t_ref, reference_steps)
    fit = _fit(prob, t_def, t_lo, fit_end, max_calls - (2 * prob.per_eval if holdout else 0))
    times, loss_def, loss_fit = fit
    hold_def = hold_fit = None
    if holdout:
        rows = slice(prob.n_cal, n)
        hold_def, hold_fit = prob.loss(t_def, rows), prob.loss(times, rows)
        if not hold_fit <= hold_def:  # the fit does not carry over: keep the default grid
            times, loss_fit, hold_fit = t_def, loss_def, hold_def
    schedule = Schedule.from_times(times, sde, sampler)
    if not return_info:
        return schedule
    return FitResult(
        schedule, tuple(t_def.tolist()), counted.calls, time.perf_counter() - start, loss_def,
        loss_fit, hold_def, hold_fit, prob.evaluations,
    )  # fmt: skip


def _other_starts(sde: SDE, t_def: Tensor) -> list[list[float]]:
    """Two more starts: the ``"logsnr"`` and ``"karras"`` grids between the default's ends.

    As log noise levels of the nodes after ``t_0`` (``"logsnr"`` is uniform in log sigma,
    ``"karras"`` has rho = 7, EDM eq. 5). None on a flow path (``sigma(T) = inf``) or for
    one step.
    """
    steps, t0, t_end = t_def.numel() - 1, float(t_def[0]), float(t_def[-1])
    if not math.isfinite(float(sde.sigma(t_def[:1]))) or steps < 2:
        return []
    return [
        sde.sigma(_named_times(sde, kind, steps, t0, t_end, 7.0)[1:]).log().tolist()
        for kind in ("logsnr", "karras")
    ]


def _fit(
    prob: _Problem, t_def: Tensor, t_lo: float, fit_end: bool, budget: int
) -> tuple[Tensor, float, float]:
    """The search from the default grid: the best grid, the default's and its objective."""
    sde, t0 = prob.sde, float(t_def[0])
    cal = slice(0, prob.n_cal)
    loss_def = prob.loss(t_def, cal)
    u0 = sde.sigma(t_def[1:]).log().tolist()
    lo = min(float(sde.sigma(torch.tensor(t_lo, dtype=torch.float64)).log()), u0[-1])
    nodes = range(len(u0) if fit_end else len(u0) - 1)
    if len(nodes) == 0:
        return t_def, loss_def, loss_def
    start = (u0, loss_def)
    for u in _other_starts(sde, t_def):  # the best of three starts (ties: the default)
        loss = prob.loss(_to_times(sde, t0, u), cal)
        if loss < start[1]:
            start = (u, loss)
    u, best = _search(prob, t0, start, lo, nodes, budget)
    if not best < loss_def:
        return t_def, loss_def, loss_def
    return _to_times(sde, t0, u), loss_def, best
