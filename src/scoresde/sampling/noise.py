"""Counter-based Gaussian noise: the same seed gives the same sample ``i`` at any batch size.

A stateful generator hands out noise in the order it is asked for, so sample ``i`` of a batch of
100 gets different noise than sample ``i`` of a batch of 10. Here every noise element is a pure
function of ``(seed, call, n)`` where ``call`` counts the draws made during one sampling run and
``n = i * numel_per_sample + j`` is the element's position *within its sample's row*: a 32-bit
integer hash (Mueller's ``0x45d9f3b`` mixer, applied twice per key) gives two uniforms, and the
Box-Muller transform turns them into one standard normal. Everything is vectorised torch integer
arithmetic on the target device; no Python loop over samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CounterNoise"]

_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2^31, so (x < 2^32) * _MULT never overflows int64


def _mix(x: Tensor) -> Tensor:
    """A 32-bit avalanche mixer on int64 tensors holding values in ``[0, 2^32)``."""
    x = ((x ^ (x >> 16)) * _MULT) & _MASK
    x = ((x ^ (x >> 16)) * _MULT) & _MASK
    return x ^ (x >> 16)


def _mix_int(x: int) -> int:
    """:func:`_mix` on a Python integer (for keys)."""
    x &= _MASK
    x = ((x ^ (x >> 16)) * _MULT) & _MASK
    x = ((x ^ (x >> 16)) * _MULT) & _MASK
    return x ^ (x >> 16)


class CounterNoise:
    """Standard normal noise indexed by ``(seed, call, sample, element)``.

    Args:
        seed: a non-negative integer; two instances with the same seed produce the same
            sequence of draws.
    """

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = int(seed)
        self.calls = 0

    @classmethod
    def from_generator(
        cls, generator: torch.Generator | None, device: torch.device | None = None
    ) -> CounterNoise:
        """Draw one seed from ``generator`` (or torch's global generator when ``None``)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=dev)
        return cls(int(seed.item()))

    def _key(self, stream: int) -> int:
        k = _mix_int(self.seed ^ _mix_int(self.seed >> 32))
        k = _mix_int(k ^ _mix_int(self.calls))
        return _mix_int(k ^ _mix_int(stream + 0x9E3779B9))

    def randn(
        self, shape: tuple[int, ...] | torch.Size, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """The next draw of standard normals shaped ``shape`` (batch first)."""
        shape = tuple(shape)
        per_sample = math.prod(shape[1:])
        n = torch.arange(shape[0] * per_sample, device=device, dtype=torch.int64)
        lo, hi = n & _MASK, n >> 32
        words = []
        for stream in (0, 1):
            key = self._key(stream)
            words.append(_mix(_mix(lo ^ key) ^ _mix(hi ^ (key >> 1))))
        self.calls += 1
        work = torch.float32 if device.type == "mps" else torch.float64
        u1 = (words[0].to(work) + 0.5) * 2.0**-32
        u2 = (words[1].to(work) + 0.5) * 2.0**-32
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        return z.to(dtype).reshape(shape)
