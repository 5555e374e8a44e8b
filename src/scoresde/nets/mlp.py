"""A time-conditioned residual MLP for low-dimensional data (2-D toys, flattened small images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .embedding import ConditionedNet

__all__ = ["MLP", "ResMLPBlock"]


class ResMLPBlock(nn.Module):
    """Pre-norm residual block ``h + W2 dropout(SiLU(W1 SiLU(LayerNorm h) + E emb))``.

    The conditioning embedding ``emb`` (same width as ``h``) is added between the two layers, as
    in the residual blocks of DDPM (Ho et al. 2020). With ``zero_init`` (the default) ``W2``
    starts at zero, so a fresh block is the identity.
    """

    def __init__(self, hidden: int, dropout: float, *, zero_init: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        if zero_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to features ``h`` ``(B, hidden)`` given the embedding ``emb``."""
        u = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.drop(nn.functional.silu(u)))


class MLP(ConditionedNet):
    """Residual MLP ``net(x, c_noise, y=None)`` conditioned on a scalar noise input.

    ``c_noise`` (``(B,)``) goes through a Gaussian Fourier (or sinusoidal) embedding and a
    two-layer MLP, and is added inside every residual block. The output has ``x``'s shape.

    Args:
        dim: number of values per sample; ``x`` may be ``(B, dim)`` or any ``(B, *event)``
            with ``prod(event) == dim`` (it is flattened and reshaped back).
        hidden: width of the residual stream.
        depth: number of residual blocks.
        embed_dim: width of the Fourier/sinusoidal features of ``c_noise``.
        embedding: ``"fourier"`` (default) or ``"sinusoidal"``.
        embedding_scale: the embedding's frequency scale (default 16 Fourier, 1000 sinusoidal).
        dropout: dropout probability inside the blocks.
        num_classes: number of classes for class conditioning (``None``: unconditional). Label
            ``num_classes`` is the null label used for classifier-free guidance.
        class_dropout: probability of replacing a label by null in training mode.

    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 4,
        embed_dim: int = 64,
        *,
        embedding: str = "fourier",
        embedding_scale: float | None = None,
        dropout: float = 0.0,
        num_classes: int | None = None,
        class_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        self.config: dict[str, Any] = dict(
            dim=int(dim), hidden=int(hidden), depth=int(depth), embed_dim=int(embed_dim),
            embedding=embedding, embedding_scale=embedding_scale, dropout=float(dropout),
            num_classes=num_classes, class_dropout=float(class_dropout),
        )  # fmt: skip
        """The constructor arguments (JSON-able): ``MLP(**net.config)`` rebuilds the network."""
        self.dim, self.hidden, self.depth = int(dim), int(hidden), int(depth)
        self._init_conditioning(
            embedding, embed_dim, hidden, embedding_scale, num_classes, class_dropout
        )
        self.inp = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList(ResMLPBlock(hidden, dropout) for _ in range(self.depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, self.dim)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        """Network output shaped like ``x`` for the noise input ``c_noise`` ``(B,)``."""
        shape = x.shape
        h_in = x.reshape(shape[0], -1)
        if h_in.shape[1] != self.dim:
            raise ValueError(
                f"MLP(dim={self.dim}) got x of shape {tuple(shape)} "
                f"({h_in.shape[1]} values per sample)"
            )
        emb = self.condition(c_noise, y, shape[0], x.device)
        h = self.inp(h_in)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(shape)

    @classmethod
    def for_shape(cls, event_shape: Sequence[int], **kwargs: Any) -> MLP:
        """Build an MLP for samples of ``event_shape`` (``dim = prod(event_shape)``)."""
        return cls(math.prod(int(s) for s in event_shape), **kwargs)

    def extra_repr(self) -> str:
        """Summary shown by ``print(model)``."""
        return f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}"
