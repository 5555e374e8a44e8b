"""Build networks by name, from a saved ``config``, or to fit a data shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .._checks import check_choice
from .mlp import MLP
from .unet import UNet

__all__ = ["NETWORKS", "build_net", "net_for_data", "net_spec"]

NETWORKS = {"mlp": MLP, "unet": UNet}
"""Network classes by name."""


def build_net(name: str, **config: Any) -> nn.Module:
    """Build the network ``name`` (``"mlp"`` or ``"unet"``) from its constructor arguments.

    ``build_net(*net_spec(net))`` rebuilds a network of the same architecture, which is how a
    checkpoint stores it.
    """
    check_choice("network", name, NETWORKS)
    return NETWORKS[name](**config)


def net_spec(net: nn.Module) -> tuple[str, dict[str, Any]]:
    """Return ``(name, config)`` of a network built here (looks through DDP/compile wrappers)."""
    for obj in (net, getattr(net, "module", None), getattr(net, "_orig_mod", None)):
        for name, cls in NETWORKS.items():
            if type(obj) is cls:
                return name, dict(obj.config)  # type: ignore[attr-defined]
    raise TypeError(
        f"{type(net).__name__} is not a scoresde network; expected one of {sorted(NETWORKS)}"
    )


def net_for_data(
    shape: Sequence[int],
    name: str = "auto",
    *,
    num_classes: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """A network suited to samples of ``shape`` (one sample, without the batch dimension).

    ``name="auto"`` gives :class:`MLP` for flat data ``(d,)`` and :meth:`UNet.small` for images
    ``(C, H, W)``; ``"mlp"`` flattens any shape; ``"unet"`` needs an image shape;
    ``"unet_cifar"`` is :meth:`UNet.cifar` for the image's channels. ``overrides`` go to the
    constructor.
    """
    check_choice("network", name, ("auto", "mlp", "unet", "unet_cifar"))
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be the positive sizes of one sample, got {shape}")
    is_image = len(shape) == 3
    if name == "auto":
        name = "unet" if is_image else "mlp"
    if name == "mlp":
        return MLP.for_shape(shape, num_classes=num_classes, **overrides)
    if not is_image:
        raise ValueError(
            f"network {name!r} needs image samples (C, H, W), got shape {shape}; "
            f"use 'mlp' for flat data"
        )
    if shape[1] != shape[2]:
        overrides.setdefault("resolution", max(shape[1], shape[2]))
    if name == "unet_cifar":
        return UNet.cifar(in_channels=shape[0], num_classes=num_classes, **overrides)
    return UNet.small(
        shape[0], overrides.pop("resolution", shape[1]), num_classes=num_classes, **overrides
    )
