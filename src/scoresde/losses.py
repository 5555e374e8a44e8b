"""Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7) with its weightings.

``L = E_t lambda(t) E_{x0} E_{x_t | x0} || s(x_t, t) - grad log p(x_t | x0) ||^2`` with
``grad log p(x_t | x0) = -z / std`` for ``x_t = s(t) x0 + std(t) z`` and ``t ~ U(eps, T)``.

Weightings ``lambda(t)`` (:data:`LAMBDAS`): ``"sigma2"`` (``std^2``, the default; balances the
noise levels), ``"likelihood"`` (``g(t)^2``, which makes the loss bound the KL, Song et al.
2021b, Thm. 1) and ``"none"`` (``1``).

:func:`dsm_per_sample` is the one implementation of the loss. The public :func:`dsm_loss` checks
its arguments and calls it; so does :meth:`scoresde.parameterize.ScoreModel.loss`, and the
trainer calls it through the unchecked ``ScoreModel._loss``, which reads no tensor values.

:func:`flow_matching_loss` is the conditional flow-matching loss (Lipman et al. 2023, eq. 9;
Liu et al. 2023, eq. 1) of a velocity model on any affine path ``x_t = s x0 + std z``; it is the
``natural`` loss of a ``ScoreModel`` with ``parameterization="flow"`` (a weighting of DSM,
``lambda = 1 / out^2``, written on the velocity so it stays finite where ``s(T) = 0``).
Training times (:func:`sample_training_times`): uniform, EDM's log-normal noise levels, or
logit-normal ``t = sigmoid(m + s n)`` (Esser et al. 2024, eq. 19).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ._checks import check_choice, check_generator, check_output, check_positive, check_tensor
from .sde import SDE, ScoreFn, bcast

__all__ = ["dsm_loss", "flow_matching_loss", "WEIGHTINGS", "EPS_TRAIN", "TIME_METHODS"]

Weighting = Callable[[SDE, Tensor, Tensor], Tensor]
"""``lambda(sde, t, std) -> (B,)``: a loss weighting at times ``t`` with marginal stds ``std``."""


def _sigma2(sde: SDE, t: Tensor, std: Tensor) -> Tensor:
    return std**2


def _likelihood(sde: SDE, t: Tensor, std: Tensor) -> Tensor:
    return sde.g2(t)


def _none(sde: SDE, t: Tensor, std: Tensor) -> Tensor:
    return torch.ones_like(std)


LAMBDAS: dict[str, Weighting] = {"sigma2": _sigma2, "likelihood": _likelihood, "none": _none}
"""The weightings ``lambda(t)`` by name: ``std^2``, ``g(t)^2`` (Song et al. 2021b), ``1``."""
WEIGHTINGS = tuple(LAMBDAS)
"""The names of :data:`LAMBDAS`."""
REDUCTIONS = ("mean", "sum", "none")
"""How a loss reduces its per-sample values over the batch."""
EPS_TRAIN = 1e-5
"""The default smallest training time ``eps`` (as in Song et al. 2021's reference code)."""
TIME_METHODS = ("uniform", "edm", "logit_normal")
"""The training-time distributions of :func:`sample_training_times`."""


def dsm_per_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    weighting: str | Weighting,
) -> Tensor:
    """Per-sample DSM loss ``lambda(t) || s(x_t, t) + z / std ||^2`` ``(B,)``, unchecked.

    ``x_t = s(t) x0 + std(t) noise`` (Song et al. 2021, eq. 7). ``t`` must be a ``(B,)`` tensor in
    ``[0, T]`` on ``x0``'s device, ``noise`` shaped like ``x0``; ``weighting`` is a name in
    :data:`LAMBDAS` or a :data:`Weighting`. Nothing here reads tensor values, so on an
    accelerator it runs without host synchronisation.
    """
    lam = LAMBDAS[weighting] if isinstance(weighting, str) else weighting
    std = sde.std(t)
    std_x = bcast(std, x0)
    x_t = bcast(sde.scale(t), x0) * x0 + std_x * noise
    residual = score_fn(x_t, t) + noise / std_x
    return lam(sde, t, std) * residual.flatten(1).pow(2).sum(1)


def reduce_batch(per: Tensor, reduction: str) -> Tensor:
    """Reduce per-sample values ``(B,)`` by ``reduction`` (one of :data:`REDUCTIONS`)."""
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


def sample_training_times(
    sde: SDE,
    n: int,
    *,
    method: Literal["uniform", "edm", "logit_normal"] = "uniform",
    eps: float = EPS_TRAIN,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw ``n`` training times in ``[eps, T]`` by ``method`` (:data:`TIME_METHODS`).

    * ``"uniform"``: ``U(eps, T)``;
    * ``"edm"``: ``log sigma ~ N(p_mean, p_std^2)`` mapped to a time with ``sde.sigma_inv`` and
      clamped to ``[eps, T]`` (Karras et al. 2022, Table 1, "training");
    * ``"logit_normal"``: ``t = eps + (T - eps) sigmoid(logit_mean + logit_std n)``,
      ``n ~ N(0, 1)`` (Esser et al. 2024, eq. 19: more weight on the middle of a flow path).
    """
    check_choice("method", method, TIME_METHODS)
    _check_eps(sde, eps)
    if device is None and generator is not None:
        device = generator.device
    dtype = dtype or torch.get_default_dtype()
    if method == "uniform":
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return eps + (sde.T - eps) * u
    if method == "logit_normal":
        check_positive("logit_std", logit_std)
        n_ = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return eps + (sde.T - eps) * torch.sigmoid(logit_mean + logit_std * n_)
    log_sigma = p_mean + p_std * torch.randn(n, generator=generator, device=device, dtype=dtype)
    t = sde.sigma_inv(torch.exp(log_sigma))
    return t.clamp(min=eps, max=sde.T)


def training_inputs(
    sde: SDE,
    x0: Tensor,
    t: Tensor | None,
    noise: Tensor | None,
    *,
    eps: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Check ``x0`` ``(B, ...)`` and return the times ``(B,)`` and noise of a DSM loss on it.

    Given ``t`` and ``noise`` are validated; missing ones are drawn from ``generator``:
    ``t ~ U(eps, T)`` (:func:`sample_training_times`) and ``noise ~ N(0, I)``.
    """
    check_tensor("x0", x0, min_dim=2)
    check_generator("generator", generator)
    _check_eps(sde, eps)
    if t is None:
        b = x0.shape[0]
        t = sample_training_times(
            sde, b, eps=eps, generator=generator, device=x0.device, dtype=x0.dtype
        )
    else:
        t = sde.time(t, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif check_tensor("noise", noise).shape != x0.shape:
        raise ValueError(
            f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
        )
    return t, noise


def _check_eps(sde: SDE, eps: float) -> None:
    if not 0 <= eps < sde.T:
        raise ValueError(f"eps must lie in [0, T) = [0, {sde.T}), got {eps}")


def dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    *,
    weighting: Literal["sigma2", "likelihood", "none"] = "sigma2",
    reduction: Literal["mean", "sum", "none"] = "mean",
    eps: float = EPS_TRAIN,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Denoising score-matching loss of ``score_fn`` on the data batch ``x0``.

    Per sample, ``lambda(t) || s(x_t, t) + z / std ||^2`` summed over the data dimensions
    (:func:`dsm_per_sample`); then ``reduction`` over the batch (``"none"`` returns the ``(B,)``
    values). ``t`` and ``noise`` may be given (for tests and variance reduction); else
    ``t ~ U(eps, T)`` and ``z ~ N(0, I)`` are drawn from ``generator``.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduction", reduction, REDUCTIONS)
    t, noise = training_inputs(sde, x0, t, noise, eps=eps, generator=generator)

    def checked(x: Tensor, tt: Tensor) -> Tensor:
        return check_output("score_fn", score_fn(x, tt), x)

    return reduce_batch(dsm_per_sample(checked, sde, x0, t, noise, weighting), reduction)


def flow_matching_loss(
    velocity_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
    eps: float = EPS_TRAIN,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow matching ``|| v(x_t, t) - (s'(t) x0 + std'(t) z) ||^2`` per sample.

    ``x_t = s(t) x0 + std(t) z`` is the SDE's interpolant and ``s' x0 + std' z`` its
    conditional velocity (Lipman et al. 2023, eq. 9 and 15; Liu et al. 2023, eq. 1: ``z - x0``
    for :class:`~scoresde.RectifiedFlow`); its minimiser is ``E[dx_t/dt | x_t]``, the
    probability-flow drift. Summed over the data dimensions, then ``reduction`` over the batch.
    ``t`` (default ``U(eps, T)``) and ``noise`` (default ``N(0, I)``; pass a re-paired noise for
    an optimal-transport coupling, :func:`scoresde.train.coupling.ot_pair`) may be given.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    t, noise = training_inputs(sde, x0, t, noise, eps=eps, generator=generator)
    x_t = bcast(sde.scale(t), x0) * x0 + bcast(sde.std(t), x0) * noise
    target = bcast(sde.scale_deriv(t), x0) * x0 + bcast(sde.std_deriv(t), x0) * noise
    v = check_output("velocity_fn", velocity_fn(x_t, t), x0)
    return reduce_batch((v - target).flatten(1).pow(2).sum(1), reduction)
