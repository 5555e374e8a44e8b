"""The first step from ``T`` of a flow path, where ``s(T) = 0`` (zero terminal SNR).

At ``T`` of :class:`~scoresde.RectifiedFlow` (or any interpolant with ``alpha(T) = 0``) the prior
``N(0, std(T)^2 I)`` is exact, but ``sigma(T)``, ``f(T)`` and ``g(T)^2`` are infinite and the
score is ``-x / std(T)^2`` whatever the data: Tweedie's ``E[x0 | x_T]`` comes from the score
function's ``denoise(x, t)`` (:class:`~scoresde.sde.ScoreWithDenoiser`). Every sampler whose
grid starts there takes that one step in closed form (:meth:`scoresde.ReverseSDE.prior_step`,
the limit ``sigma -> inf`` of its exponential-integrator step) or evaluates the probability-flow
drift there in closed form (:meth:`scoresde.ReverseSDE.prior_drift`), and runs its own steps
from the second grid point on. Whether a run starts there is read once per run.
"""

from __future__ import annotations

from torch import Tensor

from ..sde import EulerStep, denoiser_of
from .base import Context

__all__ = ["starts_at_prior", "prior_denoise", "prior_step", "NO_DENOISER"]

NO_DENOISER = (
    "{sde} has s(T) = 0: at t = T the score is -x / std(T)^2 whatever the data, and the "
    "first step needs E[x0 | x_T] from score_fn.denoise(x, t); pass a ScoreModel's score_fn(), "
    "a GaussianMixture's score_fn(sde), scoresde.parameterize.from_velocity(v, sde) or a "
    "scoresde.sde.ScoreWithDenoiser, or start below T with a tensor schedule"
)
"""The error when a score function without ``denoise`` must start at ``T`` of a flow path."""


def starts_at_prior(ctx: Context, times: Tensor) -> bool:
    """Whether the grid starts where ``s(t) = 0`` (one host read per run, then memoised)."""
    if "starts_at_prior" not in ctx.memo:
        ctx.memo["starts_at_prior"] = ctx.sde.zero_terminal_snr and not bool(
            ctx.sde.scale(times[0]) != 0
        )
    return bool(ctx.memo["starts_at_prior"])


def prior_denoise(ctx: Context, x: Tensor, t: Tensor) -> Tensor:
    """``E[x0 | x_t = x]`` at a time where ``s(t) = 0``, from ``score_fn.denoise`` (one NFE)."""
    denoise = denoiser_of(ctx.score_fn)
    if denoise is None:
        raise ValueError(NO_DENOISER.format(sde=ctx.sde))
    ctx.nfe += 1
    return denoise(x, t.expand(x.shape[0]))


def prior_step(
    ctx: Context, x: Tensor, t: Tensor, t_next: Tensor, probability_flow: bool
) -> tuple[EulerStep, Tensor]:
    """The closed-form step from ``t`` (where ``s(t) = 0``) to ``t_next``, and ``D`` (one NFE).

    :meth:`scoresde.ReverseSDE.prior_step`: ``x' = s' D + std' x / std(t)`` (as the mean, std 0)
    for the probability flow; for the reverse SDE the Gaussian ``N(s' D, std'^2 I)`` as
    ``(mean, std)``. Also returns ``D = E[x0 | x_t = x]``.
    """
    den = prior_denoise(ctx, x, t)
    return ctx.reverse(probability_flow).prior_step(x, t, t_next, den), den
