"""The benchmarks' alternative PF-ODE formulations (benchmarks/likelihood_variants.py).

Exact variable maps, one answer whatever the variable, state, residual or error norm, and the
default variant equal to ``scoresde.log_likelihood`` bit for bit (so the benchmarks measure the
library's formulation when they say so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import scoresde as S
from conftest import STD_SDES
from scoresde.targets import Gaussian

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from likelihood_variants import (  # noqa: E402
    NORMS,
    STATES,
    VARIABLES,
    VariantFlow,
    variant_log_likelihood,
)

SDES = {name: make() for name, make in STD_SDES.items()}


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_variable_maps_invert_and_differentiate(variable: str, sde_name: str) -> None:
    sde = SDES[sde_name]
    flow = VariantFlow(lambda x, t: -x, sde, (2,), variable)
    t = torch.linspace(1e-4, 1.0, 9, dtype=torch.float64) * sde.T
    u = flow.u_of_t(t)
    assert torch.all(torch.diff(u).abs() > 0)  # monotone
    torch.testing.assert_close(flow.t_of_u(u), t, rtol=1e-9, atol=1e-12)
    # d sigma / du against autograd of sigma(u)
    uu = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.sigma_of_u(uu).sum(), uu)
    torch.testing.assert_close(flow.dsigma_du(t, sde.sigma(t)), grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_every_variable_state_and_norm_gives_the_same_log_likelihood(sde_name: str) -> None:
    sde = SDES[sde_name]
    tg = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])
    x = tg.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = tg.score_fn(sde)
    r = S.log_likelihood(fn, sde, x, divergence="exact", rtol=1e-9, atol=1e-9)
    # the exact ODE maps p_eps onto the true p_T; the result puts the prior at z instead
    exact = tg.marginal_log_prob(x, 1e-5, sde) - tg.marginal_log_prob(r.latent, sde.T, sde)
    torch.testing.assert_close(r.log_prob - r.prior_log_prob, exact, rtol=0, atol=1e-6)
    variants = [dict(variable=v, state=s) for v in VARIABLES for s in STATES]
    variants += [dict(residual=False), dict(variable="t", state="x", residual=False)]
    variants += [dict(norm=n) for n in NORMS]
    for v in variants:  # at 1e-7 all agree with the tight solve to about 5e-7
        res = variant_log_likelihood(fn, sde, x, divergence="exact", rtol=1e-7, atol=1e-7, **v)
        torch.testing.assert_close(res.log_prob, r.log_prob, rtol=0, atol=2e-6, msg=f"{v}")


@pytest.mark.parametrize("sde_name", ["subvp", "edm"])
def test_default_variant_is_the_library_bit_for_bit(sde_name: str) -> None:
    sde = SDES[sde_name]
    tg = Gaussian([0.3, -0.5, 0.1], variance=[0.5, 0.01, 1.0])
    x = tg.sample(5, torch.Generator().manual_seed(1), dtype=torch.float64)
    fn = tg.score_fn(sde)
    for kw in (dict(divergence="exact"), dict(probes=2, rtol=1e-4, atol=1e-4)):
        lib = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(2), **kw)
        var = variant_log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(2), **kw)
        assert torch.equal(lib.log_prob, var.log_prob) and torch.equal(lib.latent, var.latent)
        assert torch.equal(lib.nfe, var.nfe) and lib.calls == var.calls


def test_first_probe_sees_small_noise_structure() -> None:
    """Sub-VP starts at sigma ~ 1e-6 where the flow is flat; the structure at sigma ~ 0.01 of a
    data component with std 0.01 must not be jumped over by the first step. The library bounds
    the heuristic's probe; with an unbounded probe (the variant ``first_probe=1.0``) the Hairer
    heuristic probes far beyond it, proposes a first step to sigma ~ 0.02 and the error is 40x
    the tolerance (checked here too, so the test can fail)."""
    sde = S.SubVPSDE()
    tg = Gaussian(torch.zeros(8), variance=torch.logspace(-4, 0, 8, dtype=torch.float64))
    x = tg.sample(8, torch.Generator().manual_seed(7), dtype=torch.float64)
    exact_t0 = tg.marginal_log_prob(x, 1e-5, sde)
    kw = dict(divergence="exact", rtol=1e-5, atol=1e-5)
    errs = {}
    for name, r in (
        ("library", S.log_likelihood(tg.score_fn(sde), sde, x, **kw)),
        ("unbounded", variant_log_likelihood(tg.score_fn(sde), sde, x, first_probe=1.0, **kw)),
    ):
        exact = exact_t0 - tg.marginal_log_prob(r.latent, sde.T, sde)
        errs[name] = float((r.log_prob - r.prior_log_prob - exact).abs().max())
    assert errs["library"] < 2e-4 < errs["unbounded"], errs


def test_fixed_probes_replace_the_generator() -> None:
    sde = S.VESDE()
    tg = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])
    x = tg.sample(3, torch.Generator().manual_seed(3), dtype=torch.float64)
    fn = tg.score_fn(sde)
    lib = S.log_likelihood(fn, sde, x, generator=torch.Generator().manual_seed(4))
    v = torch.tensor([2.0, 0.0], dtype=torch.float64).expand(1, 3, 2)  # estimates 4 J_00
    a = variant_log_likelihood(fn, sde, x, fixed_probes=v)
    b = variant_log_likelihood(fn, sde, x, fixed_probes=-v, generator=torch.Generator())
    assert torch.equal(a.log_prob, b.log_prob)  # v^T J v is even in v
    assert not torch.allclose(a.log_prob, lib.log_prob, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="Did you mean"):
        variant_log_likelihood(fn, sde, x, variable="sigma_fraction")
