"""Batched sequential Monte Carlo for conditional sampling: ``K`` particles per observation.

The engine behind every ``method="smc"`` of :mod:`scoresde.inverse`: the twisted diffusion
sampler (TDS; Wu et al. 2023, Algorithm 1) run on many observations at once, one group of ``K``
particles each, with per-group weights, effective sample sizes and systematic resampling.

Two kinds of observation:

* **noisy linear** ``y = A x + N(0, sigma_n^2 I)`` (:func:`run_linear`): particles are whole
  states; the last step swaps the twist for the true likelihood (TDS as written);
* **noise-free known values** ``x[known] = y`` (:func:`run_masked`; inpainting, colorisation):
  the known coordinates follow one draw of their own forward path ``u_t`` from ``y`` (sampled
  backwards in time by Brownian bridges) and are *set*, never proposed; only the missing
  coordinates are particles. The forward noise acts on each coordinate independently, so the
  known path carries no information about the missing data beyond ``y`` itself
  (``u ⊥ x0_missing | x0_known``): a particle filter on the missing coordinates, with the known
  path as its observations, targets ``p(x0_missing | y)`` exactly as ``K -> infinity`` (up to the
  time discretisation). This is the filtering view of Dou & Song (2024, FPS-SMC); the twist
  ``p~_t(y | x_t)`` (TDS) is its optimal twisting function up to factors shared by the particles,
  because the known path below ``t`` depends on the missing coordinates only through ``y``.

One step ``t -> t' = t + h`` (``h < 0``) of the reverse SDE's Euler–Maruyama kernel
``p(x' | x) = N(mu(x), v I)``, ``mu = x + [f x - g^2 score] h``, ``v = g^2 |h|``: the free
coordinates are proposed from ``q = N(mu + v grad log p~_t(y | x), v I)`` and the weight is
``w = p(x' | x) p~_{t'}(y | x') / (q(x' | x) p~_t(y | x))``, where for known values ``p(x' | x)``
includes the density ``N(u_{t'}; mu_known(x), v I)`` of the known path's next value. Groups
resample (systematic) when their ESS falls below a threshold; all decisions stay on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._checks import trusted_times
from ..sde import SDE, ScoreFn

__all__ = [
    "PosteriorSamples",
    "Twist",
    "systematic_resample",
    "effective_sample_size",
    "flat_twist",
    "chunked",
    "group_size",
    "run_linear",
    "run_masked",
    "check_start",
    "linear_smc",
    "path_start",
    "solve_in_groups",
    "gaussian_log_likelihood",
    "Swarm",
]

Twist = Callable[[Tensor, Tensor], Any]
"""``twist(x, t) -> terms`` with fields ``score``, ``grad`` and ``log_twist`` (a NamedTuple such
as :class:`~scoresde.inverse.linear.LikelihoodTerms`), for a batch ``x`` and a ``(B,)`` time."""


@dataclass
class PosteriorSamples:
    """Posterior draws of a conditional sampler, with what it cost and how reliable they are.

    Returned by ``return_info=True`` of :func:`~scoresde.inverse.inpaint`,
    :func:`~scoresde.inverse.colorize` and :func:`~scoresde.inverse.solve_linear`.
    """

    samples: Tensor
    """What the call without ``return_info`` returns: ``(B, ...)`` for one draw per observation,
    ``(draws, B, ...)`` for several."""
    ess: Tensor
    """Effective sample size ``1 / sum_k w_k^2`` of each observation's final weighted particles
    ``(B,)``, between 1 and ``particles`` (1 for the unweighted methods)."""
    method: str
    """The method that drew them."""
    nfe: int
    """Score evaluations per particle (vector–Jacobian products of a twist not counted)."""
    particles: Tensor | None = None
    """The final weighted particles ``(B, K, ...)`` (SMC only)."""
    log_weights: Tensor | None = None
    """Their normalised log-weights ``(B, K)`` (SMC only)."""
    resampled: Tensor | None = None
    """How many times each observation's particles were resampled ``(B,)`` (SMC only)."""
    ess_history: Tensor | None = None
    """ESS after each step as a fraction of ``K``, before resampling ``(steps, B)`` (SMC only)."""


class _Terms(NamedTuple):
    score: Tensor
    grad: Tensor
    log_twist: Tensor


class Swarm(NamedTuple):
    """Particles ``x`` ``(G*K, ...)``, their twist terms and log-weights ``(G, K)``."""

    x: Tensor
    terms: Any
    log_w: Tensor


def systematic_resample(
    log_w: Tensor, generator: torch.Generator | None = None, n: int | None = None
) -> Tensor:
    """Indices ``(..., n)`` of a systematic resampling of each row of log-weights ``(..., N)``.

    One uniform ``u ~ U[0, 1)`` per row places the ``n`` points ``(u + i) / n`` (default
    ``n = N``) on the weights' CDF (Carpenter, Clifford & Fearnhead 1999): for ``n = N``
    particle ``k`` is copied ``floor(N w_k)`` or ``ceil(N w_k)`` times.
    """
    k = log_w.shape[-1]
    n = k if n is None else n
    w = torch.softmax(log_w.double(), -1)
    u0 = torch.rand(log_w.shape[:-1], generator=generator, device=log_w.device, dtype=w.dtype)
    u = (u0[..., None] + torch.arange(n, device=log_w.device, dtype=w.dtype)) / n
    cdf = torch.cumsum(w, -1)
    cdf[..., -1] = 1.0
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp_max(k - 1)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """ESS ``1 / sum w_k^2`` of each row of log-weights ``(..., K)``, as a fraction of ``K``."""
    w = torch.softmax(log_w, -1)
    return 1.0 / (w * w).sum(-1) / log_w.shape[-1]


def flat_twist(score_fn: ScoreFn) -> Twist:
    """No twist (``p~ = 1``): the prior score, a zero gradient and a zero log-twist.

    SMC with it is the bootstrap particle filter (FPS-SMC of Dou & Song 2024 for known values):
    one score evaluation per particle and step, no vector–Jacobian products.
    """

    def twist(x: Tensor, t: Tensor) -> _Terms:
        s = score_fn(x, t)
        return _Terms(
            s, torch.zeros_like(s), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        )

    return twist


def chunked(make: Callable[[slice], Twist], n: int, batch_size: int | None) -> Twist:
    """A twist over ``n`` particles evaluated in row chunks of at most ``batch_size``.

    ``make(rows)`` builds the twist of the particles ``rows`` (once per chunk, before the loop).
    """
    size = n if batch_size is None else max(1, min(n, batch_size))
    rows_list = [slice(a, min(a + size, n)) for a in range(0, n, size)]
    twists = [(rows, make(rows)) for rows in rows_list]
    if len(twists) == 1:
        return twists[0][1]

    def twist(x: Tensor, t: Tensor) -> Any:
        out = [tw(x[rows], t[rows]) for rows, tw in twists]
        return type(out[0])(*(torch.cat(vals) for vals in zip(*out, strict=True)))

    return twist


def group_size(observations: int, particles: int, batch_size: int | None) -> int:
    """Observations per SMC run so that ``group * particles <= batch_size`` (at least one)."""
    if batch_size is None:
        return observations
    return max(1, min(observations, batch_size // particles))


def _normalise(log_w: Tensor) -> Tensor:
    return log_w - torch.logsumexp(log_w, -1, keepdim=True)


def _gather(p: Swarm, idx: Tensor) -> Swarm:
    """The particles ``idx`` ``(G, K)`` (indices within each group), equal weights."""
    g, k = idx.shape
    flat = (idx + k * torch.arange(g, device=idx.device)[:, None]).reshape(-1)
    terms = type(p.terms)(*(v[flat] for v in p.terms))
    return Swarm(p.x[flat], terms, torch.full_like(p.log_w, -math.log(k)))


def _resample_where(
    p: Swarm, need: Tensor, generator: torch.Generator | None
) -> tuple[Swarm, Tensor]:
    """Resample the groups where ``need`` ``(G,)`` holds; the others keep particles and weights."""
    g, k = p.log_w.shape
    keep = torch.arange(k, device=p.log_w.device).expand(g, k)
    idx = torch.where(need[:, None], systematic_resample(p.log_w, generator), keep)
    new = _gather(p, idx)
    return new._replace(log_w=torch.where(need[:, None], new.log_w, p.log_w)), need


def _propose(
    sde: SDE, p: Swarm, t: Tensor, h: Tensor, noise: Tensor, free: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The twisted Euler–Maruyama proposal of the free coordinates (all when ``free`` is None).

    ``p(x' | x) = N(mu, v I)`` with ``mu = x + [f x - g^2 score] h`` and ``v = g^2 |h|``;
    ``q = N(mu + v g, v I)`` on the free coordinates with ``g = grad log p~_t(y | x)``. Returns
    ``x'`` (free coordinates proposed, the others ``mu``), ``mu``, ``v`` and
    ``log p(x'_free | x) - log q(x'_free | x) = -sqrt(v) <g, z> - v |g|^2 / 2`` per particle.
    """
    reverse = sde.reverse(lambda _x, _t: p.terms.score)
    mu = p.x + reverse.drift(p.x, t) * h
    var = reverse.diffusion(t) ** 2 * -h
    g = p.terms.grad if free is None else torch.where(free, p.terms.grad, 0.0)
    x_new = mu + var * g + torch.sqrt(var) * noise
    n = x_new.shape[0]
    gz = (g * noise).reshape(n, -1).sum(1)
    log_ratio = -torch.sqrt(var) * gz - 0.5 * var * g.reshape(n, -1).pow(2).sum(1)
    return x_new, mu, var, log_ratio


def _sweep(
    move: Callable[[Swarm, int], Swarm],
    p: Swarm,
    steps: int,
    ess_threshold: float,
    generator: torch.Generator | None,
    on_step: Callable[[int, Swarm], None] | None = None,
) -> tuple[Swarm, Tensor, Tensor]:
    """``steps`` moves (each weighting, the last one finishing), resampling groups between them.

    Returns the final swarm (normalised, not resampled), the ESS history ``(steps, G)`` and the
    resampling counts ``(G,)``; no value is read back to the host. ``on_step(i, swarm)`` sees
    the weighted particles after move ``i``.
    """
    hist, count = [], torch.zeros(p.log_w.shape[0], dtype=torch.long, device=p.log_w.device)
    for i in range(steps):
        p = move(p, i)
        p = p._replace(log_w=_normalise(p.log_w))
        if on_step is not None:
            on_step(i, p)
        hist.append(effective_sample_size(p.log_w))
        if i < steps - 1:
            p, did = _resample_where(p, hist[-1] < ess_threshold, generator)
            count += did
    return p, torch.stack(hist), count


def check_start(sde: SDE, times: Tensor) -> None:
    """``ValueError`` unless ``s(t) > 0`` at the first time (one host read per run).

    The Euler–Maruyama kernel of the SMC moves is undefined where ``s(T) = 0`` (the infinite
    drift of a flow path's endpoint).
    """
    if not bool(sde.scale(times[0]) > 0):
        raise ValueError(
            f"SMC starts at t = {float(times[0]):g} where s(t) = 0 ({sde}); start below T with "
            f"a tensor schedule, e.g. schedule=torch.linspace(0.999, sde.eps, steps + 1)"
        )


def _start(twist: Twist, x: Tensor, t0: Tensor, groups: int) -> Swarm:
    """Initial particles weighted by the twist at ``T`` (Wu et al. 2023, Alg. 1, line 2)."""
    terms = twist(x, t0.expand(x.shape[0]))
    return Swarm(x, terms, _normalise(terms.log_twist.reshape(groups, -1)))


def run_linear(
    sde: SDE,
    twist: Twist,
    log_likelihood: Callable[[Tensor], Tensor],
    x: Tensor,
    times: Tensor,
    groups: int,
    ess_threshold: float,
    generator: torch.Generator | None,
) -> tuple[Swarm, Tensor, Tensor]:
    """TDS for noisy measurements: ``x`` ``(G*K, ...)`` prior draws moved through ``times``.

    The last step multiplies by ``p(y | x0) / p~_eps(y | x0)`` with the true log-likelihood
    ``log_likelihood(x) -> (G*K,)`` (constants shared by the particles dropped).
    """
    last = times.numel() - 2
    check_start(sde, times)

    def move(p: Swarm, i: int) -> Swarm:
        t, t_next = times[i], times[i + 1]
        noise = torch.randn(p.x.shape, generator=generator, device=p.x.device, dtype=p.x.dtype)
        x_new, _, _, log_ratio = _propose(sde, p, t, t_next - t, noise, None)
        nxt = twist(x_new, t_next.expand(x_new.shape[0]))
        inc = log_ratio + nxt.log_twist - p.terms.log_twist
        if i == last:
            inc = inc + log_likelihood(x_new) - nxt.log_twist
        return Swarm(x_new, nxt, p.log_w + inc.reshape(p.log_w.shape))

    with trusted_times():  # the schedule built every t: no per-step read of its values
        p0 = _start(twist, x, times[0], groups)
        return _sweep(move, p0, last + 1, ess_threshold, generator)


def _bridge(sde: SDE, u: Tensor, y: Tensor, t: Tensor, t_next: Tensor, noise: Tensor) -> Tensor:
    """A draw of the forward path at ``t_next < t`` given its value ``u`` at ``t`` and ``x0 = y``.

    ``x_t / s(t) = x0 + W(sigma(t)^2)`` for a Brownian motion ``W``, so given ``W(sigma^2) = w``
    the bridge value ``W(sigma'^2)`` is ``N(w sigma'^2 / sigma^2, sigma'^2 (sigma^2 - sigma'^2)
    / sigma^2)``.
    """
    s, s_next = sde.scale(t), sde.scale(t_next)
    v, v_next = sde.sigma(t) ** 2, sde.sigma(t_next) ** 2
    w = u / s - y
    std = torch.sqrt(v_next * (v - v_next) / v)
    return s_next * (y + w * (v_next / v) + std * noise)


def path_start(sde: SDE, y: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """The known values' forward path at ``t``: ``s(t) (y + sigma(t) z)``."""
    return sde.scale(t) * (y + sde.sigma(t) * noise)


def run_masked(
    sde: SDE,
    twist: Twist,
    y: Tensor,
    known: Tensor,
    times: Tensor,
    particles: int,
    ess_threshold: float,
    generator: torch.Generator | None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Swarm, Tensor, Tensor]:
    """SMC for known values ``x0[known] = y``: ``G`` observations ``y``/``known`` ``(G, ...)``.

    Every observation draws one forward path ``u_t`` of its values (:func:`_bridge`, from
    ``T`` down); its ``K`` particles hold ``u_t`` at the known coordinates and propose the
    missing ones. Returns the swarm at ``times[-1]`` (its terms hold the score there).
    ``callback`` gets ``{"i", "t", "x", "log_w"}`` (particles, log-weights ``(G, K)``) after each
    step.
    """
    g, k = y.shape[0], particles
    check_start(sde, times)
    free = ~known.repeat_interleave(k, 0)
    y_rep = y.repeat_interleave(k, 0)

    def randn(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    u = path_start(sde, y, times[0], randn(y))
    x0 = sde.prior_sample(y_rep.shape, generator=generator, device=y.device, dtype=y.dtype)
    state = {"u": u}

    def move(p: Swarm, i: int) -> Swarm:
        t, t_next = times[i], times[i + 1]
        state["u"] = _bridge(sde, state["u"], y, t, t_next, randn(y))
        u_next = state["u"].repeat_interleave(k, 0)
        x_new, mu, var, log_ratio = _propose(sde, p, t, t_next - t, randn(p.x), free)
        x_new = torch.where(free, x_new, u_next)
        resid = torch.where(free, 0.0, u_next - mu).reshape(x_new.shape[0], -1)
        log_path = -0.5 * resid.pow(2).sum(1) / var
        nxt = twist(x_new, t_next.expand(x_new.shape[0]))
        inc = log_path + log_ratio + nxt.log_twist - p.terms.log_twist
        return Swarm(x_new, nxt, p.log_w + inc.reshape(g, k))

    with trusted_times():
        p0 = _start(twist, torch.where(free, x0, u.repeat_interleave(k, 0)), times[0], g)
        on_step = None
        if callback is not None:

            def on_step(i: int, p: Swarm) -> None:
                callback({"i": i, "t": times[i + 1], "x": p.x, "log_w": p.log_w})

        return _sweep(move, p0, times.numel() - 1, ess_threshold, generator, on_step)


def _draw(p: Swarm, values: Tensor, draws: int, generator: torch.Generator | None) -> Tensor:
    """``draws`` equally weighted draws ``(draws, G, ...)`` of ``values`` ``(G*K, ...)``.

    One systematic resampling of ``draws`` points per group's final weights.
    """
    g, k = p.log_w.shape
    idx = systematic_resample(p.log_w, generator, draws)  # (G, draws)
    flat = (idx + k * torch.arange(g, device=idx.device)[:, None]).T.reshape(-1)
    return values[flat].reshape(draws, g, *values.shape[1:])


GroupRun = Callable[[slice], tuple[Swarm, Tensor, Tensor, Tensor]]
"""``run(rows) -> (swarm, ess_history, resampled, values)``: SMC for the observations ``rows``;
``values`` ``(G*K, ...)`` are what each final particle reports (its state, or its completion)."""


def solve_in_groups(
    run: GroupRun,
    observations: int,
    particles: int,
    *,
    batch_size: int | None,
    draws: int,
    generator: torch.Generator | None,
    nfe: int,
) -> PosteriorSamples:
    """Run SMC over the observations in groups of :func:`group_size` and collect the draws."""
    g = group_size(observations, particles, batch_size)
    outs = []
    for a in range(0, observations, g):
        p, hist, count, values = run(slice(a, min(a + g, observations)))
        w = p.log_w.exp()
        parts = values.reshape(*p.log_w.shape, *values.shape[1:])
        ess = 1.0 / (w * w).sum(-1)
        outs.append((_draw(p, values, draws, generator), parts, p.log_w, ess, count, hist))
    cols = list(zip(*outs, strict=True))
    drawn, parts, log_w, ess, count, hist = (
        torch.cat(v, dim=1 if j in (0, 5) else 0) for j, v in enumerate(cols)
    )
    samples = drawn[0] if draws == 1 else drawn
    return PosteriorSamples(samples, ess, "smc", nfe, parts, log_w, count, hist)


def linear_smc(
    make_twist: Callable[[Tensor], Twist],
    sde: SDE,
    y: Tensor,
    op: Callable[[Tensor], Tensor],
    shape: tuple[int, ...],
    noise_var: float,
    times: Tensor,
    *,
    particles: int,
    batch_size: int | None,
    draws: int,
    ess_threshold: float,
    generator: torch.Generator | None,
) -> PosteriorSamples:
    """TDS for ``B = shape[0]`` noisy measurements ``y`` ``(B or 1, ...)``, ``K`` particles each.

    ``make_twist(y_rows)`` builds the twist of particles whose measurements are ``y_rows``
    (``(1, ...)`` when all share one); ``op`` is ``A`` on events of ``shape[1:]``.
    """
    k = particles

    def run(rows: slice) -> tuple[Swarm, Tensor, Tensor, Tensor]:
        g = rows.stop - rows.start
        y_g = y if y.shape[0] == 1 else y[rows].repeat_interleave(k, 0)
        twist = chunked(
            lambda r: make_twist(y_g if y_g.shape[0] == 1 else y_g[r]), g * k, batch_size
        )
        x = sde.prior_sample(
            (g * k, *shape[1:]), generator=generator, device=y.device, dtype=y.dtype
        )
        log_lik = partial(gaussian_log_likelihood, y=y_g, op=op, noise_var=noise_var)
        p, hist, count = run_linear(sde, twist, log_lik, x, times, g, ess_threshold, generator)
        return p, hist, count, p.x

    return solve_in_groups(
        run, shape[0], k, batch_size=batch_size, draws=draws, generator=generator, nfe=times.numel()
    )


def gaussian_log_likelihood(
    x: Tensor, y: Tensor, op: Callable[[Tensor], Tensor], noise_var: float
) -> Tensor:
    """``log N(y; A x, sigma_n^2 I)`` per sample ``(B,)``, up to the constant shared by all."""
    resid = (y - op(x)).reshape(x.shape[0], -1)
    return -0.5 * resid.pow(2).sum(1) / noise_var
