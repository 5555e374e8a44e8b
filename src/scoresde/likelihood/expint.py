"""An exponential multistep predictor–corrector for the likelihood ODE on a fixed grid.

In the scaled state ``x_hat = x / s(t)`` and ``lambda = -log sigma(t)`` every affine SDE has the
probability-flow ODE (Lu et al. 2022, DPM-Solver++, eq. 8 with data prediction)::

    d x_hat / d lambda = D(x_hat; sigma) - x_hat,
    d log p_lambda(x_hat(lambda)) / d lambda = d - tr(dD/dx_hat) = -s^2 sigma^2 tr(d score/dx),

with ``D = x_hat + s sigma^2 score(s x_hat, t)`` Tweedie's denoiser; the second line is the
instantaneous change of variables (Chen et al. 2018) of the first, whose divergence is
``tr(dD/dx_hat) - d``. The linear part ``-x_hat`` is integrated exactly (variation of
constants), ``D`` and the log-density integrand ``g = d - tr(dD/dx_hat)`` by polynomials through
their values at earlier nodes (Adams quadrature; with the exponential weight for ``D``). Each step
is a predictor through the last ``k`` nodes (DPM-Solver++(kM) for ``x_hat``, Adams–Bashforth for
``g``), one batched call at the predicted point, and a corrector through the last ``k`` nodes and
the new one (as UniPC's corrector, Zhao et al. 2023; Adams–Moulton for ``g``) whose values the
next step reuses: one call per step, order ``k + 1``. The first steps use the nodes there are.
The corrector minus the predictor estimates the predictor's local error, which
:func:`fit_expint` equidistributes to place the nodes.

With the exact divergence the ``d`` VJPs of the trace give the whole Jacobian ``J = dD/dx_hat``
at the predicted point ``x_p``, and the corrector is *linearly implicit* in the new node
(a Rosenbrock-type W-step, Hairer & Wanner, *Solving ODEs II*, IV.7): with
``D(x) ~ D(x_p) + J (x - x_p)`` the corrector's equation ``x = b + w D(x)`` is solved,
``(I - w J)(x - x_p) = b + w D(x_p) - x_p``, and the linearised ``D`` at the corrected point is
what later steps interpolate. Data to noise, a path that leaves a split posterior contracts
across the ridge at the rate ``tr J ~ p (1 - p) |m_1 - m_2|^2 / sigma^2`` (8 on the benchmark's
hard paths), which is stiff for an explicit corrector on steps of ``0.1`` in ``lambda``; the
linearly implicit one follows it on the same nodes (measured: ``benchmarks/likelihood_grid.py``).
No extra call; one batched ``d x d`` solve per step; the Jacobian is kept only up to
:data:`LINEARIZE_MAX_DIM` dimensions (above, the exact trace as before and the explicit corrector).
Without the divergence (``encode``, ``decode``) or with Hutchinson's estimate there is no
Jacobian and the corrector is explicit.

In ``x``: ``log p_x(x) = log p_x_hat(x / s) - d log s``, so from ``eps`` to ``T``
``log p_eps(x) - log p_T(z) = -int g dlambda + d (log s(T) - log s(eps))``.
Flow paths (``s(T) = 0``, ``lambda(T) = -inf``) are not covered: use ``dopri5`` there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import trusted_times
from .._quadrature import lagrange_weights
from .divergence import score_and_jacobian, score_and_trace
from .flow import ProbabilityFlow, sigma_of_u

__all__ = [
    "LINEARIZE_MAX_DIM",
    "EXPINT_METHODS",
    "ExpPlan",
    "ExpSolution",
    "expint_plan",
    "lambda_of_u",
    "solve_expint",
]

EXPINT_METHODS: dict[str, int] = {"expint4": 3}
"""Exponential multistep methods by name: the number ``k`` of nodes of the predictor (order
``k + 1`` with the corrector). ``expint4``: DPM-Solver++(3M) predictor, order-4 corrector."""


LINEARIZE_MAX_DIM = 1024
"""The largest ``d`` whose Jacobian ``(B, d, d)`` the linearly implicit corrector keeps (4 GiB
in float32 at ``d = 1024`` and a batch of 1024); beyond it the corrector is explicit."""


def lambda_of_u(u: Sequence[float]) -> list[float]:
    """``lambda = -log sigma`` at the solver variable's ``u = sigma / (kappa + sigma)``."""
    return [-math.log(sigma_of_u(float(v))) for v in u]


def _weights(nodes: list[float], a: float, b: float, exponential: bool) -> list[float]:
    """``int_a^b w(l) L_j(l) dl`` for the Lagrange basis on ``nodes``; ``w = exp(l - b)`` or 1."""
    weight = (lambda xs: np.exp(xs - b)) if exponential else None
    return [float(c) for c in lagrange_weights(nodes, a, b, weight)]


@dataclass(frozen=True)
class ExpPlan:
    """The coefficients of every step, computed once per grid on the host (float64)."""

    decay: tuple[float, ...]
    """``exp(-(lambda_{i+1} - lambda_i))``: the exact linear part."""
    pred: tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]], ...]
    """Per step: the nodes of the predictor, their weights for ``D`` and for ``g``."""
    corr: tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]], ...]
    """The same for the corrector (the new node last)."""


def expint_plan(lams: Sequence[float], k: int) -> ExpPlan:
    """The predictor's and corrector's weights on the nodes ``lams`` (either direction)."""
    lams = [float(v) for v in lams]
    decay: list[float] = []
    pred: list[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]] = []
    corr: list[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]] = []
    for i in range(len(lams) - 1):
        a, b = lams[i], lams[i + 1]
        kk = min(k, i + 1)
        p = tuple(range(i - kk + 1, i + 1))
        c = (*p, i + 1)
        decay.append(math.exp(a - b))
        for idx, out in ((p, pred), (c, corr)):
            pts = [lams[j] for j in idx]
            out.append((idx, tuple(_weights(pts, a, b, True)), tuple(_weights(pts, a, b, False))))
    return ExpPlan(tuple(decay), tuple(pred), tuple(corr))


class _Denoiser:
    """``(i, x_hat) -> (D, g, J)`` at node ``i``: one batched score call.

    ``g`` is None without the divergence; ``J = dD/dx_hat`` (``(B, d, d)``) only when
    ``jacobian`` is asked for, the divergence is exact (``probes`` None) and
    ``d <= LINEARIZE_MAX_DIM``, else None.
    """

    def __init__(
        self, flow: ProbabilityFlow, u: Tensor, probes: Tensor | None, div: bool, jacobian: bool
    ):
        self.flow, self.probes, self.div = flow, probes, div
        self.jacobian = jacobian and div and probes is None and flow.dim <= LINEARIZE_MAX_DIM
        self.t, sigma = flow.time_and_sigma(u)
        self.s = flow.sde.scale(self.t)
        self.c = self.s * sigma * sigma  # D = x_hat + c score
        self.sig2 = sigma * sigma
        self.calls = 0

    def __call__(self, i: int, x_hat: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        self.calls += 1
        b = x_hat.shape[0]
        x = (self.s[i] * x_hat).reshape(b, *self.flow.event_shape)
        t = self.t[i].expand(b)
        c, cs = self.c[i], self.c[i] * self.s[i]
        with trusted_times():  # the grid built t: no per-call read of its values
            if self.jacobian:
                score, jac = score_and_jacobian(self.flow.score_fn, x, t)
                tr = jac.diagonal(dim1=1, dim2=2).sum(-1)
                eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
                return x_hat + c * score.reshape(x_hat.shape), -cs * tr, eye + cs * jac
            if self.div:
                score, tr = score_and_trace(self.flow.score_fn, x, t, self.probes)
                return x_hat + c * score.reshape(x_hat.shape), -cs * tr, None
            return x_hat + c * self.flow.score_fn(x, t).reshape(x_hat.shape), None, None


def _linearly_implicit(x_expl: Tensor, x_pred: Tensor, w: float, jac: Tensor) -> Tensor:
    """The corrector's step from ``x_pred`` with ``D`` linearised there (module docstring).

    ``x_expl = b + w D(x_pred)`` is the explicit corrector; returns ``delta = x - x_pred`` with
    ``(I - w J) delta = x_expl - x_pred`` (``solve_ex``: no host read of a status flag).
    """
    eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
    return torch.linalg.solve_ex(eye - w * jac, (x_expl - x_pred)[..., None])[0][..., 0]


def _combine(base: Tensor, idx: tuple[int, ...], w: tuple[float, ...], vals: dict) -> Tensor:
    out = base
    for j, wj in zip(idx, w, strict=True):
        out = out + wj * vals[j]
    return out


@dataclass
class ExpSolution:
    """Result of :func:`solve_expint` in ``x_hat`` and the integral of ``g``."""

    x_hat: Tensor
    integral: Tensor | None
    """``int g dlambda`` from the first node to the last, ``(B,)`` (None without divergence)."""
    calls: int
    estimates: list[Tensor]
    """Per step (when asked): the corrector minus the predictor carried to ``log p``, ``(B,)``."""


def solve_expint(
    flow: ProbabilityFlow,
    x_hat: Tensor,
    u: Tensor,
    plan: ExpPlan,
    *,
    probes: Tensor | None = None,
    divergence: bool = True,
    estimate: bool = False,
    linearize: bool = True,
) -> ExpSolution:
    """Step ``x_hat`` (``(B, d)``) over the nodes ``u`` (solver variable, either direction).

    One batched score call per node, none read into Python. ``estimate``: also return each
    step's local-error estimate carried to the log-density, ``(g_c - g_p) + grad log p . dx``.
    ``linearize``: with the exact divergence, the linearly implicit corrector (module
    docstring); False keeps the explicit one (for comparison).
    """
    ev = _Denoiser(flow, u, probes, divergence, jacobian=linearize)
    den, gs = {}, {}
    den[0], gs[0], _ = ev(0, x_hat)
    acc = x_hat.new_zeros(x_hat.shape[0]) if divergence else None
    est: list[Tensor] = []
    keep = max(len(c[0]) for c in plan.corr) if plan.corr else 1
    for i, decay in enumerate(plan.decay):
        (pi, pw, pa), (ci, cw, ca) = plan.pred[i], plan.corr[i]
        xp = _combine(decay * x_hat, pi, pw, den)
        den[i + 1], gs[i + 1], jac = ev(i + 1, xp)
        x_hat = _combine(decay * x_hat, ci, cw, den)
        if jac is not None:  # D linearised at xp: the corrected point and D there
            delta = _linearly_implicit(x_hat, xp, cw[-1], jac)
            x_hat = xp + delta
            den[i + 1] = den[i + 1] + (jac @ delta[..., None])[..., 0]
        if acc is not None:
            ap, acc = _combine(acc, pi, pa, gs), _combine(acc, ci, ca, gs)
            if estimate:
                grad = (den[i + 1] - x_hat) / ev.sig2[i + 1]
                est.append((acc - ap) + (grad * (x_hat - xp)).sum(dim=1))
        den.pop(i + 1 - keep, None)
        gs.pop(i + 1 - keep, None)
    return ExpSolution(x_hat, acc, ev.calls, est)
