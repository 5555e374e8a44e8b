"""DPM-Solver++ with the data's Gaussian part integrated exactly: ``fast``'s solver.

In the scaled variable ``x_hat = x / s`` and ``lambda = -log sigma`` the probability-flow ODE is
``dx_hat/dlambda = D(x_hat; sigma) - x_hat``. DPM-Solver++ (Lu et al. 2022) integrates the
linear part ``-x_hat`` exactly and interpolates ``D`` in ``lambda``. Its large first steps are
where a few-step sampler decides which mode a sample goes to, and there ``D`` is nearly the
denoiser of a Gaussian, ``m + A (x_hat - m)`` with ``A = C (C + sigma^2 I)^{-1}`` (``m``, ``C``:
the data's mean and covariance), which changes fast with ``sigma``. This solver splits
``D = m + A y + R`` (``y = x_hat - m``) and integrates the Gaussian part exactly: along a
direction of variance ``v`` (``a = v / (v + sigma^2)``)

    dy/dlambda = -(1 - a) y + R,   Phi(lambda) = sqrt(v + e^{-2 lambda}),
    y(lambda_1) = Phi(lambda_1)/Phi(lambda_0) y(lambda_0)
                  + int_{lambda_0}^{lambda_1} Phi(lambda_1)/Phi(l) R(l) dl,

with ``R`` interpolated through the latest nodes (Lagrange in ``lambda``; 2M/3M predictor and
the UniC-style corrector with the new node, as :mod:`.dpm_solver`). For Gaussian data the
result is exact in any number of steps; with ``v = 0`` it is DPM-Solver++ itself (the same
update, to rounding). ``m`` and ``C`` (rank-``k`` plus isotropic, :mod:`.data_gaussian`) come
from the model's noise profile. A direction is split only while ``sigma^2 >= cut * v``: below
its own scale a direction's denoiser is no longer the data-wide Gaussian's (the local modes'
widths rule there), and plain DPM-Solver++ is the better model. On random Gaussian mixtures
(seeds 100-175 of ``benchmarks/samplers_general.py``) this turned most of the mode-mass losses
of 5-NFE sampling into wins (``docs/design.md``).

With ``order=3`` the run leaves its last node's ``D`` for the final step to noise level 0,
which then extrapolates ``D`` in ``sigma^2`` (:meth:`~.base.Context.final_denoise`; on the same
tuning seeds: NFE 10 62 -> 65 wins, NFE 20 unchanged; with ``order=2``, at most 5 steps, the
previous node lies 3-5x higher in ``sigma`` and the extrapolation lost 62 -> 60 at NFE 5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._quadrature import lagrange_weights
from .base import Context
from .data_gaussian import DataGaussian
from .sigma import SigmaGrid, run_in_sigma

__all__ = ["split_dpm_solver", "SPLIT_CUT", "split_coefficients", "node_sets"]

SPLIT_CUT = 4.0
"""A direction of variance ``v`` is split while ``sigma^2 >= SPLIT_CUT * v`` (tuned: 1-4 tie at
NFE 5; 4 is better at NFE 10; 16 and "always" lose, ``benchmarks/RESULTS.md``)."""


def split_coefficients(
    variances: np.ndarray, sigma0: float, sigma1: float, nodes: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The step ``sigma0 -> sigma1``: ``Phi(lambda_1)/Phi(lambda_0)`` and the nodes' weights.

    Per variance (the columns): the exact factor of the Gaussian part and the weights
    ``int Phi(lambda_1)/Phi(l) L_j(l) dl`` of ``R`` at ``nodes`` (rows), module formula.
    """
    v = variances[:, None]
    ratio = np.sqrt((variances + sigma1**2) / (variances + sigma0**2))
    lam0, lam1 = -math.log(sigma0), -math.log(sigma1)

    def weight(ls: np.ndarray) -> np.ndarray:
        return np.sqrt((v + sigma1**2) / (v + np.exp(-2.0 * ls)))

    return ratio, lagrange_weights(nodes, lam0, lam1, weight)


class _Node:
    """A node of the history: ``D - m`` and ``y`` (flattened) and their projections on ``U``.

    ``pden`` may be given when ``D`` was projected already (the corrector's new node is the
    next step's first, with the corrected ``y``).
    """

    def __init__(
        self, den: Tensor, y: Tensor, gauss: DataGaussian, pden: Tensor | None = None
    ) -> None:
        self.den, self.y = den - gauss.mean, y
        self.pden = self.den @ gauss.basis if pden is None else pden
        self.py = y @ gauss.basis


def node_sets(steps: int, order: int) -> list[tuple[list[int], list[int]]]:
    """Per step ``i``: the grid nodes of the predictor and of the corrector.

    The predictor interpolates through the last ``k = min(order, i + 1)`` nodes, the corrector
    through the last ``min(k + 1, order) - 1`` of them and the new node ``i + 1``.
    """
    out = []
    for i in range(steps):
        k = min(order, i + 1)
        pred = list(range(i - k + 1, i + 1))
        kc = min(k + 1, order)
        out.append((pred, [*pred[len(pred) - (kc - 1) :], i + 1]))
    return out


class _SplitRun:
    """The grid's coefficients (host float64, sent to the device once) and the history."""

    def __init__(
        self, gauss: DataGaussian, sigmas: list[float], order: int, cut: float, like: Tensor
    ) -> None:
        self.gauss = gauss
        self.nodes = node_sets(len(sigmas) - 1, order)
        var = np.array(gauss.variances(), dtype=np.float64)
        lams = [-math.log(s) for s in sigmas]
        table = np.zeros((len(self.nodes), 2, 7, len(var)))
        for i, sets in enumerate(self.nodes):
            s0, s1 = sigmas[i], sigmas[i + 1]
            active = np.where(s0 * s0 >= cut * var, var, 0.0)
            for p, nodes in enumerate(sets):
                ratio, w = split_coefficients(active, s0, s1, [lams[j] for j in nodes])
                table[i, p, 0] = ratio
                for r, (wj, j) in enumerate(zip(w, nodes, strict=True)):
                    table[i, p, 1 + 2 * r] = wj
                    table[i, p, 2 + 2 * r] = -wj * active / (active + sigmas[j] ** 2)
        self.table = torch.as_tensor(table, dtype=like.dtype, device=like.device)
        self.hist: dict[int, _Node] = {}

    def step(self, i: int, corrector: bool, new: _Node | None = None) -> Tensor:
        """``y`` at node ``i + 1`` from node ``i`` (in the history): predictor or corrector.

        ``w_j R_j = w_j (D_j - m) - w_j a_j y_j`` per variance: every term is diagonal in the
        Gaussian's basis, so the whole update is one :meth:`DataGaussian.combine`.
        """
        nodes = self.nodes[i][int(corrector)]
        us, projs = [self.hist[i].y], [self.hist[i].py]
        for j in nodes:
            n = new if j == i + 1 and new is not None else self.hist[j]
            us += [n.den, n.y]
            projs += [n.pden, n.py]
        return self.gauss.combine(self.table[i, int(corrector), : len(us)], us, projs)


def split_dpm_solver(
    ctx: Context,
    x: Tensor,
    times: Tensor,
    gauss: DataGaussian,
    *,
    order: int,
    cut: float = SPLIT_CUT,
) -> Tensor:
    """DPM-Solver++(``order``M) + UniC corrector with ``gauss``'s part exact (module docstring).

    One ``D`` per step, as :func:`.dpm_solver.dpm_solver` with ``corrector=True``: ``D`` at
    the predicted point corrects the step and is the next step's ``D`` (the last step is not
    corrected). The grid must start at a finite noise level (not at ``T`` of a flow path).
    """
    grid = SigmaGrid.of(ctx.sde, times)
    sigmas = torch.stack(grid.sigma).cpu().double().tolist()  # the one host read of the run
    if not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError("the split solver needs finite, positive noise levels on its grid")
    run = _SplitRun(gauss, sigmas, order, cut, x)
    shape = x.shape
    den_next: Tensor | None = None
    new: _Node | None = None  # the previous corrector's new node: its D is this step's

    def step(i: int, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal den_next, new
        y = x_hat.reshape(shape[0], -1) - gauss.mean
        den = grid.denoise(ctx, i, x_hat) if den_next is None else den_next
        pden = None if new is None else new.pden
        run.hist[i] = _Node(den.reshape(shape[0], -1), y, gauss, pden)
        run.hist.pop(i - 3, None)
        y_pred = run.step(i, corrector=False)
        x_pred = (y_pred + gauss.mean).reshape(shape)
        if i == grid.steps - 1:
            if order == 3:  # the final step to sigma = 0 extrapolates D from here (Context)
                ctx.previous_denoised = (den, grid.sigma[i])
            return x_pred, den
        den_next = grid.denoise(ctx, i + 1, x_pred)
        new = _Node(den_next.reshape(shape[0], -1), y_pred, gauss)
        y_corr = run.step(i, corrector=True, new=new)
        return (y_corr + gauss.mean).reshape(shape), den

    return run_in_sigma(ctx, x, grid, step)
