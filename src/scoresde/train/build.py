"""Build the parts of a run from its config: data, SDE, network and score model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ..data import ArrayDataset, load_dataset
from ..data.dataset import make_info
from ..parameterize import ScoreModel
from ..sde import EDMSDE, SDE, VESDE, VPSDE, RectifiedFlow, SubVPSDE
from .config import TrainConfig

__all__ = [
    "as_dataset",
    "load_train_data",
    "to_data_space",
    "build_sde",
    "net_from_config",
    "build_score_model",
    "SDE_CLASSES",
]

SDE_CLASSES: dict[str, Callable[..., SDE]] = {
    "vp": VPSDE,
    "ve": VESDE,
    "subvp": SubVPSDE,
    "edm": EDMSDE,
    "rectified_flow": RectifiedFlow,
}


def to_data_space(x: Tensor, info: dict[str, Any]) -> Tensor:
    """Map samples from training space back to data space.

    ``info`` is a :class:`scoresde.data.DatasetInfo` as a dict: quantised data (images, with
    ``levels``) were scaled to ``[-1, 1]`` and go back to ``[0, 1]`` (clamped); continuous
    data were used as they are.
    """
    if info.get("levels") is not None:
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0)
    return x


def as_dataset(data: Any, name: str = "tensor") -> ArrayDataset:
    """Return ``data`` as an :class:`~scoresde.data.ArrayDataset`.

    Accepts an ``ArrayDataset``, a float tensor ``(N, ...)`` or an ``(x, labels)`` pair.
    """
    if isinstance(data, ArrayDataset):
        return data
    labels = None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        data, labels = data
        if not isinstance(labels, Tensor) or labels.is_floating_point():
            raise TypeError("labels must be an integer tensor (N,)")
        labels = labels.long()
    if not isinstance(data, Tensor):
        raise TypeError(
            f"cannot train on {type(data).__name__}; pass a tensor (N, ...), an "
            f"(x, labels) pair or a scoresde.data.ArrayDataset"
        )
    if not data.is_floating_point():
        raise TypeError(
            f"training data must be floating point, got {data.dtype}; scale it first or "
            f"use scoresde.data.load_dataset for quantised data"
        )
    if data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(
            f"training data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}"
        )
    if not bool(torch.isfinite(data).all()):
        raise ValueError("training data contain NaN or infinite values")
    info = make_info(name, data, labels, levels=None)
    return ArrayDataset(data, labels, info)


def load_train_data(cfg: TrainConfig) -> ArrayDataset:
    """Load ``cfg.data`` with :func:`scoresde.data.load_dataset` and ``cfg.data_kwargs``."""
    try:
        return load_dataset(cfg.data, **cfg.data_kwargs)
    except TypeError as err:
        raise ValueError(f"bad data_kwargs {cfg.data_kwargs} for data {cfg.data!r}: {err}") from err


def build_sde(cfg: TrainConfig) -> SDE:
    """The forward SDE named by ``cfg.sde`` with ``cfg.sde_kwargs``."""
    check_choice("sde", cfg.sde, SDE_CLASSES)
    try:
        return SDE_CLASSES[cfg.sde](**cfg.sde_kwargs)
    except TypeError as err:
        raise ValueError(f"bad sde_kwargs {cfg.sde_kwargs} for sde {cfg.sde!r}: {err}") from err


def net_from_config(
    cfg: TrainConfig, event_shape: tuple[int, ...], *, is_image: bool, num_classes: int | None
) -> nn.Module:
    """The network for ``cfg.model`` (``auto``: small U-Net for images, else MLP).

    Uses :func:`scoresde.nets.net_for_data` with ``cfg.model_kwargs`` as overrides; a
    class-conditional config gets ``num_classes`` labels and ``cfg.class_dropout``. (To build a
    network by name from its constructor arguments use :func:`scoresde.nets.build_net`.)
    """
    from ..nets import net_for_data

    kwargs = dict(cfg.model_kwargs)
    labels = None
    if cfg.class_conditional:
        if num_classes is None:
            raise ValueError(
                "class_conditional needs a labelled data set (digits, "
                "fashion-mnist, or arrays with labels)"
            )
        labels = num_classes
        kwargs.setdefault("class_dropout", cfg.class_dropout)
    name = cfg.model
    if name == "auto":
        name = "unet" if is_image and len(event_shape) == 3 else "mlp"
    try:
        return net_for_data(event_shape, name, num_classes=labels, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad model_kwargs {cfg.model_kwargs} for model {name!r}: {err}") from err


def build_score_model(cfg: TrainConfig, net: nn.Module, sde: SDE, sigma_data: float) -> ScoreModel:
    """Wrap ``net`` as the score of ``sde`` with the config's parameterisation."""
    param = cfg.resolved().parameterization
    return ScoreModel(net, sde, param, sigma_data=sigma_data)  # type: ignore[arg-type]
