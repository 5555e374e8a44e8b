"""Classifier-free guidance (Ho & Salimans 2022): one convention, ``u + w (c - u)``.

``c`` is the conditional score ``grad log p_t(x | y)``, ``u`` the unconditional one
``grad log p_t(x)`` (the same label-dropout model with the null label), and the guided score is

    ``s_w = u + w (c - u)``,

so ``w = 1`` is the conditional score, ``w = 0`` the unconditional one and ``w > 1`` extrapolates
(Ho & Salimans' eq. 6 weight is ``w - 1``). It is classifier guidance (:func:`guided`) at scale
``w`` with the implicit classifier ``p_t(y | x) ∝ p_t(x | y) / p_t(x)``. :func:`cfg` combines two
score functions; :func:`cfg_from_labels` evaluates both halves of one label-conditional model in
one batched call. ``ScoreModel.score_fn(y, guidance=w)`` and ``scoresde sample --guidance W`` are
:func:`cfg_from_labels`. ``w < 0`` is allowed: ``u + w (c - u) = grad log p_t(x) + w grad log
p_t(y | x)`` is the score of ``p(x) p(y | x)^w``, which samples away from class ``y`` (negative
guidance).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..sde import ScoreFn
from .score import check_scale, labels_like

__all__ = ["cfg", "cfg_from_labels"]


def _mix(cond: Tensor, uncond: Tensor, w: float) -> Tensor:
    """The classifier-free guided score ``uncond + w (cond - uncond)`` from both scores."""
    return uncond + w * (cond - uncond)


def cfg(cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, cfg_scale: float) -> ScoreFn:
    """Classifier-free guidance ``s_u + cfg_scale * (s_c - s_u)`` (Ho & Salimans 2022).

    ``cfg_scale = 1`` is the conditional score, ``0`` the unconditional one (each then evaluated
    alone), ``> 1`` extrapolates (module docstring).
    """
    if not callable(cond_score_fn) or not callable(uncond_score_fn):
        raise TypeError("cond_score_fn and uncond_score_fn must be callables of (x, t)")
    w = check_scale("cfg_scale", cfg_scale)
    if w == 1.0:
        return cond_score_fn
    if w == 0.0:
        return uncond_score_fn

    def score(x: Tensor, t: Tensor) -> Tensor:
        return _mix(cond_score_fn(x, t), uncond_score_fn(x, t), w)

    return score


def cfg_from_labels(
    model_score_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    label: int | Tensor,
    null_label: int,
    cfg_scale: float,
) -> ScoreFn:
    """Classifier-free guidance for one label-conditional model ``model_score_fn(x, t, labels)``.

    The model is trained with label dropout; the dropped label is ``null_label``. The
    conditional and unconditional scores come from one batched call on ``[x; x]`` with labels
    ``[label; null_label]`` and combine as in :func:`cfg`; ``cfg_scale = 1`` (``0``) calls the
    model once with ``label`` (``null_label``). ``label`` is an int or a ``(B,)`` tensor.
    """
    w = check_scale("cfg_scale", cfg_scale)
    null = int(null_label)

    def score(x: Tensor, t: Tensor) -> Tensor:
        lab = labels_like(label, x)
        if w == 1.0:
            return model_score_fn(x, t, lab)
        if w == 0.0:
            return model_score_fn(x, t, torch.full_like(lab, null))
        both = model_score_fn(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([lab, torch.full_like(lab, null)])
        )
        cond, uncond = both.chunk(2)
        return _mix(cond, uncond, w)

    return score
