"""A pretrained network as a scoresde score function: :class:`PretrainedScore`.

Whatever its origin (a diffusers UNet with its scheduler, a score_sde VE model, an EDM or
k-diffusion denoiser), a network predicts one of the usual targets at a noise input of its own;
:class:`PretrainedScore` turns it into ``score(x, t)`` on a scoresde SDE with the affine map of
:func:`scoresde.parameterize.coefficients` (``eps``: ``-eps / std``; ``v``: Salimans & Ho 2022
with unit data std; ``x0``: Tweedie's formula read backwards; ``score``: as is). Everything
downstream (every sampler, the likelihood, the inverse solvers, guidance) takes it like any
other score function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import check_output
from ..guidance import cfg_from_labels, labels_like
from ..likelihood import LikelihoodResult, bits_per_dim, dequantize, log_likelihood
from ..parameterize import coefficients
from ..sde import SDE, ScoreFn, bcast

__all__ = ["PretrainedScore", "BitsPerDim", "NetCall", "PREDICTIONS"]

PREDICTIONS = ("eps", "v", "x0", "score")
"""What a pretrained network may predict (names of :func:`scoresde.parameterize.coefficients`)."""

NetCall = Callable[[Any, Tensor, Tensor, "Tensor | None"], Tensor]
"""``call(network, x, noise_input, labels) -> raw output`` shaped like ``x``."""


@dataclass
class BitsPerDim:
    """What :meth:`PretrainedScore.bits_per_dim` returns."""

    bits_per_dim: Tensor
    """``(B,)`` bits per dimension of the discrete images (dequantised upper bound)."""
    likelihood: LikelihoodResult
    """The PF-ODE log-likelihood of the dequantised images in the model's space."""


def _check_range(data_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {tuple(data_range)}")
    return lo, hi


def _as_levels(images: Tensor, bins: int) -> Tensor:
    """Integer levels in ``[0, bins)``: integer images as they are, ``[0, 1]`` floats rounded."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor, got {type(images).__name__}")
    if images.is_floating_point():
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ValueError(
                "float images must lie in [0, 1] (or pass integer levels, e.g. uint8 pixels)"
            )
        return (images * (bins - 1)).round().long()
    return images


class PretrainedScore(nn.Module):
    """A pretrained network as the score of ``sde``: ``m(x, t, y=None)``, ``m.score_fn(x, t)``.

    Built by :func:`scoresde.interop.from_diffusers` or :func:`scoresde.interop.from_denoiser`.
    The score is ``skip(t) x + out(t) F`` with ``F = call(network, x, noise_input(t), labels)``
    and the coefficients of ``prediction`` (:func:`scoresde.parameterize.coefficients` with unit
    data std: ``eps``, ``v``, ``x0`` or ``score``).

    Args:
        sde: the forward SDE whose marginals the network was trained on.
        network: the module (moved by ``.to()``) or callable that ``call`` runs.
        call: ``call(network, x, c, labels)``, the raw output at noise input ``c``.
        prediction: one of :data:`PREDICTIONS`.
        time_input: what the network takes as its noise input: ``"timestep"`` (the discrete
            timestep ``k = N t - 1`` of a :class:`~scoresde.interop.DiscreteVPSDE`) or ``"sigma"``
            (the noise level ``sigma(t)``).
        event_shape: the shape of one sample (``None`` when unknown).
        data_range: the interval of the model's space that ``[0, 1]`` images map to.
        num_classes: classes of a class-conditional network (``None``: unconditional, or
            unknown for a denoiser that takes labels).
        null_label: the label of the unconditional score of a label-dropout model (for
            classifier-free guidance and for ``y=None``).
        likelihood_eps: the default ``eps`` of :meth:`bits_per_dim`.
    """

    sigma_data: float | None = None
    """The data std a denoiser's preconditioning assumes (``from_denoiser``), else ``None``."""

    def __init__(
        self,
        sde: SDE,
        network: Any,
        call: NetCall,
        prediction: Literal["eps", "v", "x0", "score"],
        *,
        time_input: Literal["timestep", "sigma"],
        event_shape: Sequence[int] | None,
        data_range: Sequence[float] = (-1.0, 1.0),
        num_classes: int | None = None,
        null_label: int | None = None,
        likelihood_eps: float | None = None,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS or time_input not in ("timestep", "sigma"):
            raise ValueError(f"unknown prediction {prediction!r} or time input {time_input!r}")
        if not callable(network):
            raise TypeError(f"the network must be callable, got {type(network).__name__}")
        self.sde, self.call, self.prediction, self.time_input = sde, call, prediction, time_input
        self.network = network  # registered as a submodule when it is an nn.Module
        self.event_shape = None if event_shape is None else tuple(int(s) for s in event_shape)
        self.data_range = _check_range(data_range)
        self.num_classes, self.null_label = num_classes, null_label
        self.likelihood_eps = sde.eps if likelihood_eps is None else float(likelihood_eps)

    def extra_repr(self) -> str:
        """Summary shown by ``print(model)``."""
        return (
            f"sde={self.sde!r}, prediction={self.prediction!r}, event_shape={self.event_shape}, "
            f"data_range={self.data_range}, num_classes={self.num_classes}"
        )

    # ------------------------------------------------------------------------------------------
    def noise_input(self, t: Tensor) -> Tensor:
        """The network's noise input at SDE times ``t``: its timestep or ``sigma(t)``."""
        if self.time_input == "timestep":
            return self.sde.timestep(t)  # type: ignore[attr-defined]
        return self.sde.sigma(t)

    def times(self, timesteps: Any) -> Tensor:
        """The SDE times (float64, on ``timesteps``' device) of a scheduler's ``timesteps``.

        Discrete schedulers: ``t = (k + 1) / N`` for (possibly fractional) timesteps ``k``; VE
        (``ScoreSdeVeScheduler``) timesteps and EDM noise levels are SDE times already. Use as
        ``scoresde.sample(..., schedule=m.times(scheduler.timesteps))``.
        """
        k = torch.as_tensor(timesteps).detach().to(torch.float64)
        if self.time_input == "timestep":
            return self.sde.time_of(k)  # type: ignore[attr-defined]
        return k

    def _labels(self, y: Tensor | int | None, x: Tensor) -> Tensor | None:
        if y is None:
            if self.null_label is not None:
                return labels_like(self.null_label, x)
            if self.num_classes is not None:
                raise ValueError(
                    f"this model is class-conditional ({self.num_classes} classes): pass labels "
                    "y, or null_label=K to from_diffusers for its unconditional score"
                )
            return None
        if isinstance(y, Tensor) and (y.is_floating_point() or y.dim() != 1):
            return y.to(x.device)  # e.g. one-hot labels of an EDM denoiser: passed through
        return labels_like(y, x)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None) -> Tensor:
        """The score at ``x`` ``(B, *event_shape)`` and times ``t`` ``(B,)``, class ``y``."""
        tt = self.sde.time(t, x)
        xin, c = x, self.noise_input(tt)
        dtype = self._network_dtype()
        if dtype is not None and dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            xin, c = x.to(dtype), c.to(dtype)  # e.g. float64 sampling of a float32 network
        out = self.call(self.network, xin, c, self._labels(y, x))
        out = check_output("the pretrained network", out, x).to(x.dtype)
        coef = coefficients(self.prediction, self.sde, tt, sigma_data=1.0)
        return bcast(coef.skip, x) * x + bcast(coef.out, x) * out

    def score_fn(self, x: Tensor, t: Tensor) -> Tensor:
        """The (unconditional) score ``score(x, t)`` for samplers and likelihoods."""
        return self(x, t)

    def conditional(self, y: Tensor | int, guidance: float = 1.0) -> ScoreFn:
        """The class-``y`` score, classifier-free guided ``u + w (c - u)`` for ``guidance != 1``.

        :func:`scoresde.guidance.cfg_from_labels` (Ho & Salimans 2022) on this model;
        ``guidance != 1`` needs the model's ``null_label``.
        """
        w = float(guidance)
        if w != 1.0 and self.null_label is None:
            raise ValueError(
                "classifier-free guidance needs the model's null label: pass null_label=K "
                "(the label it was trained with for 'no class') to from_diffusers/from_denoiser"
            )
        null = -1 if self.null_label is None else self.null_label  # unused when w == 1
        return cfg_from_labels(self, y, null, w)

    def denoise(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None) -> Tensor:
        """Tweedie's ``E[x0 | x_t]`` (:meth:`scoresde.SDE.tweedie`)."""
        tt = self.sde.time(t, x)
        return self.sde.tweedie(x, tt, self(x, tt, y))

    # ------------------------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Samples in the model's space to ``[0, 1]`` images (clamped)."""
        lo, hi = self.data_range
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def from_data(self, images: Tensor) -> Tensor:
        """``[0, 1]`` images to the model's space (``[-1, 1]`` for DDPM-type models)."""
        lo, hi = self.data_range
        return lo + images * (hi - lo)

    def _network_dtype(self) -> torch.dtype | None:
        """The dtype of the network's floating-point parameters (``None`` for a function)."""
        if not isinstance(self.network, nn.Module):
            return None
        param = next(self.network.parameters(), None)
        return None if param is None or not param.is_floating_point() else param.dtype

    def _device(self, default: torch.device) -> torch.device:
        param = next(self.parameters(), None)
        return default if param is None else param.device

    def bits_per_dim(
        self,
        images: Tensor,
        *,
        bins: int = 256,
        generator: torch.Generator | None = None,
        eps: float | None = None,
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> BitsPerDim:
        """Bits/dim of discrete images by the PF ODE, comparable with published numbers.

        The images (integer levels in ``[0, bins)``, e.g. ``uint8`` pixels, or ``[0, 1]``
        floats, rounded to ``bins`` levels) are uniformly dequantised straight into the model's
        space (:func:`scoresde.dequantize` with ``data_range``), their log-density there is
        :func:`scoresde.log_likelihood` at time ``eps`` (default ``likelihood_eps``), and
        :func:`scoresde.bits_per_dim` adds the offset ``log2(bins / (hi - lo))``: the Jacobian of
        the ``[0, bins) -> [lo, hi)`` map (7 bits for 256 levels in ``[-1, 1]``; Theis et al.
        2016, eq. 7; Song et al. 2021, App. D.2). ``options`` go to
        :func:`scoresde.log_likelihood` (``rtol``, ``atol``, ``divergence``, ...).
        """
        levels = _as_levels(images, bins)
        device = self._device(levels.device)
        x = dequantize(
            levels, bins=bins, data_range=self.data_range, generator=generator, dtype=dtype
        ).to(device)
        eps = self.likelihood_eps if eps is None else eps
        res = log_likelihood(self.score_fn, self.sde, x, eps=eps, generator=generator, **options)
        bpd = bits_per_dim(res.log_prob, x.shape, data_range=self.data_range, bins=bins)
        return BitsPerDim(bpd, res)
