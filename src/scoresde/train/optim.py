"""The optimizer and gradient clipping of a training step.

Adam (Kingma & Ba 2015) or AdamW (Loshchilov & Hutter 2019) in torch's ``fused`` form (one kernel
per parameter; CPU and CUDA) where it exists, else the multi-tensor (``foreach``) form; clipping
of the global gradient norm (Pascanu et al. 2013) that groups the tensors once, not per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["make_optimizer", "GradClip"]


def make_optimizer(
    params: Sequence[Tensor],
    name: str,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    device: torch.device,
) -> torch.optim.Optimizer:
    """Adam or AdamW (``name``), fused on CPU and CUDA, multi-tensor elsewhere."""
    opt_cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    extra: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if not extra:
        extra = {"foreach": True}
    return opt_cls(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)


class GradClip:
    """Scale gradients to a global 2-norm of at most ``max_norm``; calling it returns the norm.

    Gradient-norm clipping (Pascanu et al. 2013) with the arithmetic of
    ``torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)`` (per-tensor norms, the
    norm of their stack, ``grad *= min(max_norm / (norm + 1e-6), 1)``, no host synchronisation)
    and bit-identical to it. The grouping of the tensors by device and dtype, which torch redoes
    at every call, is done once here: when all parameters share one device and dtype (the usual
    case) every call is three kernel calls on one tensor list. Otherwise it defers to torch.
    Parameters without a gradient are skipped.

    Args:
        params: the parameters whose ``.grad`` to clip (the list is kept).
        max_norm: the largest global norm allowed (> 0).
    """

    def __init__(self, params: Sequence[Tensor], max_norm: float) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        self.params = list(params)
        self.max_norm = float(max_norm)
        kinds = {(p.device, p.dtype) for p in self.params}
        self._uniform = len(kinds) == 1

    @torch.no_grad()
    def __call__(self) -> Tensor:
        """Clip the current gradients in place; return their global norm before clipping."""
        if not self._uniform:
            return nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.params[0].device)
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        coef = torch.clamp(self.max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
        return total
