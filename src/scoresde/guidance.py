"""Guidance: conditional scores built from an unconditional one (seed 002's Bayes rule for scores).

``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``: a noise-conditional classifier
(or any differentiable log-likelihood of ``y`` given the noisy ``x_t``) turns an unconditional
score into a conditional one (Song et al. 2021, sec. 5; Dhariwal & Nichol 2021 add a scale).
Classifier-free guidance (Ho & Salimans 2022) mixes a conditional and an unconditional score of
the same (label-dropout) model instead. Every function here returns an ordinary
``score_fn(x, t)``, so a guided score goes to :func:`scoresde.sample` like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_positive, check_tensor
from .nets.embedding import GaussianFourierEmbedding
from .sde import SDE, ScoreFn, bcast

__all__ = [
    "LogLikelihoodFn",
    "guided",
    "classifier_log_likelihood",
    "classifier_guidance",
    "cfg",
    "cfg_from_labels",
    "labels_like",
    "NoiseConditionalClassifier",
    "train_classifier",
]

LogLikelihoodFn = Callable[[Tensor, Tensor], Tensor]
"""``log_likelihood_fn(x_t, t) -> (B,)``: ``log p_t(y | x_t)`` for a fixed condition ``y``."""


def _check_scale(name: str, value: float) -> float:
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
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
    w = _check_scale("scale", scale)

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


def cfg(cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, cfg_scale: float) -> ScoreFn:
    """Classifier-free guidance ``s_u + cfg_scale * (s_c - s_u)`` (Ho & Salimans 2022).

    ``cfg_scale = 1`` is the conditional score, ``0`` the unconditional one, ``> 1`` extrapolates
    (Ho & Salimans' ``w`` is ``cfg_scale - 1``). Equivalent to classifier guidance with the
    implicit classifier ``p_t(y | x) ∝ p_t(x | y) / p_t(x)`` at scale ``cfg_scale``.
    """
    if not callable(cond_score_fn) or not callable(uncond_score_fn):
        raise TypeError("cond_score_fn and uncond_score_fn must be callables of (x, t)")
    w = _check_scale("cfg_scale", cfg_scale)

    def score(x: Tensor, t: Tensor) -> Tensor:
        s_u = uncond_score_fn(x, t)
        return s_u + w * (cond_score_fn(x, t) - s_u)

    return score


def cfg_from_labels(
    model_score_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    label: int | Tensor,
    null_label: int,
    cfg_scale: float,
) -> ScoreFn:
    """Classifier-free guidance for one label-conditional model ``model_score_fn(x, t, labels)``.

    The model is trained with label dropout; the dropped label is ``null_label``.
    The conditional and unconditional scores come from one batched call on ``[x; x]`` with labels
    ``[label; null_label]``, then combine as in :func:`cfg`.
    """
    w = _check_scale("cfg_scale", cfg_scale)

    def score(x: Tensor, t: Tensor) -> Tensor:
        lab = labels_like(label, x)
        null = torch.full_like(lab, int(null_label))
        both = model_score_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([lab, null]))
        s_c, s_u = both.chunk(2)
        return s_u + w * (s_c - s_u)

    return score


class _Block(nn.Module):
    """Residual block ``h + fc2(drop(silu(fc1(silu(norm(h))) + emb_proj(emb))))``."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to features ``h`` given the noise embedding ``emb``."""
        u = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.drop(nn.functional.silu(u)))


class NoiseConditionalClassifier(nn.Module):
    """A classifier of noisy samples ``logits(x_t, t)`` for classifier guidance.

    The input is preconditioned to unit variance, ``x_t / (s(t) sqrt(sigma_data^2 + sigma(t)^2))``
    (EDM's ``c_in``), the noise level enters as Fourier features of ``log(sigma(t)) / 4`` added in
    every residual block of an MLP, and the output is ``(B, num_classes)`` logits.

    Args:
        sde: the forward SDE whose noisy marginals are classified.
        event_shape: shape of one sample (flattened inside).
        num_classes: number of classes.
        hidden: width of the residual MLP.
        depth: number of residual blocks.
        sigma_data: standard deviation of the clean data.
        dropout: dropout inside the blocks.
    """

    def __init__(
        self,
        sde: SDE,
        event_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        sigma_data: float = 0.5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.sde = sde
        self.event_shape = tuple(int(s) for s in event_shape)
        self.num_classes = int(num_classes)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        dim = math.prod(self.event_shape)
        self.embed = nn.Sequential(GaussianFourierEmbedding(64), nn.Linear(64, hidden), nn.SiLU())
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of the classes of the noisy ``x`` at times ``t`` ``(B,)``."""
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        c_in = 1.0 / (s * torch.sqrt(self.sigma_data**2 + sig**2))
        h = self.inp((bcast(c_in, x) * x).reshape(x.shape[0], -1).to(self.inp.weight.dtype))
        emb = self.embed(torch.log(sig) / 4).to(h.dtype)
        for blk in self.blocks:
            h = blk(h, emb)
        return self.out(h)


def train_classifier(
    classifier: nn.Module,
    sde: SDE,
    x: Tensor,
    labels: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train a noise-conditional classifier by cross-entropy on ``x_t ~ p(x_t | x0)``.

    Each step draws a batch of clean ``(x0, label)``, times ``t ~ U(eps, T)`` and noisy
    ``x_t = s(t) x0 + s(t) sigma(t) z``, and minimises ``-log p_theta(label | x_t, t)``
    (Song et al. 2021, App. I.1) with Adam and a cosine learning-rate decay.

    Args:
        classifier: ``classifier(x_t, t) -> logits (B, C)`` (e.g.
            :class:`NoiseConditionalClassifier`), on ``x``'s device.
        sde: the forward SDE.
        x: clean training data ``(N, ...)`` in the score model's data scale.
        labels: integer labels ``(N,)``.
        steps: optimiser steps.
        batch_size: batch size.
        lr: peak learning rate.
        eps: smallest training time.
        generator: source of the batches, times and noise.

    Returns:
        The training loss at every step.
    """
    check_tensor("x", x)
    if labels.shape != (x.shape[0],) or labels.is_floating_point():
        raise ValueError(
            f"labels must be integers of shape ({x.shape[0]},), "
            f"got {tuple(labels.shape)} {labels.dtype}"
        )
    opt = torch.optim.Adam(classifier.parameters(), lr=check_positive("lr", lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    classifier.train()
    losses = []
    dev = x.device
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator, device=dev)
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=x.dtype)
        t = eps + (sde.T - eps) * u
        noise = torch.randn(x[idx].shape, generator=generator, device=dev, dtype=x.dtype)
        xt = sde.perturb(x[idx], t, noise)
        loss = nn.functional.cross_entropy(classifier(xt, t), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach().item())
    classifier.eval()
    return losses
