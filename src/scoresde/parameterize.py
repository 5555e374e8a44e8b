"""Parameterisations: turn a network ``net(x, c_noise, y)`` into a score ``score(x, t)``.

For an affine SDE the kernel is ``x_t = s x0 + s sigma z`` (``std = s sigma``), and Tweedie's
formula ``grad log p_t(x) = (s E[x0 | x] - x) / std^2`` links every usual network target to the
score. Each parameterisation below makes the score an *affine* function of the network output::

    F     = net(c_in * x, c_noise, y)                 (the raw output)
    score = skip(t) * x + out(t) * F                  (one scalar pair per sample)

with ``sd = sigma_data``, ``r = sqrt(sd^2 + sigma^2)`` and

================  ====================================  ==============  ===============
parameterisation  the network predicts                  ``skip``        ``out``
================  ====================================  ==============  ===============
``score``         the score itself                      0               1
``scaled_score``  ``std * score`` (``scale_by_sigma``)  0               ``1 / std``
``eps``           the noise ``z`` (DDPM)                0               ``-1 / std``
``x0``            the clean data ``E[x0 | x]``          ``-1 / std^2``  ``s / std^2``
``v``             ``v = a z - b x0 / sd``               ``-1/(s r)^2``  ``-sd/(r std)``
``edm``           EDM's ``F`` (Karras et al. Table 1)   ``-1/(s r)^2``  ``+sd/(r std)``
================  ====================================  ==============  ===============

* ``v``: with ``a = sigma_data / r`` and ``b = sigma / r`` (``a^2 + b^2 = 1``), ``x / (s r) =
  a x0/sigma_data + b z``, so ``z = a v + b x/(s r)`` and ``score = -z / std`` (Salimans & Ho
  2022, generalised to any ``s``, ``sigma`` and data std).
* ``edm``: on the scaled variable ``x^ = x / s`` (noise level ``sigma``), the denoiser is
  ``D = c_skip x^ + c_out F(c_in x^, c_noise)`` with ``c_skip = sigma_data^2 / r^2``,
  ``c_out = sigma sigma_data / r``, ``c_in = 1 / r``, ``c_noise = log(sigma) / 4``, and
  ``score = (s D - x) / std^2``. It is ``v`` with the opposite sign (both train the same target).

Network inputs (the same for every parameterisation, so one network fits every SDE):

* ``x`` is multiplied by ``c_in = 1 / (s r)``, which gives unit-ish variance at every noise level
  for data of std ``sigma_data`` (it is 1 for VP with ``sigma_data = 1``);
* the noise input ``c_noise`` is ``log(sigma(t)) / 4`` (``noise_input="log_sigma"``, the default,
  as in EDM; about ``[-1.7, 1.3]`` for the default SDEs) or ``t`` itself (``noise_input="t"``).

Training. :meth:`ScoreModel.loss` is the denoising score-matching loss
:func:`scoresde.losses.dsm_per_sample`, ``lambda(t) ||score(x_t, t) + z/std||^2``. Since
``score + z/std = out (F - F*)`` with ``F* = (-z/std - skip x_t) / out`` the exact target
(:meth:`ScoreModel.target`), it is

* ``weighting="natural"`` (``lambda = 1/out^2``): the plain MSE ``||F - F*||^2`` on the network's
  own target (``eps``: DDPM's ``||eps_hat - z||^2``; ``x0``: ``||x0_hat - x0||^2``; ``v``:
  ``||v_hat - v||^2``; ``edm``: EDM's loss ``lambda(sigma) ||D - x0||^2`` with
  ``lambda = 1/c_out^2``; ``scaled_score``: DSM with ``lambda = std^2``; ``score``: DSM with
  ``lambda = 1``);
* ``"sigma2"``, ``"likelihood"``, ``"none"``: :func:`scoresde.dsm_loss` with that weighting
  (``lambda = std^2``, ``g^2``, ``1``), whatever the parameterisation.

EDM trains with ``log sigma ~ N(P_mean, P_std^2)``; :func:`sample_training_times` draws such
times (``method="edm"``) or uniform ones.

``edm`` and ``v`` carry the linear part of the score in ``skip``, so the network only supplies
the correction to the score of a Gaussian of std ``sigma_data`` (Karras et al. 2022, Sec. 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_positive
from .losses import (
    EPS_TRAIN,
    REDUCTIONS,
    WEIGHTINGS,
    dsm_per_sample,
    reduce_batch,
    sample_training_times,
    training_inputs,
)
from .sde import SDE, ScoreFn, bcast

__all__ = [
    "PARAMETERIZATIONS",
    "NOISE_INPUTS",
    "ScoreCoefficients",
    "ScoreModel",
    "coefficients",
    "null_label",
    "sample_training_times",
]

PARAMETERIZATIONS = ("score", "scaled_score", "eps", "x0", "v", "edm")
"""The names accepted by :class:`ScoreModel`."""
NOISE_INPUTS = ("log_sigma", "t")
"""What the network receives as its noise input ``c_noise``."""

Parameterization = Literal["score", "scaled_score", "eps", "x0", "v", "edm"]


@dataclass(frozen=True)
class ScoreCoefficients:
    """Per-sample ``(B,)`` coefficients of ``score = skip * x + out * net(c_in * x, c_noise)``."""

    c_in: Tensor
    """Multiplies ``x`` before the network."""
    c_noise: Tensor
    """The network's noise input."""
    skip: Tensor
    """Coefficient of ``x`` in the score."""
    out: Tensor
    """Coefficient of the network output in the score."""


def coefficients(
    parameterization: str,
    sde: SDE,
    t: Tensor,
    *,
    sigma_data: float = 0.5,
    noise_input: str = "log_sigma",
) -> ScoreCoefficients:
    """Return the coefficients of ``parameterization`` for ``sde`` at ``(B,)`` times ``t``.

    See the module docstring for the table of formulas.
    """
    s, sigma = sde.scale(t), sde.sigma(t)
    std = s * sigma
    r = torch.sqrt(sigma_data**2 + sigma**2)
    c_in = 1.0 / (s * r)
    c_noise = torch.log(sigma) / 4 if noise_input == "log_sigma" else t
    zero = torch.zeros_like(t)
    if parameterization == "score":
        skip, out = zero, torch.ones_like(t)
    elif parameterization == "scaled_score":
        skip, out = zero, 1.0 / std
    elif parameterization == "eps":
        skip, out = zero, -1.0 / std
    elif parameterization == "x0":
        skip, out = -1.0 / std**2, s / std**2
    elif parameterization in ("v", "edm"):
        skip = -(c_in**2)
        out = sigma_data / (r * std)
        if parameterization == "v":
            out = -out
    else:
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    return ScoreCoefficients(c_in, c_noise, skip, out)


class ScoreModel(nn.Module):
    """A network wrapped as the score of ``sde``: ``model(x, t, y=None) -> grad log p_t(x)``.

    The network is ``model.net``: wrap that (not the ScoreModel) in DDP or ``torch.compile``,
    since :meth:`loss` and :meth:`forward` both call ``self.net``. Under autocast the network
    output is cast back to ``x``'s dtype before the affine map, and the coefficients are computed
    in ``t``'s dtype.

    Args:
        net: ``net(x, c_noise)`` or, class-conditional, ``net(x, c_noise, y)``; the output has
            ``x``'s shape. Networks with a ``null_label`` attribute support guidance.
        sde: the forward SDE whose marginals the score belongs to.
        parameterization: one of :data:`PARAMETERIZATIONS` (module docstring); ``"eps"`` default.
        sigma_data: the data's standard deviation (0.5 suits images in ``[-1, 1]``).
        noise_input: ``"log_sigma"`` (``c_noise = log(sigma(t)) / 4``) or ``"t"``.

    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        parameterization: Parameterization = "eps",
        *,
        sigma_data: float = 0.5,
        noise_input: Literal["log_sigma", "t"] = "log_sigma",
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a callable nn.Module, got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        self.net = net
        self.sde = sde
        self.parameterization = check_choice(
            "parameterization", parameterization, PARAMETERIZATIONS
        )
        self.noise_input = check_choice("noise_input", noise_input, NOISE_INPUTS)
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def extra_repr(self) -> str:
        """Summary shown by ``print(model)``."""
        return (
            f"parameterization={self.parameterization!r}, sde={self.sde!r}, "
            f"sigma_data={self.sigma_data}, noise_input={self.noise_input!r}"
        )

    # ------------------------------------------------------------------------------------------
    def coefficients(self, t: Tensor) -> ScoreCoefficients:
        """:func:`coefficients` of this model at ``(B,)`` times ``t``."""
        return coefficients(
            self.parameterization,
            self.sde,
            t,
            sigma_data=self.sigma_data,
            noise_input=self.noise_input,
        )

    def _raw(self, x: Tensor, c: ScoreCoefficients, y: Tensor | None) -> Tensor:
        inp = bcast(c.c_in, x) * x
        out = self.net(inp, c.c_noise) if y is None else self.net(inp, c.c_noise, y)
        if out.shape != x.shape:
            raise ValueError(
                f"the network returned shape {tuple(out.shape)} for input of "
                f"shape {tuple(x.shape)}; it must return x's shape"
            )
        return out.to(x.dtype)

    def raw_output(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Return the network output ``F = net(c_in x, c_noise, y)`` (in ``x``'s dtype)."""
        return self._raw(x, self.coefficients(self._time(t, x)), y)

    def _score(self, x: Tensor, c: ScoreCoefficients, y: Tensor | None) -> Tensor:
        return bcast(c.skip, x) * x + bcast(c.out, x) * self._raw(x, c, y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Return the score ``skip(t) x + out(t) F`` at ``x`` ``(B, ...)``, times ``t`` ``(B,)``."""
        return self._score(x, self.coefficients(self._time(t, x)), y)

    def denoise(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Tweedie's denoised estimate ``E[x0 | x_t] = (x + std^2 score) / s``."""
        tt = self._time(t, x)
        return self.sde.tweedie(x, tt, self(x, tt, y))

    def score_fn(self, y: Tensor | int | None = None, guidance: float = 1.0) -> ScoreFn:
        """Return a plain ``score_fn(x, t)`` for samplers, optionally class-conditional.

        Without labels it is the unconditional score. With labels ``y`` (an int for every
        sample, or a ``(B,)`` tensor) it is the classifier-free guided score
        :func:`scoresde.guidance.cfg_from_labels` ``u + w (c - u)`` with ``w = guidance``
        (Ho & Salimans 2022): ``1`` (default) the conditional score, ``0`` the unconditional
        one, ``> 1`` extrapolates; the network must expose ``null_label``.
        """
        from .guidance import cfg_from_labels

        if y is None:
            if guidance != 1.0:
                raise ValueError(
                    "classifier-free guidance needs labels y; pass y=... or guidance=1"
                )

            def score(x: Tensor, t: Tensor) -> Tensor:
                return self(x, t)

            return score
        null = null_label(self.net)
        if null is None:
            raise ValueError(
                "labels were given but the network is unconditional; build it with num_classes=K"
            )
        return cfg_from_labels(self, y, null, guidance)

    # ------------------------------------------------------------------------------------------
    def target(self, x_t: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Return the raw output ``F*`` giving the conditional score ``-noise/std`` at ``x_t``.

        ``F* = (-noise/std - skip x_t) / out``, for ``x_t = s x0 + std * noise``: ``noise`` for
        ``eps``, ``x0`` for ``x0``, ``v`` for ``v``, EDM's ``(x0 - c_skip x^)/c_out`` for ``edm``.
        """
        c = self.coefficients(t)
        std = self.sde.std(t)
        return (-noise / bcast(std, noise) - bcast(c.skip, x_t) * x_t) / bcast(c.out, x_t)

    def loss(
        self,
        x0: Tensor,
        *,
        y: Tensor | None = None,
        weighting: Literal["natural", "sigma2", "likelihood", "none"] = "natural",
        reduction: Literal["mean", "sum", "none"] = "mean",
        t: Tensor | None = None,
        noise: Tensor | None = None,
        eps: float = EPS_TRAIN,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Denoising score matching ``lambda(t) ||score(x_t, t) + z/std||^2`` per sample.

        That is ``lambda(t) out(t)^2 ||F - F*||^2`` on the raw output. ``weighting="natural"``
        (``lambda = 1/out^2``) is the plain MSE on the parameterisation's own target (see the
        module docstring); ``"sigma2"``/``"likelihood"``/``"none"`` equal :func:`scoresde.dsm_loss`
        with that weighting. ``t`` (default ``U(eps, T)``, see :func:`sample_training_times`) and
        ``noise`` (default ``N(0, I)``) may be given.
        """
        check_choice("weighting", weighting, ("natural", *WEIGHTINGS))
        check_choice("reduction", reduction, REDUCTIONS)
        t, noise = training_inputs(self.sde, x0, t, noise, eps=eps, generator=generator)
        return self._loss(x0, t, noise, y, weighting, reduction)

    def _loss(
        self,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
        y: Tensor | None,
        weighting: str,
        reduction: str,
    ) -> Tensor:
        """:meth:`loss` without its checks, for the trainer's hot loop.

        ``t`` must already be a ``(B,)`` tensor in ``[0, T]`` with ``x0``'s dtype and device,
        ``noise`` of ``x0``'s shape, ``x0`` finite: the checks of :meth:`loss` read tensor
        values, which on an accelerator waits for the device at every step.
        """
        c = self.coefficients(t)

        def score(x_t: Tensor, _: Tensor) -> Tensor:
            return self._score(x_t, c, y)

        def natural(sde: SDE, tt: Tensor, std: Tensor) -> Tensor:
            return c.out.pow(-2)

        lam = natural if weighting == "natural" else weighting
        return reduce_batch(dsm_per_sample(score, self.sde, x0, t, noise, lam), reduction)

    def _time(self, t: Tensor | float, x: Tensor) -> Tensor:
        if isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] == x.shape[0]:
            return t.to(dtype=x.dtype) if t.dtype != x.dtype else t
        return self.sde.time(t, x)


def null_label(net: nn.Module) -> int | None:
    """Return the network's null label for guidance (looks through DDP/compile wrappers)."""
    for obj in (net, getattr(net, "module", None), getattr(net, "_orig_mod", None)):
        label = getattr(obj, "null_label", None)
        if label is not None:
            return int(label)
    return None
