"""Linear measurement operators ``y = A x`` with their adjoints, batch-first.

An operator maps a batch ``x`` of shape ``(B, *x_shape)`` to ``(B, *y_shape)`` and knows its
adjoint ``A^T`` (given, or taken by autograd from the linear forward map). The concrete operators
cover the usual inverse problems: masks (inpainting), channel mean (colorisation), average-pool
downsampling (super-resolution), blur (deblurring) and dense matrices (random projections).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_positive

__all__ = [
    "LinearOperator",
    "MatrixOperator",
    "Mask",
    "ChannelMean",
    "Downsample",
    "Blur",
    "random_projection",
    "gaussian_kernel",
    "as_operator",
]


class LinearOperator:
    """A linear map ``A`` given as a callable, with its adjoint.

    Args:
        forward: ``forward(x) -> y`` on a batch; must be linear.
        adjoint: ``adjoint(y) -> x`` with ``<A x, y> = <x, A^T y>`` per sample; when omitted it is
            computed by autograd (a vector–Jacobian product of ``forward``), which needs
            ``x_shape`` to build the input.
        x_shape: the event shape of ``x`` (optional unless the adjoint is by autograd).
    """

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        adjoint: Callable[[Tensor], Tensor] | None = None,
        *,
        x_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not callable(forward) or (adjoint is not None and not callable(adjoint)):
            raise TypeError("forward (and adjoint, if given) must be callables on batches")
        if adjoint is None and x_shape is None:
            raise ValueError(
                "an operator without an explicit adjoint needs x_shape (the event "
                "shape of x) to compute the adjoint by autograd"
            )
        self._forward = forward
        self._adjoint = adjoint
        self.x_shape = None if x_shape is None else tuple(int(s) for s in x_shape)

    def __call__(self, x: Tensor) -> Tensor:
        """Apply ``A`` to a batch."""
        return self._forward(x)

    def adjoint(self, y: Tensor) -> Tensor:
        """Apply ``A^T`` to a batch of measurements."""
        if self._adjoint is not None:
            return self._adjoint(y)
        assert self.x_shape is not None
        with torch.enable_grad():
            x = torch.zeros(
                y.shape[0], *self.x_shape, device=y.device, dtype=y.dtype, requires_grad=True
            )
            (g,) = torch.autograd.grad(self._forward(x), x, grad_outputs=y)
        return g

    def on_events(self, x_shape: tuple[int, ...]) -> LinearOperator:
        """This operator for events of shape ``x_shape`` (the batch's ``x.shape[1:]``).

        ``self`` when it has no fixed event shape or its ``x_shape`` is ``x_shape``; otherwise a
        ``ValueError`` naming both shapes (a :class:`MatrixOperator` instead adapts to any event
        shape of as many values as it has columns).
        """
        shape = _event_shape(x_shape)
        if self.x_shape is None or self.x_shape == shape:
            return self
        raise ValueError(
            f"the operator acts on events of shape {self.x_shape}, but x has event shape "
            f"{shape}; build it for x_shape={shape}"
        )

    def matrix(
        self, x_shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """The dense ``(m, d)`` matrix of ``A`` on flattened events (for small problems/tests)."""
        shape = x_shape or self.x_shape
        if shape is None:
            raise ValueError("give x_shape to build the matrix of this operator")
        d = math.prod(shape)
        basis = torch.eye(d, dtype=dtype).reshape(d, *shape)
        return self(basis).reshape(d, -1).T.contiguous()


def _event_shape(x_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    return tuple(int(s) for s in x_shape)


def _check_columns(a: Tensor, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless the ``(m, d)`` matrix ``a`` acts on events of ``shape``."""
    if math.prod(shape) != a.shape[1]:
        raise ValueError(
            f"the matrix A of shape {tuple(a.shape)} acts on events of {a.shape[1]} values, but "
            f"the event shape {shape} holds {math.prod(shape)}; give A {math.prod(shape)} columns"
        )


class MatrixOperator(LinearOperator):
    """``y = A x.flatten()`` for a dense ``(m, d)`` matrix; ``y`` has shape ``(B, m)``."""

    def __init__(self, matrix: Tensor, x_shape: tuple[int, ...] | None = None) -> None:
        a = torch.as_tensor(matrix)
        if a.dim() != 2 or not a.is_floating_point():
            raise ValueError(
                f"matrix must be a 2-D floating tensor (m, d), got {tuple(a.shape)} {a.dtype}"
            )
        shape = _event_shape(x_shape) if x_shape is not None else (a.shape[1],)
        _check_columns(a, shape)
        self.A = a
        super().__init__(self._apply, self._apply_t, x_shape=shape)

    def on_events(self, x_shape: tuple[int, ...]) -> MatrixOperator:
        """The same matrix on events of shape ``x_shape`` (``A`` acts on the flattened event).

        Any event shape of ``d`` values fits a ``(m, d)`` matrix (e.g. ``(1, 8, 8)`` for
        ``d = 64``); another size raises a ``ValueError`` naming both shapes.
        """
        shape = _event_shape(x_shape)
        if shape == self.x_shape:
            return self
        _check_columns(self.A, shape)
        return MatrixOperator(self.A, shape)

    def _on(self, ref: Tensor) -> Tensor:
        return self.A.to(device=ref.device, dtype=ref.dtype)

    def _apply(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self._on(x).T

    def _apply_t(self, y: Tensor) -> Tensor:
        assert self.x_shape is not None
        return (y @ self._on(y)).reshape(y.shape[0], *self.x_shape)


class Mask(LinearOperator):
    """``y = mask * x`` (1 = observed, 0 = missing); self-adjoint, ``y`` shaped like ``x``."""

    def __init__(self, mask: Tensor) -> None:
        m = torch.as_tensor(mask)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must hold only 0 (missing) and 1 (observed) values")
        self.mask = m
        super().__init__(self._apply, self._apply)  # a 0/1 mask is its own adjoint

    def _apply(self, x: Tensor) -> Tensor:
        return x * self.mask.to(device=x.device, dtype=x.dtype)


class ChannelMean(LinearOperator):
    """Grey-scale measurement ``y = mean_c x[:, c]`` of images ``(B, C, H, W)`` -> ``(B, 1, H, W)``.

    The adjoint spreads ``y / C`` over the ``C`` channels.
    """

    def __init__(self, channels: int = 3) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = int(channels)
        super().__init__(self._apply, self._apply_t)

    def _apply(self, x: Tensor) -> Tensor:
        return x.mean(dim=1, keepdim=True)

    def _apply_t(self, y: Tensor) -> Tensor:
        return y.expand(-1, self.channels, *y.shape[2:]) / self.channels


class Downsample(LinearOperator):
    """Super-resolution measurement: ``factor x factor`` average pooling of ``(B, C, H, W)``.

    The adjoint copies each low-resolution value to its block divided by ``factor^2``.
    """

    def __init__(self, factor: int) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.factor = factor
        super().__init__(self._apply, self._apply_t)

    def _apply(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} must be divisible by the "
                f"downsampling factor {self.factor}"
            )
        return F.avg_pool2d(x, self.factor)

    def _apply_t(self, y: Tensor) -> Tensor:
        k = self.factor
        return y.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1) / (k * k)


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """A normalised 2-D Gaussian blur kernel (float64) of odd ``size`` (``2 ceil(3 sigma) + 1``)."""
    sigma = check_positive("sigma", sigma)
    size = size if size is not None else 2 * math.ceil(3 * sigma) + 1
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


class Blur(LinearOperator):
    """Deblurring measurement: the same 2-D kernel convolved with every channel, zero padding.

    ``y`` has the shape of ``x``; the adjoint is the transposed convolution.
    """

    def __init__(self, kernel: Tensor) -> None:
        k = torch.as_tensor(kernel)
        if k.dim() != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"kernel must be 2-D with odd sides, got {tuple(k.shape)}")
        self.kernel = k
        super().__init__(self._apply, self._apply_t)

    def _weight(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        return self.kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, *self.kernel.shape)

    def _pad(self) -> tuple[int, int]:
        return self.kernel.shape[0] // 2, self.kernel.shape[1] // 2

    def _apply(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self._weight(x), padding=self._pad(), groups=x.shape[1])

    def _apply_t(self, y: Tensor) -> Tensor:
        return F.conv_transpose2d(y, self._weight(y), padding=self._pad(), groups=y.shape[1])


def random_projection(
    m: int,
    x_shape: tuple[int, ...] | int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> MatrixOperator:
    """A Gaussian random projection to ``m`` values, entries ``N(0, 1/m)`` (compressed sensing)."""
    shape = (x_shape,) if isinstance(x_shape, int) else tuple(x_shape)
    d = math.prod(shape)
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    a = torch.randn(m, d, generator=generator, dtype=dtype) / math.sqrt(m)
    return MatrixOperator(a, shape)


def as_operator(
    op: LinearOperator | Tensor, x_shape: tuple[int, ...] | None = None
) -> LinearOperator:
    """Accept an operator or a dense matrix (wrapped as :class:`MatrixOperator`).

    With ``x_shape`` (the event shape of the ``x`` it will be applied to) the operator is
    fitted to it by :meth:`LinearOperator.on_events`: a ``(m, d)`` matrix acts on any event
    shape of ``d`` values (e.g. ``(1, 8, 8)`` images for ``d = 64``); a mismatch raises a
    ``ValueError`` naming both shapes.
    """
    if isinstance(op, LinearOperator):
        return op if x_shape is None else op.on_events(x_shape)
    if isinstance(op, Tensor):
        return MatrixOperator(op, x_shape)
    raise TypeError(
        f"expected a LinearOperator or a (m, d) matrix tensor, got "
        f"{type(op).__name__}; wrap a callable as LinearOperator(forward, adjoint)"
    )
