"""Bring your own model: pretrained diffusers, score_sde and EDM/k-diffusion networks as scores.

* :func:`from_diffusers` — a diffusers ``UNet2DModel`` with its scheduler, or a local diffusers
  folder: discrete DDPM schedules become a :class:`DiscreteVPSDE` whose marginal at
  ``.times(k)`` is the scheduler's ``alphas_cumprod[k]`` (``log alpha_bar`` piecewise linear in
  ``t = (k + 1) / N``, which is the DDPM chain itself in continuous time: see
  :mod:`.discrete`); ``ScoreSdeVeScheduler`` models a :class:`~scoresde.VESDE`.
* :func:`from_denoiser` — an EDM / k-diffusion denoiser ``D(x, sigma, **cond)`` on
  :class:`~scoresde.EDMSDE`.

Both return a :class:`PretrainedScore`: ``.sde``, ``.score_fn(x, t)`` (the object is callable
as ``m(x, t, y=None)``), ``.times(timesteps)``, ``.event_shape``, ``.to_data``/``.from_data``,
``.conditional(y, guidance)`` and ``.bits_per_dim(images)``; it goes to :func:`scoresde.sample`
(every sampler), :func:`scoresde.log_likelihood`, the inverse solvers and guidance like any
score function. The ``scoresde`` commands take a diffusers folder as ``--ckpt`` (:mod:`.cli`).

diffusers is optional (``pip install scoresde[diffusers]``) and imported only to load a folder;
the rest of scoresde never imports it. Nothing is downloaded.
"""

from __future__ import annotations

from .cli import is_diffusers_folder, load_for_cli
from .denoiser import from_denoiser
from .diffusers_adapter import (
    BETA_SCHEDULES,
    DISCRETE_SCHEDULERS,
    PREDICTION_TYPES,
    VE_SCHEDULERS,
    from_diffusers,
)
from .discrete import DiscreteVPSDE
from .pretrained import BitsPerDim, PretrainedScore

__all__ = [
    "from_diffusers",
    "from_denoiser",
    "PretrainedScore",
    "BitsPerDim",
    "DiscreteVPSDE",
    "DISCRETE_SCHEDULERS",
    "VE_SCHEDULERS",
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "is_diffusers_folder",
    "load_for_cli",
]
