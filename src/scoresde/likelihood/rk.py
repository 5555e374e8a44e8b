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
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice

__all__ = ["Tableau", "TABLEAUS", "ODESolution", "solve_ivp_batched", "RHS"]

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


def rms_norm(z: Tensor) -> Tensor:
    """Root-mean-square over each row: ``sqrt(mean_j z_j^2)``, shape ``(B,)``."""
    return z.pow(2).mean(dim=1).sqrt()


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


def _initial_step(
    f: _Counter,
    rows: Tensor,
    u0: Tensor,
    y0: Tensor,
    k0: Tensor,
    direction: Tensor,
    span: Tensor,
    first_probe: float,
    order: int,
    rtol: float,
    atol: float,
    norm: Norm,
) -> Tensor:
    """Per-row starting step (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4, p. 169).

    The heuristic's Euler probe, from which it estimates the second derivative, reaches at most
    ``first_probe * span``: where the solution is flat at the start (the PF ODE near
    ``sigma = 0``) the unbounded probe ``0.01 |y0| / |f0|`` lands beyond all the structure at
    small noise, and the heuristic then proposes a first step across it that the embedded error
    estimate misjudges. A probe that stays near the start sees that structure; the step itself
    is then at most ``100`` probe lengths, as in Hairer's rule.
    """
    scale = atol + rtol * y0.abs()
    d0, d1 = norm(y0 / scale), norm(k0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, first_probe * span)
    k1 = f(rows, u0 + direction * h0, y0 + (direction * h0)[:, None] * k0)
    d2 = norm((k1 - k0) / scale) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(
        big <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        (0.01 / big.clamp(min=1e-300)) ** (1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span)


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

    Error control (Hairer II.4): a step of row ``b`` is accepted when
    ``norm(err_b / (atol + rtol max(|y_b|, |y_new_b|))) <= 1`` and its next step is
    ``h_b * clip(safety * r_b^(-1/order), 0.2, 10)`` (no growth right after a rejection).
    ``y0`` is ``(B, N)``; ``u0``/``u1`` are ``(B,)`` and rows may integrate in either direction.
    The starting-step heuristic probes at most ``first_probe`` times a row's interval
    ``|u1 - u0|`` ahead (see :func:`_initial_step`).
    """
    check_choice("method", method, TABLEAUS)
    if not 0.0 < first_probe <= 1.0:
        raise ValueError(
            f"first_probe must lie in (0, 1] (a fraction of the interval), got {first_probe}"
        )
    tab = TABLEAUS[method]
    if y0.dim() != 2:
        raise ValueError(f"y0 must be (B, N), got shape {tuple(y0.shape)}")
    batch = y0.shape[0]
    f = _Counter(fn, tab.c)
    out = y0.clone()
    nfe = torch.zeros(batch, dtype=torch.long)
    steps = torch.zeros(batch, dtype=torch.long)
    rejected = torch.zeros(batch, dtype=torch.long)
    rows = torch.arange(batch, device=y0.device)
    u, y, end = u0.clone(), y0, u1
    direction = torch.sign(end - u)
    span = (end - u).abs()
    live = span > 0
    if not bool(live.all()):
        rows, u, y, end, direction, span = (v[live] for v in (rows, u, y, end, direction, span))
    if rows.numel() == 0:
        return ODESolution(out, nfe, 0, steps, rejected)
    k_first = f(rows, u, y)
    _check_finite(k_first, u)
    h = _initial_step(
        f, rows, u, y, k_first, direction, span, first_probe, tab.order, rtol, atol, norm
    )
    n_steps = torch.zeros(rows.numel(), dtype=torch.long, device=y0.device)
    n_rej = torch.zeros_like(n_steps)
    grown_ok = torch.ones(rows.numel(), dtype=torch.bool, device=y0.device)
    r_prev = torch.ones_like(h)
    alpha, beta = pi[0] / tab.order, pi[1] / tab.order
    for _ in range(max_steps):
        remaining = (end - u).abs()
        last = h >= remaining * (1 - 1e-12)
        h = torch.where(last, remaining, h)
        hs = (direction * h)[:, None]
        f.prepare(u, direction * h)
        ks = [k_first]
        for i in range(1, tab.stages):
            acc = ks[0] * tab.a[i][0]
            for j in range(1, i):
                if tab.a[i][j] != 0.0:
                    acc.add_(ks[j], alpha=tab.a[i][j])
            yi = torch.addcmul(y, hs, acc)
            if i == tab.stages - 1:
                y_new = yi  # FSAL: the last stage sits at the propagated solution
            ks.append(f.stage(i, rows, yi))
        err = ks[0] * tab.e[0]
        for k, e in zip(ks[1:], tab.e[1:], strict=True):
            if e != 0.0:
                err.add_(k, alpha=e)
        err.mul_(hs)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        r = norm(err / scale)
        ok = r <= 1.0  # NaN compares False: a non-finite step is rejected
        rc = r.clamp(min=1e-10)
        factor = torch.where(
            torch.isfinite(r), safety * rc ** (-alpha) * r_prev**beta, torch.full_like(r, 0.2)
        ).clamp(0.2, 10.0)
        r_prev = torch.where(ok, rc, r_prev)
        factor = torch.where(ok & grown_ok, factor, factor.clamp(max=1.0))
        grown_ok = ok
        u = torch.where(ok, torch.where(last, end, u + direction * h), u)
        y = torch.where(ok[:, None], y_new, y)
        k_first = torch.where(ok[:, None], ks[-1], k_first)
        n_steps += ok
        n_rej += ~ok
        h = h * factor
        done = ok & last
        tiny = ~done & (h < 4 * torch.finfo(h.dtype).eps * torch.maximum(u.abs(), end.abs()))
        any_done, any_tiny = torch.stack((done.any(), tiny.any())).tolist()  # one host read
        if any_tiny:
            bad = int(rows[tiny][0])
            raise RuntimeError(
                f"step size underflow for sample {bad} at u={float(u[tiny][0]):.6g}: the ODE's "
                "right-hand side is non-finite or too stiff there; check score_fn's output"
            )
        if any_done:
            idx = rows[done]
            out[idx] = y[done]
            nfe[idx.cpu()] = f.calls
            steps[idx.cpu()] = n_steps[done].cpu()
            rejected[idx.cpu()] = n_rej[done].cpu()
            keep = ~done
            rows, u, y, end, direction, h, k_first, n_steps, n_rej, grown_ok, r_prev = (
                v[keep]
                for v in (rows, u, y, end, direction, h, k_first, n_steps, n_rej, grown_ok, r_prev)
            )
            if rows.numel() == 0:
                return ODESolution(out, nfe, f.calls, steps, rejected)
    raise RuntimeError(
        f"{rows.numel()} sample(s) did not finish within max_steps={max_steps}; loosen "
        "rtol/atol or check score_fn"
    )


def _check_finite(k: Tensor, u: Tensor) -> None:
    if not bool(torch.isfinite(k).all()):
        bad = (~torch.isfinite(k)).any(dim=1).nonzero()[0, 0]
        raise ValueError(
            f"the ODE right-hand side (score_fn) returned NaN or inf at the start "
            f"(u={float(u[bad]):.6g}); check score_fn and the input"
        )
