"""The SDE core against its own definitions: kernels, coefficients, priors, errors."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.sde import bcast


def _fractions(sde: S.SDE) -> list[float]:
    return [0.1 * sde.T, 0.4 * sde.T, sde.T]


def test_forward_simulation_matches_marginal(any_sde: S.SDE) -> None:
    """Fine Euler-Maruyama (midpoint coefficients) of dx = f x dt + g dw reproduces the kernel."""
    gen = torch.Generator().manual_seed(0)
    n, d, steps = 20000, 4, 2000
    x0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64).expand(n, d)
    # x(0) is drawn from the kernel at t = 0 (VE starts at sigma_min, the others at x0 exactly)
    mean0, std0 = any_sde.marginal(x0, 0.0)
    x = mean0 + bcast(std0, x0) * torch.randn(n, d, generator=gen, dtype=torch.float64)
    checkpoints = _fractions(any_sde)
    h = any_sde.T / steps
    for i in range(steps):
        tm = torch.tensor((i + 0.5) * h, dtype=torch.float64)
        x = (
            x
            + any_sde.f(tm) * x * h
            + torch.sqrt(any_sde.g2(tm) * h) * torch.randn(n, d, generator=gen, dtype=torch.float64)
        )
        t_now = (i + 1) * h
        if any(abs(t_now - c) < 1e-9 * any_sde.T for c in checkpoints):
            mean, std = any_sde.marginal(x0[:1], t_now)
            se_mean = float(std) / math.sqrt(n)
            assert torch.allclose(x.mean(0), mean[0], atol=5 * se_mean + 1e-3 * float(std))
            emp = x.std(0)
            se_std = float(std) / math.sqrt(2 * n)
            assert torch.allclose(emp, std.expand(d), atol=5 * se_std + 2e-3 * float(std)), (
                t_now,
                emp,
                std,
            )


def test_coefficients_are_derivatives_of_the_kernel(any_sde: S.SDE) -> None:
    """f = d log s / dt and g^2 = s^2 d(sigma^2)/dt, by central differences in float64."""
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64) * any_sde.T
    h = 1e-6 * any_sde.T
    dlogs = (torch.log(any_sde.scale(t + h)) - torch.log(any_sde.scale(t - h))) / (2 * h)
    dsig2 = (any_sde.sigma(t + h) ** 2 - any_sde.sigma(t - h) ** 2) / (2 * h)
    assert torch.allclose(any_sde.f(t), dlogs, rtol=1e-6, atol=1e-9)
    assert torch.allclose(any_sde.g2(t), any_sde.scale(t) ** 2 * dsig2, rtol=1e-6)
    dsig = (any_sde.sigma(t + h) - any_sde.sigma(t - h)) / (2 * h)
    assert torch.allclose(any_sde.sigma_deriv(t), dsig, rtol=1e-6)
    assert torch.allclose(any_sde.std(t), any_sde.scale(t) * any_sde.sigma(t), rtol=1e-12)


def test_sigma_inverse_and_log_snr(any_sde: S.SDE) -> None:
    t = torch.linspace(0.02, 1.0, 11, dtype=torch.float64) * any_sde.T
    assert torch.allclose(any_sde.sigma_inv(any_sde.sigma(t)), t, rtol=1e-9, atol=1e-12)
    assert torch.allclose(any_sde.t_from_log_snr(any_sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)


def test_closed_forms_of_the_table() -> None:
    """The DESIGN.md table: VE std sigma(t), VP std sqrt(1-e^-B), sub-VP std 1-e^-B."""
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    ve = S.VESDE(0.01, 50.0)
    assert torch.allclose(ve.std(t), 0.01 * 5000.0**t)
    vp, svp = S.VPSDE(0.1, 20.0), S.SubVPSDE(0.1, 20.0)
    b = 0.1 * t + 0.5 * 19.9 * t**2
    assert torch.allclose(vp.std(t), torch.sqrt(1 - torch.exp(-b)))
    assert torch.allclose(svp.std(t), 1 - torch.exp(-b))
    assert torch.allclose(vp.scale(t), torch.exp(-b / 2))
    assert torch.allclose(svp.g2(t), (0.1 + 19.9 * t) * (1 - torch.exp(-2 * b)))
    edm = S.EDMSDE()
    assert edm.T == 80.0 and edm.eps == 0.002 and edm.prior_std == 80.0
    assert torch.allclose(edm.g2(t), 2 * t)
    assert ve.prior_std == 50.0 and vp.prior_std == 1.0 and svp.prior_std == 1.0


def test_affine_sde_reproduces_vp() -> None:
    vp = S.VPSDE()
    aff = S.AffineSDE(vp.scale, vp.sigma, T=1.0, eps=1e-3)
    t = torch.linspace(0.01, 1.0, 9, dtype=torch.float64)
    assert torch.allclose(aff.f(t), vp.f(t), rtol=1e-10)
    assert torch.allclose(aff.g2(t), vp.g2(t), rtol=1e-8)
    assert torch.allclose(aff.sigma_inv(vp.sigma(t)), t, atol=1e-12)
    assert aff.prior_std == pytest.approx(vp.std(torch.tensor(1.0, dtype=torch.float64)).item())


def test_public_methods_follow_x_and_accept_float_or_batch_t(any_sde: S.SDE) -> None:
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    t = torch.full((5,), 0.5 * any_sde.T, dtype=torch.float32)
    for tt in (0.5 * any_sde.T, t):
        drift = any_sde.drift(x, tt)
        mean, std = any_sde.marginal(x, tt)
        assert drift.shape == x.shape and drift.dtype == torch.float64
        assert mean.shape == x.shape and std.shape == (5,) and std.dtype == torch.float64
        xt = any_sde.perturb(x, tt, noise=torch.zeros_like(x))
        assert torch.equal(xt, mean)
    g = any_sde.diffusion(t)
    assert g.shape == (5,) and torch.allclose(g.double() ** 2, any_sde.g2(t.double()), rtol=1e-5)
    assert any_sde.diffusion(0.5 * any_sde.T).dim() == 0


def test_prior(any_sde: S.SDE) -> None:
    gen = torch.Generator().manual_seed(1)
    z = any_sde.prior_sample((4000, 3), generator=gen, dtype=torch.float64)
    assert z.dtype == torch.float64 and z.shape == (4000, 3)
    assert z.std().item() == pytest.approx(any_sde.prior_std, rel=0.05)
    normal = torch.distributions.Normal(
        torch.tensor(0.0, dtype=torch.float64), torch.tensor(any_sde.prior_std, dtype=torch.float64)
    )
    ref = normal.log_prob(z[:10]).sum(1)
    assert torch.allclose(any_sde.prior_log_prob(z[:10]), ref, rtol=1e-10)
    z2 = any_sde.prior_sample(
        (4000, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert torch.equal(z, z2)


def test_reverse_drifts(any_sde: S.SDE) -> None:
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * any_sde.T * 0.9 + 0.05 * any_sde.T

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -x * (1 + t[:, None])

    rev, ode = any_sde.reverse(score), any_sde.reverse(score, probability_flow=True)
    f, g2 = any_sde.f(t)[:, None], any_sde.g2(t)[:, None]
    assert torch.allclose(rev.drift(x, t), f * x - g2 * score(x, t))
    assert torch.allclose(ode.drift(x, t), f * x - 0.5 * g2 * score(x, t))
    assert torch.allclose(rev.diffusion(t) ** 2, any_sde.g2(t))
    assert torch.equal(ode.diffusion(t), torch.zeros_like(t))


def test_reverse_takes_float_0d_and_batched_times(any_sde: S.SDE) -> None:
    """A float, a 0-d tensor and a constant ``(B,)`` tensor give the same drift; the score sees a
    ``(B,)`` time; ``diffusion`` follows the time's shape; a given score is not re-evaluated."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[tuple[int, ...]] = []

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return -x * (1 + t[:, None])

    tf = 0.4 * any_sde.T
    t0 = torch.tensor(tf, dtype=torch.float64)
    for pf in (False, True):
        rev = any_sde.reverse(score, probability_flow=pf)
        ref = rev.drift(x, t0.expand(5))
        torch.testing.assert_close(rev.drift(x, tf), ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(rev.drift(x, t0), ref, rtol=1e-12, atol=0)
        assert rev.diffusion(tf).dim() == 0 and rev.diffusion(t0.expand(5)).shape == (5,)
    assert set(seen) == {(5,)}
    seen.clear()
    rev = any_sde.reverse(score)
    given = rev.drift(x, t0, score=-x * (1 + t0))
    assert not seen  # the given score is used as it is
    torch.testing.assert_close(given, rev.drift(x, t0), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        rev.drift(x, 2.0 * any_sde.T)
    with pytest.raises(ValueError, match="batch size"):
        rev.drift(x, torch.full((4,), tf, dtype=torch.float64))


def test_reverse_euler_step_is_euler_maruyama(any_sde: S.SDE) -> None:
    """``euler_step``: mean ``x + drift h``, std ``g sqrt(-h)`` (0 for the ODE), per sample for
    ``(B,)`` times."""
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=torch.float64) * any_sde.T
    t_next = t - 0.05 * any_sde.T

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -x / (1 + t[:, None])

    for pf in (False, True):
        rev = any_sde.reverse(score, probability_flow=pf)
        mean, std = rev.euler_step(x, t, t_next)
        h = (t_next - t)[:, None]
        torch.testing.assert_close(mean, x + rev.drift(x, t) * h, rtol=1e-12, atol=1e-12)
        want = torch.zeros_like(h) if pf else torch.sqrt(any_sde.g2(t)[:, None] * -h)
        torch.testing.assert_close(std.expand_as(h), want, rtol=1e-12, atol=0)
    one = rev.euler_step(x[:1], float(t[0]), float(t_next[0]))
    torch.testing.assert_close(one.mean, mean[:1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (S.VESDE, {"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_min"),
        (S.VESDE, {"sigma_min": -0.1}, "sigma_min"),
        (S.VESDE, {"sigma_max": float("nan")}, "sigma_max"),
        (S.VPSDE, {"beta_min": -0.1}, "beta_min"),
        (S.VPSDE, {"beta_max": -1.0}, "beta_max"),
        (S.SubVPSDE, {"beta_min": 5.0, "beta_max": 1.0}, "beta_min"),
        (S.EDMSDE, {"sigma_min": 80.0, "sigma_max": 80.0}, "sigma_min"),
    ],
)
def test_invalid_parameters(factory: type, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


def test_invalid_affine() -> None:
    with pytest.raises(ValueError, match="increasing"):
        S.AffineSDE(lambda t: torch.ones_like(t), lambda t: 1 - t)
    with pytest.raises(ValueError, match="scale"):
        S.AffineSDE(lambda t: -torch.ones_like(t), lambda t: t)
    with pytest.raises(ValueError, match="eps"):
        S.AffineSDE(lambda t: torch.ones_like(t), lambda t: t, T=1.0, eps=2.0)


def test_time_outside_range_and_batch_mismatch(std_sde: S.SDE) -> None:
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        std_sde.marginal(x, 1.5 * std_sde.T)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        std_sde.drift(x, torch.tensor([0.1, 0.2, -0.3, 0.4]))
    with pytest.raises(ValueError, match="batch size"):
        std_sde.marginal(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        std_sde.perturb(x, torch.tensor([0.1, float("nan"), 0.2, 0.3]))
    with pytest.raises(ValueError, match="shape of x0"):
        std_sde.perturb(x, 0.5, noise=torch.randn(4, 3))


@pytest.mark.parametrize("sde", [S.VESDE(), S.VPSDE(), S.SubVPSDE(), S.EDMSDE()], ids=repr)
def test_tweedie_is_the_gaussian_posterior_mean(sde: S.SDE) -> None:
    """x0 ~ N(mu, c^2 I): E[x0 | x_t] = mu + c^2 / (c^2 + sigma^2) (x_t / s - mu), for (B,)
    and scalar times."""
    from scoresde.targets import Gaussian

    mu, c2 = torch.tensor([0.4, -1.0], dtype=torch.float64), 0.3
    tg = Gaussian(mu, variance=torch.full((2,), c2, dtype=torch.float64))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (torch.linspace(0.1, 0.9, 5, dtype=torch.float64) * sde.T,
              torch.tensor(0.5 * sde.T, dtype=torch.float64)):  # fmt: skip
        tb = t.expand(5) if t.dim() == 0 else t
        got = sde.tweedie(x, t, tg.marginal_score(x, tb, sde))
        s, sig = bcast(sde.scale(tb), x), bcast(sde.sigma(tb), x)
        want = mu + c2 / (c2 + sig**2) * (x / s - mu)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
