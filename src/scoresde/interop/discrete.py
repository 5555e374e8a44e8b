"""The VP SDE of a discrete DDPM noise schedule ``alphas_cumprod`` (Ho et al. 2020).

A discrete-time diffusion model is trained on the Markov chain ``q(x_k | x_{k-1}) =
N(sqrt(1 - beta_k) x_{k-1}, beta_k I)`` with ``alpha_bar_k = prod_{j <= k} (1 - beta_j)``
(diffusers' ``alphas_cumprod[k]``, ``k = 0 .. N-1``). It becomes a continuous-time SDE with

* the time of timestep ``k`` at ``t_k = (k + 1) / N`` (so the clean data ``alpha_bar = 1``, the
  empty product, sits at ``t = 0`` and the last timestep at ``t = T = 1``);
* ``log alpha_bar(t)`` piecewise linear in ``t`` between those knots.

Why piecewise-linear ``log alpha_bar``: it is the VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t))
dw`` whose ``beta(t) = -N log(1 - beta_k)`` is constant on each interval, and the exact transition
of that SDE over one interval is ``N(sqrt(1 - beta_k) x, beta_k I)``: the DDPM chain itself. So
the marginal at ``t_k`` is ``alpha_bar_k`` exactly (to float64 rounding), ``f = -beta / 2`` and
``g^2 = beta`` are the model's own per-step rates, and every coefficient, its derivative and the
inverse ``t(sigma)`` are closed forms (a table look-up, no autograd, no bisection). It is the
interpolation DPM-Solver uses for discrete-time models (Lu et al. 2022, ``NoiseScheduleVP
('discrete')``, with ``t_k = (k + 1) / N``). The network is called at the fractional timestep
``k(t) = N t - 1`` between knots (:meth:`DiscreteVPSDE.timestep`); timesteps in ``[-1, 0)``
(below the first noisy level, used only by likelihoods with ``eps < 1/N``) are extrapolated.
diffusers' Karras-sigma schedulers interpolate ``log sigma`` in the timestep instead; within one
interval the two differ by ``O(beta_k^2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..sde import SDE

__all__ = ["DiscreteVPSDE"]


def _check_alphas_cumprod(alphas_cumprod: Tensor | Sequence[float]) -> Tensor:
    """``alphas_cumprod`` as a float64 CPU vector, checked: ``1 > a_0 > a_1 > ... > 0``."""
    if isinstance(alphas_cumprod, Tensor):
        ab = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64).flatten()
    else:
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
    ok = ab.numel() >= 2 and bool(torch.isfinite(ab).all())
    ok = ok and bool((ab > 0).all() & (ab < 1).all()) and bool((ab.diff() < 0).all())
    if not ok:
        raise ValueError(
            "alphas_cumprod must hold >= 2 values with 1 > a_0 > a_1 > ... > 0 (every beta_k "
            f"in (0, 1)); got {ab.numel()} values in [{float(ab.min()) if ab.numel() else 0}, "
            f"{float(ab.max()) if ab.numel() else 0}]"
        )
    return ab


class DiscreteVPSDE(SDE):
    """The VP SDE whose marginal at ``t_k = (k + 1) / N`` is a discrete ``alpha_bar_k``.

    ``s(t) = sqrt(alpha_bar(t))``, ``sigma(t) = sqrt(1 / alpha_bar(t) - 1)`` with ``log
    alpha_bar`` piecewise linear in ``t`` through ``(0, 0)`` and ``((k + 1) / N, log
    alpha_bar_k)``: on each interval the VP SDE with constant ``beta``, whose one-interval
    transition is the DDPM step ``q(x_k | x_{k-1})`` (module docstring). Prior ``N(0, I)``,
    ``T = 1``, ``eps = 1 / N`` (timestep 0, where diffusers' samplers stop).

    Args:
        alphas_cumprod: ``alpha_bar_k``, ``k = 0 .. N-1`` (diffusers' ``scheduler.alphas_cumprod``),
            strictly decreasing in ``(0, 1)``.
    """

    def __init__(self, alphas_cumprod: Tensor | Sequence[float]) -> None:
        ab = _check_alphas_cumprod(alphas_cumprod)
        self.alphas_cumprod = ab
        """``alpha_bar_k`` in float64 (as given)."""
        self.num_train_timesteps = int(ab.numel())
        """``N``, the number of training timesteps."""
        self.T = 1.0
        self.eps = 1.0 / self.num_train_timesteps
        log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(ab)])
        self._minus_log = -log_ab  # -log alpha_bar at t_j = j / N, j = 0..N: increasing
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _params(self) -> dict[str, object]:
        return {"num_train_timesteps": self.num_train_timesteps}

    @property
    def prior_std(self) -> float:
        """1: the prior is the standard normal (diffusers' ``init_noise_sigma``)."""
        return 1.0

    # ------------------------------------------------------------------------------------------
    def _table(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        """``(-log alpha_bar at the knots, its increments)`` on ``ref``'s device and dtype."""
        dtype = ref.dtype if ref.is_floating_point() else torch.float64
        key = (ref.device, dtype)
        if key not in self._tables:
            m = self._minus_log.to(device=ref.device, dtype=dtype)
            self._tables[key] = (m, m.diff())
        return self._tables[key]

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(-log alpha_bar(t), its slope d/dt)``: the interval of ``t`` (ends extrapolated)."""
        m, dm = self._table(t)
        n = self.num_train_timesteps
        u = t * n
        j = torch.floor(u).clamp(0, n - 1).long()
        return m[j] + (u - j.to(u.dtype)) * dm[j], n * dm[j]

    def minus_log_alpha_bar(self, t: Tensor) -> Tensor:
        """``-log alpha_bar(t)``, piecewise linear in ``t`` (0 at ``t = 0``)."""
        return self._segment(t)[0]

    def scale(self, t: Tensor) -> Tensor:
        """``s(t) = sqrt(alpha_bar(t))``."""
        return torch.exp(-0.5 * self.minus_log_alpha_bar(t))

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sqrt(1 / alpha_bar(t) - 1)``."""
        return torch.sqrt(torch.expm1(self.minus_log_alpha_bar(t)))

    def std(self, t: Tensor) -> Tensor:
        """``sqrt(1 - alpha_bar(t))`` (computed without cancellation)."""
        return torch.sqrt(-torch.expm1(-self.minus_log_alpha_bar(t)))

    def beta(self, t: Tensor) -> Tensor:
        """The continuous rate ``beta(t) = -d log alpha_bar / dt = -N log(1 - beta_k)``.

        Constant on each interval; at a knot, the value of the interval that starts there.
        """
        return self._segment(t)[1]

    def f(self, t: Tensor) -> Tensor:
        """``f = -beta(t) / 2``."""
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        """``g^2 = beta(t)``."""
        return self.beta(t)

    def sigma_deriv(self, t: Tensor) -> Tensor:
        """``sigma' = beta / (2 alpha_bar sigma)``."""
        m, slope = self._segment(t)
        return slope * torch.exp(m) / (2.0 * torch.sqrt(torch.expm1(m)))

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        """``t`` with ``-log alpha_bar(t) = log(1 + sigma^2)``: one table search, then linear."""
        m, dm = self._table(sigma)
        n = self.num_train_timesteps
        target = torch.log1p(sigma * sigma)
        j = (torch.searchsorted(m, target.contiguous(), right=True) - 1).clamp(0, n - 1)
        return (j.to(target.dtype) + (target - m[j]) / dm[j]) / n

    # ------------------------------------------------------------------------------------------
    def timestep(self, t: Tensor) -> Tensor:
        """The (fractional) training timestep ``k = N t - 1`` of time ``t``."""
        return t * self.num_train_timesteps - 1.0

    def time_of(self, timestep: Tensor) -> Tensor:
        """The time ``t = (k + 1) / N`` of a (possibly fractional) timestep ``k``."""
        return (timestep + 1.0) / self.num_train_timesteps
