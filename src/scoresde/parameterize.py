"""Parameterisations: turn a network ``net(x, c_noise, y)`` into a score ``score(x, t)``.

For an affine SDE the kernel is ``x_t = s x0 + s sigma z`` (``std = s sigma``), and Tweedie's
formula ``grad log p_t(x) = (s E[x0 | x] - x) / std^2`` links every usual network target to the
score. Each parameterisation below makes the score an *affine* function of the network output::

    F     = net(c_in * x, c_noise, y)                 (the raw output)
    score = skip(t) * x + out(t) * F                  (one scalar pair per sample)

with ``sd = sigma_data``, ``m = sqrt(s^2 sd^2 + std^2)`` (``= s r``, ``r = sqrt(sd^2 + sigma^2)``),
``s'``, ``std'`` the time derivatives and ``w = s' std - s std'`` (``= -s^2 sigma' < 0``):

================  ========================================  ===============  =================
parameterisation  the network predicts                      ``skip``         ``out``
================  ========================================  ===============  =================
``score``         the score itself                          0                1
``scaled_score``  ``std * score`` (``scale_by_sigma``)      0                ``1 / std``
``eps``           the noise ``z`` (DDPM)                    0                ``-1 / std``
``x0``            the clean data ``E[x0 | x]``              ``-1 / std^2``   ``s / std^2``
``v``             ``v = a z - b x0 / sd``                   ``-1 / m^2``     ``-sd s/(m std)``
``edm``           EDM's ``F`` (Karras et al. Table 1)       ``-1 / m^2``     ``+sd s/(m std)``
``flow``          the velocity ``dx_t/dt = s' x0 + std' z``  ``-s'/(std w)``  ``s / (std w)``
================  ========================================  ===============  =================

The same table, as Tweedie's denoiser ``D = E[x0 | x] = d_skip x + d_out F`` and as the training
target ``F* = t_x0 x0 + t_z z`` (the network's output for the draw ``x = s x0 + std z``):

================  ==============  ===============  ===============  ==============
parameterisation  ``d_skip``      ``d_out``        ``t_x0``         ``t_z``
================  ==============  ===============  ===============  ==============
``score``         ``1 / s``       ``std^2 / s``    0                ``-1 / std``
``scaled_score``  ``1 / s``       ``std / s``      0                ``-1``
``eps``           ``1 / s``       ``-std / s``     0                1
``x0``            0               1                1                0
``v``             ``s sd^2/m^2``  ``-sd std / m``  ``-std/(sd m)``  ``s sd / m``
``edm``           ``s sd^2/m^2``  ``+sd std / m``  ``+std/(sd m)``  ``-s sd / m``
``flow``          ``-std' / w``   ``std / w``      ``s'``           ``std'``
================  ==============  ===============  ===============  ==============

Every entry is written so that it stays finite where the SDE allows: at the end ``T`` of a flow
path, where ``s(T) = 0`` and ``sigma(T) = inf`` (:class:`scoresde.RectifiedFlow`), ``x0``, ``v``,
``edm`` and ``flow`` have ``out = 0`` and ``skip = -1/std^2`` (the exact prior score) and a
finite denoiser; ``score``, ``scaled_score`` and ``eps`` do not fit such an SDE (their ``D`` is
``x / 0``: an ε-prediction from pure noise says nothing about ``x0``, Lin et al. 2024, sec. 3.2)
and :class:`ScoreModel` refuses them there.

* ``v``: with ``a = sigma_data / r`` and ``b = sigma / r`` (``a^2 + b^2 = 1``), ``x / (s r) =
  a x0/sigma_data + b z``, so ``z = a v + b x/(s r)`` and ``score = -z / std`` (Salimans & Ho
  2022, generalised to any ``s``, ``sigma`` and data std).
* ``edm``: on the scaled variable ``x^ = x / s`` (noise level ``sigma``), the denoiser is
  ``D = c_skip x^ + c_out F(c_in x^, c_noise)`` with ``c_skip = sigma_data^2 / r^2``,
  ``c_out = sigma sigma_data / r``, ``c_in = 1 / r``, ``c_noise = log(sigma) / 4``, and
  ``score = (s D - x) / std^2``. It is ``v`` with the opposite sign (both train the same target).
* ``flow``: the conditional velocity of the interpolant ``x_t = s x0 + std z`` (Lipman et al.
  2023, eq. 15; Liu et al. 2023: ``z - x0`` for rectified flow). Its expectation given ``x`` is
  the probability-flow drift ``s' D - std std' score``; solving that and Tweedie's formula for
  ``score`` and ``D`` gives the row above. For rectified flow: ``score = -(x + (1-t) F) / t``,
  ``D = x - t F``.

Network inputs (the same for every parameterisation, so one network fits every SDE):

* ``x`` is multiplied by ``c_in = 1 / m = 1 / (s r)``, which gives unit-ish variance at every
  noise level for data of std ``sigma_data`` (it is 1 for VP with ``sigma_data = 1``);
* the noise input ``c_noise`` is ``log(sigma(t)) / 4`` (``noise_input="log_sigma"``, as in EDM;
  about ``[-1.7, 1.3]`` for the default SDEs) or ``t`` itself (``noise_input="t"``);
  ``"auto"`` (the default) is ``log_sigma`` unless ``sigma(T)`` is infinite (flow paths), then
  ``t``.

Training. :meth:`ScoreModel.loss` is the denoising score-matching loss
:func:`scoresde.losses.dsm_per_sample`, ``lambda(t) ||score(x_t, t) + z/std||^2``. Since
``score + z/std = out (F - F*)`` with ``F* = t_x0 x0 + t_z z`` the exact target, it is

* ``weighting="natural"`` (``lambda = 1/out^2``): the plain MSE ``||F - F*||^2`` on the network's
  own target, computed as such (finite where ``out = 0``) (``eps``: DDPM's ``||eps_hat - z||^2``;
  ``x0``: ``||x0_hat - x0||^2``; ``v``: ``||v_hat - v||^2``; ``edm``: EDM's loss
  ``lambda(sigma) ||D - x0||^2`` with ``lambda = 1/c_out^2``; ``flow``: the conditional
  flow-matching loss ``||v_hat - (s' x0 + std' z)||^2``, Lipman et al. 2023, eq. 9, which is
  :func:`scoresde.losses.flow_matching_loss`; ``scaled_score``: DSM with ``lambda = std^2``;
  ``score``: DSM with ``lambda = 1``);
* ``"sigma2"``, ``"likelihood"``, ``"none"``: :func:`scoresde.dsm_loss` with that weighting
  (``lambda = std^2``, ``g^2``, ``1``), whatever the parameterisation.

EDM trains with ``log sigma ~ N(P_mean, P_std^2)``; :func:`sample_training_times` draws such
times (``method="edm"``) or uniform ones.

``edm`` and ``v`` carry the linear part of the score in ``skip``, so the network only supplies
the correction to the score of a Gaussian of std ``sigma_data`` (Karras et al. 2022, Sec. 5).
"""

from __future__ import annotations

import math
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
from .sde import SDE, ScoreFn, ScoreWithDenoiser, bcast

__all__ = [
    "PARAMETERIZATIONS",
    "NOISE_INPUTS",
    "ScoreCoefficients",
    "ScoreModel",
    "coefficients",
    "check_fits",
    "from_velocity",
    "null_label",
    "sample_training_times",
]

PARAMETERIZATIONS = ("score", "scaled_score", "eps", "x0", "v", "edm", "flow")
"""The names accepted by :class:`ScoreModel`."""
NOISE_INPUTS = ("auto", "log_sigma", "t")
"""What the network receives as its noise input ``c_noise`` (``auto``: see the module docstring)."""

Parameterization = Literal["score", "scaled_score", "eps", "x0", "v", "edm", "flow"]


@dataclass(frozen=True)
class ScoreCoefficients:
    """Per-sample ``(B,)`` coefficients of one row of the table (module docstring).

    ``score = skip x + out F``, ``D = d_skip x + d_out F`` and the training target
    ``F* = target_x0 x0 + target_z z``, for ``F = net(c_in x, c_noise)``.
    """

    c_in: Tensor
    """Multiplies ``x`` before the network."""
    c_noise: Tensor
    """The network's noise input."""
    skip: Tensor
    """Coefficient of ``x`` in the score."""
    out: Tensor
    """Coefficient of the network output in the score."""
    d_skip: Tensor
    """Coefficient of ``x`` in Tweedie's denoiser ``E[x0 | x]``."""
    d_out: Tensor
    """Coefficient of the network output in the denoiser."""
    target_x0: Tensor
    """Coefficient of ``x0`` in the training target."""
    target_z: Tensor
    """Coefficient of the noise ``z`` in the training target."""


def _row(
    parameterization: str, sde: SDE, t: Tensor, s: Tensor, std: Tensor, m: Tensor, sd: float
) -> tuple[Tensor, ...]:
    """``(skip, out, d_skip, d_out, target_x0, target_z)`` of one row of the table."""
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    if parameterization in ("score", "scaled_score", "eps"):
        out = {"score": one, "scaled_score": 1.0 / std, "eps": -1.0 / std}[parameterization]
        d_out = {"score": std**2, "scaled_score": std, "eps": -std}[parameterization] / s
        t_z = {"score": -1.0 / std, "scaled_score": -one, "eps": one}[parameterization]
        return zero, out, 1.0 / s, d_out, zero, t_z
    if parameterization == "x0":
        return -1.0 / std**2, s / std**2, zero, one, one, zero
    if parameterization in ("v", "edm"):
        sign = -1.0 if parameterization == "v" else 1.0
        skip, d_skip = -1.0 / m**2, s * sd**2 / m**2
        out, d_out = sign * sd * s / (m * std), sign * sd * std / m
        return skip, out, d_skip, d_out, sign * std / (sd * m), -sign * s * sd / m
    if parameterization == "flow":
        ds, dstd = sde.scale_deriv(t), sde.std_deriv(t)
        w = ds * std - s * dstd
        return -ds / (std * w), s / (std * w), -dstd / w, std / w, ds, dstd
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    raise AssertionError(parameterization)


def coefficients(
    parameterization: str,
    sde: SDE,
    t: Tensor,
    *,
    sigma_data: float = 0.5,
    noise_input: str = "log_sigma",
) -> ScoreCoefficients:
    """Return the coefficients of ``parameterization`` for ``sde`` at ``(B,)`` times ``t``.

    See the module docstring for the table of formulas; ``noise_input`` is ``"log_sigma"`` or
    ``"t"`` (``"auto"`` is resolved by :class:`ScoreModel`).
    """
    s, std = sde.scale(t), sde.std(t)
    m = torch.sqrt((s * sigma_data) ** 2 + std**2)
    c_noise = torch.log(sde.sigma(t)) / 4 if noise_input == "log_sigma" else t
    row = _row(parameterization, sde, t, s, std, m, sigma_data)
    return ScoreCoefficients(1.0 / m, c_noise, *row)


def resolve_noise_input(noise_input: str, sde: SDE) -> str:
    """``"auto"`` -> ``"log_sigma"``, or ``"t"`` when ``sigma(T)`` is infinite (flow paths)."""
    check_choice("noise_input", noise_input, NOISE_INPUTS)
    if noise_input != "auto":
        return noise_input
    top = sde.sigma(torch.tensor(sde.T, dtype=torch.float64))
    return "log_sigma" if math.isfinite(float(top)) else "t"


def check_fits(
    parameterization: str, sde: SDE, *, sigma_data: float = 0.5, noise_input: str = "auto"
) -> None:
    """Raise ``ValueError`` unless the parameterisation is finite on ``sde``'s ``[eps, T]``.

    The table's coefficients and the noise input are evaluated at ``eps`` and ``T`` in
    float64. Where ``s(T) = 0`` (a flow path) ``score``, ``scaled_score`` and ``eps`` fail: their
    denoiser ``D = (x + ...) / s`` is unbounded at ``T`` (Lin et al. 2024, sec. 3.2).
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    noise = resolve_noise_input(noise_input, sde)
    t = torch.tensor([sde.eps, sde.T], dtype=torch.float64)
    c = coefficients(parameterization, sde, t, sigma_data=sigma_data, noise_input=noise)
    if not bool(torch.isfinite(c.c_noise).all()):
        raise ValueError(
            f"noise_input={noise!r} is infinite on {sde!r} at t = T (sigma(T) = inf): use "
            "noise_input='t' (the default 'auto' picks it)"
        )
    values = torch.stack([c.c_in, c.skip, c.out, c.d_skip, c.d_out])
    if bool(torch.isfinite(values).all()):
        return
    if sde.zero_terminal_snr:
        raise ValueError(
            f"parameterization={parameterization!r} does not fit {sde!r}: s(T) = 0 there, and "
            f"a {parameterization} network cannot give E[x0 | x_T] (Lin et al. 2024); use "
            "parameterization='flow' (or 'x0', 'v', 'edm')"
        )
    raise ValueError(
        f"parameterization={parameterization!r} is not finite on {sde!r} at t = eps or T; "
        "choose another parameterization or another eps"
    )


def from_velocity(velocity_fn: ScoreFn, sde: SDE) -> ScoreWithDenoiser:
    """Turn a velocity model ``v(x, t) ~ E[dx_t/dt | x_t = x]`` into a score function.

    The ``flow`` row of the table (module docstring): ``score = skip x + out v`` and
    ``D = d_skip x + d_out v``, both finite at ``T`` of a flow path, so every sampler, the
    likelihood and guidance run on a flow-matching model (e.g. one trained elsewhere; flip its
    time first if its data sit at ``t = 1``). ``t`` is a ``(B,)`` tensor on ``x``'s device.
    """
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn must be callable v(x, t), got {type(velocity_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")

    def combine(x: Tensor, t: Tensor, denoise: bool) -> Tensor:
        c = coefficients("flow", sde, t.to(x.dtype), noise_input="t")
        a, b = (c.d_skip, c.d_out) if denoise else (c.skip, c.out)
        return bcast(a, x) * x + bcast(b, x) * velocity_fn(x, t)

    return ScoreWithDenoiser(lambda x, t: combine(x, t, False), lambda x, t: combine(x, t, True))


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
        noise_input: ``"log_sigma"`` (``c_noise = log(sigma(t)) / 4``), ``"t"`` or ``"auto"``
            (the default: ``log_sigma`` unless ``sigma(T)`` is infinite, then ``t``).

    Raises ``ValueError`` when the parameterisation does not fit the SDE (:func:`check_fits`:
    e.g. ``eps`` on :class:`scoresde.RectifiedFlow`).

    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        parameterization: Parameterization = "eps",
        *,
        sigma_data: float = 0.5,
        noise_input: Literal["auto", "log_sigma", "t"] = "auto",
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
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.noise_input = resolve_noise_input(noise_input, sde)
        check_fits(
            self.parameterization, sde, sigma_data=self.sigma_data, noise_input=self.noise_input
        )

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
        """Tweedie's denoised estimate ``E[x0 | x_t] = (x + std^2 score) / s``.

        Computed as ``d_skip x + d_out F`` (the table's denoiser columns), which stays finite
        where ``s = 0`` (``T`` of a flow path).
        """
        c = self.coefficients(self._time(t, x))
        return bcast(c.d_skip, x) * x + bcast(c.d_out, x) * self._raw(x, c, y)

    def score_fn(self, y: Tensor | int | None = None, guidance: float = 1.0) -> ScoreWithDenoiser:
        """Return a ``score_fn(x, t)`` for samplers, optionally class-conditional.

        It is a :class:`~scoresde.sde.ScoreWithDenoiser`: its ``denoise(x, t)`` is
        :meth:`denoise` (guided the same way), which samplers use where ``s(t) = 0``.

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

            def plain_denoise(x: Tensor, t: Tensor) -> Tensor:
                return self.denoise(x, t)

            return ScoreWithDenoiser(score, plain_denoise)
        null = null_label(self.net)
        if null is None:
            raise ValueError(
                "labels were given but the network is unconditional; build it with num_classes=K"
            )
        guided_denoise: list[ScoreFn] = []

        def guided(x: Tensor, t: Tensor) -> Tensor:
            # D is affine in the score with the same coefficients for both labels, so the
            # guided D is the same combination of the two denoisers (built on first use)
            if not guided_denoise:
                guided_denoise.append(cfg_from_labels(self.denoise, y, null, guidance))
            return guided_denoise[0](x, t)

        return ScoreWithDenoiser(cfg_from_labels(self, y, null, guidance), guided)

    # ------------------------------------------------------------------------------------------
    def target(self, x_t: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Return the raw output ``F*`` giving the conditional score ``-noise/std`` at ``x_t``.

        ``F* = (-noise/std - skip x_t) / out``, for ``x_t = s x0 + std * noise``: ``noise`` for
        ``eps``, ``x0`` for ``x0``, ``v`` for ``v``, EDM's ``(x0 - c_skip x^)/c_out`` for ``edm``,
        the conditional velocity for ``flow``. Undefined where ``out = 0`` (``T`` of a flow
        path); the loss uses the closed form ``target_x0 x0 + target_z z`` instead.
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
        if weighting == "natural":  # ||F - F*||^2 with F* in closed form (finite if out = 0)
            x_t = bcast(self.sde.scale(t), x0) * x0 + bcast(self.sde.std(t), x0) * noise
            target = bcast(c.target_x0, x0) * x0 + bcast(c.target_z, x0) * noise
            per = (self._raw(x_t, c, y) - target).flatten(1).pow(2).sum(1)
            return reduce_batch(per, reduction)

        def score(x_t: Tensor, _: Tensor) -> Tensor:
            return self._score(x_t, c, y)

        return reduce_batch(dsm_per_sample(score, self.sde, x0, t, noise, weighting), reduction)

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
