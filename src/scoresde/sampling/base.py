"""The sampler contract: a registry of named samplers that declare what they support.

A sampler is a function ``fn(ctx, x, times, **options) -> Tensor`` that integrates from
``times[0]`` down to ``times[-1]`` starting at ``x``. It is registered with its name, its order,
whether it is stochastic, which SDEs it supports and which options it accepts; the entry point
:func:`scoresde.sample` checks all of that before running it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice
from ..sde import SDE, ScoreFn

__all__ = ["SamplerSpec", "Context", "register", "get_sampler", "available_samplers"]


@dataclass
class Context:
    """What a sampler needs besides the state: the score, the SDE, noise and reporting."""

    score_fn: ScoreFn
    sde: SDE
    generator: torch.Generator | None = None
    callback: Callable[[dict[str, Any]], None] | None = None
    trajectory: list[Tensor] | None = None
    nfe: int = 0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Evaluate the score at ``x`` and a scalar time ``t`` broadcast to the batch."""
        self.nfe += 1
        return self.score_fn(x, t.expand(x.shape[0]))

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x`` from the context's generator."""
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)

    def report(self, i: int, t: Tensor, x: Tensor, **extra: Tensor) -> None:
        """Record the state after step ``i`` for the callback and the trajectory."""
        if self.trajectory is not None:
            self.trajectory.append(x.detach().clone())
        if self.callback is not None:
            self.callback({"i": i, "t": t, "x": x, **extra})


SamplerFn = Callable[..., Tensor]


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and its declared contract."""

    name: str
    fn: SamplerFn
    order: int
    stochastic: bool
    supports: Callable[[SDE], bool] = field(default=lambda sde: True)
    requirement: str = ""
    options: frozenset[str] = frozenset()
    evals_per_step: int = 1

    def check(self, sde: SDE, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` for an unsupported SDE or an unknown option."""
        if not self.supports(sde):
            raise ValueError(f"sampler {self.name!r} does not support {type(sde).__name__}: "
                             f"{self.requirement}")
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = sorted(self.options) or "none"
            raise ValueError(f"sampler {self.name!r} got unknown option(s) {sorted(unknown)}; "
                             f"it accepts: {allowed}")


_REGISTRY: dict[str, SamplerSpec] = {}


def register(
    name: str,
    *,
    order: int,
    stochastic: bool,
    supports: Callable[[SDE], bool] | None = None,
    requirement: str = "",
    options: tuple[str, ...] = (),
    evals_per_step: int = 1,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn`` as the sampler ``name`` with its contract."""

    def deco(fn: SamplerFn) -> SamplerFn:
        _REGISTRY[name] = SamplerSpec(
            name, fn, order, stochastic, supports or (lambda sde: True), requirement,
            frozenset(options), evals_per_step,
        )
        return fn

    return deco


def get_sampler(name: str) -> SamplerSpec:
    """Look a sampler up by name (``ValueError`` with a suggestion if unknown)."""
    check_choice("sampler", name, _REGISTRY)
    return _REGISTRY[name]


def available_samplers() -> list[str]:
    """Names of all registered samplers."""
    return sorted(_REGISTRY)
