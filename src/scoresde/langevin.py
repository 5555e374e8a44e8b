"""Langevin MCMC for a density known up to a constant: ULA, MALA and a tempered (annealed) variant.

Seed 003: the SDE ``dX = 1/2 grad log p(X) dt + dW`` leaves ``p`` invariant, so a density known up
to its normalising constant (``p ∝ exp(-U)``) can be sampled with no training. With the time
rescaled so that the step is ``h``, its Euler–Maruyama discretisation is the unadjusted Langevin
algorithm (ULA, Roberts & Tweedie 1996)::

    x' = x + h grad log p(x) + sqrt(2 h) z,        z ~ N(0, I).

ULA is biased by O(h). MALA uses the same move as a proposal ``q(x' | x)`` and accepts it with the
Metropolis–Hastings probability ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, which makes ``p``
exactly invariant for every ``h``. Every chain of the batch is independent: gradients come from one
autograd call on the summed log-density (the chains do not interact) and the accept/reject is
drawn per chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_choice, check_int, check_tensor
from .sde import bcast

__all__ = ["LangevinResult", "sample", "sample_annealed"]

LogProbFn = Callable[[Tensor], Tensor]
"""``log_prob_fn(x) -> (B,)``: an unnormalised log-density, one value per chain."""

METHODS = ("ula", "mala")


@dataclass
class LangevinResult:
    """Outcome of a Langevin run."""

    samples: Tensor
    """Final state of every chain, shaped like ``x_init``."""
    chain: Tensor | None
    """States kept every ``keep_every`` steps after ``burn_in``: ``(S, B, ...)``, or ``None``."""
    acceptance: Tensor | None
    """MALA: fraction of accepted proposals per chain ``(B,)``; ``None`` for ULA."""
    acceptance_mean: float | None
    """MALA: ``acceptance.mean()``; ``None`` for ULA."""
    step_size: Tensor
    """The step size used by each chain ``(B,)`` (at the last level for the annealed variant)."""


def _resolve_log_prob(log_prob_fn: LogProbFn | None, energy_fn: LogProbFn | None) -> LogProbFn:
    if (log_prob_fn is None) == (energy_fn is None):
        raise ValueError(
            "give exactly one of log_prob_fn (log p up to a constant) or energy_fn "
            "(U with p ∝ exp(-U))"
        )
    if log_prob_fn is not None:
        if not callable(log_prob_fn):
            raise TypeError("log_prob_fn must be callable: log_prob_fn(x) -> (B,) tensor")
        return log_prob_fn
    if not callable(energy_fn):
        raise TypeError("energy_fn must be callable: energy_fn(x) -> (B,) tensor")
    energy = energy_fn

    def log_prob(x: Tensor) -> Tensor:
        return -energy(x)

    return log_prob


def _log_prob_and_grad(log_prob_fn: LogProbFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(x)`` per chain ``(B,)`` and ``grad log p(x)`` by autograd (detached)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        lp = log_prob_fn(xr)
        if lp.shape != (x.shape[0],):
            raise ValueError(
                f"log_prob_fn must return one value per chain, shape "
                f"({x.shape[0]},); got {tuple(lp.shape)}"
            )
        (grad,) = torch.autograd.grad(lp.sum(), xr)
    return lp.detach(), grad.detach()


def _step_sizes(step_size: float | Tensor, x: Tensor) -> Tensor:
    h = torch.as_tensor(step_size, device=x.device, dtype=x.dtype)
    if h.dim() == 0:
        h = h.expand(x.shape[0])
    if h.shape != (x.shape[0],):
        raise ValueError(
            f"step_size must be a number or a ({x.shape[0]},) tensor of per-chain "
            f"step sizes; got shape {tuple(h.shape)}"
        )
    if not bool(torch.isfinite(h).all() & (h > 0).all()):
        raise ValueError("step_size must be finite and > 0")
    return h.clone()


def _sq(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).pow(2).sum(1)


def _run(
    log_prob_fn: LogProbFn,
    x: Tensor,
    h: Tensor,
    steps: int,
    mala: bool,
    generator: torch.Generator | None,
    burn_in: int,
    keep_every: int,
    chain: list[Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Make ``steps`` ULA/MALA moves of every chain; return the state and accept counts ``(B,)``."""
    lp, grad = _log_prob_and_grad(log_prob_fn, x)
    accepted = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    hb = bcast(h, x)
    for i in range(steps):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        mean = x + hb * grad
        prop = mean + torch.sqrt(2.0 * hb) * z
        lp_p, grad_p = _log_prob_and_grad(log_prob_fn, prop)
        if mala:
            # log q(x'|x) = -|x' - x - h g(x)|^2 / (4h); forward residual is sqrt(2h) z
            log_q_fwd = -0.5 * _sq(z)
            log_q_rev = -_sq(x - prop - hb * grad_p) / (4.0 * h)
            log_alpha = lp_p - lp + log_q_rev - log_q_fwd
            u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            ok = (torch.log(u) < log_alpha) & torch.isfinite(lp_p)
            accepted += ok.to(x.dtype)
            okb = bcast(ok, x)
            x = torch.where(okb, prop, x)
            lp = torch.where(ok, lp_p, lp)
            grad = torch.where(okb, grad_p, grad)
        else:
            x, lp, grad = prop, lp_p, grad_p
        if chain is not None and i >= burn_in and (i - burn_in) % keep_every == keep_every - 1:
            chain.append(x.clone())
    return x, accepted


def sample(
    log_prob_fn: LogProbFn | None = None,
    x_init: Tensor | None = None,
    *,
    energy_fn: LogProbFn | None = None,
    step_size: float | Tensor,
    steps: int,
    method: str = "ula",
    generator: torch.Generator | None = None,
    burn_in: int = 0,
    keep_every: int = 0,
) -> LangevinResult:
    """Run ``B`` independent Langevin chains on ``p ∝ exp(log_prob_fn)`` (or ``exp(-energy_fn)``).

    ULA: ``x' = x + h grad log p(x) + sqrt(2h) z`` (Roberts & Tweedie 1996; bias O(h)).
    MALA: the same proposal, accepted per chain with probability
    ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, ``q(x' | x) = N(x + h grad log p(x), 2h I)``;
    ``p`` is then exactly invariant. Gradients are taken by autograd.

    Args:
        log_prob_fn: ``log p(x)`` up to a constant, returning ``(B,)``; or give ``energy_fn``.
        x_init: ``(B, ...)`` starting states, one per chain (device and dtype are followed).
        energy_fn: the energy ``U(x)`` with ``p ∝ exp(-U)``, returning ``(B,)``.
        step_size: ``h``, a number or a ``(B,)`` tensor of per-chain step sizes.
        steps: number of moves.
        method: ``"ula"`` or ``"mala"``.
        generator: source of the proposal noise and the accept/reject uniforms.
        burn_in: moves discarded before ``chain`` starts recording.
        keep_every: record the state every this many moves after ``burn_in`` (0: no chain).

    Returns:
        A :class:`LangevinResult` (final samples, optional chain, MALA acceptance rates).

    """
    lp_fn = _resolve_log_prob(log_prob_fn, energy_fn)
    method = check_choice("method", method, METHODS)
    x = check_tensor("x_init", x_init).detach().clone()
    h = _step_sizes(step_size, x)
    steps = check_int("steps", steps, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    keep_every = check_int("keep_every", keep_every, 0)
    chain: list[Tensor] | None = [] if keep_every else None
    x, acc = _run(lp_fn, x, h, steps, method == "mala", generator, burn_in, keep_every, chain)
    return _result(x, chain, acc / steps if method == "mala" else None, h)


def _result(
    x: Tensor, chain: list[Tensor] | None, rate: Tensor | None, h: Tensor
) -> LangevinResult:
    stacked = torch.stack(chain) if chain else None
    mean = float(rate.mean()) if rate is not None else None
    return LangevinResult(x, stacked, rate, mean, h)


def sample_annealed(
    log_prob_fn: LogProbFn | None = None,
    x_init: Tensor | None = None,
    *,
    energy_fn: LogProbFn | None = None,
    betas: Sequence[float] | Tensor,
    step_size: float | Tensor,
    steps_per_level: int,
    method: str = "mala",
    generator: torch.Generator | None = None,
) -> LangevinResult:
    """Annealed (tempered) Langevin: run the chains on ``p^beta`` for increasing ``beta`` up to 1.

    At inverse temperature ``beta`` the target ``p_beta ∝ p^beta`` is ``1/beta`` times wider, so
    the step there is ``step_size / beta`` (the same move relative to the target's scale, as in
    annealed Langevin dynamics, Song & Ermon 2019, where the step follows the noise level). Hot
    levels let chains cross between modes; the last level (``beta = 1``) is the target itself.
    With ``method="mala"`` each level is exactly invariant for its ``p_beta``; the fraction of
    chains in each mode at the end reflects how well the schedule equilibrated (slow enough
    annealing gives the target's masses).

    Args:
        log_prob_fn: ``log p(x)`` up to a constant, returning ``(B,)``; or give ``energy_fn``.
        energy_fn: the energy ``U(x)`` with ``p ∝ exp(-U)``, returning ``(B,)``.
        x_init: ``(B, ...)`` starting states.
        betas: increasing inverse temperatures in ``(0, 1]`` ending with ``1``.
        step_size: step ``h`` at ``beta = 1`` (number or ``(B,)``).
        steps_per_level: moves at each level.
        method: ``"ula"`` or ``"mala"``.
        generator: source of randomness.

    Returns:
        A :class:`LangevinResult`; ``acceptance`` is MALA's rate over all levels.

    """
    lp_fn = _resolve_log_prob(log_prob_fn, energy_fn)
    method = check_choice("method", method, METHODS)
    x = check_tensor("x_init", x_init).detach().clone()
    h = _step_sizes(step_size, x)
    steps_per_level = check_int("steps_per_level", steps_per_level, 1)
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 1 or not bool(((b > 0) & (b <= 1)).all()) or not bool((b.diff() > 0).all()):
        raise ValueError("betas must be strictly increasing inverse temperatures in (0, 1]")
    if not math.isclose(float(b[-1]), 1.0):
        raise ValueError(f"betas must end with 1 (the target itself), got {float(b[-1])}")
    acc = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for beta in b.tolist():

        def tempered(v: Tensor, beta: float = beta) -> Tensor:
            return beta * lp_fn(v)

        x, a = _run(tempered, x, h / beta, steps_per_level, method == "mala", generator, 0, 0, None)
        acc += a
    rate = acc / (steps_per_level * b.numel()) if method == "mala" else None
    return _result(x, None, rate, h)
