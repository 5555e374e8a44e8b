"""Exact conditional sampling for imputation (issue 16) against closed-form oracles.

``inpaint(..., method="smc")`` (twisted SMC with the known values held exactly) against the exact
conditional of Gaussian-mixture priors whose posterior modes have unequal weights, in 2-D and
16-D, one coordinate and a block missing; RePaint-style ``resample_steps``; ``colorize`` and
``solve_linear`` with ``method="smc"``; the memory bound ``batch_size``; bad input.

Mode masses are the mean posterior responsibilities of the samples (unbiased for exact draws);
tolerances come from their spread under the exact conditional at the sample size used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import imputation2d, imputation_problems
from scoresde import VESDE, VPSDE
from scoresde.inverse import (
    ChannelMean,
    PosteriorSamples,
    colorize,
    decoupling_basis,
    gaussian_mixture_conditional,
    gaussian_mixture_posterior,
    inpaint,
    solve_linear,
)
from scoresde.metrics import mode_report
from scoresde.targets import Gaussian, GaussianMixture

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def masses(
    cond: GaussianMixture, x: torch.Tensor, log_w: torch.Tensor | None = None
) -> torch.Tensor:
    """Mode masses: mean responsibilities of ``x`` ``(n, d)`` (or of the weighted particles
    ``(n, K, d)`` with log-weights ``(n, K)``, averaged over the ``n`` observations)."""
    if log_w is None:
        return cond.responsibilities(x).mean(0)
    resp = cond.responsibilities(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
    return (log_w.exp()[..., None] * resp).sum(1).mean(0)


def tv(cond: GaussianMixture, m: torch.Tensor) -> float:
    return 0.5 * float((m - cond.weights).abs().sum())


def noise_tv(cond: GaussianMixture, n: int) -> float:
    """3 standard errors of every mode mass of ``n`` exact draws, as a TV (conservative)."""
    sd = cond.responsibilities(cond.sample(20000, gen(123), dtype=DT)).std(0)
    return 0.5 * float((3 * sd / math.sqrt(n)).sum())


def frechet_at_floor(cond: GaussianMixture, x: torch.Tensor) -> None:
    """Per-mode Fréchet distance of ``x`` at the metric's floor: within twice the largest of 8
    sets of exact draws of its size (modes with >= 5% of the mass; the estimate's own error
    grows like 1 / (samples in the mode))."""
    rep = mode_report(cond, x)
    refs = torch.stack(
        [mode_report(cond, cond.sample(x.shape[0], gen(s), dtype=DT)).frechet for s in range(8)]
    )
    floor = refs.max(0).values
    for k in range(cond.n_components):
        if cond.weights[k] >= 0.05:
            assert rep.frechet[k] <= 2 * floor[k], (k, rep.frechet, refs)


def run_smc(name: str, n: int, particles: int, steps: int = 100, **kw: object) -> tuple:
    prior, known, obs = imputation_problems()[name]
    cond = gaussian_mixture_conditional(prior, known, obs)
    sde = VPSDE()
    res = inpaint(prior.score_fn(sde), sde, obs[None].expand(n, -1), known, steps=steps,
                  method="smc", particles=particles, generator=gen(0), return_info=True,
                  **kw)  # type: ignore[arg-type]  # fmt: skip
    assert torch.equal(res.samples[:, known], obs[None, known].expand(n, -1))  # held exactly
    return cond, known, res


# ------------------------------------------------------------------------------------------
# the oracle: mode masses and within-mode spread


@pytest.mark.parametrize("name", ["2d-one", "16d-block"])
def test_smc_matches_the_exact_conditional_where_replacement_does_not(name: str) -> None:
    # K = 16: the mode masses' bias is about 0.02 (benchmarks/inverse_exact.py); the bound is
    # that plus the sampling error of n draws, which replacement's bias exceeds by far
    n = 600 if name == "2d-one" else 400
    cond, known, res = run_smc(name, n, 16)
    tol = 0.03 + noise_tv(cond, n)
    x = res.samples[:, ~known]
    assert tv(cond, masses(cond, x)) <= tol, (masses(cond, x), cond.weights)
    frechet_at_floor(cond, x)
    prior, _, obs = imputation_problems()[name]
    sde = VPSDE()
    rep = inpaint(prior.score_fn(sde), sde, obs[None].expand(n, -1), known, steps=100,
                  generator=gen(0))  # fmt: skip
    assert tv(cond, masses(cond, rep[:, ~known])) > tol  # replacement's known bias


@pytest.mark.slow
@pytest.mark.parametrize("name", list(imputation_problems()))
def test_smc_mode_masses_within_two_percent(name: str) -> None:
    # K = 64 particles per observation, 300 steps (the bias left at 100 steps is mostly the
    # time discretisation's), 1000 observations: the weighted particles' mode masses within
    # TV 0.02 (their sampling error is far below that), the draws within 0.02 plus the
    # sampling error of 1000 draws, the spread within each mode at the metric's floor
    n = 1000
    cond, known, res = run_smc(name, n, 64, steps=300)
    parts = res.particles[:, :, ~known]
    assert tv(cond, masses(cond, parts, res.log_weights)) <= 0.02
    x = res.samples[:, ~known]
    assert tv(cond, masses(cond, x)) <= 0.02 + noise_tv(cond, n)
    frechet_at_floor(cond, x)
    assert float(res.ess.min()) >= 1.0 and float(res.ess.max()) <= 64.0 + 1e-9


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_exact_twist_keeps_the_weights_even_for_a_gaussian_prior(sde: VPSDE) -> None:
    # for a Gaussian prior the tmpd twist is p_t(y | x_t) itself: up to the time discretisation
    # the weights stay even; without a twist (bootstrap filter) the weights do the work. Both
    # recover the exact conditional's mean and variance.
    cov = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 0.6]], dtype=DT)
    prior = Gaussian([0.5, -1.0, 0.0], covariance=cov)
    known = torch.tensor([True, False, True])
    y = torch.tensor([[1.5, 0.0, -1.0]], dtype=DT)
    cond = gaussian_mixture_conditional(prior, known, y[0])
    mean, var = float(cond.means[0, 0]), float(cond.covariances()[0, 0, 0])
    k = 1000
    ess = {}
    for twist in ("tmpd", "none"):
        res = inpaint(prior.score_fn(sde), sde, y, known, method="smc", particles=k,
                      twist=twist, steps=200, ess_threshold=0.0, generator=gen(1),
                      return_info=True)  # fmt: skip
        assert int(res.resampled[0]) == 0
        ess[twist] = float(res.ess_history.min())
        w, x = res.log_weights[0].exp(), res.particles[0, :, 1]
        m = float((w * x).sum())
        v = float((w * (x - m) ** 2).sum())
        se = math.sqrt(var / (ess[twist] * k))
        assert abs(m - mean) < 4 * se + 0.01, (twist, m, mean)
        assert abs(v - var) < 4 * var * math.sqrt(2 / (ess[twist] * k)) + 0.01, (twist, v, var)
    assert ess["tmpd"] > 0.95 and ess["none"] < 0.85, ess


# ------------------------------------------------------------------------------------------
# known values, shapes, draws, batch_size, return types


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_smc_keeps_known_pixels_and_draws_come_from_the_particles(sde: VPSDE) -> None:
    prior = GaussianMixture(
        torch.randn(2, 16, generator=gen(16)), variances=0.5, event_shape=(1, 4, 4)
    )
    y = prior.sample(3, gen(17), dtype=DT)
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    mask[0, :, :, :2] = mask[1, :, 2:] = mask[2, :, ::2, ::2] = True  # a mask per image
    plain = inpaint(prior.score_fn(sde), sde, y, mask, steps=20, method="smc", particles=4,
                    generator=gen(18))  # fmt: skip
    assert isinstance(plain, torch.Tensor) and plain.shape == y.shape and plain.dtype == DT
    assert torch.equal(plain[mask], y[mask]) and not torch.equal(plain[~mask], y[~mask])
    res = inpaint(prior.score_fn(sde), sde, y, mask, steps=20, method="smc", particles=4,
                  draws=5, generator=gen(18), return_info=True)  # fmt: skip
    assert isinstance(res, PosteriorSamples) and res.method == "smc" and res.nfe == 21
    assert res.samples.shape == (5, *y.shape) and res.particles.shape == (3, 4, 1, 4, 4)
    assert torch.equal(res.samples[:, mask], y[mask].expand(5, -1))
    for d in range(5):  # every draw is one of its observation's final particles
        for b in range(3):
            hit = (res.particles[b] == res.samples[d, b]).flatten(1).all(1)
            assert bool(hit.any())
    assert res.log_weights.shape == (3, 4) and res.ess.shape == (3,)
    assert torch.allclose(res.log_weights.exp().sum(1), torch.ones(3, dtype=DT))
    assert res.ess_history.shape == (20, 3) and res.resampled.shape == (3,)


def test_batch_size_bounds_the_particles_per_score_call() -> None:
    prior, known, obs = imputation_problems()["2d-one"]
    sde = VPSDE()
    rows: list[int] = []

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rows.append(x.shape[0])
        return prior.score_fn(sde)(x, t)

    y = obs[None].expand(6, -1)
    kw = {"steps": 10, "method": "smc", "particles": 8, "twist": "pgdm"}
    full = inpaint(score, sde, y, known, generator=gen(2), **kw)  # type: ignore[arg-type]
    assert max(rows) == 48
    same = inpaint(score, sde, y, known, generator=gen(2), batch_size=48, **kw)  # type: ignore[arg-type]
    assert torch.equal(full, same)  # one run of all 48 particles: the same draws
    for batch in (16, 5):  # two observations per run; one observation in chunks of 5
        rows.clear()
        out = inpaint(score, sde, y, known, generator=gen(2), batch_size=batch, **kw)  # type: ignore[arg-type]
        assert max(rows) <= batch and out.shape == y.shape
        assert torch.equal(out[:, 0], y[:, 0]) and bool(torch.isfinite(out).all())


def test_default_call_keeps_its_return_type_and_info_describes_it() -> None:
    prior, known, obs = imputation_problems()["2d-one"]
    sde = VPSDE()
    y = obs[None].expand(4, -1)
    x = inpaint(prior.score_fn(sde), sde, y, known, steps=10, generator=gen(3))
    assert isinstance(x, torch.Tensor) and x.shape == (4, 2)
    info = inpaint(prior.score_fn(sde), sde, y, known, steps=10, generator=gen(3),
                   return_info=True)  # fmt: skip
    assert isinstance(info, PosteriorSamples) and torch.equal(info.samples, x)
    assert info.method == "replacement" and info.nfe == 20 and info.particles is None
    assert torch.equal(info.ess, torch.ones(4, dtype=DT))


# ------------------------------------------------------------------------------------------
# RePaint-style replacement


def test_repaint_costs_u_times_the_steps_and_keeps_known_values() -> None:
    prior, known, obs = imputation_problems()["2d-one"]
    sde = VPSDE()
    seen: list[tuple[int, int]] = []
    res = inpaint(prior.score_fn(sde), sde, obs[None].expand(8, -1), known, steps=10,
                  corrector=None, resample_steps=3, generator=gen(4), return_info=True,
                  callback=lambda info: seen.append((info["i"], info["jump"])))  # fmt: skip
    assert res.nfe == 30 and res.method == "repaint(U=3)"
    assert seen == [(i, j) for i in range(10) for j in range(3)]
    assert torch.equal(res.samples[:, 0], torch.zeros(8, dtype=DT))


def test_repaint_is_exact_where_replacement_is() -> None:
    # independent coordinates: the missing one keeps its prior marginal under every jump
    prior = Gaussian([1.0, -0.5], variance=[0.3, 0.7])
    sde = VESDE(0.01, 10.0)
    n = 3000
    x = inpaint(prior.score_fn(sde), sde, torch.full((n, 2), 2.0, dtype=DT),
                torch.tensor([True, False]), steps=40, corrector=None, resample_steps=4,
                generator=gen(5))  # fmt: skip
    x2 = x[:, 1]
    assert abs(float(x2.mean()) + 0.5) < 5 * math.sqrt(0.7 / n)
    assert abs(float(x2.var()) - 0.7) < 5 * 0.7 * math.sqrt(2 / n) + 0.02


@pytest.mark.slow
def test_repaint_is_less_biased_than_replacement_on_a_mixture() -> None:
    # RePaint's repeats move mass towards the exact mode weights, short of exactness
    prior, known, obs = imputation_problems()["2d-one"]
    cond = gaussian_mixture_conditional(prior, known, obs)
    sde, n = VPSDE(), 3000
    y = obs[None].expand(n, -1)
    errs = {
        u: tv(cond, masses(cond, inpaint(prior.score_fn(sde), sde, y, known, steps=100,
                                         corrector=None, resample_steps=u,
                                         generator=gen(6))[:, ~known]))
        for u in (1, 16)
    }  # fmt: skip
    assert errs[16] < errs[1] - 2 * noise_tv(cond, n), errs


# ------------------------------------------------------------------------------------------
# colorisation and the linear solvers


def test_colorize_smc_samples_the_colour_conditional() -> None:
    # one pixel, 3 channels: a 2-mode colour prior whose grey level tells the modes apart only
    # partly; in the decoupled basis u = M x the grey channel is observed exactly
    m = decoupling_basis(3)
    cov_u = torch.tensor([[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.2]], dtype=DT)
    means_u = torch.tensor([[0.3, 1.2, 0.0], [-0.3, -1.2, 0.5]], dtype=DT)
    prior_u = GaussianMixture(means_u, covariances=cov_u.expand(2, 3, 3), weights=[0.7, 0.3])
    prior_x = GaussianMixture(means_u @ m, covariances=(m.T @ cov_u @ m).expand(2, 3, 3),
                              weights=[0.7, 0.3], event_shape=(3, 1, 1))  # fmt: skip
    gray_u0 = 0.1  # observed grey channel in u
    cond = gaussian_mixture_conditional(
        prior_u, torch.tensor([True, False, False]), torch.tensor([gray_u0, 0.0, 0.0], dtype=DT)
    )
    n, sde = 500, VPSDE()
    gray = torch.full((n, 1, 1, 1), gray_u0 / math.sqrt(3), dtype=DT)
    x = colorize(prior_x.score_fn(sde), sde, gray, steps=100, method="smc", particles=8,
                 generator=gen(7))  # fmt: skip
    assert torch.allclose(ChannelMean(3)(x), gray, atol=1e-12)
    u = (m @ x.reshape(n, 3).T).T
    assert tv(cond, masses(cond, u[:, 1:])) <= 0.02 + noise_tv(cond, n)


def test_solve_linear_smc_for_a_batch_of_measurements() -> None:
    # two different noisy measurements y = x1 + 0.5 x2 + N(0, 0.3^2), 400 copies of each, one
    # SMC run (16 particles, pgdm twist) per copy
    prior, sde = imputation2d(), VPSDE()
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    ys = torch.tensor([[0.3], [-1.5]], dtype=DT)
    n = 400
    res = solve_linear(prior.score_fn(sde), sde, ys.repeat_interleave(n, 0), a, (2 * n, 2),
                       noise_std=0.3, method="smc", particles=16, twist="pgdm", steps=100,
                       generator=gen(8), return_info=True)  # fmt: skip
    assert res.samples.shape == (2 * n, 2) and res.particles.shape == (2 * n, 16, 2)
    for j in range(2):
        post = gaussian_mixture_posterior(prior, a, ys[j], 0.3)
        x = res.samples[j * n : (j + 1) * n]
        assert tv(post, masses(post, x)) <= 0.02 + noise_tv(post, n), j


# ------------------------------------------------------------------------------------------
# bad input


def test_bad_input() -> None:
    prior, known, obs = imputation_problems()["2d-one"]
    sde = VPSDE()
    score, y = prior.score_fn(sde), obs[None]

    def run(**kw: object) -> None:
        inpaint(score, sde, y, known, steps=2, **kw)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="Did you mean 'smc'"):
        run(method="scm")
    with pytest.raises(ValueError, match="needs method='smc'"):
        run(particles=4)
    with pytest.raises(ValueError, match="belongs to method='replacement'"):
        run(method="smc", resample_steps=2)
    with pytest.raises(ValueError, match="Did you mean 'tmpd'"):
        run(method="smc", twist="tmdp")
    with pytest.raises(ValueError, match="particles must be an integer >= 1"):
        run(method="smc", particles=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        run(method="smc", batch_size=0)
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        run(method="smc", ess_threshold=1.5)
    with pytest.raises(ValueError, match="draws must be an integer >= 1"):
        run(draws=0)
    with pytest.raises(ValueError, match="resample_steps must be an integer >= 1"):
        run(resample_steps=0)
    a = torch.tensor([[1.0, 0.5]], dtype=DT)
    with pytest.raises(ValueError, match="needs noise_std > 0"):
        solve_linear(score, sde, torch.zeros(1, 1, dtype=DT), a, (1, 2), noise_std=0.0,
                     method="smc")  # fmt: skip
    with pytest.raises(ValueError, match="needs method='smc'"):
        solve_linear(score, sde, torch.zeros(1, 1, dtype=DT), a, (1, 2), noise_std=0.1,
                     particles=4)  # fmt: skip
    with pytest.raises(ValueError, match="takes schedule/eps only"):
        solve_linear(score, sde, torch.zeros(1, 1, dtype=DT), a, (1, 2), noise_std=0.1,
                     method="smc", sampler="pc")  # fmt: skip


# ------------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scoresde.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        data="digits", model="mlp", model_kwargs=dict(hidden=32, depth=1), steps=5,
        batch_size=16, out=str(out), progress=False, tensorboard=False, ckpt_every=5,
        sample_n=4, sample_steps=2, device="cpu",
    )  # fmt: skip
    train(cfg)
    return out


def test_cli_inpaint_smc_and_repaint(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scoresde.cli import main
    from scoresde.data import load_dataset

    img = ((load_dataset("digits", split="test").tensors()[:2] + 1) / 2).numpy()
    np.save(tmp_path / "img.npy", img)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4] = 1
    np.save(tmp_path / "mask.npy", mask)
    base = ["inpaint", "--ckpt", str(digits_ckpt), "--image", str(tmp_path / "img.npy"),
            "--mask", str(tmp_path / "mask.npy"), "--steps", "4", "--device", "cpu"]  # fmt: skip
    for extra in (["--method", "smc", "--particles", "3"], ["--resample-steps", "2"]):
        out = tmp_path / "done.npz"
        assert main([*base, "--out", str(out), *extra]) == 0
        with np.load(out) as z:
            comp = z["completions"]
        assert comp.shape == (1, 2, 1, 8, 8)
        assert np.array_equal(comp[0, :, :, :4], img[:, :, :4].astype(comp.dtype))
    capsys.readouterr()
    rc = main([*base, "--out", str(tmp_path / "x.npz"), "--method", "smc", "--resample-steps", "2"])
    assert rc == 1 and "belongs to method='replacement'" in capsys.readouterr().err
    rc = main([*base, "--out", str(tmp_path / "x.npz"), "--method", "smc", "--particles", "0"])
    assert rc == 1 and "--particles must be a positive integer" in capsys.readouterr().err
