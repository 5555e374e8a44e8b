"""Multistep exponential-integrator updates of DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095).

In the scaled variable ``x_hat = x / s`` with ``lambda = -log sigma`` (half the log-SNR), the
probability-flow ODE has the exact solution (DPM-Solver++ eq. 9 with ``alpha = 1``)

    x_hat(lambda_t) = (sigma_t / sigma_s) x_hat(lambda_s)
                      + sigma_t int_{lambda_s}^{lambda_t} e^lambda D(x_hat, lambda) d lambda.

The multistep updates expand ``D`` in ``lambda`` around the current point with finite differences
of the previous denoiser outputs: order 1 is DDIM, order 2 is DPM-Solver++(2M), order 3 is
DPM-Solver++(3M). With ``eta > 0`` the same expansion integrates the SDE of the ``beta`` family
(Karras et al. 2022, eq. 6) with ``beta = eta``-scaled noise (SDE-DPM-Solver++ for
``eta = 1``):

    x_hat_t = (sigma_t / sigma_s) e^{-eta h} x_hat_s + (1 - e^{-(1+eta) h}) D_0
              + phi_2((1+eta) h) D_1 - 2 phi_3((1+eta) h) D_2
              + sigma_t sqrt(1 - e^{-2 eta h}) z,

with ``h = lambda_t - lambda_s``, ``phi_2(u) = (e^{-u} - 1)/u + 1``,
``phi_3(u) = phi_2(u)/u - 1/2``, ``D_1 ~ h D'`` and ``D_2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 D''/2``
the divided differences of the denoiser outputs in units of ``h``. The exact weight of
``h^2 D''`` is ``-phi_3`` (``int_0^h e^{u-h} u^2/2 du = -h^2 phi_3(h)``), hence the factor 2
on ``D_2``.

The second-order term has two forms (diffusers' ``solver_type``): ``"heun"``, the weight
``phi_2(u)`` above (the exact integral of the linear interpolant of ``D``; the default here), and
``"midpoint"``, the weight ``(1 - e^{-u}) / 2`` (DPM-Solver++(2M) as written in Lu et al. 2022,
Algorithm 2; diffusers' default). Both are second order; they differ by ``O(h^3)`` per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "phi2",
    "phi3",
    "SOLVER_TYPES",
    "first_difference_weight",
    "History",
    "multistep_update",
    "corrector_update",
]

SOLVER_TYPES = ("heun", "midpoint")
"""The forms of the second-order multistep term (:func:`first_difference_weight`)."""


def phi2(u: Tensor) -> Tensor:
    """``phi_2(u) = (e^{-u} - 1) / u + 1``, the weight of the first divided difference."""
    return torch.expm1(-u) / u + 1.0


def phi3(u: Tensor) -> Tensor:
    """``phi_3(u) = phi_2(u) / u - 1/2``, minus the weight of ``h^2 D'' / 2``."""
    return phi2(u) / u - 0.5


def first_difference_weight(u: Tensor, solver_type: str = "heun") -> Tensor:
    """The weight of the first divided difference ``D_1`` in a second-order multistep step.

    ``"heun"``: ``phi_2(u)``; ``"midpoint"``: ``(1 - e^{-u}) / 2`` (module docstring).
    """
    if solver_type == "midpoint":
        return -0.5 * torch.expm1(-u)
    return phi2(u)


class History:
    """The latest (at most three) denoiser outputs ``D`` and their ``lambda``, newest last."""

    def __init__(self) -> None:
        self.dens: list[Tensor] = []
        self.lams: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.dens)

    def push(self, den: Tensor, lam: Tensor) -> None:
        """Add ``(D, lambda)``, dropping the oldest pair beyond three."""
        self.dens, self.lams = (self.dens + [den])[-3:], (self.lams + [lam])[-3:]


def multistep_update(
    x_hat: Tensor,
    lam: Tensor,
    lam_next: Tensor,
    dens: list[Tensor],
    lams: list[Tensor],
    order: int,
    eta: float,
    noise: Tensor | None,
    solver_type: str = "heun",
) -> Tensor:
    """One multistep DPM-Solver++ step of ``order`` from ``lam`` to ``lam_next`` (module formula).

    ``dens``/``lams`` hold the latest denoiser outputs and their ``lambda`` (newest last, at
    least ``order`` of them); ``noise`` is the standard normal draw of the SDE variant;
    ``solver_type`` the form of the order-2 term (``"heun"`` or ``"midpoint"``; order 3 has one
    form).
    """
    h = lam_next - lam
    u = (1.0 + eta) * h
    x_next = torch.exp(-h - eta * h) * x_hat - torch.expm1(-u) * dens[-1]
    if order >= 2:
        r0 = (lams[-1] - lams[-2]) / h
        d1_0 = (dens[-1] - dens[-2]) / r0
        if order == 2:
            x_next = x_next + first_difference_weight(u, solver_type) * d1_0
        else:
            r1 = (lams[-2] - lams[-3]) / h
            d1_1 = (dens[-2] - dens[-3]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x_next = x_next + phi2(u) * d1 - 2.0 * phi3(u) * d2
    if eta > 0 and noise is not None:
        x_next = x_next + torch.exp(-lam_next) * torch.sqrt(-torch.expm1(-2 * eta * h)) * noise
    return x_next


def corrector_update(
    x_hat: Tensor,
    lam: Tensor,
    lam_next: Tensor,
    den_next: Tensor,
    dens: list[Tensor],
    lams: list[Tensor],
    order: int,
) -> Tensor:
    """UniC-style corrector (Zhao et al. 2023, UniPC): redo the step with the new point's ``D``.

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
        return x_next + phi2(h) * q1
    r0 = (lams[-1] - lams[-2]) / h
    q0 = (dens[-1] - dens[-2]) / r0
    d1 = (r0 * q1 + q0) / (1.0 + r0)  # quadratic through -r0, 0, 1: f'(0) and f''(0)
    d2 = 2.0 * (q1 - q0) / (1.0 + r0)
    return x_next + phi2(h) * d1 - phi3(h) * d2
