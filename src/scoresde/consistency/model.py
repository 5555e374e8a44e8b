"""The consistency function ``f(x_hat, sigma)`` with the boundary condition built in.

Song et al. 2023 (*Consistency Models*, eq. 7 and Appendix C) parameterise the consistency
function with EDM-style coefficients that equal ``(1, 0)`` at the smallest noise level, so
``f(x, sigma_min) = x`` holds by construction rather than by training. Here the inner network is
any score model with a ``denoise(x, t)`` (a :class:`~scoresde.ScoreModel`): in the scaled
variable ``x_hat = x / s(t)`` of :mod:`scoresde.sampling.sigma` its Tweedie denoiser is
``D(x_hat; sigma) = denoise(s x_hat, t(sigma))`` on any affine SDE of the library, and

    f(x_hat, sigma) = c_skip(sigma) x_hat + (1 - c_skip(sigma)) D(x_hat; sigma),
    c_skip(sigma) = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2).

At ``sigma = sigma_min`` the coefficient is ``sigma_data^2 / sigma_data^2 = 1`` in floating
point, so ``f = x_hat`` exactly; for large ``sigma`` ``f`` tends to the denoiser, which is why a
trained score model is a good initial consistency model (ECT, Geng et al. 2024).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..sde import SDE, ScoreWithDenoiser, bcast

__all__ = ["ConsistencyModel", "ConsistencyFunction", "sigma_range", "DEFAULT_SIGMA_MAX"]

DEFAULT_SIGMA_MIN = 0.002
"""The smallest noise level of Song et al. 2023 (EDM's ``sigma_min``)."""
DEFAULT_SIGMA_MAX = 80.0
"""The largest noise level of Song et al. 2023 (EDM's ``sigma_max``)."""


def sigma_range(sde: SDE) -> tuple[float, float]:
    """The noise levels ``(sigma(0), sigma(T))`` the SDE reaches (``inf`` at ``T`` of a flow)."""
    ends = torch.tensor([0.0, sde.T], dtype=torch.float64)
    with torch.no_grad():
        lo, hi = sde.sigma(ends).tolist()
    return float(lo), (math.inf if not math.isfinite(hi) else float(hi))


class ConsistencyModel(nn.Module):
    """``f(x_hat, sigma)``: a consistency model on any SDE through its sigma-space.

    Args:
        score_model: the inner network, a module with ``denoise(x, t, y=None)``
            (a :class:`~scoresde.ScoreModel`; its weights are the trained ones).
        sde: the SDE ``score_model`` was built for (only its ``s``, ``sigma`` and ``t(sigma)``
            are used).
        sigma_min, sigma_max: the noise-level range; default ``max(0.002, sigma(0))`` and
            ``min(80, sigma(T))`` (Song et al. 2023).
        sigma_data: the data's standard deviation in ``c_skip`` (0.5 in the paper).
    """

    def __init__(
        self,
        score_model: nn.Module,
        sde: SDE,
        *,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        if not callable(getattr(score_model, "denoise", None)):
            raise TypeError(
                f"score_model must have denoise(x, t) (a scoresde.ScoreModel), got "
                f"{type(score_model).__name__}"
            )
        lo, hi = sigma_range(sde)
        self.sigma_min = float(sigma_min if sigma_min is not None else max(DEFAULT_SIGMA_MIN, lo))
        self.sigma_max = float(sigma_max if sigma_max is not None else min(DEFAULT_SIGMA_MAX, hi))
        if not (lo <= self.sigma_min < self.sigma_max <= hi) or sigma_data <= 0:
            raise ValueError(
                f"noise levels [{self.sigma_min}, {self.sigma_max}] are not inside the range "
                f"[{lo}, {hi}] of {type(sde).__name__} (or sigma_data={sigma_data} <= 0); "
                f"choose sigma_min < sigma_max inside it"
            )
        self.score_model = score_model
        self.sde = sde
        self.sigma_data = float(sigma_data)

    def c_skip(self, sigma: Tensor) -> Tensor:
        """``sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)``: exactly 1 at ``sigma_min``."""
        sd2 = self.sigma_data**2
        return sd2 / ((sigma - self.sigma_min) ** 2 + sd2)

    def denoiser(self, x_hat: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """The inner denoiser ``D(x_hat; sigma) = denoise(s x_hat, t(sigma))``."""
        t = self.sde.sigma_inv(sigma)
        s = bcast(self.sde.scale(t), x_hat)
        return self.score_model.denoise(s * x_hat, t, y)  # type: ignore[operator]

    def forward(self, x_hat: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """``f(x_hat, sigma)`` for ``x_hat`` ``(B, ...)`` and noise levels ``sigma`` ``(B,)``."""
        c = bcast(self.c_skip(sigma), x_hat)
        return c * x_hat + (1.0 - c) * self.denoiser(x_hat, sigma, y)

    def score_fn(self, y: Tensor | None = None) -> ConsistencyFunction:
        """This model as what :func:`scoresde.sample` takes (``sampler="consistency"``)."""
        return ConsistencyFunction(self, y)


class ConsistencyFunction(ScoreWithDenoiser):
    """A consistency model travelling through :func:`scoresde.sample`.

    ``consistency(x_hat, sigma)`` is ``f`` (what ``sampler="consistency"`` uses). As a score
    function it reads ``f`` as a denoiser, ``score = (s f(x / s, sigma) - x) / (s sigma)^2``,
    so other samplers run too (an approximation: ``f`` is the ODE's end point, not Tweedie's
    mean).
    """

    def __init__(self, model: ConsistencyModel, y: Tensor | None = None) -> None:
        self.model, self.y = model, y
        self.sigma_min, self.sigma_max = model.sigma_min, model.sigma_max
        super().__init__(self._score, self._denoise)

    def consistency(self, x_hat: Tensor, sigma: Tensor) -> Tensor:
        """``f(x_hat, sigma)`` (``sigma`` ``(B,)``, clamped to the model's range)."""
        return self.model(x_hat, sigma.clamp(self.sigma_min, self.sigma_max), self.y)

    def _denoise(self, x: Tensor, t: Tensor) -> Tensor:
        sde = self.model.sde
        std = bcast(sde.std(t), x)
        sig = sde.sigma(t)
        # where sigma > sigma_max (T of a flow path) read x as sigma_max times unit noise
        big = bcast(sig > self.sigma_max, x)
        x_hat = torch.where(big, x / std * self.sigma_max, x / bcast(sde.scale(t), x))
        return self.consistency(x_hat, sig)

    def _score(self, x: Tensor, t: Tensor) -> Tensor:
        sde = self.model.sde
        s, std = bcast(sde.scale(t), x), bcast(sde.std(t), x)
        return (s * self._denoise(x, t) - x) / std**2
