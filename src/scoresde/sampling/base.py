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
from .noise import CounterNoise

__all__ = [
    "SamplerSpec",
    "Context",
    "register",
    "get_sampler",
    "available_samplers",
    "is_variance_preserving",
    "is_variance_exploding",
]


@dataclass
class Context:
    """What a sampler needs besides the state: the score, the SDE, noise and reporting."""

    score_fn: ScoreFn
    sde: SDE
    generator: torch.Generator | None = None
    callback: Callable[[dict[str, Any]], None] | None = None
    trajectory: list[Tensor] | None = None
    nfe: int = 0
    noise: CounterNoise | None = None
    """Counter-based noise (batch-size independent); drawn from ``generator`` when unset."""
    memo: dict[str, Any] = field(default_factory=dict)
    """Per-run values a step computes once (e.g. host-side decisions that would otherwise
    synchronise with the device at every step)."""

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Evaluate the score at ``x`` and a scalar time ``t`` broadcast to the batch."""
        self.nfe += 1
        return self.score_fn(x, t.expand(x.shape[0]))

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's posterior mean ``E[x0 | x_t = x] = x / s + s sigma^2 score(x, t)``.

        In the scaled variable ``x_hat = x / s`` this is EDM's denoiser ``D(x_hat; sigma)``.
        """
        return self.sde.tweedie(x, t, self.score(x, t))

    @property
    def active(self) -> bool:
        """Whether anything listens to :meth:`report` (skip building reports otherwise)."""
        return self.trajectory is not None or self.callback is not None

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x``; sample ``i`` ignores the batch size."""
        if self.noise is None:
            self.noise = CounterNoise.from_generator(self.generator)
        return self.noise.randn(x.shape, x.device, x.dtype)

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
    denoise: bool = False
    """Whether a final Tweedie step to noise level 0 is taken unless ``denoise=`` says."""
    schedule: Any = None
    """Preferred step schedule: a name, a :class:`Schedule`, a function of ``steps`` returning
    one, or ``None`` for the SDE's default."""
    description: str = ""
    """One line for the documentation table."""

    def check(self, sde: SDE, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` for an unsupported SDE or an unknown option."""
        if not self.supports(sde):
            raise ValueError(
                f"sampler {self.name!r} does not support {type(sde).__name__}: {self.requirement}"
            )
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = sorted(self.options) or "none"
            raise ValueError(
                f"sampler {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"it accepts: {allowed}"
            )


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
    denoise: bool = False,
    schedule: Any = None,
    description: str = "",
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn`` as the sampler ``name`` with its contract."""

    def deco(fn: SamplerFn) -> SamplerFn:
        _REGISTRY[name] = SamplerSpec(
            name,
            fn,
            order,
            stochastic,
            supports or (lambda sde: True),
            requirement,
            frozenset(options),
            evals_per_step,
            denoise,
            schedule,
            description or (fn.__doc__ or "").strip().split("\n")[0],
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


def _grid(sde: SDE) -> Tensor:
    return torch.linspace(sde.eps, sde.T, 65, dtype=torch.float64)


def is_variance_preserving(sde: SDE) -> bool:
    """Whether ``s(t)^2 (1 + sigma(t)^2) = 1`` on ``[eps, T]`` (VP / DDPM), checked numerically."""
    t = _grid(sde)
    s, sig = sde.scale(t), sde.sigma(t)
    return bool(torch.allclose(s**2 * (1 + sig**2), torch.ones_like(t), rtol=1e-6, atol=1e-9))


def is_variance_exploding(sde: SDE) -> bool:
    """Whether ``s(t) = 1`` on ``[eps, T]`` (VE / SMLD / EDM), checked numerically."""
    s = sde.scale(_grid(sde))
    return bool(torch.allclose(s, torch.ones_like(s), rtol=0, atol=1e-12))
