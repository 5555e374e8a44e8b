"""``fast``'s split solver: the data Gaussian's flow exact, DPM-Solver++ for the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scoresde as S
from scoresde._quadrature import lagrange_weights
from scoresde.metrics import mode_report
from scoresde.sampling.base import Context, ScheduleContext
from scoresde.sampling.data_gaussian import DataGaussian, data_gaussian
from scoresde.sampling.dpm_solver import dpm_solver
from scoresde.sampling.profile import cached_profile, noise_profile
from scoresde.sampling.split import split_dpm_solver
from scoresde.targets import GaussianMixture

EDM = S.EDMSDE(0.002, 80.0)
F64 = torch.float64


def sctx(fn: object, sde: S.SDE, d: int) -> ScheduleContext:
    return ScheduleContext(fn, sde, (d,), 64, torch.device("cpu"), F64)  # type: ignore[arg-type]


def grid(sde: S.SDE, n: int, hi: float = 20.0, lo: float = 0.05) -> torch.Tensor:
    sig = torch.logspace(math.log10(hi), math.log10(lo), n + 1, dtype=F64)
    return sde.sigma_inv(sig)


def smooth_mixture() -> GaussianMixture:
    means = torch.tensor([[2.0, 1.0, 0.0], [-2.0, 0.5, 1.0], [0.0, -2.0, -1.0]], dtype=F64)
    return GaussianMixture(
        means, torch.tensor([0.9, 1.0, 0.8], dtype=F64) ** 2, weights=[0.5, 0.3, 0.2]
    )


def test_lagrange_weights_integrate_polynomials_times_the_weight_exactly() -> None:
    """``int_a^b e^{l - b} p(l) dl`` for a cubic ``p``: closed form vs the weights on 4 nodes."""
    a, b, nodes = -1.0, 1.5, [-1.0, -0.2, 0.7, 1.5]

    def p(x: np.ndarray | float) -> np.ndarray | float:
        return 2.0 - x + 0.5 * x**2 - 0.25 * x**3

    w = lagrange_weights(nodes, a, b, lambda xs: np.exp(xs - b))
    got = float(sum(wj * p(nj) for wj, nj in zip(w, nodes, strict=True)))

    # antiderivative of e^{l - b} p(l): e^{l - b} (p - p' + p'' - p''')
    def anti(x: float) -> float:
        q = p(x) - (-1 + x - 0.75 * x**2) + (1 - 1.5 * x) - (-1.5)
        return math.exp(x - b) * float(q)

    assert got == pytest.approx(anti(b) - anti(a), rel=1e-13)
    # several weights at once, and the weight 1 (plain Adams quadrature)
    many = lagrange_weights(nodes, a, b, lambda xs: np.stack([np.ones_like(xs), 2 * xs]))
    plain = lagrange_weights(nodes, a, b)
    assert many.shape == (4, 2) and np.allclose(many[:, 0], plain, rtol=1e-14)


def test_data_gaussian_recovers_a_low_rank_plus_isotropic_covariance() -> None:
    """Leading variances, their subspace and the rest's variance from 4000 samples in 20-D."""
    g = torch.Generator().manual_seed(0)
    d, k = 20, 3
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    evals = torch.tensor([9.0, 4.0, 2.0] + [0.1] * (d - k), dtype=F64)
    z = torch.randn(4000, d, generator=g, dtype=F64)
    rows = 1.0 + (z * evals.sqrt()) @ q.T
    est = data_gaussian(rows, rows.mean(0), rank=k)
    assert est is not None and est.rank == k
    # sampling error of a variance from N = 4000: relative sqrt(2 / N) = 0.022; 4 sigma
    assert est.evals == pytest.approx([9.0, 4.0, 2.0], rel=0.09)
    assert est.rest == pytest.approx(0.1, rel=0.09)
    assert torch.allclose(est.basis.T @ est.basis, torch.eye(k, dtype=F64), atol=1e-10)
    overlap = torch.linalg.svdvals(q[:, :k].T @ est.basis)  # cosines of the principal angles
    assert float(overlap.min()) > 0.99
    # apply() is the operator U diag(c) U^T + c_rest (I - U U^T)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    u = est.basis
    full = (u * c[:-1]) @ u.T + c[-1] * (torch.eye(d, dtype=F64) - u @ u.T)
    assert torch.allclose(est.apply(c, z[:5]), z[:5] @ full.T, atol=1e-12)
    assert data_gaussian(rows[:1], rows[0], rank=3) is None  # one row has no spread


def test_split_with_zero_variances_is_dpm_solver_with_the_corrector() -> None:
    gm = smooth_mixture()
    fn = gm.score_fn(EDM)
    g = cached_profile(sctx(fn, EDM, 3)).gaussian
    assert g is not None
    zero = DataGaussian(g.mean, g.basis, (0.0,) * g.rank, 0.0)
    x = 20.0 * torch.randn(32, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    for order in (2, 3):
        a = split_dpm_solver(Context(fn, EDM), x, grid(EDM, 10), zero, order=order)
        b = dpm_solver(Context(fn, EDM), x, grid(EDM, 10), order=order, corrector=True)
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sde", [EDM, S.VPSDE(), S.VESDE(0.01, 50.0)], ids=["edm", "vp", "ve"])
def test_gaussian_data_are_solved_exactly_in_three_steps(sde: S.SDE) -> None:
    """Data N(m, C) with C of rank 2 plus isotropic: the flow map from any level, exactly.

    ``x_hat(sigma_1) = m + (C + sigma_1^2)^{1/2} (C + sigma_0^2)^{-1/2} (x_hat(sigma_0) - m)``
    (split in every direction: ``cut=0``).
    """
    d = 6
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    ev = torch.tensor([4.0, 1.5] + [0.04] * (d - 2), dtype=F64)
    cov = (q * ev) @ q.T
    mean = torch.linspace(-1.0, 2.0, d, dtype=F64)
    gm = GaussianMixture(mean[None], covariances=cov[None])
    gauss = DataGaussian(mean, q[:, :2].contiguous(), (4.0, 1.5), 0.04)
    sig = sde.sigma(grid(sde, 1, hi=0.9 * float(sde.sigma(torch.tensor(sde.T)))))
    times = sde.sigma_inv(torch.tensor([float(sig[0]), 3.0, 0.7, 0.02], dtype=F64))
    s0, s1 = (float(v) for v in sde.sigma(times[[0, -1]]))
    x_hat = mean + torch.randn(16, d, generator=g, dtype=F64) * 3.0
    x = float(sde.scale(times[:1])) * x_hat
    out = split_dpm_solver(Context(gm.score_fn(sde), sde), x, times, gauss, order=2, cut=0.0)
    factor = (q * ((ev + s1**2) / (ev + s0**2)).sqrt()) @ q.T
    want = float(sde.scale(times[-1:])) * (mean + (x_hat - mean) @ factor.T)
    assert torch.allclose(out, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    ("order", "sizes", "slope"), [(3, (16, 32, 64), 3.0), (2, (128, 256, 512), 1.8)]
)
def test_split_solver_converges_at_its_order(
    order: int, sizes: tuple[int, ...], slope: float
) -> None:
    """RMS error against a 2048-step solve on a 3-mode mixture (float64); observed orders.

    The 2M method is still pre-asymptotic at 128 steps (its first step is DDIM's), so its sizes
    are larger; measured ratios 3.6 / 3.85 (2M) and 12.6 / 17.5 (3M + corrector).
    """
    gm = smooth_mixture()
    fn = gm.score_fn(EDM)
    gauss = cached_profile(sctx(fn, EDM, 3)).gaussian
    assert gauss is not None and min(gauss.evals) > 0.1
    x = 20.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def solve(n: int) -> torch.Tensor:
        return split_dpm_solver(Context(fn, EDM), x, grid(EDM, n), gauss, order=order)

    ref = solve(2048)
    errs = [float((solve(n) - ref).square().mean().sqrt()) for n in sizes]
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]
    assert min(orders) > slope, (errs, orders)


def three_modes(seed: int) -> GaussianMixture:
    """Three modes (weights 0.6 / 0.3 / 0.1, std 0.3) at random places of scale 1.5 in 30-D."""
    means = 1.5 * torch.randn(3, 30, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return GaussianMixture(means, torch.full((3,), 0.09, dtype=F64), weights=[0.6, 0.3, 0.1])


def test_fast_at_nfe_5_gets_the_mode_masses_right_with_the_split() -> None:
    """Mean mode-mass TV at NFE 5 over six such targets, 4096 samples each.

    Measured: split 0.0094, plain DPM-Solver++ 0.0192, exact samples 0.0133 (one draw each;
    the TV of exact samples has a standard deviation of about 0.005 per target).
    """
    tv: dict[str, float] = {"split": 0.0, "plain": 0.0, "exact": 0.0}
    for seed in range(3, 9):
        gm = three_modes(seed)
        fn = gm.score_fn(EDM)
        for name, split in (("split", True), ("plain", False)):
            x = S.sample(fn, EDM, (4096, 30), sampler="fast", steps=4, split=split,
                         generator=torch.Generator().manual_seed(4), dtype=F64)  # fmt: skip
            tv[name] += mode_report(gm, x).tv / 6
        tv["exact"] += mode_report(gm, gm.sample(4096, torch.Generator().manual_seed(5))).tv / 6
    assert tv["split"] < 0.7 * tv["plain"], tv
    assert tv["split"] < tv["exact"] + 0.004, tv  # within the sampling noise of 6 x 4096


def far_modes() -> GaussianMixture:
    """Two modes of unequal weight far apart in 10-D (the leading direction joins them)."""
    g = torch.Generator().manual_seed(3)
    means = 7.0 * torch.randn(2, 10, generator=g, dtype=F64)
    return GaussianMixture(means, torch.tensor([0.3, 0.25], dtype=F64) ** 2, weights=[0.8, 0.2])


def test_profile_carries_the_data_gaussian_only_where_it_applies() -> None:
    gm = far_modes()
    prof = noise_profile(sctx(gm.score_fn(EDM), EDM, 10))
    assert prof.gaussian is not None and prof.gaussian.rank == 8
    # the leading direction is the one between the two modes: variance w (1 - w) |mu1 - mu0|^2
    gap = gm.means[0] - gm.means[1]
    want = 0.8 * 0.2 * float(gap @ gap)
    assert prof.gaussian.evals[0] == pytest.approx(want, rel=0.25)
    flow = S.RectifiedFlow()
    assert noise_profile(sctx(gm.score_fn(flow), flow, 10)).gaussian is None

    def nothing(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # removes no noise
        return torch.zeros_like(x)

    assert noise_profile(sctx(nothing, EDM, 10)).gaussian is None


def test_final_step_extrapolates_the_denoiser_with_more_than_five_steps() -> None:
    """A wide Gaussian stopped at sigma 0.5: Tweedie's final step shrinks it, the extrapolation not.

    N(0, I) in 4-D, 9 steps from 20 to 0.5 then the step to 0 (20000 samples, std of the std
    about 0.0025): Tweedie alone gives ``1 / sqrt(1 + 0.25) = 0.89`` (measured 0.901); the
    extrapolation in ``sigma^2`` leaves an ``O(sigma_N^2 sigma_{N-1}^2)`` error (measured 0.977).
    """
    gm = GaussianMixture(torch.zeros(1, 4, dtype=F64), torch.tensor([1.0], dtype=F64))
    times = EDM.sigma_inv(torch.logspace(math.log10(20.0), math.log10(0.5), 10, dtype=F64))
    std = {}
    for split in (True, False):
        gen = torch.Generator().manual_seed(0)
        x = S.sample(gm.score_fn(EDM), EDM, (20000, 4), sampler="fast", schedule=times,
                     split=split, generator=gen, dtype=F64)  # fmt: skip
        std[split] = float(x.std())
    assert std[False] == pytest.approx(0.894, abs=0.012)
    assert std[True] == pytest.approx(1.0, abs=0.035) and std[True] > std[False] + 0.05
    # 4 steps (second order): Tweedie's step, as before
    kw = {"sampler": "fast", "schedule": times[::2], "dtype": F64}
    five = S.sample(
        gm.score_fn(EDM), EDM, (64, 4), generator=torch.Generator().manual_seed(0), **kw
    )
    raw = S.sample(gm.score_fn(EDM), EDM, (64, 4), generator=torch.Generator().manual_seed(0),
                   denoise=False, **kw)  # fmt: skip
    assert torch.allclose(five, gm.marginal_denoise(raw, times[::2][-1], EDM))
