"""Integration variables and states of the PF ODE: exact maps, one answer whatever the choice."""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from scoresde.likelihood.api import FIRST_PROBE
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


def test_first_probe_sees_small_noise_structure() -> None:
    """Sub-VP starts at sigma ~ 1e-6 where the flow is flat; the structure at sigma ~ 0.01 of a
    data component with std 0.01 must not be jumped over by the first step. With an unbounded
    probe the Hairer heuristic probes far beyond it, proposes a first step to sigma ~ 0.02 and
    the error is 40x the tolerance (checked here too, so the test can fail)."""
    sde = S.SubVPSDE()
    tg = Gaussian(torch.zeros(8), variance=torch.logspace(-4, 0, 8, dtype=torch.float64))
    x = tg.sample(8, torch.Generator().manual_seed(7), dtype=torch.float64)
    exact_t0 = tg.marginal_log_prob(x, 1e-5, sde)
    errs = {}
    for reach in (FIRST_PROBE, 1.0):
        r = S.log_likelihood(
            tg.score_fn(sde), sde, x, divergence="exact", rtol=1e-5, atol=1e-5, _first_probe=reach
        )
        exact = exact_t0 - tg.marginal_log_prob(r.latent, sde.T, sde)
        errs[reach] = float((r.log_prob - r.prior_log_prob - exact).abs().max())
    assert errs[FIRST_PROBE] < 2e-4 < errs[1.0], errs


def test_first_probe_bounds_the_heuristic_probe_not_the_first_step() -> None:
    y0 = torch.ones(1, 1)
    u0, u1 = torch.zeros(1), torch.ones(1)
    with pytest.raises(ValueError, match="first_probe must lie in"):
        solve_ivp_batched(lambda r, u, y: y, y0, u0, u1, rtol=1e-5, atol=1e-5, first_probe=0.0)
    at: list[float] = []

    def rhs(rows: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        at.append(float(u[0]))
        return y

    sol = solve_ivp_batched(rhs, y0, u0, u1, rtol=1e-3, atol=1e-3, first_probe=1e-3)
    # calls: the start, the heuristic's probe, then the first step's stages (the last at u0 + h)
    assert at[1] == pytest.approx(1e-3)  # unbounded, the probe would go to 0.01 |y0| / |f0| = 0.01
    assert at[7] > 50 * 1e-3  # the first step is not capped at the probe's reach
    torch.testing.assert_close(sol.y, torch.full((1, 1), torch.e), rtol=1e-3, atol=0)
