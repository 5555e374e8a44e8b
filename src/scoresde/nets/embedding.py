"""Embeddings of the scalar noise input ``c_noise`` and of class labels, and how networks use them.

:class:`ConditionedNet` is the base of the networks: ``c_noise`` goes through a Fourier or
sinusoidal embedding and a two-layer MLP, class labels through :class:`LabelEmbedding`, and the
sum (after SiLU) is what every residual block receives (Ho et al. 2020; Song et al. 2021).

Both time embeddings are computed in at least float32 whatever the autocast context, since the
high frequencies of a Fourier embedding lose all precision in bf16; a float64 ``c`` (a network
converted with ``.double()``) is embedded in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_positive

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "LabelEmbedding",
    "time_embedding",
    "ConditionedNet",
]

EMBEDDINGS = ("fourier", "sinusoidal")


def _embed_dtype(c: Tensor) -> torch.dtype:
    """float32 for half, bfloat16 and float32 inputs; float64 for float64."""
    return torch.promote_types(c.dtype, torch.float32)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2 pi c w), cos(2 pi c w)]``, ``w ~ N(0, scale^2)`` fixed.

    Tancik et al. 2020; used for the noise level by Song et al. 2021 (NCSN++). ``scale = 16``
    suits inputs of order one such as ``log(sigma) / 4``.
    """

    def __init__(self, embed_dim: int, scale: float = 16.0) -> None:
        super().__init__()
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even number >= 2, got {embed_dim}")
        check_positive("scale", scale)
        self.embed_dim = embed_dim
        self.freqs: Tensor
        self.register_buffer("freqs", torch.randn(embed_dim // 2) * scale)

    def forward(self, c: Tensor) -> Tensor:
        """Embed a ``(B,)`` tensor into ``(B, embed_dim)`` (float64 only for float64 ``c``)."""
        dtype = _embed_dtype(c)
        arg = 2 * math.pi * c.to(dtype)[:, None] * self.freqs.to(dtype)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """Transformer positional embedding of ``scale * c`` (Vaswani et al. 2017; DDPM).

    Frequencies run geometrically from 1 to ``1 / max_period``. ``scale = 1000`` maps ``t`` in
    ``[0, 1]`` (or ``log(sigma) / 4``) onto DDPM's range of integer steps.
    """

    def __init__(self, embed_dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even number >= 2, got {embed_dim}")
        check_positive("scale", scale)
        check_positive("max_period", max_period)
        self.embed_dim = embed_dim
        self.scale = float(scale)
        half = embed_dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / max(half - 1, 1))
        self.freqs: Tensor
        self.register_buffer("freqs", freqs)

    def forward(self, c: Tensor) -> Tensor:
        """Embed a ``(B,)`` tensor into ``(B, embed_dim)`` (float64 only for float64 ``c``)."""
        dtype = _embed_dtype(c)
        arg = self.scale * c.to(dtype)[:, None] * self.freqs.to(dtype)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


def time_embedding(kind: str, embed_dim: int, scale: float | None = None) -> nn.Module:
    """Build the embedding ``kind`` (``"fourier"`` or ``"sinusoidal"``) with its default scale."""
    check_choice("embedding", kind, EMBEDDINGS)
    if kind == "fourier":
        return GaussianFourierEmbedding(embed_dim, 16.0 if scale is None else scale)
    return SinusoidalEmbedding(embed_dim, 1000.0 if scale is None else scale)


class LabelEmbedding(nn.Module):
    """Class labels ``0 .. num_classes - 1`` plus a *null* label ``num_classes`` (unconditional).

    The null label serves classifier-free guidance (Ho & Salimans 2022): ``y=None`` embeds every
    sample as null, and in training mode each label is replaced by null with probability
    ``dropout`` (drawn from the global generator, which the trainer seeds).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"class dropout must lie in [0, 1), got {dropout}")
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.embed = nn.Embedding(self.num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class"."""
        return self.num_classes

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Embed labels ``y`` (``(B,)`` integers, or ``None`` for all-null) into ``(B, dim)``."""
        if y is None:
            y = torch.full((batch,), self.null_label, device=device, dtype=torch.long)
        else:
            if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise TypeError(f"labels y must be an integer tensor, got dtype {y.dtype}")
            if y.shape != (batch,):
                raise ValueError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
            y = y.to(device=device, dtype=torch.long)
            if (
                y.device.type == "cpu"
                and y.numel()
                and (int(y.min()) < 0 or int(y.max()) > self.null_label)
            ):
                raise ValueError(
                    f"labels must lie in [0, {self.num_classes}] "
                    f"({self.num_classes} = null), got [{int(y.min())}, "
                    f"{int(y.max())}]"
                )
            if self.training and self.dropout > 0:
                drop = torch.rand(batch, device=device) < self.dropout
                y = torch.where(drop, torch.full_like(y, self.null_label), y)
        return self.embed(y)


class ConditionedNet(nn.Module):
    """Base of a network ``net(x, c_noise, y=None)``: the embedding of its conditioning inputs.

    :meth:`_init_conditioning` builds ``time_embed`` (the ``c_noise`` features and a two-layer
    SiLU MLP) and, for ``num_classes`` classes, ``label_embed`` (with a null label for
    classifier-free guidance, Ho & Salimans 2022); :meth:`condition` returns
    ``SiLU(time_embed(c_noise) + label_embed(y))``.
    """

    num_classes: int | None
    time_embed: nn.Sequential
    label_embed: LabelEmbedding | None

    def _init_conditioning(
        self,
        embedding: str,
        features: int,
        width: int,
        scale: float | None,
        num_classes: int | None,
        class_dropout: float,
    ) -> None:
        """Build ``time_embed`` (``features`` features of ``c_noise``, then ``width``) and labels.

        ``label_embed`` is ``None`` for an unconditional network (``num_classes=None``).
        """
        self.num_classes = num_classes
        self.time_embed = nn.Sequential(
            time_embedding(embedding, features, scale),
            nn.Linear(features, width),
            nn.SiLU(),
            nn.Linear(width, width),
        )
        self.label_embed = (
            LabelEmbedding(num_classes, width, class_dropout) if num_classes is not None else None
        )

    @property
    def null_label(self) -> int | None:
        """The null label (``num_classes``) for classifier-free guidance, or ``None``."""
        return self.num_classes

    def condition(
        self, c_noise: Tensor, y: Tensor | None, batch: int, device: torch.device
    ) -> Tensor:
        """The embedding ``(batch, width)`` of the noise input ``c_noise`` ``(batch,)`` and y."""
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise must have shape ({batch},), got {tuple(c_noise.shape)}")
        emb = self.time_embed(c_noise)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y, batch, device)
        elif y is not None:
            raise ValueError(
                f"labels y were given to an unconditional {type(self).__name__}; "
                f"build it with num_classes=K"
            )
        return nn.functional.silu(emb)
