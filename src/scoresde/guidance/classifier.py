"""Noise-conditional classifiers ``p_t(y | x_t)`` for classifier guidance (Song et al. 2021).

:class:`NoiseConditionalClassifier` classifies samples of the forward SDE's marginals,
:func:`train_classifier` fits it by cross-entropy on perturbed data (App. I.1),
:func:`save_classifier`/:func:`load_classifier` store it in one ``.safetensors`` file (what
``scoresde train-classifier`` writes), and :func:`classifier_guided_score` turns a trained score
model and such a file into the guided score of one class (Bayes' rule for scores, eq. 14).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_positive, check_tensor
from ..nets.embedding import GaussianFourierEmbedding
from ..nets.mlp import ResMLPBlock
from ..sde import SDE, ScoreFn, bcast
from .score import classifier_guidance

__all__ = [
    "CLASSIFIER_FORMAT",
    "NoiseConditionalClassifier",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_guided_score",
]

CLASSIFIER_FORMAT = "scoresde-noise-classifier-1"
"""The ``format`` entry in a saved classifier's metadata."""


class NoiseConditionalClassifier(nn.Module):
    """A classifier of noisy samples ``logits(x_t, t)`` for classifier guidance.

    The input is preconditioned to unit variance, ``x_t / (s(t) sqrt(sigma_data^2 + sigma(t)^2))``
    (EDM's ``c_in``, Karras et al. 2022, Table 1), the noise level enters as Fourier features of
    ``log(sigma(t)) / 4`` added in every residual block of an MLP, and the output is
    ``(B, num_classes)`` logits.

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
        self.blocks = nn.ModuleList(
            ResMLPBlock(hidden, dropout, zero_init=False) for _ in range(depth)
        )
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


def save_classifier(
    clf: NoiseConditionalClassifier, path: str | Path, sde_config: dict[str, Any]
) -> Path:
    """Write a classifier's weights and constructor settings to one ``.safetensors`` file.

    ``sde_config`` (e.g. the score model's ``{"sde": ..., "sde_kwargs": ...}``) is stored with
    the settings for the reader's information; :func:`load_classifier` takes the SDE itself.
    """
    from safetensors.torch import save

    from ..checkpoint import atomic_write_bytes

    meta = {
        "format": CLASSIFIER_FORMAT,
        "event_shape": list(clf.event_shape),
        "num_classes": clf.num_classes,
        "hidden": clf.inp.out_features,
        "depth": len(clf.blocks),
        "sigma_data": clf.sigma_data,
        "sde": sde_config,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata={"config": json.dumps(meta)}))


def load_classifier(
    path: str | Path, sde: SDE, device: str | torch.device = "cpu"
) -> NoiseConditionalClassifier:
    """Load a classifier written by :func:`save_classifier` for the score model's ``sde``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for any other file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"classifier file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["config"])
        if meta.get("format") != CLASSIFIER_FORMAT:
            raise KeyError("format")
        clf = NoiseConditionalClassifier(
            sde,
            meta["event_shape"],
            meta["num_classes"],
            hidden=meta["hidden"],
            depth=meta["depth"],
            sigma_data=meta["sigma_data"],
        )
        clf.load_state_dict(load_file(str(p)))
    except Exception as err:  # safetensors raises its own error type on foreign files
        raise ValueError(
            f"{p} is not a scoresde noise-conditional classifier ({err}); write one "
            f"with 'scoresde train-classifier'"
        ) from None
    return clf.to(device).eval()


def classifier_guided_score(
    trained: Any, classifier_path: str | Path, label: int, scale: float
) -> ScoreFn:
    """The classifier-guided score of a trained model for class ``label`` (eq. 14, scaled).

    ``trained`` is a :class:`scoresde.train.TrainedModel` (its unconditional score, SDE and
    sample shape are used); the classifier is read with :func:`load_classifier` onto the model's
    device and must classify samples of the model's shape.
    """
    device = next(trained.model.parameters()).device
    clf = load_classifier(classifier_path, trained.sde, device)
    if tuple(clf.event_shape) != tuple(trained.event_shape):
        raise ValueError(
            f"the classifier was trained on samples of shape {clf.event_shape}, the "
            f"model draws {trained.event_shape}"
        )
    if not 0 <= label < clf.num_classes:
        raise ValueError(
            f"the class must lie in [0, {clf.num_classes - 1}] for this classifier, got {label}"
        )
    return classifier_guidance(trained.score_fn, clf, label, scale)
