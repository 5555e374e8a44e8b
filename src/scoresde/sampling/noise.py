"""Counter-based Gaussian noise: the same seed gives the same sample ``i`` at any batch size.

A stateful generator hands out noise in the order it is asked for, so sample ``i`` of a batch of
100 gets different noise than sample ``i`` of a batch of 10. Here every noise element is a pure
function of ``(seed, call, n)`` where ``call`` counts the draws made during one sampling run and
``n = i * numel_per_sample + j`` is the element's position *within its sample's row*: a 32-bit
integer hash (murmur3's ``fmix32`` finaliser, applied twice per key) gives two 24-bit uniforms,
and the Box-Muller transform turns them into one standard normal (computed in float32, exact
for 24-bit uniforms, then cast: the same noise in every dtype; tails are cut at 5.9 sigma).
Everything is vectorised torch integer arithmetic on the target device; no Python loop over
samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CounterNoise"]

_MASK = 0xFFFFFFFF
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35  # murmur3's fmix32 constants


def _mix(x: Tensor) -> Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values in ``[0, 2^32)``.

    The int64 products may wrap (two's complement); only their low 32 bits are kept, which
    wrapping leaves exact.
    """
    x = torch.bitwise_and((x ^ (x >> 16)) * _M1, _MASK)  # (Tensor.__and__ is slow)
    x = torch.bitwise_and((x ^ (x >> 13)) * _M2, _MASK)
    return x ^ (x >> 16)


def _mix_int(x: int) -> int:
    """:func:`_mix` on a Python integer (for keys)."""
    x &= _MASK
    x = ((x ^ (x >> 16)) * _M1) & _MASK
    x = ((x ^ (x >> 13)) * _M2) & _MASK
    return x ^ (x >> 16)


class CounterNoise:
    """Standard normal noise indexed by ``(seed, call, sample, element)``.

    Args:
        seed: a non-negative integer; two instances with the same seed produce the same
            sequence of draws.
        offset: the global index of the first sample of every draw: a batch drawn with
            ``offset=k`` equals rows ``k, k+1, ...`` of a larger batch drawn with ``offset=0``
            (how :func:`scoresde.sample` keeps chunked sampling identical to one batch).
    """

    def __init__(self, seed: int, offset: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset}")
        self.seed = int(seed)
        self.offset = int(offset)
        self.calls = 0
        self._counters: dict[tuple[int, torch.device], Tensor] = {}

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
        total = math.prod(shape)
        start = self.offset * (total // shape[0]) if shape and shape[0] else 0
        key_n = (total, device)
        if key_n not in self._counters:
            self._counters = {
                key_n: torch.arange(start, start + total, device=device, dtype=torch.int64)
            }
        n = self._counters[key_n]
        lo = torch.bitwise_and(n, _MASK)
        words = []
        for stream in (0, 1):  # scalar keys: broadcasting int ops is slow on CPU
            key = self._key(stream)
            w = lo ^ key
            if start + total > _MASK:  # the high word of very long counters
                w = w ^ _mix((n >> 32) ^ (key >> 1))
            # a second, independent key (keys related to the first would pin fixed counters)
            words.append(_mix(_mix(w) ^ self._key(stream + 2)) >> 8)  # 24 random bits
        self.calls += 1
        # float32 is exact for 24-bit uniforms (and float64 log is slow on some CPUs)
        u1 = (words[0].to(torch.float32) + 0.5) * 2.0**-24
        u2 = (words[1].to(torch.float32) + 0.5) * 2.0**-24
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        return z.to(dtype).reshape(shape)
