"""The likelihood approximation of the linear solvers and the twisted SMC sampler built on it.

Against closed forms: for a Gaussian prior ``p_t(y | x_t)`` is Gaussian with Tweedie's moments,
so the ``"tmpd"`` guidance is the exact posterior score and the ``"tmpd"`` twist the exact
log-likelihood up to a constant; twisted SMC with an exact twist then keeps its weights nearly
even, while a cruder twist leaves the weights to do the correcting.
"""

from __future__ import annotations

import pytest
import torch

from scoresde import VESDE, VPSDE
from scoresde.inverse import (
    MatrixOperator,
    gaussian_mixture_posterior,
    linear_posterior_score,
    random_projection,
    smc_linear,
    systematic_resample,
)
from scoresde.inverse.linear import GaussianLikelihood
from scoresde.metrics import frechet_distance
from scoresde.targets import Gaussian

DT = torch.float64
SDES = [VPSDE(), VESDE(0.01, 10.0)]
SDE_IDS = ["vp", "ve"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_problem() -> tuple[Gaussian, MatrixOperator, torch.Tensor, Gaussian]:
    """A correlated 3-d Gaussian prior, two random projections observed with noise 0.2."""
    cov = torch.tensor([[1.0, 0.5, 0.2], [0.5, 0.8, -0.3], [0.2, -0.3, 0.6]], dtype=DT)
    prior = Gaussian([0.5, -1.0, 0.0], covariance=cov)
    op = random_projection(2, 3, gen(7))
    y = torch.tensor([[0.7, -0.4]], dtype=DT)
    post = gaussian_mixture_posterior(prior, op, y, noise_std=0.2)
    return prior, op, y, post  # type: ignore[return-value]


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_tmpd_guidance_is_the_exact_posterior_score(sde: VPSDE) -> None:
    prior, op, y, post = gaussian_problem()
    cond = linear_posterior_score(
        prior.score_fn(sde), sde, op, y, noise_std=0.2, cg_iters=5, cg_tol=1e-12
    )
    x = 2 * torch.randn(8, 3, generator=gen(1), dtype=DT)
    for t in (0.05, 0.3, 0.9):
        tt = torch.full((8,), t, dtype=DT)
        assert torch.allclose(cond(x, tt), post.marginal_score(x, tt, sde), atol=1e-9), t


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_pgdm_guidance_is_exact_for_an_isotropic_prior(sde: VPSDE) -> None:
    # Cov[x0 | x_t] = v sigma^2 / (v + sigma^2) I exactly when the prior is N(mu, v I)
    prior = Gaussian([0.3, -0.2, 1.0], variance=0.7)
    op = random_projection(2, 3, gen(2))
    y = torch.tensor([[0.5, 0.1]], dtype=DT)
    post = gaussian_mixture_posterior(prior, op, y, noise_std=0.1)
    cond = linear_posterior_score(
        prior.score_fn(sde), sde, op, y, noise_std=0.1, method="pgdm", data_var=0.7, cg_tol=1e-12
    )
    x = torch.randn(8, 3, generator=gen(3), dtype=DT)
    tt = torch.full((8,), 0.4, dtype=DT)
    assert torch.allclose(cond(x, tt), post.marginal_score(x, tt, sde), atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_tmpd_twist_is_the_exact_log_likelihood_up_to_a_constant(sde: VPSDE) -> None:
    # log p_t(y | x_t) = log p_t(x_t | y) - log p_t(x_t) + const, the covariance fixed in x_t
    prior, op, y, post = gaussian_problem()
    likelihood = GaussianLikelihood(prior.score_fn(sde), sde, op, y, noise_std=0.2, cg_tol=1e-12)
    x = 2 * torch.randn(8, 3, generator=gen(4), dtype=DT)
    for t in (0.05, 0.3, 0.9):
        tt = torch.full((8,), t, dtype=DT)
        terms = likelihood(x, tt)
        exact = post.marginal_log_prob(x, tt, sde) - prior.marginal_log_prob(x, tt, sde)
        diff = terms.log_twist - exact
        assert float(diff.max() - diff.min()) < 1e-8, t
        assert torch.equal(terms.score, prior.score_fn(sde)(x, tt))


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_smc_weights_stay_even_under_the_exact_twist(sde: VPSDE) -> None:
    # without resampling: the exact twist leaves only discretisation error in the weights, the
    # zero-covariance twist of DPS leaves the weights to correct its proposals
    prior, op, y, post = gaussian_problem()
    kw = {"noise_std": 0.2, "steps": 60, "ess_threshold": 0.0, "schedule": "logsnr"}
    exact = smc_linear(prior.score_fn(sde), sde, y, op, (1000, 3), generator=gen(5), **kw)  # type: ignore[arg-type]
    crude = smc_linear(
        prior.score_fn(sde),
        sde,
        y,
        op,
        (1000, 3),
        twist="dps",
        generator=gen(5),
        **kw,  # type: ignore[arg-type]
    )
    assert exact.resampled == 0 and crude.resampled == 0
    assert float(exact.ess.min()) > 0.6 and float(crude.ess.min()) < 0.05
    x = exact.samples
    fd = frechet_distance(x.mean(0), torch.cov(x.T), post.means[0], post.covariances()[0])
    assert fd < 0.02, fd


def test_smc_with_nothing_observed_is_the_reverse_sde_sampler() -> None:
    # A = 0: the twist is flat, the proposal is the reverse SDE's Euler-Maruyama step, the
    # weights stay uniform and the particles follow the prior
    prior, _, _, _ = gaussian_problem()
    sde = VPSDE()
    n = 2000
    res = smc_linear(
        prior.score_fn(sde),
        sde,
        torch.tensor([[0.3]], dtype=DT),
        torch.zeros(1, 3, dtype=DT),
        (n, 3),
        noise_std=0.5,
        steps=100,
        generator=gen(6),
    )
    assert torch.allclose(res.ess, torch.ones_like(res.ess), atol=1e-12) and res.resampled == 0
    x = res.particles
    fd = frechet_distance(x.mean(0), torch.cov(x.T), prior.means[0], prior.covariances()[0])
    ref = prior.sample(n, gen(7), dtype=DT)
    assert isinstance(ref, torch.Tensor)
    fd_ref = frechet_distance(ref.mean(0), torch.cov(ref.T), prior.means[0], prior.covariances()[0])
    assert fd < fd_ref + 0.01, (fd, fd_ref)


def test_smc_resamples_when_the_ess_falls_below_the_threshold() -> None:
    prior, op, y, _ = gaussian_problem()
    sde = VPSDE()
    runs = {
        thr: smc_linear(
            prior.score_fn(sde),
            sde,
            y,
            op,
            (200, 3),
            noise_std=0.2,
            twist="dps",
            steps=20,
            ess_threshold=thr,
            generator=gen(8),
        )
        for thr in (0.0, 1.0)
    }
    assert runs[0.0].resampled == 0
    assert runs[1.0].resampled == 19  # every step but the last (the final resampling is apart)
    assert runs[1.0].samples.shape == (200, 3) and runs[1.0].ess.shape == (20,)


def test_smc_is_reproducible_and_accepts_an_unbatched_measurement() -> None:
    prior, op, y, _ = gaussian_problem()
    sde = VESDE(0.01, 10.0)

    def run(meas: torch.Tensor) -> torch.Tensor:
        res = smc_linear(
            prior.score_fn(sde), sde, meas, op, (64, 3), noise_std=0.2, steps=15, generator=gen(9)
        )
        return res.samples

    first = run(y)
    assert torch.equal(first, run(y)) and torch.equal(first, run(y[0]))


def test_systematic_resample_copies_each_particle_floor_or_ceil_of_n_w_times() -> None:
    n = 50
    log_w = torch.randn(n, generator=gen(10), dtype=DT) * 2
    expected = n * torch.softmax(log_w, 0)
    for seed in range(5):
        idx = systematic_resample(log_w, gen(seed))
        counts = torch.bincount(idx, minlength=n).to(DT)
        assert idx.shape == (n,) and bool((idx[1:] >= idx[:-1]).all())
        assert bool((counts >= expected.floor()).all() and (counts <= expected.ceil()).all())
    even = systematic_resample(torch.zeros(n, dtype=DT), gen(11))
    assert torch.equal(even, torch.arange(n))


def test_smc_bad_input() -> None:
    prior, op, y, _ = gaussian_problem()
    sde = VPSDE()
    score = prior.score_fn(sde)

    def run(**kw: object) -> None:
        smc_linear(score, sde, y, op, (4, 3), **{"noise_std": 0.2, "steps": 2, **kw})  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="noise_std must be a finite number > 0"):
        run(noise_std=0.0)
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        run(ess_threshold=1.5)
    with pytest.raises(ValueError, match="Did you mean 'tmpd'"):
        run(twist="tmdp")
    with pytest.raises(ValueError, match="cg_iters must be a positive integer"):
        run(cg_iters=0)
    with pytest.raises(ValueError, match="data_var must be"):
        run(twist="pgdm", data_var=-1.0)
