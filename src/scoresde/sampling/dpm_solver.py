"""DPM-Solver++ multistep samplers (Lu et al. 2022, arXiv:2211.01095), ODE and SDE, any SDE.

They step the scaled state in ``lambda = -log sigma`` with the updates of :mod:`.multistep`:

* DPM-Solver++(2M)/(3M) on the probability-flow ODE: one denoiser call, one multistep update;
* SDE-DPM-Solver++: the same update of the ``eta``-family SDE plus fresh noise;
* with the UniC-style corrector (Zhao et al. 2023): the denoiser at the predicted point, which
  the next step needs anyway, corrects the step it ends;
* optionally a second-order single-step DPM-Solver++(2S) first step for the 3M method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice, check_nonnegative
from .base import Context, register
from .multistep import SOLVER_TYPES, History, corrector_update, multistep_update, phi2
from .sigma import SigmaGrid, denoiser, run_in_sigma

__all__ = ["dpm_solver", "dpm_solver_sde"]


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
    x_mid = multistep_update(x_hat, lam, lam_mid, [den], [lam], 1, 0.0, None)
    den_mid = denoiser(ctx, x_mid, t_mid)
    d1 = (den_mid - den) / 0.5  # divided difference in units of h, taken forward
    x_next = torch.exp(-h) * x_hat - torch.expm1(-h) * den + phi2(h) * d1
    return x_next, den_mid, lam_mid


class _Solver:
    """One DPM-Solver++ run: the grid in ``lambda`` and the history of denoiser outputs."""

    def __init__(
        self,
        ctx: Context,
        times: Tensor,
        order: int,
        lower_order_final: bool,
        start_2s: bool,
        solver_type: str = "heun",
    ) -> None:
        self.ctx, self.grid = ctx, SigmaGrid.of(ctx.sde, times)
        self.lam = self.grid.lambdas()
        self.order, self.lower_order_final = _check_order(order), lower_order_final
        self.solver_type = check_choice("solver_type", solver_type, SOLVER_TYPES)
        self.start_2s = start_2s and self.order == 3 and self.grid.steps > 1
        self.hist = History()

    def observe(self, i: int, x_hat: Tensor, den: Tensor | None = None) -> Tensor:
        """``D`` at grid point ``i`` (evaluated unless given) joins the history."""
        if den is None:
            den = self.grid.denoise(self.ctx, i, x_hat)
        self.hist.push(den, self.lam[i])
        return den

    def order_at(self, i: int) -> int:
        """The order of step ``i``: lower while the history is short (and, if asked, at the end)."""
        k = min(self.order, len(self.hist))
        return min(k, self.grid.steps - i) if self.lower_order_final else k

    def first_2s(self, x_hat: Tensor, den: Tensor) -> Tensor:
        """Step 0 by DPM-Solver++(2S); the midpoint's ``D`` joins the history."""
        x_next, den_mid, lam_mid = _midpoint_start(
            self.ctx, x_hat, self.grid.times[0], self.grid.times[1], den
        )
        self.hist.push(den_mid, lam_mid)
        return x_next

    def predict(self, i: int, x_hat: Tensor, k: int, eta: float = 0.0) -> Tensor:
        """The multistep update of order ``k`` over step ``i`` (with noise when ``eta > 0``)."""
        noise = self.ctx.randn_like(x_hat) if eta > 0 else None
        h = self.hist
        lam, lam_next = self.lam[i], self.lam[i + 1]
        return multistep_update(
            x_hat, lam, lam_next, h.dens, h.lams, k, eta, noise, self.solver_type
        )

    def correct(self, i: int, x_hat: Tensor, den_next: Tensor, k: int) -> Tensor:
        """Step ``i`` redone with ``D`` at its predicted end point (order ``k``)."""
        h = self.hist
        return corrector_update(x_hat, self.lam[i], self.lam[i + 1], den_next, h.dens, h.lams, k)


def _multistep(ctx: Context, x: Tensor, solver: _Solver, eta: float = 0.0) -> Tensor:
    """DPM-Solver++(kM), or SDE-DPM-Solver++(kM) for ``eta > 0``: one ``D`` per step."""

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        den = solver.observe(i, x_hat)
        if i == 0 and solver.start_2s:
            return solver.first_2s(x_hat, den), den
        return solver.predict(i, x_hat, solver.order_at(i), eta), den

    return run_in_sigma(ctx, x, solver.grid, step)


def _multistep_corrected(ctx: Context, x: Tensor, solver: _Solver) -> Tensor:
    """DPM-Solver++(kM) predictor + UniC corrector of order ``k + 1``: still one ``D`` per step.

    ``D`` at the predicted point corrects the step and is reused as the next step's ``D``
    (the last step is not corrected: its ``D`` would cost an extra evaluation).
    """
    den_next: Tensor | None = None  # D at the current point, from the previous correction

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal den_next
        den = solver.observe(i, x_hat, den_next)
        if i == 0 and solver.start_2s:
            return solver.first_2s(x_hat, den), den
        k = solver.order_at(i)
        x_pred = solver.predict(i, x_hat, k)
        if i == solver.grid.steps - 1:
            return x_pred, den
        den_next = solver.grid.denoise(ctx, i + 1, x_pred)
        return solver.correct(i, x_hat, den_next, min(k + 1, solver.order)), den

    return run_in_sigma(ctx, x, solver.grid, step)


@register("dpm_solver", order=(1, 2, 3), stochastic=False, denoise=True, schedule="logsnr")
def dpm_solver(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = False,
    singlestep_start: bool = False,
    corrector: bool = False,
    solver_type: str = "heun",
) -> Tensor:
    """DPM-Solver++ multistep in log-SNR on the PF ODE, optional UniC corrector (1 NFE a step).

    DPM-Solver++(``order``M), order 1 to 3.

    Options:
        order: 1 (DDIM), 2 (2M) or 3 (3M); the first steps use lower orders until enough
            history exists.
        lower_order_final: also lower the order over the last steps (``min(order, steps
            left)``), as the reference implementation does for few steps.
        singlestep_start: for ``order=3``, take the first step with the second-order
            single-step DPM-Solver++(2S) (one extra NFE in total), so that every step is of
            order >= 2. The first-order warm-up step's ``O(h^2)`` error is asymptotically
            second order, but tiny in practice (the denoiser barely changes near ``T``).
        corrector: add the UniC-style corrector (:func:`.multistep.corrector_update`, no extra
            NFE): the denoiser at the predicted point corrects the step it ends (UniPC's idea
            on top of the DPM-Solver++ predictor).
        solver_type: the form of the order-2 multistep term (:mod:`.multistep`): ``"heun"``
            (default, the ``phi_2`` weight; diffusers' ``solver_type="heun"``) or
            ``"midpoint"`` (Lu et al. 2022, Algorithm 2; diffusers' default). With
            ``order=2``, ``schedule=m.times(scheduler.timesteps)`` and ``denoise=True`` either
            reproduces diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
            solver_order=2)`` of that ``solver_type`` step for step
            (:func:`scoresde.interop.from_diffusers`).
    """
    solver = _Solver(ctx, times, order, lower_order_final, singlestep_start, solver_type)
    if corrector:
        return _multistep_corrected(ctx, x, solver)
    return _multistep(ctx, x, solver)


@register("dpm_solver_sde", order=(1, 2, 3), stochastic=True, denoise=True, schedule="logsnr")
def dpm_solver_sde(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    *,
    order: int = 2,
    eta: float = 1.0,
    lower_order_final: bool = False,
    solver_type: str = "heun",
) -> Tensor:
    """SDE-DPM-Solver++ multistep in log-SNR: the stochastic variant, eta = 1 by default.

    Options:
        order: 1, 2 or 3, as for ``dpm_solver``.
        eta: the noise scale ``>= 0`` (0: DPM-Solver++ on the probability-flow ODE).
        lower_order_final: lower the order over the last steps.
        solver_type: ``"heun"`` or ``"midpoint"``, as for ``dpm_solver``.
    """
    eta = check_nonnegative("eta", eta)
    solver = _Solver(ctx, times, order, lower_order_final, False, solver_type)
    return _multistep(ctx, x, solver, eta)
