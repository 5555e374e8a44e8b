"""Input checks shared by the public entry points: one clear message at the boundary."""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``minimum``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
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


def check_device(name: str, device: object) -> torch.device:
    """Return ``device`` as a ``torch.device`` that can hold data here, else a clear error.

    ``TypeError`` for something that is not a device or a string; ``ValueError`` for a bogus
    name, for ``"meta"`` (meta tensors hold no values to sample or integrate) and for an
    accelerator this machine does not have.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device or a string, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"{name} {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:K'"
        ) from None
    if dev.type == "meta":
        raise ValueError(f"{name} 'meta' holds no values; use 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(dev)!r} is not available on this machine; use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{name} {str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) are available"
        )
    return dev


def check_float_dtype(name: str, dtype: object) -> torch.dtype:
    """Return ``dtype`` if it is a floating-point ``torch.dtype``, else ``TypeError``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_generator(name: str, generator: object) -> torch.Generator | None:
    """Return ``generator`` if it is ``None`` or a ``torch.Generator``, else ``TypeError``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints ``(B, ...)``, else a clear error."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(f"{name} must be a tuple of ints (B, ...), got {shape!r}")
    try:
        sizes = tuple(operator.index(s) for s in shape if not isinstance(s, bool))
    except TypeError:
        sizes = ()
    if len(sizes) != len(shape):
        raise TypeError(f"{name} must be a tuple of ints (B, ...), got {tuple(shape)}")
    if len(sizes) < 1 or any(s < 1 for s in sizes):
        raise ValueError(f"{name} must be (B, ...) with positive sizes, got {sizes}")
    return sizes


def check_output(name: str, out: object, like: Tensor) -> Tensor:
    """Check that a user callable returned a tensor shaped like its input ``like``."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != like.shape:
        raise ValueError(
            f"{name} returned shape {tuple(out.shape)} for an input of shape "
            f"{tuple(like.shape)}; it must return a tensor shaped like x"
        )
    return out


_TRUSTED_TIMES: ContextVar[bool] = ContextVar("scoresde_trusted_times", default=False)


@contextmanager
def trusted_times() -> Iterator[None]:
    """Within this context :meth:`scoresde.SDE.time` skips its value checks of ``t``.

    Those checks (range, NaN) read ``t`` into Python, a device synchronisation on a GPU at every
    score evaluation. The samplers and the likelihood solver build their times themselves and
    evaluate the score function inside this context; a score function called directly is
    still checked.
    """
    token = _TRUSTED_TIMES.set(True)
    try:
        yield
    finally:
        _TRUSTED_TIMES.reset(token)


def times_trusted() -> bool:
    """Whether the caller is inside :func:`trusted_times`."""
    return _TRUSTED_TIMES.get()
