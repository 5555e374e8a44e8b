"""Linear inverse problems ``y = A x + n``, ``n ~ N(0, sigma_n^2 I)``, with a score prior.

Bayes' rule for scores (Song et al. 2021, Sec. 5): ``grad log p_t(x_t | y) = grad log p_t(x_t) +
grad log p_t(y | x_t)``. The second term needs ``p_t(y | x_t) = ∫ p(y | x0) p(x0 | x_t) dx0``,
which is approximated through Tweedie's formulas for the moments of ``p(x0 | x_t)`` (with
``x_t = s x0 + s sigma z``)::

    m(x_t) = E[x0 | x_t] = x_t / s + s sigma^2 score(x_t, t)                  (first order)
    C(x_t) = Cov[x0 | x_t] = s sigma^2 dm/dx_t                               (second order)

and a Gaussian ``p_t(y | x_t) ≈ N(y; A m, sigma_n^2 I + A C A^T)``, whose gradient (holding the
covariance fixed) is ``(dm/dx_t)^T A^T (sigma_n^2 I + A C A^T)^{-1} (y - A m)``. Methods:

* ``"tmpd"``: the full second-order covariance (Tweedie moment projection, Boys et al. 2023),
  applied matrix-free with vector–Jacobian products inside conjugate gradients. For a Gaussian
  prior ``p(x0 | x_t)`` is Gaussian with exactly these moments, so the conditional score is exact
  and the sampler draws the exact posterior up to discretisation.
* ``"pgdm"``: the isotropic covariance ``C = r^2 I``, ``r^2 = v sigma^2 / (v + sigma^2)`` for
  data of variance ``v`` (pseudo-inverse guidance, Song et al. 2023).
* ``"dps"``: ``C = 0``, i.e. ``p(y | m(x_t))`` (diffusion posterior sampling, Chung et al. 2023);
  needs ``sigma_n > 0``. Chung et al. rescale the step by ``1/||y - A m||``; here ``scale``
  multiplies the likelihood gradient instead.

The conditional score is an ordinary ``score_fn``: :func:`solve_linear` hands it to
:func:`scoresde.sample`, so every sampler works with it. The same approximation,
:class:`GaussianLikelihood`, is the twisting function of :func:`~.smc.smc_linear`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_nonnegative, check_positive, check_tensor
from ..sampling import sample
from ..sampling.schedules import get_times
from ..sde import SDE, ScoreFn, bcast
from .operators import Blur, Downsample, LinearOperator, Mask, as_operator, gaussian_kernel
from .particles import PosteriorSamples, linear_smc

__all__ = [
    "METHODS",
    "SOLVERS",
    "tweedie_mean",
    "LikelihoodTerms",
    "GaussianLikelihood",
    "linear_posterior_score",
    "solve_linear",
    "super_resolve",
    "deblur",
    "inpaint_linear",
]

METHODS = ("tmpd", "pgdm", "dps")
"""The approximations of ``Cov[x0 | x_t]`` in ``p_t(y | x_t)``; see the module docstring."""


def tweedie_mean(score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor) -> Tensor:
    """Tweedie's ``E[x0 | x_t] = x_t / s + s sigma^2 score(x_t, t)`` for a ``(B,)`` time ``t``."""
    return sde.tweedie(x, t, score_fn(x, t))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(1)


def _cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float) -> Tensor:
    """Batched conjugate gradients for symmetric positive definite ``M v = b`` (per sample)."""
    v = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _dot(r, r)
    stop = tol**2 * rs.clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(iters):
        active = rs > stop
        if not bool(active.any()):
            break
        mp = matvec(p)
        pmp = _dot(p, mp)
        ok = active & (pmp > 0)
        alpha = torch.where(ok, rs / torch.where(ok, pmp, torch.ones_like(pmp)), 0 * rs)
        v = v + bcast(alpha, v) * p
        r = r - bcast(alpha, r) * mp
        rs_new = _dot(r, r)
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), 0 * rs)
        p = r + bcast(beta, p) * p
        rs = torch.where(ok, rs_new, 0 * rs)
    return v


class LikelihoodTerms(NamedTuple):
    """The prior score and the Gaussian likelihood approximation at ``(x_t, t)``."""

    score: Tensor
    """Prior score ``score_fn(x_t, t)``."""
    grad: Tensor
    """``grad_x log p_t(y | x_t)`` (covariance held fixed)."""
    log_twist: Tensor
    """``-(y - A m)^T Sigma^{-1} (y - A m) / 2`` per sample ``(B,)`` (no log-determinant)."""


class GaussianLikelihood:
    """``p_t(y | x_t) ≈ N(y; A m(x_t), Sigma)`` for one linear problem ``y = A x + n``.

    ``m`` is Tweedie's mean and ``Sigma = sigma_n^2 I + A C A^T`` with ``C`` chosen by ``method``
    (see the module docstring). Calling it on ``(x_t, t)`` gives the :class:`LikelihoodTerms`:
    the guidance of :func:`linear_posterior_score` and the twist of :func:`~.smc.smc_linear`.

    Args:
        score_fn: the prior's score (must not mix batch samples).
        sde: its forward SDE.
        operator: ``A`` as a :class:`LinearOperator` or a dense ``(m, d)`` matrix.
        y: the measurements ``(B, *y_shape)`` (or ``(1, *y_shape)`` to share one).
        noise_std: the measurement noise ``sigma_n >= 0`` (``> 0`` for ``"dps"``).
        method: one of :data:`METHODS`.
        cg_iters: conjugate-gradient iterations for ``Sigma^{-1}`` (``"tmpd"``, ``"pgdm"``).
        cg_tol: relative residual at which CG stops.
        data_var: data variance ``v`` of the ``"pgdm"`` covariance ``r^2 = v sigma^2/(v+sigma^2)``.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        sde: SDE,
        operator: LinearOperator | Tensor,
        y: Tensor,
        *,
        noise_std: float,
        method: str = "tmpd",
        cg_iters: int = 20,
        cg_tol: float = 1e-6,
        data_var: float = 1.0,
    ) -> None:
        self.method = check_choice("method", method, METHODS)
        self.noise_var = check_nonnegative("noise_std", noise_std) ** 2
        if self.method == "dps" and self.noise_var == 0:
            raise ValueError(
                "method 'dps' needs noise_std > 0 (its likelihood is N(y; A m, "
                "noise_std^2 I)); use 'tmpd' or 'pgdm' for noise-free measurements"
            )
        self.data_var = check_positive("data_var", data_var)
        if isinstance(cg_iters, bool) or not isinstance(cg_iters, int) or cg_iters < 1:
            raise ValueError(f"cg_iters must be a positive integer, got {cg_iters!r}")
        self.cg_iters, self.cg_tol = cg_iters, float(cg_tol)
        self.op = as_operator(operator)
        self.y = check_tensor("y", y)
        self.score_fn, self.sde = score_fn, sde

    def __call__(self, x: Tensor, t: Tensor) -> LikelihoodTerms:
        """The prior score and ``N(y; A m, Sigma)``'s gradient and exponent at ``x_t``.

        One forward pass of the score, ``cg_iters`` vector–Jacobian products for ``"tmpd"``,
        one more for the gradient ``(dm/dx_t)^T A^T Sigma^{-1} (y - A m)``.
        """
        self.op = as_operator(self.op, x.shape[1:])  # a matrix fits any event of d values
        y = self.y.to(device=x.device, dtype=x.dtype)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            s_prior = self.score_fn(xr, t)
            m = self.sde.tweedie(xr, t, s_prior)
            resid = (y - self.op(m.detach())).detach()
            if resid.shape[0] != x.shape[0]:
                resid = resid.expand(x.shape[0], *resid.shape[1:])

            def jac_t(u: Tensor) -> Tensor:  # (dm/dx)^T u, = (dm/dx) u for a symmetric Jacobian
                (g,) = torch.autograd.grad(m, xr, grad_outputs=u, retain_graph=True)
                return g

            if self.method == "dps":
                v = resid / self.noise_var
            else:
                v = _cg(self._covariance(t, jac_t), resid, self.cg_iters, self.cg_tol)
            (g,) = torch.autograd.grad(m, xr, grad_outputs=self.op.adjoint(v))
        return LikelihoodTerms(s_prior.detach(), g, -0.5 * _dot(resid, v))

    def _covariance(
        self, t: Tensor, jac_t: Callable[[Tensor], Tensor]
    ) -> Callable[[Tensor], Tensor]:
        """``u -> Sigma u = noise_var u + A C A^T u`` for ``"pgdm"`` or ``"tmpd"``.

        ``"pgdm"``: ``C = r^2 I``; ``"tmpd"``: ``C = s sigma^2 dm/dx_t`` through ``jac_t``, the
        vector–Jacobian product of Tweedie's mean (symmetric: the Jacobian of a gradient field).
        """
        op, sde, noise_var = self.op, self.sde, self.noise_var
        if self.method == "pgdm":
            sig2 = sde.sigma(t) ** 2
            r2 = self.data_var * sig2 / (self.data_var + sig2)
            return lambda u: noise_var * u + bcast(r2, u) * op(op.adjoint(u))
        c = sde.scale(t) * sde.sigma(t) ** 2

        def matvec(u: Tensor) -> Tensor:
            a = op.adjoint(u)
            return noise_var * u + op(bcast(c, a) * jac_t(a))

        return matvec


def linear_posterior_score(
    score_fn: ScoreFn,
    sde: SDE,
    operator: LinearOperator | Tensor,
    y: Tensor,
    *,
    noise_std: float,
    method: str = "tmpd",
    scale: float = 1.0,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    data_var: float = 1.0,
) -> ScoreFn:
    """The conditional score ``score(x_t, t) + scale * grad log p_t(y | x_t)`` for ``y = A x + n``.

    Args:
        score_fn: the prior's score (exact or a wrapped network; must not mix batch samples).
        sde: the forward SDE of the score.
        operator: ``A`` as a :class:`LinearOperator` or a dense ``(m, d)`` matrix.
        y: the measurements ``(B, *y_shape)`` (or ``(1, *y_shape)`` to share one).
        noise_std: the measurement noise ``sigma_n >= 0`` (``> 0`` for ``"dps"``).
        method: ``"tmpd"`` (second-order Tweedie, exact for Gaussian priors), ``"pgdm"`` or
            ``"dps"``; see the module docstring.
        scale: multiplies the likelihood gradient (1 = Bayes' rule).
        cg_iters: conjugate-gradient iterations for ``(sigma_n^2 I + A C A^T)^{-1}``.
        cg_tol: relative residual at which CG stops.
        data_var: data variance ``v`` of the ``"pgdm"`` covariance ``r^2 = v sigma^2/(v+sigma^2)``.

    Returns:
        A ``score_fn(x, t)`` usable by :func:`scoresde.sample` (gradients by autograd inside).
    """
    likelihood = GaussianLikelihood(
        score_fn,
        sde,
        operator,
        y,
        noise_std=noise_std,
        method=method,
        cg_iters=cg_iters,
        cg_tol=cg_tol,
        data_var=data_var,
    )
    w = float(scale)

    def score(x: Tensor, t: Tensor) -> Tensor:
        terms = likelihood(x, t)
        return terms.score + w * terms.grad

    return score


SOLVERS = (*METHODS, "smc")
"""``method=`` of :func:`solve_linear`: a guided sampler with one of :data:`METHODS`, or SMC."""


def solve_linear(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    operator: LinearOperator | Tensor,
    shape: tuple[int, ...],
    *,
    noise_std: float,
    method: str = "tmpd",
    scale: float = 1.0,
    cg_iters: int = 20,
    data_var: float = 1.0,
    sampler: str = "euler_maruyama",
    steps: int = 500,
    generator: torch.Generator | None = None,
    particles: int | None = None,
    twist: str = "tmpd",
    draws: int = 1,
    batch_size: int | None = None,
    ess_threshold: float = 0.5,
    return_info: bool = False,
    **sample_options: Any,
) -> Any:
    """Sample ``p(x | y)`` for ``y = A x + N(0, noise_std^2 I)`` with a score prior.

    What each method samples:

    * ``"tmpd"``, ``"pgdm"``, ``"dps"``: builds :func:`linear_posterior_score` and runs
      :func:`scoresde.sample` with it. Exact for a Gaussian prior with ``"tmpd"``; *biased*
      otherwise (the Gaussian ``p_t(y | x_t)`` misses the mode masses of multimodal
      posteriors: TV 0.13-0.24 on a 3-mode 2-D oracle, ``benchmarks/RESULTS.md``).
    * ``"smc"``: twisted SMC (Wu et al. 2023; :mod:`.particles`) with ``particles = K`` particles
      per measurement and the ``twist`` approximation as twisting function; *exact as
      K -> infinity* up to the time discretisation; needs ``noise_std > 0`` (for noise-free
      known values use ``inpaint(..., method="smc")``). Costs ``K x (steps + 1)`` score
      evaluations per measurement, plus the twist's vector–Jacobian products.

    Args:
        score_fn: the prior's score.
        sde: its forward SDE.
        y: measurements ``(B, *y_shape)`` (``B`` must equal ``shape[0]``, or 1 to share).
        operator: ``A`` (a :class:`LinearOperator` or an ``(m, d)`` matrix).
        shape: ``(B, *x_shape)`` of the samples.
        noise_std: measurement noise level ``sigma_n``.
        method: ``"tmpd"``, ``"pgdm"``, ``"dps"`` (guided) or ``"smc"``.
        scale: multiplies the likelihood gradient (guided only).
        cg_iters: conjugate-gradient iterations (``tmpd``/``pgdm``).
        data_var: data variance for ``pgdm``.
        sampler: any registered sampler (guided only; SMC moves by Euler–Maruyama).
        steps: number of steps.
        generator: source of randomness.
        particles: ``K`` particles per measurement (``"smc"`` only; default 16).
        twist: the SMC twist, one of :data:`METHODS`.
        draws: posterior draws per measurement (``"smc"``: one systematic resampling of the
            final particles; guided: ``draws`` independent runs).
        batch_size: the most particles (measurements x ``K``) moved at once (``"smc"``).
        ess_threshold: SMC resamples a measurement's particles below this ESS fraction.
        return_info: return a :class:`~scoresde.inverse.PosteriorSamples` (draws, ESS, cost).
        **sample_options: passed to :func:`scoresde.sample` (schedule, eps, sampler options);
            ``"smc"`` takes ``schedule`` and ``eps`` only.

    Returns:
        Posterior samples shaped ``shape`` (``(draws, *shape)`` for ``draws > 1``); a
        :class:`~scoresde.inverse.PosteriorSamples` holding them with ``return_info=True``.
    """
    check_tensor("y", y)
    if y.shape[0] not in (1, shape[0]):
        raise ValueError(f"y has batch size {y.shape[0]}; it must be 1 or shape[0]={shape[0]}")
    method = check_choice("method", method, SOLVERS)
    draws = check_int("draws", draws, 1)
    if method == "smc":
        if sampler != "euler_maruyama" or set(sample_options) - {"schedule", "eps"}:
            extra = sorted(set(sample_options) - {"schedule", "eps"}) or [f"sampler={sampler!r}"]
            raise ValueError(
                f"method='smc' moves by Euler-Maruyama steps and takes schedule/eps only; "
                f"drop {extra}"
            )
        make = partial(
            GaussianLikelihood, score_fn, sde, operator, noise_std=noise_std,
            method=check_choice("twist", twist, METHODS), cg_iters=cg_iters, data_var=data_var,
        )  # fmt: skip
        smc = _SMCSettings(steps, particles, draws, batch_size, ess_threshold, sample_options)
        res = _solve_smc(make, y, shape, smc, generator)
        return res if return_info else res.samples
    if particles is not None:
        raise ValueError(f"particles={particles!r} needs method='smc'")
    cond = linear_posterior_score(
        score_fn,
        sde,
        operator,
        y,
        noise_std=noise_std,
        method=method,
        scale=scale,
        cg_iters=cg_iters,
        data_var=data_var,
    )
    runs = [
        sample(
            cond,
            sde,
            shape,
            sampler=sampler,
            steps=steps,
            generator=generator,
            device=y.device,
            dtype=y.dtype,
            return_info=True,
            **sample_options,
        )
        for _ in range(draws)
    ]
    out = runs[0].samples if draws == 1 else torch.stack([r.samples for r in runs])
    if not return_info:
        return out
    ess = torch.ones(shape[0], device=y.device, dtype=y.dtype)
    return PosteriorSamples(out, ess, f"guided-{method}", runs[0].nfe)


class _SMCSettings(NamedTuple):
    steps: int
    particles: int | None
    draws: int
    batch_size: int | None
    ess_threshold: float
    options: dict[str, Any]


def _solve_smc(
    make: Callable[[Tensor], GaussianLikelihood],
    y: Tensor,
    shape: tuple[int, ...],
    smc: _SMCSettings,
    generator: torch.Generator | None,
) -> PosteriorSamples:
    """``solve_linear(method="smc")``: :func:`.particles.linear_smc` with the twists ``make(y)``."""
    like = make(y[:1])  # checks the twist's settings once
    if like.noise_var == 0:
        raise ValueError(
            "method='smc' needs noise_std > 0 (its last weight is N(y; A x, noise_std^2 I)); "
            "for noise-free known values use scoresde.inverse.inpaint(..., method='smc')"
        )
    if not 0.0 <= float(smc.ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {smc.ess_threshold}")
    k = 16 if smc.particles is None else check_int("particles", smc.particles, 1)
    batch = None if smc.batch_size is None else check_int("batch_size", smc.batch_size, 1)
    times = get_times(
        like.sde, check_int("steps", smc.steps, 1), smc.options.get("schedule"),
        eps=smc.options.get("eps"), device=y.device, dtype=y.dtype,
    )  # fmt: skip
    return linear_smc(
        make, like.sde, y, as_operator(like.op, tuple(shape[1:])), tuple(shape), like.noise_var,
        times, particles=k, batch_size=batch, draws=smc.draws,
        ess_threshold=float(smc.ess_threshold), generator=generator,
    )  # fmt: skip


def super_resolve(
    score_fn: ScoreFn,
    sde: SDE,
    y_low: Tensor,
    factor: int,
    *,
    noise_std: float = 0.0,
    **kwargs: Any,
) -> Tensor:
    """Super-resolution: sample ``x`` given ``y_low = avgpool_factor(x) + noise`` (images).

    ``y_low`` is ``(B, C, h, w)``; the result is ``(B, C, h * factor, w * factor)``. Keyword
    arguments go to :func:`solve_linear`.
    """
    check_tensor("y_low", y_low, min_dim=4)
    b, c, h, w = y_low.shape
    return solve_linear(
        score_fn,
        sde,
        y_low,
        Downsample(factor),
        (b, c, h * factor, w * factor),
        noise_std=noise_std,
        **kwargs,
    )


def deblur(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    kernel: Tensor | float,
    *,
    noise_std: float = 0.0,
    **kwargs: Any,
) -> Tensor:
    """Deblurring: sample ``x`` given ``y = kernel * x + noise`` (images ``(B, C, H, W)``).

    ``kernel`` is a 2-D kernel or a Gaussian blur width ``sigma``. Keyword arguments go to
    :func:`solve_linear`.
    """
    check_tensor("y", y, min_dim=4)
    k = gaussian_kernel(float(kernel)) if not isinstance(kernel, Tensor) else kernel
    return solve_linear(score_fn, sde, y, Blur(k), tuple(y.shape), noise_std=noise_std, **kwargs)


def inpaint_linear(
    score_fn: ScoreFn,
    sde: SDE,
    y: Tensor,
    mask: Tensor,
    *,
    noise_std: float = 0.0,
    **kwargs: Any,
) -> Any:
    """Inpainting as a linear inverse problem ``y = mask * x`` (posterior-score sampling).

    Unlike :func:`~scoresde.inverse.inpaint` (replacement), the known values condition the
    trajectory through ``grad log p_t(y | x_t)``; with ``noise_std = 0`` the known values are put
    back exactly in the output. Keyword arguments go to :func:`solve_linear`.
    """
    check_tensor("y", y)
    m = torch.as_tensor(mask, device=y.device, dtype=y.dtype)
    op = Mask(m)
    out = solve_linear(score_fn, sde, op(y), op, tuple(y.shape), noise_std=noise_std, **kwargs)
    if noise_std == 0:
        x = out.samples if isinstance(out, PosteriorSamples) else out
        x = torch.where(torch.broadcast_to(m.bool(), x.shape), y, x)
        if not isinstance(out, PosteriorSamples):
            return x
        out.samples = x
    return out
