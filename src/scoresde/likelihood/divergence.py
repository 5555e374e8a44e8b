"""The score and the trace of its Jacobian in one evaluation: exact, or Hutchinson's estimate.

Skilling (1989), Hutchinson (1989): for a probe ``v`` with ``E[v v^T] = I`` (Rademacher or
standard normal), ``tr J = E[v^T J v]``. One vector-Jacobian product ``v^T J`` after the forward
pass gives the estimate, so an evaluation costs one forward plus one VJP; ``P`` probes cost one
forward plus one batched VJP of width ``P``. The probes are drawn once per solve and kept fixed,
so the ODE being integrated is a smooth one (Grathwohl et al. 2019, FFJORD). The exact trace uses
the ``d`` unit vectors as probes (small ``d``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ..sde import ScoreFn

__all__ = ["score_and_trace", "score_and_jacobian", "draw_probes", "check_score"]

_EXACT_CHUNK = 256


def draw_probes(
    kind: str,
    batch: int,
    dim: int,
    probes: int,
    generator: torch.Generator | None,
    like: Tensor,
) -> Tensor:
    """Draw ``(probes, batch, dim)`` probes (one fixed set per solve) on ``like``'s device/dtype.

    Rademacher probes are ``±1`` with equal probability; Gaussian probes are standard normal.
    Drawn on the generator's device and moved, so a seed gives the same probes everywhere.
    """
    device = generator.device if generator is not None else like.device
    shape = (probes, batch, dim)
    if kind == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=device).mul_(2).sub_(1)
    else:
        v = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
    return v.to(device=like.device, dtype=like.dtype)


def check_score(score: object, x: Tensor) -> Tensor:
    """Return ``score`` if it is a tensor shaped like ``x``; else a ``ValueError`` naming both."""
    if not isinstance(score, Tensor) or score.shape != x.shape:
        got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return score


def _vjp_rows(out: Tensor, x: Tensor, vs: Tensor, retain: bool) -> Tensor:
    """``v^T J`` for each of the leading ``P`` rows of ``vs`` (shape ``(P, *x.shape)``).

    ``retain`` keeps the graph for later VJPs; without it the graph is freed by the last one.
    """
    if vs.shape[0] == 1:
        (g,) = torch.autograd.grad(out, x, vs[0], retain_graph=retain)
        return g[None]
    try:
        (g,) = torch.autograd.grad(out, x, vs, retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # score_fn not vmap-able: one VJP per probe
        g = torch.stack([torch.autograd.grad(out, x, v, retain_graph=True)[0] for v in vs])
    return g


def _graph(score_fn: ScoreFn, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(x with grad, score_fn(x, t))`` for VJPs; a clear error when the score is detached."""
    xg = x.detach().requires_grad_(True)
    out = check_score(score_fn(xg, t), x)
    if not out.requires_grad:
        raise ValueError(
            "score_fn's output does not depend differentiably on x, so its divergence "
            "cannot be computed; do not wrap score_fn in torch.no_grad()"
        )
    return xg, out


def _jacobian_rows(out: Tensor, xg: Tensor) -> Iterator[tuple[int, Tensor]]:
    """``(start, rows)``: ``rows[k, b] = d out_(start + k) / dx`` for sample ``b``, in chunks.

    The ``d`` unit vectors as VJP probes, :data:`_EXACT_CHUNK` at a time; the graph is freed
    by the last chunk.
    """
    batch, dim = xg.shape[0], math.prod(xg.shape[1:])
    eye = torch.eye(dim, device=xg.device, dtype=xg.dtype)
    for start in range(0, dim, _EXACT_CHUNK):
        basis = eye[start : start + _EXACT_CHUNK]
        vs = basis[:, None, :].expand(-1, batch, -1).reshape(-1, *xg.shape)
        last = start + _EXACT_CHUNK >= dim
        yield start, _vjp_rows(out, xg, vs, retain=not last).reshape(basis.shape[0], batch, dim)


def score_and_trace(
    score_fn: ScoreFn, x: Tensor, t: Tensor, probes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Return ``score_fn(x, t)`` (detached) and ``tr(d score / dx)`` per sample, ``(B,)``.

    ``probes`` is ``(P, B, d)`` for Hutchinson's estimate averaged over ``P`` probes, or ``None``
    for the exact trace (``d`` VJPs batched in chunks of 256).
    """
    batch = x.shape[0]
    dim = math.prod(x.shape[1:])
    with torch.enable_grad():
        xg, out = _graph(score_fn, x, t)
        if probes is not None:
            vs = probes.reshape(probes.shape[0], *x.shape)
            g = _vjp_rows(out, xg, vs, retain=False)
            tr = (g * vs).reshape(probes.shape[0], batch, dim).sum(-1).mean(0)
        else:
            tr = x.new_zeros(batch)
            for start, g in _jacobian_rows(out, xg):
                tr = tr + g[:, :, start : start + g.shape[0]].diagonal(dim1=0, dim2=2).sum(-1)
    return out.detach(), tr.detach()


def score_and_jacobian(score_fn: ScoreFn, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``score_fn(x, t)`` (detached) and its Jacobian ``(B, d, d)`` in ``x`` (flattened).

    ``J[b, i, j] = d score_i / d x_j`` for sample ``b``: the ``d`` VJPs of the exact trace
    (:func:`score_and_trace` with ``probes=None``) kept whole, so its trace costs nothing more.
    """
    with torch.enable_grad():
        xg, out = _graph(score_fn, x, t)
        jac = torch.cat([g for _, g in _jacobian_rows(out, xg)], dim=0)
    return out.detach(), jac.detach().permute(1, 0, 2)
