"""The noise-level view shared by the EDM, DDIM and DPM-Solver++ samplers.

In the scaled variable ``x_hat = x / s(t)`` every affine SDE has the same probability-flow ODE in
its noise level ``sigma`` (Karras et al. 2022, eq. 4 with ``s = 1``; eq. 3 for the denoiser):

    d x_hat / d sigma = (x_hat - D(x_hat; sigma)) / sigma,
    D(x_hat; sigma) = x_hat + s sigma^2 score(s x_hat, t(sigma))   (Tweedie's denoiser).

The SDE enters only through the score's time argument, so these samplers run on VE, VP, sub-VP,
EDM and user affine SDEs alike, stepping ``x_hat`` on the grid ``sigma(times)``. This module holds
what they share: the denoiser, the grid's coefficients and the loop that scales, steps and
reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sde import SDE
from .base import Context
from .endpoint import prior_step, starts_at_prior

__all__ = ["denoiser", "SigmaGrid", "SigmaStep", "run_in_sigma"]


def denoiser(
    ctx: Context, x_hat: Tensor, t: Tensor, s: Tensor | None = None, sig: Tensor | None = None
) -> Tensor:
    """``D(x_hat; sigma(t)) = x_hat + s sigma^2 score(s x_hat, t)``: Tweedie's posterior mean.

    :meth:`scoresde.SDE.tweedie` in the scaled variable ``x_hat = x / s``; ``s = s(t)`` and
    ``sig = sigma(t)`` may be passed in when known.
    """
    if s is None:
        s = ctx.sde.scale(t)
    if sig is None:
        sig = ctx.sde.sigma(t)
    return x_hat + s * sig**2 * ctx.score(s * x_hat, t)


@dataclass(frozen=True)
class SigmaGrid:
    """A time grid with its scale ``s(t_i)`` and noise level ``sigma(t_i)`` (0-d tensors)."""

    times: Tensor
    s: list[Tensor]
    sigma: list[Tensor]

    @classmethod
    def of(cls, sde: SDE, times: Tensor) -> SigmaGrid:
        """Compute the coefficients of ``times`` once, for the whole run."""
        return cls(times, list(sde.scale(times).unbind()), list(sde.sigma(times).unbind()))

    @property
    def steps(self) -> int:
        """The number of intervals."""
        return self.times.numel() - 1

    def lambdas(self) -> list[Tensor]:
        """``lambda_i = -log sigma_i`` (half the log-SNR), DPM-Solver's time variable."""
        return list((-torch.log(torch.stack(self.sigma))).unbind())

    def coefficients(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(s_i, sigma_i, s_{i+1}, sigma_{i+1})`` of step ``i``."""
        return self.s[i], self.sigma[i], self.s[i + 1], self.sigma[i + 1]

    def denoise(self, ctx: Context, i: int, x_hat: Tensor) -> Tensor:
        """``D(x_hat; sigma_i)`` at grid point ``i`` (one score evaluation)."""
        return denoiser(ctx, x_hat, self.times[i], self.s[i], self.sigma[i])


SigmaStep = Callable[[int, Tensor], tuple[Tensor, Tensor]]
"""``step(i, x_hat) -> (x_hat at t_{i+1}, the denoiser output D reported for step i)``."""


def run_in_sigma(ctx: Context, x: Tensor, grid: SigmaGrid, step: SigmaStep) -> Tensor:
    """Scale ``x`` to ``x_hat``, apply ``step`` on every interval of ``grid``, scale back.

    After step ``i`` the state ``s_{i+1} x_hat`` is reported with ``denoised=D``. A grid that
    starts where ``s = 0`` (``sigma = inf``: ``T`` of a flow path) takes its first step in
    closed form, ``x_hat_1 = D + sigma_1 x / std(T)`` (the limit of Euler in sigma, DDIM and
    DPM-Solver++(1), :mod:`.endpoint`), and ``step`` runs from the second interval on.
    """
    start = 0
    if starts_at_prior(ctx, grid.times):
        (x, _), den = prior_step(ctx, x, grid.times[0], grid.times[1], probability_flow=True)
        if ctx.active:
            ctx.report(0, grid.times[1], x, denoised=den)
        start = 1
    x_hat = x / grid.s[start]
    for i in range(start, grid.steps):
        x_hat, den = step(i, x_hat)
        if ctx.active:
            ctx.report(i, grid.times[i + 1], grid.s[i + 1] * x_hat, denoised=den)
    return grid.s[-1] * x_hat
