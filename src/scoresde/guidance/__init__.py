"""Guidance: conditional scores built from unconditional ones.

Bayes' rule for scores, ``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``, turns an
unconditional score and a noise-conditional classifier (or any differentiable log-likelihood of
``y`` given the noisy ``x_t``) into a conditional score (Song et al. 2021, sec. 5 and App. I;
Dhariwal & Nichol 2021 add a scale): :mod:`.score`, with the classifier, its training and its
file format in :mod:`.classifier`. Classifier-free guidance (Ho & Salimans 2022) mixes the
conditional and unconditional scores of one label-dropout model as ``u + w (c - u)``:
:mod:`.classifier_free`. Every function returns an ordinary ``score_fn(x, t)``, so a guided score
goes to :func:`scoresde.sample` like any other.
"""

from __future__ import annotations

from .classifier import (
    NoiseConditionalClassifier,
    classifier_guided_score,
    load_classifier,
    save_classifier,
    train_classifier,
)
from .classifier_free import cfg, cfg_from_labels
from .score import (
    LogLikelihoodFn,
    classifier_guidance,
    classifier_log_likelihood,
    guided,
    labels_like,
)

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
    "save_classifier",
    "load_classifier",
    "classifier_guided_score",
]
