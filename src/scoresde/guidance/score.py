"""Classifier guidance: Bayes' rule for scores (Song et al. 2021, sec. 5 and eq. 14).

``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``: any differentiable
log-likelihood of a condition ``y`` given the noisy ``x_t`` (e.g. a noise-conditional classifier)
turns an unconditional score into a conditional one; Dhariwal & Nichol (2021) scale the second
term. Every function returns an ordinary ``score_fn(x, t)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..sde import ScoreFn

__all__ = [
    "LogLikelihoodFn",
    "guided",
    "labels_like",
    "classifier_log_likelihood",
    "classifier_guidance",
]

LogLikelihoodFn = Callable[[Tensor, Tensor], Tensor]
"""``log_likelihood_fn(x_t, t) -> (B,)``: ``log p_t(y | x_t)`` for a fixed condition ``y``."""


def check_scale(name: str, value: float) -> float:
    """Return a guidance weight ``value`` as a float; raise ``ValueError`` unless it is finite."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def likelihood_grad(log_likelihood_fn: LogLikelihoodFn, x: Tensor, t: Tensor) -> Tensor:
    """``grad_x log p_t(y | x)`` by autograd (works inside ``torch.no_grad`` samplers)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        ll = log_likelihood_fn(xr, t)
        if ll.shape != (x.shape[0],):
            raise ValueError(
                f"log_likelihood_fn must return one value per sample, shape "
                f"({x.shape[0]},); got {tuple(ll.shape)}"
            )
        (grad,) = torch.autograd.grad(ll.sum(), xr)
    return grad.detach()


def guided(score_fn: ScoreFn, log_likelihood_fn: LogLikelihoodFn, scale: float = 1.0) -> ScoreFn:
    """The guided score ``score_fn(x, t) + scale * grad_x log p_t(y | x)``.

    ``scale = 1`` is Bayes' rule (the exact conditional score when both terms are exact);
    ``scale > 1`` sharpens towards ``y`` (Dhariwal & Nichol 2021), ``p_t(x) p_t(y | x)^scale``.
    The gradient is taken by autograd, so ``log_likelihood_fn(x_t, t) -> (B,)`` may be any
    differentiable function, e.g. a noise-conditional classifier
    (:func:`classifier_log_likelihood`).
    """
    if not callable(score_fn) or not callable(log_likelihood_fn):
        raise TypeError("score_fn and log_likelihood_fn must be callables of (x, t)")
    w = check_scale("scale", scale)

    def score(x: Tensor, t: Tensor) -> Tensor:
        return score_fn(x, t) + w * likelihood_grad(log_likelihood_fn, x, t)

    return score


def labels_like(label: int | Tensor, x: Tensor) -> Tensor:
    """A ``(B,)`` long tensor of class labels on ``x``'s device from an int or a tensor."""
    lab = torch.as_tensor(label, device=x.device)
    if lab.is_floating_point() or lab.is_complex():
        raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.dim() == 0:
        lab = lab.expand(x.shape[0])
    if lab.shape != (x.shape[0],):
        raise ValueError(
            f"labels must be an int or a ({x.shape[0]},) tensor, got shape {tuple(lab.shape)}"
        )
    return lab.long()


def classifier_log_likelihood(
    classifier: Callable[[Tensor, Tensor], Tensor], label: int | Tensor
) -> LogLikelihoodFn:
    """Turn a noise-conditional classifier into ``log p_t(label | x_t)``.

    ``log p_t(label | x_t) = log_softmax(classifier(x_t, t))[label]`` for a classifier returning
    logits ``(B, C)``; ``label`` is an int or a ``(B,)`` tensor.
    """

    def log_likelihood(x: Tensor, t: Tensor) -> Tensor:
        logits = classifier(x, t)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(
                f"classifier must return logits of shape (B, C), got {tuple(logits.shape)}"
            )
        lab = labels_like(label, x)
        if int(lab.max()) >= logits.shape[1] or int(lab.min()) < 0:
            raise ValueError(
                f"labels must lie in [0, {logits.shape[1] - 1}] for a classifier "
                f"with {logits.shape[1]} classes"
            )
        return torch.log_softmax(logits, dim=1).gather(1, lab[:, None])[:, 0]

    return log_likelihood


def classifier_guidance(
    score_fn: ScoreFn,
    classifier: Callable[[Tensor, Tensor], Tensor],
    label: int | Tensor,
    scale: float = 1.0,
) -> ScoreFn:
    """Shorthand for ``guided(score_fn, classifier_log_likelihood(classifier, label), scale)``."""
    return guided(score_fn, classifier_log_likelihood(classifier, label), scale)
