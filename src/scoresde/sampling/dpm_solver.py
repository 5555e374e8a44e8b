"""DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095), ODE and SDE variants, any SDE.

In the scaled variable ``x_hat = x / s`` with ``lambda = -log sigma`` (half the log-SNR), the
probability-flow ODE has the exact solution (DPM-Solver++ eq. 9 with ``alpha = 1``)

    x_hat(lambda_t) = (sigma_t / sigma_s) x_hat(lambda_s)
                      + sigma_t int_{lambda_s}^{lambda_t} e^lambda D(x_hat, lambda) d lambda.

The multistep solvers expand ``D`` in ``lambda`` around the current point with finite
differences of the previous denoiser outputs: order 1 is DDIM, order 2 is DPM-Solver++(2M),
order 3 is DPM-Solver++(3M). With ``eta > 0`` the same expansion integrates the SDE of the
``beta`` family with ``beta = eta``-scaled noise (SDE-DPM-Solver++ for ``eta = 1``):

    x_hat_t = (sigma_t / sigma_s) e^{-eta h} x_hat_s + (1 - e^{-(1+eta) h}) D_0
              + phi_2((1+eta) h) D_1 - 2 phi_3((1+eta) h) D_2
              + sigma_t sqrt(1 - e^{-2 eta h}) z,

with ``h = lambda_t - lambda_s``, ``phi_2(u) = (e^{-u} - 1)/u + 1``,
``phi_3(u) = phi_2(u)/u - 1/2``, ``D_1 ~ h D'`` and ``D_2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 D''/2``
the divided differences of the denoiser outputs in units of ``h``. The exact weight of
``h^2 D''`` is ``-phi_3`` (``int_0^h e^{u-h} u^2/2 du = -h^2 phi_3(h)``), hence the factor 2
on ``D_2``; with weight 1 the third-order method converges only at order 2 (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_nonnegative
from .base import Context, register
from .edm import denoiser, grid_coefficients

__all__ = ["dpm_solver", "dpm_solver_sde", "dpm_solver_step"]


def _phi2(u: Tensor) -> Tensor:
    return torch.expm1(-u) / u + 1.0


def _phi3(u: Tensor) -> Tensor:
    return _phi2(u) / u - 0.5


def dpm_solver_step(
    x_hat: Tensor,
    lam: Tensor,
    lam_next: Tensor,
    dens: list[Tensor],
    lams: list[Tensor],
    order: int,
    eta: float,
    noise: Tensor | None,
) -> Tensor:
    """One multistep DPM-Solver++ step of ``order`` from ``lam`` to ``lam_next``.

    ``dens``/``lams`` hold the latest denoiser outputs and their ``lambda`` (newest last).
    """
    h = lam_next - lam
    u = (1.0 + eta) * h
    x_next = torch.exp(-h - eta * h) * x_hat - torch.expm1(-u) * dens[-1]
    if order >= 2:
        r0 = (lams[-1] - lams[-2]) / h
        d1_0 = (dens[-1] - dens[-2]) / r0
        if order == 2:
            x_next = x_next + _phi2(u) * d1_0
        else:
            r1 = (lams[-2] - lams[-3]) / h
            d1_1 = (dens[-2] - dens[-3]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x_next = x_next + _phi2(u) * d1 - 2.0 * _phi3(u) * d2
    if eta > 0 and noise is not None:
        x_next = x_next + torch.exp(-lam_next) * torch.sqrt(-torch.expm1(-2 * eta * h)) * noise
    return x_next


def _check_order(order: int) -> int:
    if order not in (1, 2, 3) or isinstance(order, bool):
        raise ValueError(f"order must be 1, 2 or 3 for DPM-Solver++, got {order!r}")
    return order


def _midpoint_start(
    ctx: Context, x_hat: Tensor, t: Tensor, t_next: Tensor, den: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A second-order first step (DPM-Solver++(2S), midpoint in ``lambda``; 2 NFE).

    A first-order first step leaves an ``O(h^2)`` global error (small in practice). Returns
    the new state and the midpoint's ``(D, lambda)``, which join the history so the
    next step can already be of order 3.
    """
    sde = ctx.sde
    lam, lam_next = -torch.log(sde.sigma(t)), -torch.log(sde.sigma(t_next))
    h = lam_next - lam
    lam_mid = lam + 0.5 * h
    t_mid = sde.t_from_log_snr(2.0 * lam_mid)
    x_mid = dpm_solver_step(x_hat, lam, lam_mid, [den], [lam], 1, 0.0, None)
    den_mid = denoiser(ctx, x_mid, t_mid)
    d1 = (den_mid - den) / 0.5  # divided difference in units of h, taken forward
    x_next = torch.exp(-h) * x_hat - torch.expm1(-h) * den + _phi2(h) * d1
    return x_next, den_mid, lam_mid


def corrector_step(
    x_hat: Tensor,
    lam: Tensor,
    lam_next: Tensor,
    den_next: Tensor,
    dens: list[Tensor],
    lams: list[Tensor],
    order: int,
) -> Tensor:
    """UniC-style corrector (Zhao et al. 2023): redo the step with the new point's ``D``.

    After the predictor reaches ``lam_next``, the denoiser there (needed by the next step
    anyway, so no extra NFE) joins the interpolation: ``D`` is fitted through the points at
    ``lam_next``, ``lam`` (and one older point for ``order=3``), in units of ``h``, and the
    exact exponential integral of that polynomial gives the corrected state (one order
    higher than the predictor that used the same history).
    """
    h = lam_next - lam
    x_next = torch.exp(-h) * x_hat - torch.expm1(-h) * dens[-1]
    q1 = den_next - dens[-1]  # forward difference to the new point (offset 1 in units of h)
    if order < 3 or len(dens) < 2:
        return x_next + _phi2(h) * q1
    r0 = (lams[-1] - lams[-2]) / h
    q0 = (dens[-1] - dens[-2]) / r0
    d1 = (r0 * q1 + q0) / (1.0 + r0)  # quadratic through -r0, 0, 1: f'(0) and f''(0)
    d2 = 2.0 * (q1 - q0) / (1.0 + r0)
    return x_next + _phi2(h) * d1 - _phi3(h) * d2


def _run(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    order: int,
    eta: float,
    lower_order_final: bool,
    singlestep_start: bool = False,
    corrector: bool = False,
) -> Tensor:
    order = _check_order(order)
    eta = check_nonnegative("eta", eta)
    sc, sg = grid_coefficients(ctx, times)
    x_hat = x / sc[0]
    lam_all = list((-torch.log(torch.stack(sg))).unbind())
    n = times.numel() - 1
    dens: list[Tensor] = []
    lams: list[Tensor] = []
    den_next: Tensor | None = None
    for i in range(n):
        den = denoiser(ctx, x_hat, times[i], sc[i], sg[i]) if den_next is None else den_next
        den_next = None
        dens, lams = (dens + [den])[-3:], (lams + [lam_all[i]])[-3:]
        if i == 0 and singlestep_start and order == 3 and eta == 0 and n > 1:
            x_hat, den_mid, lam_mid = _midpoint_start(ctx, x_hat, times[0], times[1], den)
            dens, lams = dens + [den_mid], lams + [lam_mid]
        else:
            k = min(order, len(dens))
            if lower_order_final:
                k = min(k, n - i)
            noise = ctx.randn_like(x_hat) if eta > 0 else None
            x_pred = dpm_solver_step(x_hat, lam_all[i], lam_all[i + 1], dens, lams, k, eta, noise)
            if corrector and eta == 0 and i < n - 1:
                den_next = denoiser(ctx, x_pred, times[i + 1], sc[i + 1], sg[i + 1])
                x_pred = corrector_step(
                    x_hat, lam_all[i], lam_all[i + 1], den_next, dens, lams, min(k + 1, order)
                )
            x_hat = x_pred
        if ctx.active:
            ctx.report(i, times[i + 1], sc[i + 1] * x_hat, denoised=den)
    return sc[-1] * x_hat


@register(
    "dpm_solver",
    order=3,
    stochastic=False,
    denoise=True,
    schedule="logsnr",
    options=("order", "lower_order_final", "singlestep_start", "corrector"),
    description="DPM-Solver++ multistep (order 1-3) in log-SNR, any SDE",
)
def dpm_solver(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = False,
    singlestep_start: bool = False,
    corrector: bool = False,
) -> Tensor:
    """DPM-Solver++(``order``M) on the probability-flow ODE (1 NFE a step).

    Options:
        order: 1 (DDIM), 2 (2M) or 3 (3M); the first steps use lower orders until enough
            history exists.
        lower_order_final: also lower the order over the last steps (``min(order, steps
            left)``), as the reference implementation does for few steps.
        singlestep_start: for ``order=3``, take the first step with the second-order
            single-step DPM-Solver++(2S) (one extra NFE in total), so that every step is of
            order >= 2. The first-order warm-up step's ``O(h^2)`` error is asymptotically
            second order, but tiny in practice (the denoiser barely changes near ``T``).
        corrector: add the UniC-style corrector (:func:`corrector_step`, no extra NFE): the
            denoiser at the predicted point corrects the step it ends (UniPC's idea on top of
            the DPM-Solver++ predictor).
    """
    return _run(ctx, x, times, order, 0.0, lower_order_final, singlestep_start, corrector)


@register(
    "dpm_solver_sde",
    order=2,
    stochastic=True,
    denoise=True,
    schedule="logsnr",
    options=("order", "eta", "lower_order_final"),
    description="SDE-DPM-Solver++ multistep (eta = 1 noise), any SDE",
)
def dpm_solver_sde(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    order: int = 2,
    eta: float = 1.0,
    lower_order_final: bool = False,
) -> Tensor:
    """SDE-DPM-Solver++(``order``M): the stochastic variant (``eta = 1`` by default)."""
    return _run(ctx, x, times, order, eta, lower_order_final)
