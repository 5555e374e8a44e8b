"""Weights of Lagrange interpolants integrated against a weight function (host, float64).

Exponential multistep methods (DPM-Solver++, UniPC, the likelihood's expint4, the split solver of
``fast``) advance a state with integrals ``int_a^b w(l) p(l) dl`` of a polynomial ``p`` that
interpolates past values at ``nodes``. With the Lagrange basis ``L_j`` of the nodes the integral is
``sum_j c_j p(nodes_j)`` with ``c_j = int_a^b w(l) L_j(l) dl``, computed here once per step by
Gauss–Legendre quadrature with 24 points: exact to rounding for the smooth weights used (sums of
exponentials and their square roots over steps of a few units of ``lambda``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["lagrange_weights"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(24)


def lagrange_weights(
    nodes: Sequence[float],
    a: float,
    b: float,
    weight: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """``c[j, ...] = int_a^b weight(l)[...] L_j(l) dl`` for the Lagrange basis on ``nodes``.

    ``weight`` maps the quadrature points (shape ``(q,)``) to values of shape ``(..., q)``, so
    one call serves several weight functions at once (``None``: the weight 1). Returns an array
    of shape ``(len(nodes), ...)``; ``a > b`` (integration backwards) is allowed.
    """
    xs = 0.5 * (b - a) * _GL_X + 0.5 * (a + b)
    ws = 0.5 * (b - a) * _GL_W
    wf = ws if weight is None else ws * weight(xs)
    rows = []
    for j, lj in enumerate(nodes):
        basis = np.ones_like(xs)
        for m, lm in enumerate(nodes):
            if m != j:
                basis = basis * (xs - lm) / (lj - lm)
        rows.append((wf * basis).sum(-1))
    return np.stack(rows)
