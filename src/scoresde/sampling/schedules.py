"""Step schedules: the decreasing times ``T = t_0 > t_1 > ... > t_N = eps`` a sampler visits.

A schedule is chosen by name (``"uniform"`` in t, ``"quadratic"`` in t, ``"karras"`` with ``rho``
in the noise level sigma (EDM eq. 5), ``"logsnr"`` uniform in log-SNR ``-2 log sigma``), or given
as a tensor of times, or as a :class:`Schedule` object that also fixes ``rho`` and the end point.
Named schedules are built in the SDE's noise level and mapped back to time with ``sde.sigma_inv``,
so they work for every SDE.

A flow path with ``s(T) = 0`` (:class:`~scoresde.RectifiedFlow`) has ``sigma(T) = inf``. Its grids
always start at ``T`` exactly, where the prior is exact and the samplers take a closed-form first
step; the schedules in sigma (``karras``, ``logsnr``) then run from the second point ``t_1`` on:
``t_1`` is one uniform step below ``T``, or the time of ``Schedule(sigma_max=...)`` when given.

A fitted schedule (:func:`scoresde.fit_schedule`) is a :class:`Schedule` of kind ``"fitted"``
that carries its times explicitly (``Schedule.from_times``), with the SDE it was fitted for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from ..sde import SDE

__all__ = ["get_times", "SCHEDULES", "Schedule"]

SCHEDULES = ("uniform", "quadratic", "karras", "logsnr")


@dataclass(frozen=True)
class Schedule:
    """A named step schedule with its parameters, usable wherever a schedule name is.

    Args:
        kind: one of ``"uniform"``, ``"quadratic"``, ``"karras"``, ``"logsnr"``.
        rho: Karras' exponent (EDM eq. 5); ``rho = 1`` is uniform in sigma and large ``rho``
            tends to ``"logsnr"``.
        eps: the final time (overrides the sampler's ``eps``).
        sigma_min: the final noise level instead of ``eps`` (mapped to time by the SDE).
        sigma_max: start at this noise level instead of at ``T`` (the sampler then starts from
            an isotropic Gaussian with the prior's std rescaled to that level). Useful when the
            data scale is far below ``sigma(T)``: few-step samplers spend no step up there. On
            a flow path (``s(T) = 0``) the grid still starts at ``T`` and ``sigma_max`` is the
            noise level of its second point.
        times: explicit decreasing times ``t_0 > ... > t_N`` (kind ``"fitted"``, e.g. from
            :func:`scoresde.fit_schedule`): :func:`get_times` returns them for ``steps = N``
            only and ignores ``rho``; ``eps``/``sigma_min``/``sigma_max`` must stay unset.
        sde: ``repr`` of the SDE the explicit ``times`` belong to; :func:`get_times` refuses
            another SDE (``None``: not recorded, not checked).
        sampler: the sampler the times were fitted for (a record; not checked).
    """

    kind: str = "karras"
    rho: float = 7.0
    eps: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    times: tuple[float, ...] | None = None
    sde: str | None = None
    sampler: str | None = None

    @classmethod
    def from_times(
        cls,
        times: Sequence[float] | Tensor,
        sde: SDE | str | None = None,
        sampler: str | None = None,
    ) -> Schedule:
        """A ``"fitted"`` schedule of explicit decreasing times (``T`` side first).

        ``sde``: the SDE (or its ``repr``) the times belong to, checked by :func:`get_times`.
        """
        if isinstance(times, Tensor):
            times = times.detach().double().cpu().reshape(-1).tolist()
        name = repr(sde) if isinstance(sde, SDE) else sde
        return cls("fitted", times=tuple(float(t) for t in times), sde=name, sampler=sampler)

    def __post_init__(self) -> None:
        if self.kind == "fitted" or self.times is not None:
            self._check_fitted()
            return
        check_choice("schedule", self.kind, SCHEDULES)
        check_positive("rho", self.rho)
        if self.eps is not None and self.sigma_min is not None:
            raise ValueError("give either eps or sigma_min to a Schedule, not both")
        lo, hi = self.sigma_min, self.sigma_max
        if lo is not None and hi is not None and not check_positive("sigma_min", lo) < hi:
            raise ValueError(f"Schedule needs sigma_min < sigma_max, got {lo} and {hi}")

    def _check_fitted(self) -> None:
        """Explicit times go with kind ``"fitted"`` and without eps/sigma_min/sigma_max."""
        if self.kind != "fitted" or self.times is None:
            raise ValueError(
                "a Schedule with explicit times has kind 'fitted' and a Schedule of kind "
                "'fitted' needs its times: build one with Schedule.from_times(times, sde)"
            )
        if (self.eps, self.sigma_min, self.sigma_max) != (None, None, None):
            raise ValueError(
                "a fitted Schedule's times fix both ends: leave eps, sigma_min and sigma_max unset"
            )
        t = tuple(float(a) for a in self.times)
        object.__setattr__(self, "times", t)  # a list given is kept as a tuple (hashable)
        if len(t) < 2 or not all(math.isfinite(a) for a in t):
            raise ValueError(f"a fitted Schedule needs >= 2 finite times, got {t!r}")
        if not all(a > b for a, b in zip(t, t[1:], strict=False)) or t[-1] <= 0:
            raise ValueError(f"a fitted Schedule's times must decrease strictly to > 0, got {t!r}")

    def start_time(self, sde: SDE) -> float:
        """The first time of the grid: ``T``, or the time of ``sigma_max`` (at most ``T``).

        Always ``T`` on a flow path (``s(T) = 0``), see the module docstring.
        """
        if self.sigma_max is None or sde.zero_terminal_snr:
            return sde.T
        sig = torch.tensor(check_positive("sigma_max", self.sigma_max), dtype=torch.float64)
        return min(float(sde.sigma_inv(sig)), sde.T)

    def end_time(self, sde: SDE, eps: float | None) -> float | None:
        """The final time this schedule asks for (``eps`` when it fixes none)."""
        if self.sigma_min is not None:
            sig = torch.tensor(check_positive("sigma_min", self.sigma_min), dtype=torch.float64)
            return float(sde.sigma_inv(sig))
        return self.eps if self.eps is not None else eps


def check_steps(steps: object) -> int:
    """``steps`` checked to be a positive int (not a bool); returned."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def get_times(
    sde: SDE,
    steps: int,
    schedule: str | Schedule | Tensor | None = None,
    *,
    eps: float | None = None,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Return ``steps + 1`` decreasing times from ``sde.T`` to ``eps`` (default ``sde.eps``).

    A user tensor is checked (1-D, strictly decreasing, inside ``[0, T]``) and returned on
    ``device``/``dtype``.
    """
    if isinstance(schedule, Tensor):
        return _user_times(sde, schedule, device, dtype)
    check_steps(steps)
    if isinstance(schedule, Schedule) and schedule.times is not None:
        return _fitted_times(sde, steps, schedule, eps, device, dtype)
    t_start, sigma_max = sde.T, None
    if isinstance(schedule, Schedule):
        t_start, sigma_max = schedule.start_time(sde), schedule.sigma_max
        eps, rho, schedule = schedule.end_time(sde, eps), schedule.rho, schedule.kind
    if schedule is not None and not isinstance(schedule, str):
        raise TypeError(
            f"schedule must be a name, a Schedule or a tensor of times, "
            f"got {type(schedule).__name__}"
        )
    name = check_choice("schedule", schedule or sde.default_schedule, SCHEDULES)
    t_end = float(sde.eps if eps is None else eps)
    if not 0 < t_end < t_start:
        raise ValueError(f"eps must lie in (0, T) = (0, {t_start}), got {t_end}")
    if (
        sde.zero_terminal_snr
        and t_start >= sde.T
        and (sigma_max is not None or name in ("karras", "logsnr"))
    ):
        times = _from_flow_end(sde, name, steps, t_start, t_end, rho, sigma_max)
    else:
        times = _named_times(sde, name, steps, t_start, t_end, rho)
    return _check_grid(sde, times.to(device=device, dtype=dtype))


def _from_flow_end(
    sde: SDE,
    name: str,
    steps: int,
    t_start: float,
    t_end: float,
    rho: float,
    sigma_max: float | None,
) -> Tensor:
    """``T``, then the named schedule from ``t_1`` to ``t_end`` (``sigma(T) = inf``).

    ``t_1`` is the time of ``sigma_max``, else one uniform step below ``T`` (module docstring).
    """
    ends = torch.tensor([t_start, t_end], dtype=torch.float64)
    if steps == 1:
        return ends
    if sigma_max is None:
        t1 = t_start - (t_start - t_end) / steps
    else:
        t1 = float(sde.sigma_inv(torch.tensor(sigma_max, dtype=torch.float64)))
        if not t_end < t1 < t_start:
            raise ValueError(
                f"sigma_max={sigma_max} must lie between the noise levels of eps and T "
                f"(times {t_end:.3g} and {t_start:.3g}); got its time {t1:.3g}"
            )
    return torch.cat([ends[:1], _named_times(sde, name, steps - 1, t1, t_end, rho)])


def _fitted_times(
    sde: SDE,
    steps: int,
    schedule: Schedule,
    eps: float | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> Tensor:
    """The explicit times of a fitted :class:`Schedule`, checked against ``steps`` and the SDE."""
    times = schedule.times or ()
    if steps != len(times) - 1:
        raise ValueError(
            f"this fitted schedule has {len(times) - 1} steps but steps={steps}: pass "
            f"steps={len(times) - 1}, or fit a schedule for {steps} steps"
        )
    if schedule.sde is not None and schedule.sde != repr(sde):
        raise ValueError(
            f"this schedule was fitted for {schedule.sde}, not {sde!r}: fit one for this SDE"
        )
    if eps is not None:
        raise ValueError("a fitted schedule fixes its final time: leave eps unset")
    return _user_times(sde, torch.tensor(times, dtype=torch.float64), device, dtype)


def _user_times(
    sde: SDE, schedule: Tensor, device: torch.device | str | None, dtype: torch.dtype
) -> Tensor:
    """A user's tensor of times, checked: 1-D, strictly decreasing, inside ``[0, T]``."""
    times = schedule.detach().to(device=device, dtype=dtype)
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(
            f"a schedule tensor must be 1-D with >= 2 times, got shape {tuple(times.shape)}"
        )
    if not bool((times.diff() < 0).all()):
        raise ValueError("a schedule tensor must be strictly decreasing (from T towards 0)")
    sde._check_range(float(times.min()), float(times.max()))
    return _check_grid(sde, times)


def _named_times(
    sde: SDE, name: str, steps: int, t_start: float, t_end: float, rho: float
) -> Tensor:
    """``steps + 1`` times (float64) from ``t_start`` to ``t_end`` by the named schedule."""
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    t_hi = torch.tensor(t_start, dtype=torch.float64)
    t_lo = torch.tensor(t_end, dtype=torch.float64)
    if name == "uniform":
        times = t_hi + u * (t_lo - t_hi)
    elif name == "quadratic":
        times = (t_hi.sqrt() + u * (t_lo.sqrt() - t_hi.sqrt())) ** 2
    elif name == "karras":  # EDM eq. 5
        rho = check_positive("rho", rho)
        s_hi, s_lo = sde.sigma(t_hi) ** (1 / rho), sde.sigma(t_lo) ** (1 / rho)
        times = sde.sigma_inv((s_hi + u * (s_lo - s_hi)) ** rho)
    else:  # logsnr
        l_hi, l_lo = sde.log_snr(t_hi), sde.log_snr(t_lo)
        times = sde.t_from_log_snr(l_hi + u * (l_lo - l_hi))
    times[0], times[-1] = t_hi, t_lo  # exact ends despite the round trip through sigma
    return times


def _check_grid(sde: SDE, times: Tensor) -> Tensor:
    """The grid in the sampling dtype must still decrease and end at a noise level > 0."""
    if not bool((times.diff() < 0).all()):
        raise ValueError(
            f"{times.numel() - 1} steps are too many for {times.dtype}: neighbouring times "
            "round to the same value; use fewer steps or float64"
        )
    sig_end = sde.sigma(times[-1:])
    if not bool((sig_end > 0).all() and torch.isfinite(sig_end).all()):
        raise ValueError(
            f"the noise level at eps={float(times[-1]):.3g} is {float(sig_end[0])} in "
            f"{times.dtype}; raise eps (this SDE's default is {sde.eps})"
        )
    return times
