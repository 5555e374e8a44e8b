"""Integration variables and states of the PF ODE: exact maps, one answer whatever the choice."""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from scoresde.likelihood.flow import STATES, VARIABLES, ProbabilityFlow
from scoresde.likelihood.rk import solve_ivp_batched
from scoresde.targets import Gaussian

SDES = {"ve": S.VESDE(), "vp": S.VPSDE(), "subvp": S.SubVPSDE(), "edm": S.EDMSDE()}


def _flow(sde: S.SDE, variable: str, state: str = "w") -> ProbabilityFlow:
    return ProbabilityFlow(lambda x, t: -x, sde, (2,), variable, state)


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_variable_maps_invert_and_differentiate(variable: str, sde_name: str) -> None:
    sde = SDES[sde_name]
    flow = _flow(sde, variable)
    t = torch.linspace(1e-4, 1.0, 9, dtype=torch.float64) * sde.T
    u = flow.u_of_t(t)
    assert torch.all(torch.diff(u).abs() > 0)  # monotone
    torch.testing.assert_close(flow.t_of_u(u), t, rtol=1e-9, atol=1e-12)
    # d sigma / du against autograd of sigma(u)
    uu = u.clone().requires_grad_(True)
    sigma_u = flow._sigma_of_u(uu, flow.t_of_u(uu) if variable == "t" else uu)
    (grad,) = torch.autograd.grad(sigma_u.sum(), uu)
    sigma = sde.sigma(t)
    torch.testing.assert_close(flow._dsigma_du(t, sigma), grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_every_variable_and_state_gives_the_same_log_likelihood(sde_name: str) -> None:
    sde = SDES[sde_name]
    tg = Gaussian([0.3, -0.5], covariance=[[0.5, 0.2], [0.2, 0.3]])
    x = tg.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = tg.score_fn(sde)
    results = {
        (v, s): S.log_likelihood(
            fn, sde, x, divergence="exact", rtol=1e-9, atol=1e-9, _variable=v, _state=s
        )
        for v in VARIABLES
        for s in STATES
    }
    r = results[("sigma_frac", "w")]
    # the exact ODE maps p_eps onto the true p_T; the result puts the prior at z instead
    exact = tg.marginal_log_prob(x, 1e-5, sde) - tg.marginal_log_prob(r.latent, sde.T, sde)
    torch.testing.assert_close(r.log_prob - r.prior_log_prob, exact, rtol=0, atol=1e-6)
    ref = r.log_prob
    for key, res in results.items():
        torch.testing.assert_close(res.log_prob, ref, rtol=0, atol=1e-6, msg=f"{key}")


def test_first_step_cap_keeps_small_noise_structure() -> None:
    """Sub-VP starts at sigma ~ 1e-6 where the flow is flat; the structure at sigma ~ 0.01 of a
    data component with std 0.01 must not be jumped over by the first step (it was: the
    uncapped Hairer step went straight to sigma ~ 0.02 and the error was 40x the tolerance)."""
    sde = S.SubVPSDE()
    tg = Gaussian(torch.zeros(8), variance=torch.logspace(-4, 0, 8, dtype=torch.float64))
    x = tg.sample(8, torch.Generator().manual_seed(7), dtype=torch.float64)
    r = S.log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-5, atol=1e-5)
    exact = tg.marginal_log_prob(x, 1e-5, sde) - tg.marginal_log_prob(r.latent, sde.T, sde)
    err = (r.log_prob - r.prior_log_prob - exact).abs()
    assert float(err.max()) < 2e-4, err


def test_first_step_must_be_a_fraction_of_the_interval() -> None:
    y0 = torch.ones(1, 1)
    u0, u1 = torch.zeros(1), torch.ones(1)
    with pytest.raises(ValueError, match="first_step must lie in"):
        solve_ivp_batched(lambda r, u, y: y, y0, u0, u1, rtol=1e-5, atol=1e-5, first_step=0.0)
    capped = solve_ivp_batched(lambda r, u, y: y, y0, u0, u1, rtol=1e-3, atol=1e-3, first_step=1e-3)
    free = solve_ivp_batched(lambda r, u, y: y, y0, u0, u1, rtol=1e-3, atol=1e-3)
    assert int(capped.steps[0]) > int(free.steps[0])  # the cap binds on this easy problem
    torch.testing.assert_close(capped.y, torch.full((1, 1), torch.e), rtol=1e-3, atol=0)
