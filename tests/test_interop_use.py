"""Pretrained scores everywhere a score goes: every sampler, the likelihood and bits/dim, the
inverse solvers, classifier-free guidance. Oracles: exact mixture log-densities under the new
SDE, the equivalence of one model in two data ranges, guidance written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.sampling import available_samplers
from scoresde.targets import GaussianMixture

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on NumPy 2

from _interop_nets import edm_precond, tiny_unet  # noqa: E402
from scoresde.interop import from_denoiser, from_diffusers  # noqa: E402
from scoresde.interop.cli import _in_cli_range  # noqa: E402

F64 = torch.float64


def _models() -> dict[str, object]:
    """A discrete-VP, a VE and an EDM-denoiser model on the small UNet, in float32."""
    f32 = torch.float32
    vp = from_diffusers(tiny_unet(seed=1, dtype=f32), diffusers.DDPMScheduler(
        num_train_timesteps=200, prediction_type="v_prediction"))  # fmt: skip
    ve = from_diffusers(
        tiny_unet(seed=2, dtype=f32, time_embedding_type="fourier", flip_sin_to_cos=False),
        diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=20.0),
    )
    edm = from_denoiser(edm_precond(tiny_unet(seed=3, dtype=f32)), sigma_min=0.002,
                        sigma_max=80.0, event_shape=(1, 8, 8))  # fmt: skip
    return {"vp": vp, "ve": ve, "edm": edm}


MODELS = _models()


@pytest.mark.parametrize("sampler", available_samplers())
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_sampler_runs_on_every_kind_of_model(kind: str, sampler: str) -> None:
    m = MODELS[kind]
    opts = {"rtol": 1e-2, "atol": 1e-2} if sampler == "ode" else {}
    gen = torch.Generator().manual_seed(0)
    res = S.sample(m.score_fn, m.sde, (2, *m.event_shape), sampler=sampler, steps=3,
                   generator=gen, return_info=True, **opts)  # fmt: skip
    assert res.samples.shape == (2, 1, 8, 8) and bool(torch.isfinite(res.samples).all())
    assert res.nfe >= 3 or sampler == "ode"
    assert m.to_data(res.samples).min() >= 0 and m.to_data(res.samples).max() <= 1


def test_likelihood_on_the_discrete_sde_is_exact_for_an_exact_score() -> None:
    """The PF-ODE log-density on a DiscreteVPSDE equals the noised mixture's exact one (its
    p_T is N(0, I) to ~1e-5: alpha_bar_T = 4e-5 for DDPM's linear schedule)."""
    mix = GaussianMixture([[-1.0, 0.5], [1.0, -0.5]], variances=[0.05, 0.08])
    sde = from_diffusers(tiny_unet(), diffusers.DDPMScheduler()).sde
    x = mix.sample(6, generator=torch.Generator().manual_seed(0)).double()
    res = S.log_likelihood(mix.score_fn(sde), sde, x, eps=sde.eps, divergence="exact",
                           rtol=1e-7, atol=1e-7)  # fmt: skip
    want = mix.marginal_log_prob(x, sde.eps, sde)
    assert torch.allclose(res.log_prob, want, atol=1e-4)


class _VEOracle(torch.nn.Module):
    """Stands in for a score_sde VE UNet: the exact score of a mixture on [0, 1] at sigma."""

    def __init__(self, mix: GaussianMixture, sde: S.VESDE) -> None:
        super().__init__()
        self.mix, self.sde = mix, sde

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mix.marginal_score(x, self.sde.sigma_inv(sigma), self.sde)


def test_bits_per_dim_do_not_depend_on_the_data_range_the_model_is_written_in() -> None:
    """One VE model in its own [0, 1] and presented in [-1, 1] (as the commands see it): the
    flows agree (same ODE term, latents z' = 2 z - 1) and the bits/dim, with their offsets of 8
    and 7 bits, differ only by the two priors' log-densities (both N(0, .), one shifted)."""
    means = [[0.2, 0.7, 0.5, 0.3], [0.8, 0.4, 0.6, 0.5]]
    mix = GaussianMixture(means, variances=[0.01, 0.02], event_shape=(1, 2, 2))
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=20.0)
    m = from_diffusers(_VEOracle(mix, S.VESDE(0.01, 20.0)), sched, event_shape=(1, 2, 2))
    score, sde = _in_cli_range(m)
    levels = (mix.sample(5, generator=torch.Generator().manual_seed(1)) * 255).round()
    levels = levels.clamp(0, 255).to(torch.uint8)
    opts = dict(rtol=1e-8, atol=1e-8, divergence="exact", eps=1e-4)
    own = m.bits_per_dim(levels, generator=torch.Generator().manual_seed(2), dtype=F64, **opts)
    x = S.dequantize(levels, data_range=(-1.0, 1.0), generator=torch.Generator().manual_seed(2),
                     dtype=F64)  # fmt: skip
    res = S.log_likelihood(score, sde, x, **opts)
    a, b = own.likelihood, res
    assert torch.allclose(a.log_prob - a.prior_log_prob, b.log_prob - b.prior_log_prob, atol=1e-6)
    assert torch.allclose(2 * a.latent - 1, b.latent, atol=1e-5)
    d_ln2 = 4 * math.log(2)
    prior_gap = (a.prior_log_prob - d_ln2 - b.prior_log_prob) / d_ln2
    bpd = S.bits_per_dim(b.log_prob, x.shape, data_range=(-1.0, 1.0))
    assert torch.allclose(own.bits_per_dim - bpd, -prior_gap, atol=1e-6)
    assert float(prior_gap.abs().max()) < 0.05
    x01 = S.dequantize(levels, generator=torch.Generator().manual_seed(2), dtype=F64)
    exact = mix.marginal_log_prob(x01, 1e-4, m.sde)
    prior_error = a.prior_log_prob - mix.marginal_log_prob(a.latent, 1.0, m.sde)  # p_T != prior
    assert torch.allclose(a.log_prob - prior_error, exact, atol=1e-5)


def test_bits_per_dim_accepts_unit_floats_and_integers_alike() -> None:
    m = MODELS["vp"]
    levels = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    opts = dict(rtol=1e-3, atol=1e-3)
    a = m.bits_per_dim(levels.to(torch.uint8), generator=torch.Generator().manual_seed(4), **opts)
    b = m.bits_per_dim(levels / 255.0, generator=torch.Generator().manual_seed(4), **opts)
    assert torch.equal(a.bits_per_dim, b.bits_per_dim) and a.bits_per_dim.shape == (2,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.bits_per_dim(levels * 1.0)


def test_inverse_solvers_take_a_pretrained_score() -> None:
    m = MODELS["vp"]
    g = torch.Generator().manual_seed(0)
    y = m.from_data(torch.rand(2, 1, 8, 8, generator=g))
    known = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    known[..., :4] = True
    x = S.inpaint(m.score_fn, m.sde, y, known, steps=4, generator=g)
    assert torch.equal(x[..., :4], y[..., :4]) and bool(torch.isfinite(x).all())
    a = torch.randn(20, 64, generator=g) / 8
    obs = (a @ y.reshape(2, 64).T).T
    from scoresde.inverse import MatrixOperator, solve_linear

    z = solve_linear(m.score_fn, m.sde, obs, MatrixOperator(a, (1, 8, 8)), (2, 1, 8, 8),
                     noise_std=0.05, steps=4, generator=g)  # fmt: skip
    assert z.shape == (2, 1, 8, 8) and bool(torch.isfinite(z).all())


def test_classifier_free_guidance_with_class_labels() -> None:
    unet = tiny_unet(seed=7, num_class_embeds=4)
    m = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=100), null_label=3)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor([0.3, 0.8], dtype=F64)
    cond, uncond = m(x, t, 1), m(x, t, torch.tensor([3, 3]))
    assert torch.allclose(m.conditional(1, 2.5)(x, t), uncond + 2.5 * (cond - uncond))
    assert torch.allclose(m.conditional(torch.tensor([1, 1]))(x, t), cond)
    assert torch.allclose(m.score_fn(x, t), uncond)  # y=None: the null label
    assert not torch.allclose(cond, uncond)
    xs = S.sample(m.conditional(2, 3.0), m.sde, (2, 1, 8, 8), sampler="fast", steps=3,
                  dtype=F64, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert bool(torch.isfinite(xs).all())
    bare = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=100))
    with pytest.raises(ValueError, match="null_label"):
        bare.conditional(1, 2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        bare.score_fn(x, t)
    assert torch.allclose(bare.conditional(1)(x, t), cond)


def test_to_data_and_from_data_are_inverse_maps() -> None:
    img = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for m in MODELS.values():
        assert torch.allclose(m.to_data(m.from_data(img)), img, atol=1e-7)
    assert MODELS["vp"].from_data(torch.zeros(1)).item() == -1.0
    assert MODELS["ve"].from_data(torch.zeros(1)).item() == 0.0


def test_a_float32_network_samples_in_float64_and_under_bf16_autocast() -> None:
    m = MODELS["vp"]
    gen = torch.Generator().manual_seed(0)
    x64 = S.sample(m.score_fn, m.sde, (2, 1, 8, 8), sampler="fast", steps=4, dtype=F64,
                   generator=gen)  # fmt: skip
    xbf = S.sample(m.score_fn, m.sde, (2, 1, 8, 8), sampler="fast", steps=4, precision="bf16",
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert x64.dtype == F64 and xbf.dtype == torch.float32
    assert 0 < float((x64 - xbf).abs().max()) < 0.5
