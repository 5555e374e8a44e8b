"""The model's noise-level profile: where its data live, read from its denoiser.

A few-step schedule must start where the noised data are close to the prior and stop where the
denoiser has removed what it can (Karras et al. 2022, sec. 3; Sabour et al. 2024 fit the steps
to the model). Both levels depend on the data, so :func:`noise_profile` measures them from the
model itself: it runs DPM-Solver++(2M) (Lu et al. 2022; the probability-flow ODE in the scaled
variable ``x_hat = x / s``) on a small fixed-seed batch through ``levels``
log-spaced noise levels from the top of the SDE's range to its bottom, and records at each level

* the *noise fraction* ``r(sigma) = E||x_hat - D(x_hat; sigma)||^2 / (d sigma^2)``: the share of
  the noise the denoiser ``D`` removes; it is ``sigma^2 / (v + sigma^2)`` for Gaussian data of
  variance ``v`` per coordinate, so it falls from 1 (noise swamps the data) to 0 (every bit of
  detail resolved), and its fall marks the data's finest scale;
* the data's mean and variance, from ``E[D(x_hat; sigma)] = E[x0]`` and
  ``E[x_hat . D(x_hat; sigma)] = E||x0||^2`` (the noise is independent of ``x0``), read at the
  first level where the data show (:func:`_moment_level`);
* the data's leading covariance directions (:class:`~.data_gaussian.DataGaussian`, rank
  :data:`GAUSSIAN_RANK`), from the probe's rows at its last level, where they are samples of
  the model (``fast`` integrates that Gaussian's flow exactly, :mod:`.split`).

:func:`sigma_range` turns the profile into the start and end noise levels of a schedule.
The probe costs ``levels`` score calls on ``n`` rows; its generator is its own, so it consumes
nothing of the caller's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sde import SDE
from .base import ScheduleContext
from .data_gaussian import DataGaussian, data_gaussian

__all__ = [
    "NoiseProfile",
    "StartMoments",
    "noise_profile",
    "cached_profile",
    "sigma_range",
    "start_moments",
    "activity_levels",
]

PROBE_SEED = 20_211_130
"""The probe's own seed (the caller's generator is not touched)."""
PROBE_ROWS = 128
"""The rows the probe uses, whatever the caller's batch size."""
MOMENT_FRACTION = 0.9
"""The data's moments are read at the first probed level where ``r`` is at most this."""
TOP_SIGMA_CAP = 1e4
"""The probe's top level on SDEs whose ``sigma(T)`` is larger (flow paths: infinite)."""
GAUSSIAN_RANK = 8
"""Leading covariance directions the profile keeps (2-16 measured alike on random mixtures)."""


@dataclass(frozen=True)
class NoiseProfile:
    """A model's noise fraction ``r(sigma)`` on a decreasing grid, and its data's RMS.

    Attributes:
        sigmas: the probe's noise levels, decreasing (float64, CPU).
        fraction: ``r(sigma)`` at each level (see the module docstring), in ``[0, 1]``.
        rms: ``sqrt(E||x0||^2 / d)``, the data's root-mean-square size.
        calls: the score calls the probe made.
        mean: ``E[x0]`` (one sample's shape, on the sampling device and dtype), read from the
            denoiser's mean at the first level where ``r <= 0.9`` (:func:`_moment_level`).
        var: the data's variance per coordinate (averaged over coordinates).
        trusted: whether the top level behaves as noised data must (``r`` within 0.5 of 1
            there before clamping); an untrained network's denoiser does not.
        gaussian: the data's mean and leading covariance directions (module docstring);
            ``None`` when not ``trusted`` or on a flow path.
    """

    sigmas: Tensor
    fraction: Tensor
    rms: float
    calls: int
    mean: Tensor
    var: float
    trusted: bool
    gaussian: DataGaussian | None = None

    def sigma_at(self, r: float) -> float | None:
        """The level where ``r(sigma)`` last falls below ``r``, log-interpolated between levels.

        The smallest probed level when the fraction never falls to ``r``; ``None`` when it is
        below ``r`` already at the top level (a denoiser that removes no noise anywhere, such
        as an untrained network's).
        """
        frac, log_s = self.fraction, self.sigmas.log()
        above = (frac >= r).nonzero()
        if len(above) == 0:
            return None
        i = int(above[-1])  # the last level still at or above r
        if i == len(frac) - 1:
            return float(self.sigmas[-1])
        f0, f1 = float(frac[i]), float(frac[i + 1])
        w = (f0 - r) / max(f0 - f1, 1e-12)
        return float(torch.exp(log_s[i] + w * (log_s[i + 1] - log_s[i])))


def _moments(x_hat: Tensor, den: Tensor) -> tuple[Tensor, Tensor]:
    """``|E x0|^2 / d`` and the data's variance per coordinate, from ``E[x_hat . D] = E||x0||^2``.

    ``mean(D)^2`` and ``cov(x_hat, D)`` per coordinate, averaged: the centred product has a
    variance of the data's size, the raw product one of the noise level's.
    """
    xf, df = x_hat.flatten(1), den.flatten(1)
    mean = df.mean(0)
    return mean.square().mean(), ((xf - xf.mean(0)) * (df - mean)).mean()


def _moment_level(frac: Tensor) -> int:
    """The level the data's moments are read at: the first where the data show (``r <= 0.9``).

    The identities hold at every level for an exact denoiser, but a network is least accurate
    at the top of its range, where the data's share of ``x_hat`` is smallest; the last level
    when ``r`` never falls to 0.9.
    """
    below = (frac <= MOMENT_FRACTION).nonzero()
    return int(below[0]) if len(below) else len(frac) - 1


def _levels(ctx: ScheduleContext, levels: int) -> Tensor:
    """``levels`` log-spaced noise levels from the top of the SDE's range to ``sigma(eps)``."""
    sde = ctx.sde
    ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    top, bottom = (float(v) for v in sde.sigma(ends))
    top = min(top, TOP_SIGMA_CAP)
    return torch.logspace(math.log10(top), math.log10(bottom), levels, dtype=torch.float64)


@torch.no_grad()
def noise_profile(ctx: ScheduleContext, *, levels: int = 24, n: int = 128) -> NoiseProfile:
    """Probe the model's denoiser along a PF-ODE trajectory of ``n`` fixed-seed samples.

    ``levels`` score calls on ``n`` rows (module docstring), on the sampling device and dtype.
    """
    sde, dev, dt = ctx.sde, ctx.device, ctx.dtype
    sigmas = _levels(ctx, levels)
    times = sde.sigma_inv(sigmas).clamp(sde.eps, sde.T)
    g = torch.Generator().manual_seed(PROBE_SEED)
    x_hat = torch.randn((n, *ctx.event_shape), generator=g, dtype=torch.float64) * sigmas[0]
    x_hat = x_hat.to(device=dev, dtype=dt)
    sig, scales = sigmas.tolist(), sde.scale(times).to(device=dev, dtype=dt)
    t_all = times.to(device=dev, dtype=dt)
    fractions: list[Tensor] = []
    means: list[Tensor] = []
    moments: list[Tensor] = []
    prev: Tensor | None = None
    for j in range(levels):  # no host read per level
        s = scales[j]
        den = x_hat + s * sig[j] ** 2 * ctx.score(s * x_hat, t_all[j].expand(n))
        fractions.append((x_hat - den).square().mean() / sig[j] ** 2)
        means.append(den.mean(0))
        moments.extend(_moments(x_hat, den))
        if j + 1 < levels:  # DPM-Solver++(2M) on the log-uniform grid (DDIM on the first step)
            d_eff = den if prev is None else 1.5 * den - 0.5 * prev
            x_hat = d_eff + sig[j + 1] / sig[j] * (x_hat - d_eff)
            prev = den
    stats = torch.stack([*fractions, *moments]).double().cpu()  # the one host read
    frac = stats[:levels].clamp(0.0, 1.0)
    m = _moment_level(frac)
    mean_sq, var = stats[levels + 2 * m : levels + 2 * m + 2].clamp_min(0).tolist()
    mean = means[m]
    if not bool(torch.isfinite(stats).all()):
        raise ValueError(
            "the score function returned non-finite values while the sampler probed its noise "
            "range; check the model, or pass schedule= to skip the probe"
        )
    trusted = abs(float(stats[0]) - 1.0) < 0.5
    rms = math.sqrt(mean_sq + var)
    gauss = None
    if trusted and not ctx.sde.zero_terminal_snr:
        gauss = data_gaussian(den, mean, GAUSSIAN_RANK)
    return NoiseProfile(sigmas, frac, rms, levels, mean, var, trusted, gauss)


def cached_profile(ctx: ScheduleContext) -> NoiseProfile:
    """:func:`noise_profile` once per score function object, SDE, shape, device and dtype.

    The probe uses 128 rows whatever the caller's batch (so chunked and sharded runs choose
    the same schedule as one batch); a score function that only accepts the caller's batch
    size (e.g. one holding per-sample labels) is probed with that many rows instead. Kept by
    :meth:`~scoresde.sampling.base.ScheduleContext.memo`.
    """
    return ctx.memo("noise_profile", lambda: _probe_rows(ctx))


def _probe_rows(ctx: ScheduleContext) -> NoiseProfile:
    """:func:`noise_profile` on 128 rows, else (a batch-tied score function) the batch's."""
    try:
        return noise_profile(ctx, n=PROBE_ROWS)
    except (RuntimeError, ValueError, IndexError):
        if ctx.batch == PROBE_ROWS:
            raise
        return noise_profile(ctx, n=ctx.batch)


def sigma_range(
    profile: NoiseProfile, *, r_min: float, start_factor: float | None
) -> tuple[float, float | None] | None:
    """A schedule's end and start noise levels from a model's profile, or ``None``.

    The end is where the noise fraction falls to ``r_min`` (:meth:`NoiseProfile.sigma_at`).
    The start is ``start_factor`` times the data's RMS size, or ``None`` (start at ``T``)
    when ``start_factor`` is ``None`` or that level is not below the top of the SDE's range.
    ``None`` when the profile gives no usable end (not ``trusted``, no fall of ``r``, or an
    end within a factor 2 of the top level): the caller then needs another rule.
    """
    lo = profile.sigma_at(r_min)
    top = float(profile.sigmas[0])
    if not profile.trusted or lo is None or lo > 0.5 * top:
        return None
    hi = None if start_factor is None else start_factor * profile.rms
    if hi is None or hi >= top or hi <= 2 * lo:
        return lo, None
    return lo, hi


@dataclass(frozen=True)
class StartMoments:
    """A sampler's Gaussian start ``N(s mean, s^2 (sigma^2 + var) I)`` at its first level.

    ``mean`` (one sample's shape) and ``var`` are the data's mean and variance per coordinate,
    so the start has the first two moments of the noised data, where the SDE's prior
    ``N(0, s^2 sigma^2 I)`` drops the data's mean and variance (its error at ``sigma(T)``).
    ``gaussian`` is the profile's :class:`~.data_gaussian.DataGaussian` (``fast``'s split).
    """

    mean: Tensor
    var: float
    gaussian: DataGaussian | None = None

    def draw(self, sde: SDE, t: Tensor, z: Tensor) -> Tensor:
        """The start at time ``t`` (shape ``(1,)``) from standard normal draws ``z``.

        ``s (mean + sqrt(sigma^2 + var) z)``: the coefficients in ``t``'s dtype, the result in
        ``z``'s device and dtype.
        """
        s, std = sde.scale(t), (sde.sigma(t) ** 2 + self.var).sqrt()
        mean = self.mean.to(device=z.device, dtype=z.dtype)
        return s.to(z) * (mean + std.to(z) * z)


def start_moments(ctx: ScheduleContext) -> StartMoments | None:
    """The noised data's moments from the model's (cached) profile, or ``None``.

    ``None`` on a flow path (``s(T) = 0``: the prior is exact there) and when the profile is
    not ``trusted`` (the prior is then the better guess).
    """
    if ctx.sde.zero_terminal_snr:
        return None
    prof = cached_profile(ctx)
    return StartMoments(prof.mean, prof.var, prof.gaussian) if prof.trusted else None


def _fraction_at(profile: NoiseProfile, log_sigma: Tensor) -> Tensor:
    """``r`` at ``log_sigma`` (any order), linear in log sigma between probed levels."""
    ls, fr = profile.sigmas.log().flip(0), profile.fraction.flip(0)  # increasing
    x = log_sigma.clamp(float(ls[0]), float(ls[-1]))
    i = torch.searchsorted(ls, x).clamp(1, len(ls) - 1)
    w = (x - ls[i - 1]) / (ls[i] - ls[i - 1])
    return fr[i - 1] + w * (fr[i] - fr[i - 1])


def activity_levels(
    profile: NoiseProfile, hi: float, lo: float, steps: int, *, floor: float
) -> Tensor:
    """``steps + 1`` noise levels from ``hi`` to ``lo`` that share the denoiser's change.

    The levels equidistribute ``|dr / d log sigma| + floor`` in ``log sigma``: where the
    noise fraction ``r`` changes fast (the data's structure at that scale: modes separating,
    then their widths resolving) the steps are short, and ``floor`` keeps them uniform in log
    sigma (log-SNR) where it does not (a schedule fitted to the model in the spirit of
    Sabour et al. 2024, from the probe's levels alone). Returns float64 levels, decreasing.
    """
    grid = torch.linspace(math.log(hi), math.log(lo), 512, dtype=torch.float64)
    dr = _fraction_at(profile, grid).diff().abs()
    dl = -grid.diff()
    cum = torch.cat([grid.new_zeros(1), torch.cumsum(dr + floor * dl, 0)])
    want = torch.linspace(0.0, float(cum[-1]), steps + 1, dtype=torch.float64)
    j = torch.searchsorted(cum, want).clamp(1, len(grid) - 1)
    w = (want - cum[j - 1]) / (cum[j] - cum[j - 1]).clamp_min(1e-300)
    levels = (grid[j - 1] + w * (grid[j] - grid[j - 1])).exp()
    levels[0], levels[-1] = hi, lo
    return levels
