"""EDM / k-diffusion denoisers ``D(x, sigma, **cond)`` as scores on the EDM SDE.

A denoiser returns ``E[x0 | x]`` at noise level ``sigma`` (Karras et al. 2022, eq. 3: EDM's
``EDMPrecond``, k-diffusion's ``Denoiser``/``DenoiserKarras`` wrappers, or any function); on
:class:`~scoresde.EDMSDE` (``s = 1``, ``sigma(t) = t``) Tweedie's formula gives the score
``(D(x, t) - x) / t^2`` (the ``x0`` parameterisation of :func:`scoresde.parameterize.
coefficients`). scoresde's ``heun`` sampler on a Karras grid is then EDM's Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .._checks import check_positive
from ..sde import EDMSDE
from .pretrained import PretrainedScore

__all__ = ["from_denoiser"]


class _DenoiserCall:
    """``denoiser(x, sigma, **{label_kwarg: labels})`` (labels only when given)."""

    def __init__(self, label_kwarg: str) -> None:
        self.label_kwarg = label_kwarg

    def __call__(self, denoiser: Any, x: Tensor, sigma: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            return denoiser(x, sigma)
        return denoiser(x, sigma, **{self.label_kwarg: labels})


def _edm_shape(denoiser: Any) -> tuple[int, ...] | None:
    """``(img_channels, img_resolution, img_resolution)`` of an ``EDMPrecond``, if it says."""
    ch, res = getattr(denoiser, "img_channels", None), getattr(denoiser, "img_resolution", None)
    return None if ch is None or res is None else (int(ch), int(res), int(res))


def from_denoiser(
    denoiser: Any,
    *,
    sigma_min: float,
    sigma_max: float,
    sigma_data: float = 0.5,
    event_shape: Sequence[int] | None = None,
    label_kwarg: str = "class_labels",
    null_label: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> PretrainedScore:
    """A denoiser ``D(x, sigma, **cond)`` as the score of ``EDMSDE(sigma_min, sigma_max)``.

    Args:
        denoiser: returns the denoised image ``E[x0 | x]`` for ``x`` ``(B, ...)`` and noise
            levels ``sigma`` ``(B,)`` (EDM's ``EDMPrecond``, k-diffusion's ``Denoiser``).
        sigma_min: the smallest noise level it was trained on (EDM: 0.002); the SDE's ``eps``
            and the default likelihood ``eps``.
        sigma_max: the largest (EDM: 80); the prior is ``N(0, sigma_max^2 I)``.
        sigma_data: the data std the denoiser's preconditioning assumes (EDM: 0.5), kept as
            ``.sigma_data`` for schedules and diagnostics; the preconditioning itself is inside
            ``denoiser``.
        event_shape: the shape of one sample (default: ``EDMPrecond``'s ``img_channels`` and
            ``img_resolution`` when it has them).
        label_kwarg: the keyword ``denoiser`` takes class labels by (EDM: ``class_labels``,
            one-hot; pass labels through ``m(x, t, y)`` as the denoiser wants them).
        null_label: an integer label of the unconditional score, for classifier-free guidance
            with integer labels (:meth:`PretrainedScore.conditional`).
        data_range: the interval ``[0, 1]`` images map to (EDM: ``(-1, 1)``).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable D(x, sigma), got {type(denoiser).__name__}")
    sde = EDMSDE(sigma_min, sigma_max)
    shape = _edm_shape(denoiser) if event_shape is None else tuple(event_shape)
    model = PretrainedScore(
        sde, denoiser, _DenoiserCall(label_kwarg), "x0", time_input="sigma", event_shape=shape,
        data_range=data_range, null_label=null_label, likelihood_eps=sde.sigma_min,
    )  # fmt: skip
    model.sigma_data = check_positive("sigma_data", sigma_data)
    return model
