"""A DDPM++-style U-Net ``net(x, c_noise, y=None)`` for images (Ho et al. 2020; Song et al. 2021).

Residual blocks (GroupNorm, SiLU, 3x3 convolutions, the noise embedding added between the two
convolutions, dropout, skip sum scaled by ``1/sqrt 2``), multi-head self-attention at chosen
resolutions, strided-convolution downsampling and nearest-neighbour + convolution upsampling to
the size of the matching skip (so odd sizes such as 7x7 work), optional class conditioning with a
null label for classifier-free guidance. The last convolution of every residual branch and of the
output starts at zero, so a fresh network is the identity on its skips and outputs zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embedding import ConditionedNet

__all__ = ["UNet"]


def _groups(channels: int, max_groups: int = 32) -> int:
    """The GroupNorm group count: at most ``max_groups`` and at least 4 channels per group."""
    g = math.gcd(channels, max_groups)
    while g > 1 and channels // g < 4:
        g //= 2
    return max(g, 1)


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    """``(skip(x) + conv(drop(act(norm(conv(act(norm x)) + E emb))))) / sqrt 2``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to ``x`` ``(B, cin, H, W)`` with the embedding ``emb`` ``(B, E)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * (1 / math.sqrt(2))


class AttnBlock(nn.Module):
    """Multi-head self-attention over the pixels, ``(x + proj(attn(norm x))) / sqrt 2``."""

    def __init__(self, channels: int, head_channels: int = 64) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads")
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the ``H * W`` positions of ``x``."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, d)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(o)) * (1 / math.sqrt(2))


class _Stage(nn.Module):
    """One residual block, optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class _Down(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


def _stage(
    cin: int,
    cout: int,
    res: int,
    *,
    emb_dim: int,
    dropout: float,
    attn_at: tuple[int, ...],
    head_channels: int,
) -> _Stage:
    """A residual block ``cin -> cout``, with attention if the size ``res`` is in ``attn_at``."""
    attn = AttnBlock(cout, head_channels) if res in attn_at else None
    return _Stage(ResBlock(cin, cout, emb_dim, dropout), attn)


def _check_unet_args(
    sizes: dict[str, int], channel_mult: Sequence[int], dropout: float
) -> tuple[int, ...]:
    """Check the U-Net's sizes (each >= 1), multipliers and dropout; return the multipliers."""
    for name, v in sizes.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    mults = tuple(int(m) for m in channel_mult)
    if not mults or min(mults) < 1:
        raise ValueError(f"channel_mult must be non-empty positive integers, got {channel_mult}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    return mults


class UNet(ConditionedNet):
    """DDPM++-style U-Net for images ``(B, C, H, W)``; output shaped like the input.

    Args:
        in_channels: image channels ``C``.
        out_channels: output channels (default ``in_channels``).
        channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution level (each level after the first
            halves the resolution).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: spatial sizes (of a ``resolution``-sized input) with self-attention
            after every residual block; the middle block always has attention.
        resolution: the nominal input size, used only to place attention; any size runs.
        dropout: dropout probability in the residual blocks.
        embedding: ``"fourier"`` (default) or ``"sinusoidal"`` embedding of ``c_noise``.
        embedding_scale: the embedding's frequency scale (default 16 / 1000).
        num_classes: classes for conditioning (``None``: unconditional); label ``num_classes`` is
            the null label used for classifier-free guidance.
        class_dropout: probability of a null label in training mode.
        attn_head_channels: channels per attention head.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        resolution: int = 32,
        dropout: float = 0.1,
        *,
        embedding: str = "fourier",
        embedding_scale: float | None = None,
        num_classes: int | None = None,
        class_dropout: float = 0.0,
        attn_head_channels: int = 64,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        sizes = dict(
            in_channels=in_channels, out_channels=out_channels, channels=channels,
            num_res_blocks=num_res_blocks, resolution=resolution,
            attn_head_channels=attn_head_channels,
        )  # fmt: skip
        mults = _check_unet_args(sizes, channel_mult, dropout)
        self.config: dict[str, Any] = dict(
            in_channels=int(in_channels), out_channels=int(out_channels), channels=int(channels),
            channel_mult=list(mults), num_res_blocks=int(num_res_blocks),
            attn_resolutions=[int(r) for r in attn_resolutions], resolution=int(resolution),
            dropout=float(dropout), embedding=embedding, embedding_scale=embedding_scale,
            num_classes=num_classes, class_dropout=float(class_dropout),
            attn_head_channels=int(attn_head_channels),
        )  # fmt: skip
        """The constructor arguments (JSON-able): ``UNet(**net.config)`` rebuilds the network."""
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self._build(self.config)

    def _build(self, c: dict[str, Any]) -> None:
        """Create the layers of the configuration ``c`` (the checked :attr:`config`)."""
        channels, emb_dim, dropout = c["channels"], 4 * c["channels"], c["dropout"]
        self._init_conditioning(
            c["embedding"],
            channels,
            emb_dim,
            c["embedding_scale"],
            c["num_classes"],
            c["class_dropout"],
        )
        stage = partial(
            _stage,
            emb_dim=emb_dim,
            dropout=dropout,
            attn_at=tuple(c["attn_resolutions"]),
            head_channels=c["attn_head_channels"],
        )
        self.conv_in = nn.Conv2d(c["in_channels"], channels, 3, padding=1)
        widths = [channels * m for m in c["channel_mult"]]
        blocks = c["num_res_blocks"]
        skips, level_res = self._build_down(stage, channels, widths, blocks, c["resolution"])
        cur = widths[-1]
        self.mid = nn.ModuleList(
            [
                _Stage(
                    ResBlock(cur, cur, emb_dim, dropout), AttnBlock(cur, c["attn_head_channels"])
                ),
                _Stage(ResBlock(cur, cur, emb_dim, dropout), None),
            ]
        )
        self._build_up(stage, widths, blocks, skips, level_res)
        self.norm_out = nn.GroupNorm(_groups(widths[0]), widths[0])
        self.conv_out = _zero(nn.Conv2d(widths[0], c["out_channels"], 3, padding=1))

    def _build_down(
        self,
        stage: Callable[[int, int, int], _Stage],
        channels: int,
        widths: list[int],
        num_res_blocks: int,
        resolution: int,
    ) -> tuple[list[int], list[int]]:
        """The encoder ``self.down``; returns the skip widths and each level's spatial size."""
        self.down = nn.ModuleList()
        skips, cur, res = [channels], channels, int(resolution)
        level_res = []  # spatial size of each level (ceil halving, as the strided convolution)
        for i, width in enumerate(widths):
            level_res.append(res)
            for _ in range(num_res_blocks):
                self.down.append(stage(cur, width, res))
                cur = width
                skips.append(cur)
            if i < len(widths) - 1:
                self.down.append(_Down(cur))
                skips.append(cur)
                res = (res + 1) // 2
        return skips, level_res

    def _build_up(
        self,
        stage: Callable[[int, int, int], _Stage],
        widths: list[int],
        num_res_blocks: int,
        skips: list[int],
        level_res: list[int],
    ) -> None:
        """The decoder ``self.up``: one more block per level than the encoder, eating ``skips``."""
        self.up = nn.ModuleList()
        cur = widths[-1]
        for i in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(cur + skips.pop(), widths[i], level_res[i]))
                cur = widths[i]
            if i > 0:
                self.up.append(_Up(cur))

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        """Network output ``(B, out_channels, H, W)`` for images ``x`` and noise input ``(B,)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet(in_channels={self.in_channels}) needs images (B, "
                f"{self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        emb = self.condition(c_noise, y, x.shape[0], x.device)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Stage) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, _Up):
                h = layer(h, hs[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    # ------------------------------------------------------------------------------------------
    @classmethod
    def cifar(cls, **overrides: Any) -> UNet:
        """Build the CIFAR-10 (32x32x3) configuration of DDPM (Ho et al. 2020): about 35.7M.

        128 channels, multipliers (1, 2, 2, 2), two residual blocks per level, attention at
        16x16, dropout 0.1. Keyword arguments override any of these.
        """
        config: dict[str, Any] = dict(
            in_channels=3, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
            attn_resolutions=(16,), resolution=32, dropout=0.1,
        )  # fmt: skip
        config.update(overrides)
        return cls(**config)

    @classmethod
    def small(cls, in_channels: int = 1, resolution: int = 28, **overrides: Any) -> UNet:
        """Build a small U-Net for 8x8 digits or 28x28 Fashion-MNIST (CPU-trainable).

        Two levels for sizes up to 8 (multipliers (1, 2)), else three (1, 2, 2); 32 base
        channels, two residual blocks per level; attention at the coarsest level only; no
        dropout. About 1.0M parameters at 8x8x1 and 1.6M at 28x28x1.
        """
        levels = 2 if resolution <= 8 else 3
        coarsest = resolution
        for _ in range(levels - 1):
            coarsest = (coarsest + 1) // 2
        config: dict[str, Any] = dict(
            in_channels=in_channels, channels=32,
            channel_mult=(1, 2) if levels == 2 else (1, 2, 2), num_res_blocks=2,
            attn_resolutions=(coarsest,), resolution=resolution, dropout=0.0,
        )  # fmt: skip
        config.update(overrides)
        return cls(**config)

    def extra_repr(self) -> str:
        """Summary shown by ``print(model)``."""
        c = self.config
        return (
            f"in_channels={c['in_channels']}, channels={c['channels']}, "
            f"channel_mult={tuple(c['channel_mult'])}, num_res_blocks={c['num_res_blocks']}, "
            f"attn_resolutions={tuple(c['attn_resolutions'])}"
        )
