"""Exponential moving average of network weights (Polyak averaging), with warm-up."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of a network whose weights track ``decay * ema + (1 - decay) * online``.

    With ``warmup`` the decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))``, so early
    averages are not dominated by the random initialisation (as in Song et al.'s and the
    TensorFlow ``ExponentialMovingAverage(num_updates=...)`` convention). Buffers are copied.

    Args:
        model: the online network (not wrapped in DDP/compile).
        decay: the asymptotic decay in ``[0, 1)``.
        warmup: use the warm-up schedule above.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._ema_params: list[Tensor] = list(self.module.parameters())
        self._ema_buffers: list[Tensor] = list(self.module.buffers())
        self._source: nn.Module | None = None
        self._src_params: list[Tensor] = []
        self._src_buffers: list[Tensor] = []

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights; copy its buffers."""
        if model is not self._source:  # walking the module tree every step is costly
            self._src_params = [p.detach() for p in model.parameters()]
            self._src_buffers = list(model.buffers())
            if len(self._src_params) != len(self._ema_params) or len(self._src_buffers) != len(
                self._ema_buffers
            ):
                raise ValueError("the EMA and the online model have different parameters")
            self._source = model
        d = self.current_decay()
        if self._ema_params:
            torch._foreach_lerp_(self._ema_params, self._src_params, 1.0 - d)
        for b_ema, b in zip(self._ema_buffers, self._src_buffers, strict=True):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (a state dict of ``self.module``)."""
        return self.module.state_dict()

    def load_state_dict(self, weights: dict[str, Tensor], num_updates: int) -> None:
        """Restore averaged weights and the update count."""
        self.module.load_state_dict(weights)
        self.num_updates = int(num_updates)
