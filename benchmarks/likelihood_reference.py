"""References for the likelihood benchmarks: SciPy RK45 baseline, analytic targets, tight solves.

(a), the baseline every likelihood benchmark compares with, is written here the way the reference
implementation (score_sde) does it: the whole batch is one flat NumPy vector, every right-hand-side
call converts to torch and back, ``dx/dt`` is the PF drift in time ``t`` (Song et al. 2021,
eq. 13) and SciPy's RK45 (Dormand–Prince, one error norm for the whole batch) runs at
``rtol = atol = 1e-5``.

Accuracy is measured against the exact log-density of Gaussian-mixture targets (the exact ODE maps
``p_eps`` onto the true ``p_T``; the solvers put the prior at the end point instead) or, for
network scores and Hutchinson probes, against the same probe's integral solved at
``rtol = atol = 1e-10``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from _shared import markdown_table, write_text
from likelihood_variants import variant_log_likelihood
from scoresde import EDMSDE, SDE, VESDE, VPSDE, SubVPSDE
from scoresde.likelihood import LikelihoodResult
from scoresde.likelihood.divergence import draw_probes, score_and_trace
from scoresde.targets import Gaussian, GaussianMixture

__all__ = [
    "EPS",
    "RTOLS",
    "scipy_rk45_loglik",
    "make_targets",
    "sdes",
    "exact_log_prob",
    "tight_with_probe",
    "fixed_probe",
    "loosest_accurate",
    "script_main",
    "quick_parser",
    "section",
]

EPS = 1e-5
RTOLS = tuple(float(f"{10 ** (-3 - k / 6):.2g}") for k in range(19))
"""The tolerance sweep: 1e-3 to 1e-6, six per decade."""


def scipy_rk45_loglik(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = EPS,
    probes: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """(a): ``log p_eps(x)`` by SciPy RK45 in ``t`` on the flat batch, on the CPU.

    ``probes`` ``(1, B, d)`` give Hutchinson's estimate, ``None`` the exact divergence. Returns
    ``(log_prob, z, prior_log_prob, calls)``.
    """
    shape, b = x.shape, x.shape[0]
    d = x[0].numel()
    calls = [0]

    def rhs(t: float, state: np.ndarray) -> np.ndarray:
        calls[0] += 1
        st = torch.from_numpy(state).to(x)
        xs = st[: b * d].reshape(shape)
        tt = torch.full((b,), t, dtype=x.dtype, device=x.device)
        score, tr = score_and_trace(score_fn, xs, tt, probes)
        f, g2 = sde.f(tt), sde.g2(tt)
        drift = f[:, None] * xs.reshape(b, d) - 0.5 * g2[:, None] * score.reshape(b, d)
        div = d * f - 0.5 * g2 * tr
        return torch.cat([drift.reshape(-1), div]).cpu().numpy()

    y0 = np.concatenate([x.reshape(-1).cpu().numpy(), np.zeros(b)])
    sol = solve_ivp(rhs, (eps, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
    end = torch.from_numpy(sol.y[:, -1]).to(x)
    z = end[: b * d].reshape(shape)
    prior = sde.prior_log_prob(z)
    return prior + end[b * d :], z, prior, calls[0]


def make_targets(quick: bool) -> dict[str, GaussianMixture]:
    """The analytic targets: a 2-d Gaussian, a 64-d one (eigenvalues 1e-4..1), a narrow mixture."""
    g = torch.Generator().manual_seed(123)
    a = torch.randn(2, 2, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    lam = torch.logspace(-4, 0, 64, dtype=torch.float64)
    targets = {
        "gauss d=2": Gaussian([0.3, -0.5], covariance=a @ a.T + 0.1 * torch.eye(2)),
        "gauss d=64 (eig 1e-4..1)": Gaussian(torch.zeros(64), covariance=q @ torch.diag(lam) @ q.T),
        "mixture d=8 (4 narrow)": GaussianMixture(
            torch.randn(4, 8, generator=g, dtype=torch.float64),
            variances=[1e-3, 3e-3, 1e-2, 3e-2],
        ),
    }
    if quick:
        targets.pop("gauss d=64 (eig 1e-4..1)")
    return targets


def sdes() -> dict[str, SDE]:
    """The four SDEs of the public contract, by display name."""
    return {"VE": VESDE(), "VP": VPSDE(), "sub-VP": SubVPSDE(), "EDM": EDMSDE()}


def exact_log_prob(
    tg: GaussianMixture, sde: SDE, x: Tensor, z: Tensor, prior: Tensor, eps: float = EPS
) -> Tensor:
    """``log p_eps(x) - log p_T(z) + prior(z)``: what the exact ODE with this prior returns."""
    return tg.marginal_log_prob(x, eps, sde) - tg.marginal_log_prob(z, sde.T, sde) + prior


def tight_with_probe(
    fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, x: Tensor, probe: Tensor, eps: float = EPS
) -> tuple[Tensor, Tensor]:
    """The ODE integral for a given Hutchinson probe, ``(log_prob, z)`` at rtol=atol=1e-10.

    Solved in ``log sigma`` (a formulation other than the library's) with an unbounded
    starting-step probe.
    """
    r = variant_log_likelihood(
        fn, sde, x, variable="log_sigma", first_probe=1.0, fixed_probes=probe, rtol=1e-10,
        atol=1e-10, eps=eps,
    )  # fmt: skip
    return r.log_prob, r.latent


def fixed_probe(x: Tensor, seed: int) -> Tensor:
    """One Rademacher probe per sample, ``(1, B, d)``, as ``scoresde.log_likelihood`` draws it."""
    gen = torch.Generator().manual_seed(seed)
    return draw_probes("rademacher", x.shape[0], x[0].numel(), 1, gen, x)


def loosest_accurate(
    solve: Callable[[float], LikelihoodResult],
    error: Callable[[LikelihoodResult], float],
    target: float,
    rtols: tuple[float, ...] = RTOLS,
) -> tuple[float, float, LikelihoodResult | None]:
    """Sweep ``rtols`` loose to tight; ``(rtol, error, result)`` of the first with error <= target.

    ``(nan, error at the tightest, None)`` when none is accurate enough.
    """
    err = float("nan")
    for rtol in rtols:
        res = solve(rtol)
        err = error(res)
        if err <= target:
            return rtol, err, res
    return float("nan"), err, None


def quick_parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line with a ``--quick`` flag (``quick``: its help)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    return ap


def script_main(ap: argparse.ArgumentParser, build: Callable[[argparse.Namespace], str]) -> None:
    """Parse ``ap`` (plus ``--out``), run ``build`` on one torch thread, emit its Markdown.

    The Markdown goes under a ``Run:`` line to stdout, or atomically to the file ``--out``.
    """
    ap.add_argument("--out", help="write the Markdown here (atomically) instead of stdout")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = f"Run: {stamp}, torch {torch.__version__}, CPU, 1 thread.\n\n" + build(args)
    if args.out:
        write_text(args.out, text)
    else:
        print(text)


def section(
    title: str, note: str, header: Sequence[str], rows: Sequence[Sequence[Any]], *after: str
) -> str:
    """A Markdown section: ``### title``, the note, the table, then the ``after`` paragraphs."""
    out = [f"### {title}", "", note, "", markdown_table(header, rows), ""]
    for paragraph in after:
        out += [paragraph, ""]
    return "\n".join(out)
