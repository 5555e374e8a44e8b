"""diffusers folders as ``--ckpt PATH`` of ``scoresde sample | likelihood | inpaint``.

The commands read a model through the interface of :class:`scoresde.train.TrainedModel` and work
in its training space, ``[-1, 1]`` for images. :func:`load_for_cli` gives a diffusers folder that
interface. A model of another data range (score_sde's VE models work on ``[0, 1]``) is presented
in ``[-1, 1]``: for ``x' = a x + b`` and an SDE with ``s = 1`` (or ``b = 0``), ``x'_t = a x_t + b``
is the same SDE with ``sigma`` scaled by ``a`` and the score ``score'(x', t) = score((x' - b) /
a, t) / a``, so the flow, its densities (times the Jacobian ``a^-D``) and bits/dim are the
model's. One thing moves: the prior ``N(0, (a sigma_max)^2 I)`` stays centred at 0 while ``p_T``
moves by ``b``, which changes the ODE likelihoods by ``O(D b / (a sigma_max)^2)`` nats (a prior
mismatch of the same order as the original one, ~1e-4 bits/dim for score_sde's models).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from ..guidance import cfg_from_labels
from ..sampling.base import is_variance_exploding
from ..sde import SDE, ScoreFn
from .diffusers_adapter import from_diffusers
from .pretrained import PretrainedScore

__all__ = ["is_diffusers_folder", "load_for_cli", "CLIModel"]

CLI_RANGE = (-1.0, 1.0)
"""The training space of images in the commands."""


def is_diffusers_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder diffusers wrote (pipeline or model folder); reads no weights.

    True for a folder with ``model_index.json`` or ``scheduler_config.json``, or with a
    ``config.json`` that diffusers wrote (it records ``_diffusers_version``).
    """
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "model_index.json").is_file() or (p / "scheduler_config.json").is_file():
        return True
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "_diffusers_version" in config


class _RescaledSDE(SDE):
    """``x' = a x + b`` of an SDE with ``s = 1`` (or ``b = 0``): ``sigma' = a sigma``, same t."""

    def __init__(self, base: SDE, a: float) -> None:
        self.base, self.a = base, a
        self.T, self.eps, self.default_schedule = base.T, base.eps, base.default_schedule

    def _params(self) -> dict[str, object]:
        return {"base": self.base, "a": self.a}

    @property
    def prior_std(self) -> float:
        """``a`` times the base prior's std."""
        return self.a * self.base.prior_std

    def scale(self, t: Tensor) -> Tensor:
        """The base ``s(t)``."""
        return self.base.scale(t)

    def sigma(self, t: Tensor) -> Tensor:
        """The base noise level times ``a``."""
        return self.a * self.base.sigma(t)

    def f(self, t: Tensor) -> Tensor:
        """The base ``f(t)``."""
        return self.base.f(t)

    def g2(self, t: Tensor) -> Tensor:
        """``a^2 g(t)^2``."""
        return self.a**2 * self.base.g2(t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``a sigma'(t)``."""
        return self.a * self.base.sigma_deriv(t)

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """The base ``t(sigma / a)``."""
        return self.base.sigma_inv(sigma / self.a)


class _Rescaled(nn.Module):
    """The score of ``x' = a x + b`` from the model's: ``score((x' - b) / a, t, y) / a``."""

    def __init__(self, model: PretrainedScore, a: float, b: float) -> None:
        super().__init__()
        self.model, self.a, self.b = model, a, b

    def forward(self, x: Tensor, t: Tensor, y: Tensor | int | None = None) -> Tensor:
        """The rescaled score."""
        return self.model((x - self.b) / self.a, t, y) / self.a


def _in_cli_range(model: PretrainedScore) -> tuple[nn.Module, SDE]:
    """The model's score and SDE in ``[-1, 1]`` (see the module docstring)."""
    lo, hi = model.data_range
    if (lo, hi) == CLI_RANGE:
        return model, model.sde
    a = (CLI_RANGE[1] - CLI_RANGE[0]) / (hi - lo)
    b = CLI_RANGE[0] - a * lo
    if b != 0 and not is_variance_exploding(model.sde):
        raise ValueError(
            f"this model works on data in [{lo}, {hi}] with a scaled SDE; the commands need "
            "[-1, 1] (use scoresde.interop.from_diffusers in Python)"
        )
    return _Rescaled(model, a, b), _RescaledSDE(model.sde, a)


@dataclass
class _Scores:
    """``model.score_fn(y, guidance)`` and ``parameters()``, as the commands use them."""

    score: nn.Module
    null_label: int | None

    def parameters(self) -> Any:
        """The network's parameters."""
        return self.score.parameters()

    def score_fn(self, y: Tensor | int | None = None, guidance: float = 1.0) -> ScoreFn:
        """The unconditional score, or the class-``y`` one guided with weight ``guidance``."""
        if y is None:
            return self.score
        if guidance != 1.0 and self.null_label is None:
            raise ValueError(
                "--guidance needs the model's null label, which a diffusers folder does not "
                "record; use --guidance 1, or scoresde.interop in Python with null_label="
            )
        null = -1 if self.null_label is None else self.null_label
        return cfg_from_labels(self.score, y, null, guidance)


@dataclass
class CLIModel:
    """A diffusers folder with the attributes of ``TrainedModel`` the commands read.

    Everything (score, SDE, samples) is in ``[-1, 1]``, the commands' space for images.
    """

    pretrained: PretrainedScore
    """The model as loaded (its own data range)."""
    model: _Scores
    sde: SDE
    event_shape: tuple[int, ...]
    path: Path
    num_classes: int | None = None
    is_image: bool = True
    step: int = 0
    data_info: dict[str, Any] = field(default_factory=lambda: {"levels": 256})
    config: Any = None

    @property
    def score_fn(self) -> ScoreFn:
        """The unconditional score in ``[-1, 1]``."""
        return self.model.score

    @property
    def likelihood_eps(self) -> float:
        """The smallest time the network was trained at (timestep 0 for discrete schedules)."""
        return self.pretrained.likelihood_eps

    def to_data(self, x: Tensor) -> Tensor:
        """``[-1, 1]`` samples to ``[0, 1]`` images."""
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def load_for_cli(path: str | os.PathLike[str], device: torch.device) -> CLIModel:
    """Load a diffusers folder for the commands (one-line ``ValueError``/``RuntimeError``)."""
    try:
        pretrained = from_diffusers(path)
    except ImportError as err:  # the commands print RuntimeErrors as one line
        raise RuntimeError(str(err)) from None
    shape = pretrained.event_shape
    if shape is None or len(shape) != 3:
        raise ValueError(f"{path}: the model's config does not give an image shape (C, H, W)")
    pretrained = pretrained.to(device).eval()
    score, sde = _in_cli_range(pretrained)
    classes = pretrained.num_classes
    config = SimpleNamespace(
        sde=type(pretrained.sde).__name__, class_conditional=classes is not None, data=None,
        sde_kwargs={},
    )  # fmt: skip
    return CLIModel(
        pretrained, _Scores(score, pretrained.null_label), sde, shape,
        Path(path), classes, config=config,
    )  # fmt: skip
