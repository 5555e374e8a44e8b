"""Input checks shared by the public entry points: one clear message at the boundary."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import torch
from torch import Tensor


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ``ValueError``."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise ``ValueError``."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else a ``ValueError`` with a suggestion."""
    options = sorted(choices)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {name} {value!r}; choose one of {options}.{hint}")


def check_tensor(name: str, x: object, *, min_dim: int = 1, finite: bool = True) -> Tensor:
    """Check that ``x`` is a floating tensor with a batch dimension and finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with .float()"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (batch first), "
            f"got shape {tuple(x.shape)}"
        )
    if finite and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean the input first")
    return x
