"""Inverse problems against the closed-form mixture posterior of a linear-Gaussian model."""

from __future__ import annotations

import math

import pytest
import torch

from scoresde import VESDE, VPSDE
from scoresde.inverse import (
    Blur,
    ChannelMean,
    Downsample,
    LinearOperator,
    Mask,
    MatrixOperator,
    colorize,
    decoupling_basis,
    gaussian_kernel,
    gaussian_mixture_conditional,
    gaussian_mixture_posterior,
    inpaint,
    inpaint_linear,
    linear_posterior_score,
    random_projection,
    smc_linear,
    solve_linear,
    super_resolve,
)
from scoresde.metrics import frechet_distance, mode_report
from scoresde.targets import Gaussian, GaussianMixture

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def prior3() -> GaussianMixture:
    cov = [[[0.5, 0.2], [0.2, 0.4]], [[0.4, -0.1], [-0.1, 0.3]], [[0.3, 0.0], [0.0, 0.6]]]
    return GaussianMixture(
        [[-1.0, -2.0], [-0.5, 2.0], [1.5, 0.0]], covariances=cov, weights=[0.3, 0.4, 0.3]
    )


def assert_recovers(post: GaussianMixture, x: torch.Tensor, tv: float, margin: float) -> None:
    """Mode masses within ``tv``; per-mode Fréchet within ``margin`` of exact posterior draws of
    the same size (the assignment by most probable component biases Fréchet for overlapping
    modes, equally for both), checked for modes holding >= 5% of the mass."""
    rep = mode_report(post, x)
    ref = mode_report(post, post.sample(x.shape[0], gen(99), dtype=DT))
    assert rep.tv < tv, (rep.mass, post.weights)
    for k in range(post.n_components):
        if post.weights[k] >= 0.05:
            assert rep.frechet[k] < ref.frechet[k] + margin, (k, rep.frechet, ref.frechet)


# ------------------------------------------------------------------------------------------
# the closed form itself


def test_posterior_is_bayes_rule() -> None:
    prior = prior3()
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    y = torch.tensor([0.3], dtype=DT)
    post = gaussian_mixture_posterior(prior, a, y, noise_std=0.3)
    x = torch.randn(50, 2, generator=gen(0), dtype=DT) * 2
    log_lik = -0.5 * ((y - x @ a.T) ** 2).sum(1) / 0.09
    diff = post.log_prob(x) - prior.log_prob(x) - log_lik
    assert float(diff.max() - diff.min()) < 1e-9  # log p(x|y) = log p(x) + log p(y|x) + const


def test_conditional_is_bayes_rule() -> None:
    prior = prior3()
    cond = gaussian_mixture_conditional(
        prior, torch.tensor([True, False]), torch.tensor([0.4, 0.0], dtype=DT)
    )
    x2 = torch.randn(50, 1, generator=gen(1), dtype=DT) * 2
    joint = prior.log_prob(torch.cat([torch.full_like(x2, 0.4), x2], 1))
    diff = cond.log_prob(x2) - joint
    assert float(diff.max() - diff.min()) < 1e-9


def test_posterior_bad_input() -> None:
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        gaussian_mixture_posterior(prior3(), torch.eye(2, dtype=DT), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="maps 2 values to 2"):
        gaussian_mixture_posterior(prior3(), torch.eye(2, dtype=DT), torch.zeros(3), 0.1)


# ------------------------------------------------------------------------------------------
# operators


def _ops() -> list[tuple[str, LinearOperator, tuple[int, ...]]]:
    mask = (torch.rand(2, 4, 4, generator=gen(2)) > 0.5).double()
    return [
        ("mask", Mask(mask), (2, 4, 4)),
        ("channel_mean", ChannelMean(3), (3, 4, 4)),
        ("downsample", Downsample(2), (3, 4, 4)),
        ("blur", Blur(gaussian_kernel(1.0)), (2, 5, 5)),
        ("matrix", MatrixOperator(torch.randn(3, 6, generator=gen(3), dtype=DT), (2, 3)), (2, 3)),
        ("projection", random_projection(4, (2, 5), gen(4)), (2, 5)),
        ("autograd_adjoint", LinearOperator(lambda x: x.cumsum(-1)[..., ::2], x_shape=(6,)), (6,)),
    ]


@pytest.mark.parametrize("name,op,shape", _ops(), ids=[o[0] for o in _ops()])
def test_adjoint_dot_product(name: str, op: LinearOperator, shape: tuple[int, ...]) -> None:
    x = torch.randn(5, *shape, generator=gen(5), dtype=DT)
    ax = op(x)
    y = torch.randn(ax.shape, generator=gen(6), dtype=DT)
    aty = op.adjoint(y)
    assert aty.shape == x.shape
    lhs = (ax * y).reshape(5, -1).sum(1)
    rhs = (x * aty).reshape(5, -1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    mat = op.matrix(shape)
    assert torch.allclose(x.reshape(5, -1) @ mat.T, ax.reshape(5, -1), atol=1e-12)


def test_operator_bad_input() -> None:
    with pytest.raises(ValueError, match="0 \\(missing\\) and 1"):
        Mask(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="needs x_shape"):
        LinearOperator(lambda x: x)
    with pytest.raises(ValueError, match="divisible"):
        Downsample(3)(torch.zeros(1, 1, 4, 4))


# ------------------------------------------------------------------------------------------
# guided posterior sampling


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_tmpd_is_exact_for_gaussian_prior(sde: object) -> None:
    cov = torch.tensor([[1.0, 0.5, 0.2], [0.5, 0.8, -0.3], [0.2, -0.3, 0.6]], dtype=DT)
    prior = Gaussian([0.5, -1.0, 0.0], covariance=cov)
    op = random_projection(2, 3, gen(7))
    y = torch.tensor([[0.7, -0.4]], dtype=DT)
    post = gaussian_mixture_posterior(prior, op, y, noise_std=0.2)
    n = 2000
    x = solve_linear(
        prior.score_fn(sde),
        sde,
        y,
        op,
        (n, 3),
        noise_std=0.2,
        method="tmpd",  # type: ignore[arg-type]
        steps=150,
        generator=gen(8),
        schedule="logsnr",
    )
    fd = frechet_distance(x.mean(0), torch.cov(x.T), post.means[0], post.covariances()[0])
    exact = post.sample(n, gen(9), dtype=DT)
    fd_ref = frechet_distance(
        exact.mean(0), torch.cov(exact.T), post.means[0], post.covariances()[0]
    )
    assert fd < fd_ref + 0.01, (fd, fd_ref)


@pytest.mark.parametrize("twist", ["tmpd", "pgdm"])
def test_smc_recovers_mixture_posterior(twist: str) -> None:
    prior, sde = prior3(), VPSDE()
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    y = torch.tensor([[0.3]], dtype=DT)
    post = gaussian_mixture_posterior(prior, a, y, noise_std=0.3)
    res = smc_linear(
        prior.score_fn(sde),
        sde,
        y,
        a,
        (3000, 2),
        noise_std=0.3,
        twist=twist,
        steps=100,
        generator=gen(10),
    )
    assert res.samples.shape == (3000, 2) and res.ess.shape == (100,)
    assert torch.allclose(res.log_weights.exp().sum(), torch.tensor(1.0, dtype=DT))
    assert_recovers(post, res.samples, tv=0.05, margin=0.05)


def test_smc_inpaints_one_coordinate_of_a_mixture() -> None:
    # observe x1 = 0 (noise 0.05): the posterior of x2 is a 3-mode mixture weighted .25/.73/.02
    prior, sde = prior3(), VESDE(0.01, 10.0)
    mask = torch.tensor([1.0, 0.0], dtype=DT)
    y = torch.zeros(1, 2, dtype=DT)
    post = gaussian_mixture_posterior(prior, Mask(mask), y, noise_std=0.05)
    cond = gaussian_mixture_conditional(prior, mask.bool(), y[0])
    assert torch.allclose(post.weights, cond.weights, atol=0.01)
    res = smc_linear(
        prior.score_fn(sde),
        sde,
        y,
        Mask(mask),
        (3000, 2),
        noise_std=0.05,
        twist="tmpd",
        steps=100,
        generator=gen(11),
    )
    assert_recovers(post, res.samples, tv=0.05, margin=0.05)
    assert float(res.samples[:, 0].abs().max()) < 0.05 * 6


def test_guided_only_methods_are_biased_on_mixtures() -> None:
    # documents why smc_linear exists: without reweighting the mode masses are off
    prior, sde = prior3(), VPSDE()
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    y = torch.tensor([[0.3]], dtype=DT)
    post = gaussian_mixture_posterior(prior, a, y, noise_std=0.3)
    x = solve_linear(
        prior.score_fn(sde),
        sde,
        y,
        a,
        (1000, 2),
        noise_std=0.3,
        steps=100,
        method="pgdm",
        generator=gen(12),
    )
    assert mode_report(post, x).tv > 0.1


def test_linear_score_bad_input() -> None:
    prior, sde = prior3(), VPSDE()
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    with pytest.raises(ValueError, match="needs noise_std > 0"):
        linear_posterior_score(
            prior.score_fn(sde), sde, a, torch.zeros(1, 1), noise_std=0.0, method="dps"
        )
    with pytest.raises(ValueError, match="Did you mean 'tmpd'"):
        linear_posterior_score(
            prior.score_fn(sde), sde, a, torch.zeros(1, 1), noise_std=0.1, method="tmdp"
        )


def test_super_resolution_shapes_and_consistency() -> None:
    # a 4x4 one-channel Gaussian image prior; noise-free 2x downsampling is matched closely
    prior = Gaussian(torch.zeros(16), variance=1.0, event_shape=(1, 4, 4))
    sde = VPSDE()
    x_true = prior.sample(4, gen(13), dtype=DT)
    y = Downsample(2)(x_true)
    x = super_resolve(
        prior.score_fn(sde),
        sde,
        y,
        2,
        noise_std=0.0,
        steps=100,
        generator=gen(14),
        schedule="logsnr",
    )
    assert x.shape == x_true.shape
    assert float((Downsample(2)(x) - y).abs().max()) < 0.05


def test_inpaint_linear_keeps_known_values() -> None:
    prior, sde = prior3(), VPSDE()
    y = torch.tensor([[0.2, 9.0]], dtype=DT).expand(16, 2)
    mask = torch.tensor([1.0, 0.0], dtype=DT)
    x = inpaint_linear(prior.score_fn(sde), sde, y, mask, steps=50, generator=gen(15))
    assert torch.equal(x[:, 0], y[:, 0]) and bool((x[:, 1] != 9.0).all())


# ------------------------------------------------------------------------------------------
# PC imputation with replacement


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_inpaint_keeps_known_values_exactly(sde: object) -> None:
    prior = GaussianMixture(
        torch.randn(2, 16, generator=gen(16)), variances=0.5, event_shape=(1, 4, 4)
    )
    y = prior.sample(6, gen(17), dtype=DT)
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1  # left half known
    x = inpaint(prior.score_fn(sde), sde, y, mask, steps=40, generator=gen(18))  # type: ignore[arg-type]
    assert x.shape == y.shape and x.dtype == DT
    assert torch.equal(x[..., :2], y[..., :2])
    assert bool(torch.isfinite(x).all()) and not torch.equal(x[..., 2:], y[..., 2:])


def test_inpaint_matches_prior_when_known_part_is_independent() -> None:
    # with independent coordinates the missing one keeps its prior marginal: replacement is
    # exact there, and the final output is the denoised mean (no noisy x mixed in)
    prior = Gaussian([1.0, -0.5], variance=[0.3, 0.7])
    sde = VPSDE()
    n = 4000
    y = torch.full((n, 2), 2.0, dtype=DT)
    x = inpaint(
        prior.score_fn(sde),
        sde,
        y,
        torch.tensor([True, False]),
        steps=100,
        corrector=None,
        generator=gen(19),
    )
    x2 = x[:, 1]
    assert abs(float(x2.mean()) + 0.5) < 5 * math.sqrt(0.7 / n)
    assert abs(float(x2.var()) - 0.7) < 5 * 0.7 * math.sqrt(2 / n)


def test_inpaint_bad_input() -> None:
    prior, sde = prior3(), VPSDE()
    y = torch.zeros(4, 2, dtype=DT)
    with pytest.raises(ValueError, match="does not broadcast"):
        inpaint(prior.score_fn(sde), sde, y, torch.ones(3), steps=5)
    with pytest.raises(ValueError, match="0/False"):
        inpaint(prior.score_fn(sde), sde, y, torch.tensor([0.5, 1.0]), steps=5)
    with pytest.raises(ValueError, match="Did you mean 'ancestral'"):
        inpaint(prior.score_fn(sde), sde, y, torch.tensor([1, 0]), steps=5, predictor="ancestrl")


def test_decoupling_basis_is_orthogonal_with_grey_first() -> None:
    m = decoupling_basis(3)
    assert torch.allclose(m @ m.T, torch.eye(3, dtype=DT), atol=1e-12)
    assert torch.allclose(m[0], torch.full((3,), 1 / math.sqrt(3), dtype=DT))


def test_colorize_keeps_grey_and_samples_colour_prior() -> None:
    # prior on 3x1x2 images, independent between grey and colour directions: colourisation is
    # exact, so the decoupled colour channels must follow the prior's
    m = decoupling_basis(3)
    d_u = torch.tensor([1.0, 0.4, 0.2], dtype=DT)  # variances of (grey, colour1, colour2)
    cov_pix = m.T @ torch.diag(d_u) @ m
    cov = torch.block_diag(cov_pix, cov_pix)  # two pixels, channel-major reordering below
    perm = torch.tensor([0, 3, 1, 4, 2, 5])  # (channel, pixel) order from (pixel, channel)
    cov = cov[perm][:, perm]
    prior = Gaussian(torch.zeros(6), covariance=cov, event_shape=(3, 1, 2))
    sde = VESDE(0.01, 10.0)
    n = 2000
    gray = ChannelMean(3)(prior.sample(n, gen(20), dtype=DT))
    x = colorize(prior.score_fn(sde), sde, gray, steps=100, corrector=None, generator=gen(21))
    assert x.shape == (n, 3, 1, 2)
    assert torch.allclose(ChannelMean(3)(x), gray, atol=1e-10)
    u = torch.einsum("ij,bjhw->bihw", m, x)[:, 1:].reshape(n, -1)
    target_cov = torch.diag(torch.tensor([0.4, 0.4, 0.2, 0.2], dtype=DT))
    fd = frechet_distance(u.mean(0), torch.cov(u.T), torch.zeros(4, dtype=DT), target_cov)
    assert fd < 0.02, fd
