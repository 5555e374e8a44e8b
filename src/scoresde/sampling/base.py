"""The sampler contract: a registry of named samplers that declare what they support.

A sampler is a function ``fn(ctx, x, times, *, option=default, ...) -> Tensor`` that integrates
from ``times[0]`` down to ``times[-1]`` starting at ``x``; its keyword-only parameters are its
options. It is registered with its name, its order(s), whether it is stochastic and which SDEs it
supports; the entry point :func:`scoresde.sample` checks all of that before running it, and
:func:`sampler_table` renders the registry as the documentation's table.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from .._checks import check_choice
from ..sde import EDMSDE, SDE, VESDE, VPSDE, RectifiedFlow, ReverseSDE, ScoreFn, SubVPSDE
from .data_gaussian import DataGaussian
from .noise import CounterNoise

__all__ = [
    "SamplerSpec",
    "Context",
    "ScheduleContext",
    "register",
    "get_sampler",
    "available_samplers",
    "sampler_table",
    "sampler_help",
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
    gaussian: DataGaussian | None = None
    """The data's Gaussian part read from the model, for samplers with ``matched_start``
    (``fast`` integrates it exactly); ``None`` for the others or when the model gives none."""
    previous_denoised: tuple[Tensor, Tensor] | None = None
    """``(D, sigma)`` at the grid's last node but one, left by a sampler whose final step should
    extrapolate the denoiser (:meth:`final_denoise`); ``None``: Tweedie's step."""

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Evaluate the score at ``x`` and a scalar time ``t`` broadcast to the batch."""
        self.nfe += 1
        return self.score_fn(x, t.expand(x.shape[0]))

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's posterior mean ``E[x0 | x_t = x] = x / s + s sigma^2 score(x, t)``.

        In the scaled variable ``x_hat = x / s`` this is EDM's denoiser ``D(x_hat; sigma)``.
        """
        return self.sde.tweedie(x, t, self.score(x, t))

    def final_denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """The final step to noise level 0 from ``x`` at ``t``: Tweedie's :meth:`denoise`.

        When the sampler left its previous denoiser output on the path
        (:attr:`previous_denoised`), ``D`` is extrapolated along the path in ``sigma^2`` to
        ``sigma = 0`` instead: ``D_N + sigma_N^2 (D_N - D) / (sigma^2 - sigma_N^2)``. Along an
        exact path ``D = x0 + O(sigma^2)`` for a smooth density, so the step is second order,
        where Tweedie's alone shrinks every mode wider than ``sigma_N`` by ``O(sigma_N^2 / w^2)``
        (for a Gaussian mode of width ``w``: ``w / sqrt(w^2 + sigma^2)`` instead of 1).
        """
        den = self.denoise(x, t)
        if self.previous_denoised is None:
            return den
        d_prev, sigma_prev = self.previous_denoised
        sigma2 = self.sde.sigma(t) ** 2
        return den + sigma2 / (sigma_prev**2 - sigma2) * (den - d_prev)

    def reverse(self, probability_flow: bool = False) -> ReverseSDE:
        """The reverse SDE (or the probability-flow ODE) driven by :meth:`score` (counted)."""
        key = "reverse_pf" if probability_flow else "reverse"
        if key not in self.memo:
            self.memo[key] = self.sde.reverse(self.score, probability_flow)
        return self.memo[key]

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


def any_sde(sde: SDE) -> bool:
    """The default ``supports`` of a sampler: every affine SDE."""
    return True


@dataclass
class ScheduleContext:
    """What a sampler's preferred schedule may look at besides the number of steps.

    Given to a schedule function ``schedule(steps, ctx)`` of :func:`register` by
    :func:`scoresde.sample` when the caller passes no ``schedule=``: the (checked) score
    function, the SDE, the shape of one sample, the rows of one batch and the sampling device
    and dtype. Calls a schedule function makes through :meth:`score` are counted in ``calls``.
    """

    score_fn: ScoreFn
    sde: SDE
    event_shape: tuple[int, ...]
    batch: int
    device: torch.device
    dtype: torch.dtype
    calls: int = 0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """The score at ``x`` (a batch) and times ``t`` (shape ``(B,)``), counted in ``calls``."""
        self.calls += 1
        return self.score_fn(x, t)

    def memo(self, name: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` once per score function object, SDE, shape, device, dtype and ``name``.

        What a schedule function learns by probing the model, kept for later calls. The score
        function is the caller's (inside :func:`scoresde.sample`'s checked wrapper),
        held weakly, as is the SDE; one that cannot be weakly referenced is probed every time.
        Call ``model.score_fn()`` again after changing a network's weights.
        """
        owner = getattr(self.score_fn, "fn", self.score_fn)
        key = (name, self.event_shape, self.device, self.dtype)
        try:
            entries = _MEMO.setdefault(owner, [])
        except TypeError:  # not weakly referenceable or not hashable
            entries = []
        for sde_ref, k, value in entries:
            if k == key and sde_ref() is self.sde:
                return value  # type: ignore[no-any-return]
        value = compute()
        entries.append((weakref.ref(self.sde), key, value))
        return value


_T = TypeVar("_T")
_MEMO: weakref.WeakKeyDictionary[Any, list[tuple[weakref.ref[SDE], tuple[Any, ...], Any]]]
_MEMO = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and its declared contract."""

    name: str
    fn: SamplerFn
    order: int
    """The highest convergence order it reaches (of ``orders``)."""
    stochastic: bool
    supports: Callable[[SDE], bool] = any_sde
    requirement: str = ""
    options: frozenset[str] = frozenset()
    """Its options: the keyword-only parameters of ``fn``."""
    evals_per_step: int = 1
    denoise: bool = False
    """Whether a final Tweedie step to noise level 0 is taken unless ``denoise=`` says."""
    schedule: Any = None
    """Preferred step schedule: a name, a :class:`Schedule`, a function
    ``schedule(steps, ctx: ScheduleContext)`` returning one (it may look at the model), or
    ``None`` for the SDE's default."""
    description: str = ""
    """One line for the documentation table."""
    orders: tuple[int, ...] = ()
    """The orders its ``order`` option selects; ``(order,)`` for a sampler of one order."""
    matched_start: bool = False
    """Whether it starts (without ``x_init``) from the Gaussian matching the noised data's
    mean and variance, read from the model (:func:`~scoresde.sampling.profile.start_moments`),
    instead of the SDE's prior."""

    def __post_init__(self) -> None:
        if not self.orders:
            object.__setattr__(self, "orders", (self.order,))

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


def sampler_options(fn: SamplerFn) -> frozenset[str]:
    """The options of a sampler function: its keyword-only parameters after ``ctx, x, times``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        raise TypeError(f"sampler {fn.__name__} must list its options as keyword-only parameters")
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def register(
    name: str,
    *,
    order: int | tuple[int, ...],
    stochastic: bool,
    supports: Callable[[SDE], bool] | None = None,
    requirement: str = "",
    evals_per_step: int = 1,
    denoise: bool = False,
    schedule: Any = None,
    description: str = "",
    matched_start: bool = False,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn`` as the sampler ``name`` with its contract.

    ``order`` is the sampler's convergence order, or the tuple of orders its ``order`` option
    selects. Its options are the keyword-only parameters of ``fn`` (:func:`sampler_options`);
    its ``description`` for the table is, unless given, the first line of ``fn``'s docstring.
    """

    def deco(fn: SamplerFn) -> SamplerFn:
        orders = (order,) if isinstance(order, int) else tuple(sorted(order))
        _REGISTRY[name] = SamplerSpec(
            name,
            fn,
            max(orders),
            stochastic,
            supports or any_sde,
            requirement,
            sampler_options(fn),
            evals_per_step,
            denoise,
            schedule,
            description or (fn.__doc__ or "").strip().split("\n")[0].rstrip("."),
            orders,
            matched_start,
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


_NAMED_SDES: tuple[tuple[str, Callable[[], SDE]], ...] = (
    ("VE", VESDE),
    ("VP", VPSDE),
    ("sub-VP", SubVPSDE),
    ("EDM", EDMSDE),
    ("RF", RectifiedFlow),
)


def _orders_text(orders: tuple[int, ...]) -> str:
    if len(orders) > 1 and orders == tuple(range(orders[0], orders[-1] + 1)):
        return f"{orders[0]}-{orders[-1]}"
    return ", ".join(map(str, orders))


def _sdes_text(spec: SamplerSpec) -> str:
    if spec.supports is any_sde:
        return "any"
    return ", ".join(name for name, make in _NAMED_SDES if spec.supports(make()))


def _row(spec: SamplerSpec) -> tuple[str, ...]:
    stochastic = "yes" if spec.stochastic else "no"
    return spec.name, _orders_text(spec.orders), stochastic, _sdes_text(spec), spec.description


def sampler_table() -> str:
    """The registered samplers as a reStructuredText table (the package documentation's).

    Columns: name, order(s), stochastic, supported SDEs (``any``, or those of the built-in ones
    it supports) and the one-line description, all read from the registered specs.
    """
    head = ("name", "order", "stochastic", "SDEs", "description")
    rows = [_row(get_sampler(name)) for name in available_samplers()]
    widths = [max(len(r[k]) for r in (head, *rows)) for k in range(len(head))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([rule, line(head), rule, *map(line, rows), rule]) + "\n"


def _options_text(fn: SamplerFn) -> list[str]:
    """``name: type = default`` of each option (keyword-only parameter) of a sampler."""
    lines = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            ann = p.annotation  # a string under ``from __future__ import annotations``
            hint = "" if ann is p.empty else f": {ann if isinstance(ann, str) else ann.__name__}"
            lines.append(f"  {p.name}{hint} = {p.default!r}")
    return lines or ["  (none)"]


def _schedule_text(spec: SamplerSpec) -> str:
    if spec.schedule is None:
        return "the SDE's default"
    if callable(spec.schedule):
        return f"chosen by the number of steps ({spec.schedule.__name__})"
    return str(spec.schedule)


def sampler_help(name: str) -> str:
    """What the registered sampler ``name`` does, its contract and its options, as text.

    The options are the keyword arguments :func:`scoresde.sample` passes on to it
    (``sample(score, sde, shape, sampler=name, option=value)``); the text ends with the
    sampler function's docstring (its method and the paper it follows). ``scoresde sample
    --sampler NAME --help-sampler`` prints the same.
    """
    spec = get_sampler(name)
    stochastic = "stochastic" if spec.stochastic else "deterministic"
    lines = [
        f"sampler {spec.name!r}: {spec.description}",
        f"order {_orders_text(spec.orders)}, {stochastic}, {spec.evals_per_step} score "
        f"evaluation(s) per step; SDEs: {_sdes_text(spec)}"
        + (f" ({spec.requirement})" if spec.requirement else ""),
        f"schedule: {_schedule_text(spec)}; final denoising step: "
        f"{'yes' if spec.denoise else 'no'} (denoise=)",
        "options (keyword arguments of scoresde.sample):",
        *_options_text(spec.fn),
        "",
        inspect.getdoc(spec.fn) or "",
    ]
    return "\n".join(lines).rstrip() + "\n"


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
