"""Embedded explicit Runge–Kutta pairs with per-sample step-size control.

Every row of the batch is its own initial-value problem ``dy/du = F(u, y)`` on its own interval
``[u0_b, u1_b]``, with its own current ``u_b``, step ``h_b``, error estimate and accept/reject
decision (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4). All rows still share each batched
evaluation of ``F``, so one call of the right-hand side serves every unfinished row; rows leave
the batch when they reach ``u1``. One row's tolerance is therefore never loosened or tightened by
its batch-mates, and a row's result does not depend on which rows it was batched with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .._checks import check_choice

__all__ = [
    "Tableau",
    "TABLEAUS",
    "ODESolution",
    "solve_ivp_batched",
    "FixedSolution",
    "solve_fixed",
    "substeps",
    "RHS",
    "Norm",
    "rms_norm",
]

RHS = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``F(rows, u, y) -> dy/du``: ``rows`` are the original batch indices of the ``y`` rows.

A right-hand side may also offer ``prepare(us)`` and ``stage(i, rows, y)``: the solver then
hands it the points ``us`` ``(S, B)`` of all later stages of a step at once and evaluates stage
``i`` as ``stage(i, rows, y)``, so that whatever depends on ``u`` alone (the PF ODE's
coefficients) is computed once per step instead of once per stage.
"""


@dataclass(frozen=True)
class Tableau:
    """An embedded explicit RK pair with the first-same-as-last (FSAL) property.

    ``a[i]`` holds stage ``i``'s coefficients on stages ``0..i-1``; ``b`` the weights of the
    propagated solution (order ``order``) and ``e`` the weights of the error estimate (the
    difference to the embedded solution of order ``order - 1``). With FSAL the last stage is
    evaluated at the new point, so an accepted step costs ``stages - 1`` evaluations.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]

    @property
    def stages(self) -> int:
        """Number of stages including the FSAL stage."""
        return len(self.c)


def _rows(
    c: tuple[float, ...], partial: tuple[tuple[float, ...], ...]
) -> tuple[tuple[float, ...], ...]:
    """Complete each ``a`` row with its first coefficient from the row-sum condition ``c_i``."""
    out: list[tuple[float, ...]] = [()]
    for ci, rest in zip(c[1:], partial, strict=True):
        out.append((ci - math.fsum(rest), *rest))
    return tuple(out)


# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", RK5(4)7M.
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_BHAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DOPRI5 = Tableau(
    "dopri5",
    5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DP_B[:6],
    ),
    b=_DP_B,
    e=tuple(b - bh for b, bh in zip(_DP_B, _DP_BHAT, strict=True)),
)

# Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column
# simplifying assumption", Table 1 (first column of ``a`` from the row sums).
_TS_C = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
_TS_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
TSIT5 = Tableau(
    "tsit5",
    5,
    c=_TS_C,
    a=_rows(
        _TS_C,
        (
            (),
            (0.3354806554923570,),
            (-6.359448489975075, 4.362295432869581),
            (-11.74888356406283, 7.495539342889836, -0.09249506636175525),
            (-12.92096931784711, 8.159367898576159, -0.07158497328140100, -0.02826905039406838),
            (0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774),
        ),
    ),
    b=_TS_B,
    e=(
        -0.001780011052225771,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        1 / 66,
    ),
)

# Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas".
_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
_BS_BHAT = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
BOSH3 = Tableau(
    "bosh3",
    3,
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((), (1 / 2,), (0.0, 3 / 4), _BS_B[:3]),
    b=_BS_B,
    e=tuple(b - bh for b, bh in zip(_BS_B, _BS_BHAT, strict=True)),
)

TABLEAUS: dict[str, Tableau] = {t.name: t for t in (DOPRI5, TSIT5, BOSH3)}
"""The available methods by name."""


@dataclass
class ODESolution:
    """Result of :func:`solve_ivp_batched`."""

    y: Tensor
    """The state at ``u1``, one row per problem."""
    nfe: Tensor
    """Right-hand-side evaluations each row took part in, ``(B,)`` int64."""
    calls: int
    """Batched right-hand-side calls (each evaluates all unfinished rows once)."""
    steps: Tensor
    """Accepted steps per row, ``(B,)`` int64."""
    rejected: Tensor
    """Rejected steps per row, ``(B,)`` int64."""


Norm = Callable[[Tensor], Tensor]
"""A per-row error norm: scaled errors ``(B, N)`` to ``(B,)``."""


def rms_norm(z: Tensor) -> Tensor:
    """Root-mean-square over each row, ``sqrt(mean_j z_j^2)``, shape ``(B,)``.

    The error norm of Hairer, Nørsett & Wanner (*Solving ODEs I*, II.4, eq. 4.11) taken per
    sample; ``z`` is batch first, ``(B, ...)``, and everything after the batch dimension counts.
    """
    return z.reshape(z.shape[0], -1).pow(2).mean(dim=1).sqrt()


class _Counter:
    """Counts the batched calls of ``fn``; stages go through ``fn``'s staged interface if any.

    See :data:`RHS`.
    """

    def __init__(self, fn: RHS, c: tuple[float, ...]) -> None:
        self.fn, self.calls = fn, 0
        self.staged = hasattr(fn, "prepare") and hasattr(fn, "stage")
        self.c = c
        self._cs: Tensor | None = None  # c[1:] as a column on the state's device, made once

    def __call__(self, rows: Tensor, u: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(rows, u, y)

    def prepare(self, u: Tensor, hs: Tensor) -> None:
        """Announce a step of signed size ``hs`` from ``u`` (both ``(B,)``)."""
        if self.staged:
            if self._cs is None:
                self._cs = torch.tensor(self.c[1:], dtype=u.dtype, device=u.device)[:, None]
            self.fn.prepare(u + hs * self._cs)  # type: ignore[attr-defined]
        else:
            self.u, self.hs = u, hs

    def stage(self, i: int, rows: Tensor, y: Tensor) -> Tensor:
        """Evaluate stage ``i >= 1`` of the announced step at ``y``."""
        self.calls += 1
        if self.staged:
            return self.fn.stage(i - 1, rows, y)  # type: ignore[attr-defined]
        return self.fn(rows, self.u + self.hs * self.c[i], y)


@dataclass(frozen=True)
class _Control:
    """Error control and step-size rule shared by every row (Hairer II.4, eqs. 4.10-4.13)."""

    tab: Tableau
    rtol: float
    atol: float
    norm: Norm
    safety: float
    alpha: float
    """Exponent on this step's error ratio: ``pi[0] / order``."""
    beta: float
    """Exponent on the previous accepted step's ratio: ``pi[1] / order``."""

    def ratio(self, err: Tensor, y: Tensor, y_new: Tensor) -> Tensor:
        """``norm(err / (atol + rtol max(|y|, |y_new|)))`` per row: accept where ``<= 1``."""
        scale = self.atol + self.rtol * torch.maximum(y.abs(), y_new.abs())
        return self.norm(err / scale)

    def factor(self, r: Tensor, r_prev: Tensor) -> Tensor:
        """The step-size factor ``clip(safety r^-alpha r_prev^beta, 0.2, 10)`` (0.2 if NaN)."""
        rc = r.clamp(min=1e-10)
        grow = self.safety * rc ** (-self.alpha) * r_prev**self.beta
        return torch.where(torch.isfinite(r), grow, torch.full_like(r, 0.2)).clamp(0.2, 10.0)


@dataclass
class _Live:
    """The unfinished rows: original index, position, end, direction, next step and counters."""

    rows: Tensor
    u: Tensor
    y: Tensor
    end: Tensor
    direction: Tensor
    h: Tensor
    """Next step size (the row's interval length until :func:`_initial_step` sets it)."""
    k_first: Tensor
    """``F(u, y)``: the first stage of the next step (FSAL)."""
    n_steps: Tensor
    n_rej: Tensor
    grown_ok: Tensor
    """Whether the step may grow (not right after a rejection)."""
    r_prev: Tensor
    """Error ratio of the last accepted step (for the PI controller)."""

    def keep(self, mask: Tensor) -> _Live:
        """The rows where ``mask`` holds."""
        return _Live(*(getattr(self, f.name)[mask] for f in fields(self)))


def _initial_step(
    f: _Counter, ctl: _Control, live: _Live, span: Tensor, first_probe: float
) -> Tensor:
    """Per-row starting step (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4, p. 169).

    With ``d0 = |y0|``, ``d1 = |f0|`` (scaled norms), an Euler probe of length
    ``h0 = 0.01 d0 / d1`` estimates the second derivative ``d2``; the step is
    ``min(100 h0, (0.01 / max(d1, d2))^(1 / (order + 1)))``. Here the probe reaches at most
    ``first_probe * span`` of the row's interval, so that it sees structure close to the start
    of a solution that is flat there; the step itself is still up to ``100`` probe lengths.
    """
    y0, k0, direction = live.y, live.k_first, live.direction
    scale = ctl.atol + ctl.rtol * y0.abs()
    d0, d1 = ctl.norm(y0 / scale), ctl.norm(k0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, first_probe * span)
    k1 = f(live.rows, live.u + direction * h0, y0 + (direction * h0)[:, None] * k0)
    d2 = ctl.norm((k1 - k0) / scale) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(
        big <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        (0.01 / big.clamp(min=1e-300)) ** (1.0 / (ctl.tab.order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span)


def _start(
    f: _Counter, ctl: _Control, y0: Tensor, u0: Tensor, u1: Tensor, first_probe: float
) -> _Live | None:
    """Prepare: drop zero-length rows, evaluate ``F`` at the start, choose the first steps."""
    rows = torch.arange(y0.shape[0], device=y0.device)
    u, y, end = u0.clone(), y0, u1
    direction, span = torch.sign(end - u), (end - u).abs()
    live = span > 0
    if not bool(live.all()):
        rows, u, y, end, direction, span = (v[live] for v in (rows, u, y, end, direction, span))
    if rows.numel() == 0:
        return None
    k = f(rows, u, y)
    _check_finite(k, u)
    n = torch.zeros(rows.numel(), dtype=torch.long, device=y0.device)
    grow = torch.ones(rows.numel(), dtype=torch.bool, device=y0.device)
    state = _Live(rows, u, y, end, direction, span, k, n, n.clone(), grow, torch.ones_like(span))
    state.h = _initial_step(f, ctl, state, span, first_probe)
    return state


def _stages(
    f: _Counter, tab: Tableau, rows: Tensor, y: Tensor, k0: Tensor, hs: Tensor, *, last: bool = True
) -> tuple[Tensor, list[Tensor]]:
    """Stages ``1..`` of a step of signed size ``hs`` ``(B, 1)`` that ``f.prepare`` announced.

    Returns the state at the last stage (the propagated solution of an FSAL pair) and the stage
    derivatives ``[k0, k1, ...]``; the last stage is evaluated only if ``last`` (it serves the
    error estimate and the next step, not the solution).
    """
    ks = [k0]
    y_stage = y
    for i in range(1, tab.stages):
        acc = ks[0] * tab.a[i][0]
        for j in range(1, i):
            if tab.a[i][j] != 0.0:
                acc.add_(ks[j], alpha=tab.a[i][j])
        y_stage = torch.addcmul(y, hs, acc)
        if last or i < tab.stages - 1:
            ks.append(f.stage(i, rows, y_stage))
    return y_stage, ks


def _rk_step(f: _Counter, tab: Tableau, live: _Live, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the embedded pair (Dormand & Prince 1980): ``(y_new, F(y_new), error)``.

    Stage ``i`` sits at ``y + h sum_j a_ij k_j``; with FSAL the last stage is the propagated
    solution, and the error estimate is ``h sum_i e_i k_i``.
    """
    hs = (live.direction * h)[:, None]
    f.prepare(live.u, live.direction * h)
    y_stage, ks = _stages(f, tab, live.rows, live.y, live.k_first, hs)
    err = ks[0] * tab.e[0]
    for k, e in zip(ks[1:], tab.e[1:], strict=True):
        if e != 0.0:
            err.add_(k, alpha=e)
    return y_stage, ks[-1], err.mul_(hs)


def _attempt(f: _Counter, ctl: _Control, live: _Live) -> tuple[Tensor, Tensor]:
    """Step every row once; accept where the error ratio is ``<= 1``, resize the next step.

    Returns ``(ok, last)``: which rows were accepted and which steps reached the end. A
    non-finite error ratio rejects the step and shrinks it by 0.2; right after a rejection the
    step does not grow.
    """
    remaining = (live.end - live.u).abs()
    last = live.h >= remaining * (1 - 1e-12)
    h = torch.where(last, remaining, live.h)
    y_new, k_new, err = _rk_step(f, ctl.tab, live, h)
    r = ctl.ratio(err, live.y, y_new)
    ok = r <= 1.0  # NaN compares False: a non-finite step is rejected
    factor = ctl.factor(r, live.r_prev)
    live.r_prev = torch.where(ok, r.clamp(min=1e-10), live.r_prev)
    factor = torch.where(ok & live.grown_ok, factor, factor.clamp(max=1.0))
    live.grown_ok = ok
    live.u = torch.where(ok, torch.where(last, live.end, live.u + live.direction * h), live.u)
    live.y = torch.where(ok[:, None], y_new, live.y)
    live.k_first = torch.where(ok[:, None], k_new, live.k_first)
    live.n_steps += ok
    live.n_rej += ~ok
    live.h = h * factor
    return ok, last


def _retire(live: _Live, done: Tensor, sol: ODESolution, calls: int) -> _Live:
    """Write the rows that reached their end into ``sol``; return the others.

    Raises ``RuntimeError`` when an unfinished row's step underflowed. One host read per call.
    """
    h, u, end = live.h, live.u, live.end
    tiny = ~done & (h < 4 * torch.finfo(h.dtype).eps * torch.maximum(u.abs(), end.abs()))
    any_done, any_tiny = torch.stack((done.any(), tiny.any())).tolist()  # one host read
    if any_tiny:
        bad = int(live.rows[tiny][0])
        raise RuntimeError(
            f"step size underflow for sample {bad} at u={float(u[tiny][0]):.6g}: the ODE's "
            "right-hand side is non-finite or too stiff there; check score_fn's output"
        )
    if not any_done:
        return live
    idx = live.rows[done]
    sol.y[idx] = live.y[done]
    sol.nfe[idx.cpu()] = calls
    sol.steps[idx.cpu()] = live.n_steps[done].cpu()
    sol.rejected[idx.cpu()] = live.n_rej[done].cpu()
    return live.keep(~done)


def solve_ivp_batched(
    fn: RHS,
    y0: Tensor,
    u0: Tensor,
    u1: Tensor,
    *,
    rtol: float,
    atol: float,
    method: str = "dopri5",
    norm: Norm = rms_norm,
    max_steps: int = 100_000,
    safety: float = 0.9,
    pi: tuple[float, float] = (1.0, 0.0),
    first_probe: float = 1.0,
) -> ODESolution:
    """Integrate ``dy/du = fn(rows, u, y)`` for each row ``b`` from ``u0[b]`` to ``u1[b]``.

    An embedded explicit Runge–Kutta pair (:data:`TABLEAUS`; dopri5 is Dormand & Prince 1980)
    with the error control of Hairer, Nørsett & Wanner (*Solving ODEs I*, II.4) applied to each
    row on its own: a step is accepted when ``norm(err / (atol + rtol max(|y|, |y_new|))) <= 1``
    (eqs. 4.10-4.11) and the next step is ``h clip(safety r^-alpha r_prev^beta, 0.2, 10)`` with
    ``(alpha, beta) = pi / order`` (``pi = (1, 0)``: the classical rule, eq. 4.13; ``beta > 0``:
    Gustafsson's PI control), not growing right after a rejection. The first step is Hairer's
    starting-step heuristic, its probe at most ``first_probe`` times the row's interval
    ``|u1 - u0|`` ahead (see :func:`_initial_step`).

    Args:
        fn: the right-hand side (see :data:`RHS`).
        y0: initial states ``(B, N)``.
        u0: start of each row's interval, ``(B,)``.
        u1: end of each row's interval, ``(B,)``; rows may integrate in either direction.
        rtol: relative tolerance.
        atol: absolute tolerance.
        method: a key of :data:`TABLEAUS`.
        norm: per-row error norm of the scaled errors.
        max_steps: step attempts before giving up.
        safety: safety factor of the step-size rule.
        pi: controller exponents, in units of ``1 / order``.
        first_probe: reach of the starting-step probe, a fraction of the interval in ``(0, 1]``.

    Returns:
        The :class:`ODESolution` at ``u1``.
    """
    ctl = _control(method, first_probe, y0, rtol, atol, norm, safety, pi)
    f = _Counter(fn, ctl.tab.c)
    batch = y0.shape[0]
    counts = [torch.zeros(batch, dtype=torch.long) for _ in range(3)]
    sol = ODESolution(y0.clone(), counts[0], 0, counts[1], counts[2])
    live = _start(f, ctl, y0, u0, u1, first_probe)
    if live is None:
        return sol
    for _ in range(max_steps):
        ok, last = _attempt(f, ctl, live)
        live = _retire(live, ok & last, sol, f.calls)
        if live.rows.numel() == 0:
            sol.calls = f.calls
            return sol
    raise RuntimeError(
        f"{live.rows.numel()} sample(s) did not finish within max_steps={max_steps}; loosen "
        "rtol/atol or check score_fn"
    )


@dataclass
class FixedSolution:
    """Result of :func:`solve_fixed`."""

    y: Tensor
    """The state at the last node."""
    calls: int
    """Batched right-hand-side calls: ``(stages - 1)`` per step (the last stage of an FSAL pair
    is the next step's first)."""
    states: list[Tensor]
    """The state at every node from ``start`` on (``keep=True``), else empty."""
    slopes: list[Tensor]
    """``F`` at every node from ``start`` on but the last (``keep=True``), else empty."""


def solve_fixed(
    fn: RHS,
    y0: Tensor,
    nodes: Tensor,
    *,
    method: str = "dopri5",
    start: int = 0,
    k0: Tensor | None = None,
    keep: bool = False,
) -> FixedSolution:
    """Integrate ``dy/du = fn(rows, u, y)`` over the fixed grid ``nodes``, the same for every row.

    The propagated solution of an FSAL pair (:data:`TABLEAUS`) with fixed steps: no error
    estimate, no accept/reject and no tensor read into Python, so every row costs the same
    ``(stages - 1) * steps`` batched calls (the last stage of each step is the next step's
    first; the final step skips it). ``nodes`` ``(K + 1,)`` on ``y0``'s device and dtype,
    monotone in either direction; ``y0`` is the state at ``nodes[start]`` and ``k0``, if known,
    ``fn`` there. ``keep`` records the states and slopes at the nodes (to restart a solve).
    """
    tab = TABLEAUS[check_choice("method", method, TABLEAUS)]
    f = _Counter(fn, tab.c)
    rows = torch.arange(y0.shape[0], device=y0.device)
    ones = y0.new_ones(y0.shape[0])
    steps = nodes.shape[0] - 1
    y = y0
    k = f(rows, nodes[start] * ones, y0) if k0 is None else k0
    out = FixedSolution(y0, 0, [y0] if keep else [], [])
    for i in range(start, steps):
        h = (nodes[i + 1] - nodes[i]) * ones
        f.prepare(nodes[i] * ones, h)
        if keep:
            out.slopes.append(k)
        y, ks = _stages(f, tab, rows, y, k, h[:, None], last=i < steps - 1)
        k = ks[-1]
        if keep:
            out.states.append(y)
    out.y, out.calls = y, f.calls
    return out


def substeps(
    fn: RHS, y: Tensor, k: Tensor, u: Tensor, h: Tensor, *, method: str = "dopri5", n: int = 2
) -> tuple[Tensor, Tensor, int]:
    """``n`` equal fixed steps of total signed size ``h`` per row from ``(u, y)``, ``k = fn`` there.

    Every row has its own ``u`` and ``h`` ``(B,)`` (e.g. one row per step of a grid: the finer
    solve of step doubling). Returns the end state, ``fn`` at it and the batched calls taken.
    """
    tab = TABLEAUS[check_choice("method", method, TABLEAUS)]
    f = _Counter(fn, tab.c)
    rows = torch.arange(y.shape[0], device=y.device)
    hs = h / n
    for j in range(n):
        f.prepare(u + j * hs, hs)
        y, ks = _stages(f, tab, rows, y, k, hs[:, None])
        k = ks[-1]
    return y, k, f.calls


def _control(
    method: str,
    first_probe: float,
    y0: Tensor,
    rtol: float,
    atol: float,
    norm: Norm,
    safety: float,
    pi: tuple[float, float],
) -> _Control:
    """Check the solver's arguments and bundle the error control."""
    check_choice("method", method, TABLEAUS)
    if not 0.0 < first_probe <= 1.0:
        raise ValueError(
            f"first_probe must lie in (0, 1] (a fraction of the interval), got {first_probe}"
        )
    if y0.dim() != 2:
        raise ValueError(f"y0 must be (B, N), got shape {tuple(y0.shape)}")
    tab = TABLEAUS[method]
    return _Control(tab, rtol, atol, norm, safety, pi[0] / tab.order, pi[1] / tab.order)


def _check_finite(k: Tensor, u: Tensor) -> None:
    if not bool(torch.isfinite(k).all()):
        bad = (~torch.isfinite(k)).any(dim=1).nonzero()[0, 0]
        raise ValueError(
            f"the ODE right-hand side (score_fn) returned NaN or inf at the start "
            f"(u={float(u[bad]):.6g}); check score_fn and the input"
        )
