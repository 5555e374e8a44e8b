"""Imputation by predictor–corrector sampling with replacement: inpainting and colorisation.

Song et al. 2021, App. I: to sample the missing part of ``x`` given noise-free known values
``y = x[known]``, run the reverse-time predictor–corrector sampler on the whole state and, at each
time ``t``, overwrite the known part with a fresh draw of its forward marginal
``s(t) y + s(t) sigma(t) z``. At the end the known values are put back exactly and the missing
part is the predictor's noise-free mean (the reference implementation mixes the noisy ``x`` into
that final output; here it does not).

Colorisation is the same imputation in a *decoupled* colour basis: an orthogonal ``C x C`` matrix
whose first row is ``(1, ..., 1) / sqrt(C)`` maps the channels of an image so that the first
decoupled channel is ``sqrt(C)`` times the grey-scale image (known) and the others are missing.
Because the basis is orthogonal, the forward noise stays isotropic and the score transforms as
``s_u(u, t) = M s_x(M^T u, t)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_tensor, trusted_times
from ..sampling.base import Context
from ..sampling.pc import PCSteps, pc_loop, pc_steps
from ..sampling.predictors import PREDICTORS
from ..sampling.schedules import get_times
from ..sde import SDE, ScoreFn

__all__ = ["inpaint", "colorize", "decoupling_basis"]


def _check_mask(mask: Tensor | Any, y: Tensor) -> Tensor:
    m = torch.as_tensor(mask, device=y.device)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must hold only 0/False (missing) and 1/True (known) values")
    try:
        m = torch.broadcast_to(m.bool(), y.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not broadcast to y of shape "
            f"{tuple(y.shape)}; give a mask per event (e.g. {tuple(y.shape[1:])}) "
            f"or per sample"
        ) from None
    return m


def _plan(
    sde: SDE,
    y: Tensor,
    steps: int,
    predictor: str,
    corrector: str | None,
    corrector_steps: int,
    snr: float,
    schedule: str | Tensor | None,
    eps: float | None,
) -> tuple[Tensor, PCSteps]:
    """The checked time grid and predictor-corrector steps of an imputation."""
    check_choice("predictor", predictor, PREDICTORS)  # imputation always has a predictor
    pcs = pc_steps(sde, predictor, corrector, snr, corrector_steps)
    steps = check_int("steps", steps, 1)
    return get_times(sde, steps, schedule, eps=eps, device=y.device, dtype=y.dtype), pcs


def _impute(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    known: Tensor,
    times: Tensor,
    pcs: PCSteps,
    generator: torch.Generator | None,
    callback: Callable[[dict[str, Any]], None] | None,
) -> Tensor:
    """PC sampling with replacement on a state shaped like ``y`` with a boolean ``known`` mask.

    The ``pc`` sampler's loop (:func:`~scoresde.sampling.pc.pc_loop`) with a projection that
    overwrites the known part with a fresh draw of its forward marginal at each time.
    """
    ctx = Context(score_fn, sde, generator, callback)

    def replace(x: Tensor, t: Tensor) -> Tensor:
        noisy_y = sde.scale(t) * y + sde.std(t) * ctx.randn_like(y)
        return torch.where(known, noisy_y, x)

    x = sde.prior_sample(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    with trusted_times():  # get_times built the times: no per-call range check of t
        x_mean = pc_loop(ctx, x, times, pcs, project=replace)
    return torch.where(known, y, x_mean)


def inpaint(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    mask: Tensor,
    *,
    steps: int = 500,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    corrector_steps: int = 1,
    snr: float = 0.16,
    schedule: str | Tensor | None = None,
    eps: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Fill in the missing values of ``y`` by PC sampling with replacement (Song et al., App. I).

    At every time ``t`` of the grid the known values are replaced by a fresh draw of their forward
    marginal ``s(t) y + s(t) sigma(t) z``; then ``corrector_steps`` Langevin corrector steps (each
    followed by a replacement) and one predictor step. The result keeps the known values exactly
    and holds the predictor's final noise-free mean elsewhere.

    Args:
        score_fn: ``score_fn(x, t)`` of the prior (exact or a wrapped network).
        sde: the forward SDE of the score.
        y: ``(B, ...)`` batch; its values where ``mask`` is 0 are ignored.
        mask: 1/True where ``y`` is known, 0/False where missing; broadcastable to ``y``.
        steps: number of predictor steps.
        predictor: ``"reverse_diffusion"``, ``"euler_maruyama"`` or ``"ancestral"``.
        corrector: ``"langevin"``, ``"ald"`` or ``None``.
        corrector_steps: corrector steps per time.
        snr: the corrector's signal-to-noise ratio.
        schedule: time schedule name or tensor (default ``sde.default_schedule``).
        eps: final time (default ``sde.eps``).
        generator: source of all randomness.
        callback: called after each step with ``{"i", "t", "x", "x_mean"}``.

    Returns:
        The completed batch, shaped like ``y``, with ``out[mask] == y[mask]`` exactly.
    """
    check_tensor("y", y, finite=False)
    known = _check_mask(mask, y)
    if not bool(torch.isfinite(y[known]).all()):
        raise ValueError("y contains NaN or infinite values at known positions")
    y = torch.where(known, y, torch.zeros_like(y))
    times, pcs = _plan(sde, y, steps, predictor, corrector, corrector_steps, snr, schedule, eps)
    with torch.no_grad():
        return _impute(score_fn, sde, y, known, times, pcs, generator, callback)


def decoupling_basis(channels: int = 3, dtype: torch.dtype = torch.float64) -> Tensor:
    """An orthogonal ``(C, C)`` matrix whose first row is ``(1, ..., 1) / sqrt(C)``.

    Its first row extracts ``sqrt(C)`` times the grey-scale (channel-mean) image; the other rows
    span the colour directions orthogonal to grey.
    """
    if channels < 2:
        raise ValueError(f"colorisation needs >= 2 channels, got {channels}")
    a = torch.eye(channels, dtype=torch.float64)
    a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)
    q = q * torch.sign(q[0, 0])  # first column +1/sqrt(C)
    return q.T.contiguous().to(dtype)


def _mix(m: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,bj...->bi...", m.to(device=x.device, dtype=x.dtype), x)


def colorize(
    score_fn: ScoreFn,
    sde: SDE,
    gray: Tensor,
    *,
    channels: int = 3,
    steps: int = 500,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    corrector_steps: int = 1,
    snr: float = 0.16,
    schedule: str | Tensor | None = None,
    eps: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Colourise grey-scale images by decoupled-channel imputation (Song et al. 2021, App. I).

    The grey image is the channel mean of the colour image. In the orthogonal basis of
    :func:`decoupling_basis` the first channel is ``sqrt(C) * gray`` (known) and the rest are
    imputed with :func:`inpaint`'s PC-with-replacement loop, using the transformed score
    ``M score(M^T u, t)``; the result is mapped back with ``M^T``.

    Args:
        score_fn: score of the colour-image prior, on ``(B, C, ...)``.
        sde: the forward SDE.
        gray: ``(B, 1, ...)`` grey-scale images (channel means, in the prior's data scale).
        channels: number of colour channels ``C`` of the prior.
        steps: number of predictor steps.
        predictor: ``"reverse_diffusion"``, ``"euler_maruyama"`` or ``"ancestral"``.
        corrector: ``"langevin"``, ``"ald"`` or ``None``.
        corrector_steps: corrector steps per time.
        snr: the corrector's signal-to-noise ratio.
        schedule: time schedule name or tensor.
        eps: final time (default ``sde.eps``).
        generator: source of all randomness.

    Returns:
        ``(B, C, ...)`` colour images whose channel mean equals ``gray`` (to rounding).
    """
    check_tensor("gray", gray, min_dim=2)
    if gray.shape[1] != 1:
        raise ValueError(f"gray must have one channel, shape (B, 1, ...); got {tuple(gray.shape)}")
    m = decoupling_basis(channels, gray.dtype).to(gray.device)
    shape = (gray.shape[0], channels, *gray.shape[2:])
    u_known = torch.zeros(shape, device=gray.device, dtype=gray.dtype)
    u_known[:, :1] = math.sqrt(channels) * gray
    known = torch.zeros(shape, device=gray.device, dtype=torch.bool)
    known[:, 0] = True

    def score_u(u: Tensor, t: Tensor) -> Tensor:
        return _mix(m, score_fn(_mix(m.T, u), t))

    times, pcs = _plan(
        sde, u_known, steps, predictor, corrector, corrector_steps, snr, schedule, eps
    )
    with torch.no_grad():
        u = _impute(score_u, sde, u_known, known, times, pcs, generator, None)
    return _mix(m.T, u)
