"""Likelihood on analytic targets: scoresde against SciPy RK45 and k-diffusion (accuracy vs NFE).

Run: ``.venv/bin/python benchmarks/likelihood_analytic.py [--quick] [--parts 12]`` (CPU; about
15 minutes, 2 with ``--quick``).

(a) is the SciPy RK45 NumPy round trip in ``t`` (``likelihood_reference.py``), (b)
``k_diffusion.sampling.log_likelihood`` (torchdiffeq dopri5 in sigma, Rademacher probe), (c)
:func:`scoresde.log_likelihood`.

1. Exact divergence, every SDE: per-sample error against the exact log-density, NFE and wall
   time; "NFE at equal accuracy" is the NFE of the loosest tolerance of (c) and of each
   alternative formulation (``likelihood_variants.py``) whose mean error is at most (a)'s.
2. Hutchinson against k-diffusion at matched NFE (tolerance sweeps of both).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import Tensor

import scoresde
from _shared import best_of, load_kdiffusion_sampling, log
from likelihood_reference import (
    EPS,
    exact_log_prob,
    fixed_probe,
    loosest_accurate,
    make_targets,
    quick_parser,
    scipy_rk45_loglik,
    script_main,
    sdes,
    section,
    tight_with_probe,
)
from likelihood_variants import variant_log_likelihood
from scoresde import EDMSDE, SDE
from scoresde.targets import GaussianMixture

FORMULATIONS: dict[str, dict[str, Any]] = {
    "default (sigma/(0.6+sigma), w, residual)": {},
    "same, unbounded first probe": {"first_probe": 1.0},
    "asinh sigma, w (previous default)": {"variable": "asinh_sigma"},
    "VP clock, w": {"variable": "vp_time"},
    "t, x (ref. equations)": {"variable": "t", "state": "x", "residual": False},
    "t, w": {"variable": "t"},
    "log sigma, w": {"variable": "log_sigma"},
}
"""Formulations of part 1, as ``variant_log_likelihood`` arguments."""


def _mean_error(tg: GaussianMixture, sde: SDE, x: Tensor, r: scoresde.LikelihoodResult) -> float:
    return float((r.log_prob - exact_log_prob(tg, sde, x, r.latent, r.prior_log_prob)).abs().mean())


def _part1_row(
    tname: str, sname: str, tg: GaussianMixture, sde: SDE, x: Tensor
) -> tuple[list[str], list[float]]:
    """One target and SDE: (a), (c) at 1e-5, and every formulation's NFE at (a)'s accuracy.

    Returns the table row and each formulation's NFE ratio to (a).
    """
    fn = tg.score_fn(sde)
    t_a, (lp, z, pr, n_a) = best_of(1, scipy_rk45_loglik, fn, sde, x)
    err_a = (lp - exact_log_prob(tg, sde, x, z, pr)).abs()
    t_c, r = best_of(1, scoresde.log_likelihood, fn, sde, x, divergence="exact")
    err_c = (r.log_prob - exact_log_prob(tg, sde, x, r.latent, r.prior_log_prob)).abs()
    cells = [tname, sname, f"{err_a.mean():.1e} / {err_a.max():.1e}", str(n_a), f"{t_a:.2f}"]
    cells += [f"{err_c.mean():.1e} / {err_c.max():.1e}", f"{r.nfe.float().mean():.0f} / {r.calls}"]
    cells.append(f"{t_c:.2f}")
    ratios = []
    for kw in FORMULATIONS.values():

        def solve(tol: float, kw: dict[str, Any] = kw) -> scoresde.LikelihoodResult:
            return variant_log_likelihood(fn, sde, x, divergence="exact", rtol=tol, atol=tol, **kw)

        _, _, rr = loosest_accurate(
            solve, lambda res: _mean_error(tg, sde, x, res), float(err_a.mean())
        )
        n_eq = float("nan") if rr is None else float(rr.nfe.float().mean())
        cells.append(f"{n_eq:.0f} ({n_eq / n_a:.2f})")
        ratios.append(n_eq / n_a)
    return cells, ratios


def part1(targets: dict[str, GaussianMixture], batch: int) -> str:
    """Exact divergence on the analytic targets, every SDE."""
    header = ["target", "SDE", "(a) err mean / max", "(a) NFE", "(a) s", "(c) err mean / max"]
    header += ["(c) NFE mean / calls", "(c) s"] + [f"NFE@eq {k}" for k in FORMULATIONS]
    rows, ratios = [], []
    for tname, tg in targets.items():
        for sname, sde in sdes().items():
            x = tg.sample(batch, torch.Generator().manual_seed(7), dtype=torch.float64)
            row, ratio = _part1_row(tname, sname, tg, sde, x)
            rows.append(row)
            ratios.append(ratio)
            log(" | ".join(row))
    geo = {}
    for k, vs in zip(FORMULATIONS, zip(*ratios, strict=True), strict=True):
        if all(v == v for v in vs):  # no NaN: reached (a)'s accuracy everywhere
            geo[k] = math.exp(sum(math.log(v) for v in vs) / len(vs))
    return section(
        f"1. Exact divergence, analytic targets (float64, batch {batch}, eps=1e-5)",
        "(a) = SciPy RK45 in t, rtol=atol=1e-5. (c) = scoresde at rtol=atol=1e-5. `NFE@eq` ="
        " mean per-sample NFE of the loosest tolerance (sweep 1e-3..1e-6, 6 per decade) whose"
        " mean error is <= (a)'s; ratio = NFE@eq / NFE(a).",
        header,
        rows,
        "Geometric-mean NFE ratio (scoresde / (a)) at equal accuracy: "
        + ", ".join(f"{k}: {v:.2f}" for k, v in geo.items())
        + ".",
    )


# ----------------------------------------------------------------------------------------------
# 2. k-diffusion
def kdiffusion_denoiser(tg: GaussianMixture) -> Any:
    """k-diffusion's ``model(y, sigma) = E[y0 | y]`` for the scaled variable ``y = x / s`` (exact).

    ``y = x / s`` is the data plus ``N(0, sigma^2)`` noise whatever the SDE, i.e. the EDM marginal
    at time sigma. torchdiffeq steps past sigma_max and interpolates back, so sigma may exceed the
    SDE's range: an EDM SDE with a huge sigma_max keeps the oracle valid there.
    """
    wide = EDMSDE(sigma_min=1e-9, sigma_max=1e6)

    def model(y: Tensor, sigma: Tensor) -> Tensor:
        sig = sigma.reshape(-1, *[1] * (y.dim() - 1))
        return y + sig**2 * tg.marginal_score(y, sigma, wide)

    return model


def kdiffusion_loglik(
    kds: Any, tg: GaussianMixture, sde: SDE, x: Tensor, *, tol: float, seed: int = 0
) -> tuple[Tensor, int, Tensor, float]:
    """``log p_eps(x)`` in x-space from k-diffusion's ``log_likelihood`` (which works on x / s).

    Returns ``(log_prob, nfe, the probe it drew, sigma_max)``.
    """
    t0 = torch.tensor(EPS, dtype=x.dtype)
    s0 = sde.scale(t0)
    sig0 = float(sde.sigma(t0))
    sig1 = float(sde.sigma(torch.tensor(sde.T, dtype=x.dtype)))
    torch.manual_seed(seed)
    probe = (torch.randint_like(x, 2) * 2 - 1).reshape(1, x.shape[0], -1)
    torch.manual_seed(seed)
    ll_y, info = kds.log_likelihood(kdiffusion_denoiser(tg), x / s0, sig0, sig1, atol=tol, rtol=tol)
    return ll_y - x[0].numel() * torch.log(s0), info["fevals"], probe, sig1


def interp_loglog(points: list[tuple[float, float, float]], nfe: float, col: int) -> float:
    """Column ``col`` of ``points`` (NFE first) interpolated log-log at ``nfe``."""
    pts = sorted((p[0], p[col]) for p in points)
    xs = [math.log(p[0]) for p in pts]
    ys = [math.log(max(p[1], 1e-300)) for p in pts]
    lx = math.log(nfe)
    if lx <= xs[0]:
        return math.exp(ys[0]) if lx == xs[0] else float("nan")
    for i in range(len(xs) - 1):
        if xs[i] <= lx <= xs[i + 1]:
            w = (lx - xs[i]) / (xs[i + 1] - xs[i]) if xs[i + 1] > xs[i] else 0.0
            return math.exp(ys[i] + w * (ys[i + 1] - ys[i]))
    return math.exp(ys[-1])


TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _kdiffusion_sweep(kds: Any, tg: GaussianMixture, sde: SDE, x: Tensor) -> list[tuple]:
    """k-diffusion over :data:`TOLS`: ``(nfe, solver error, total error)`` each."""
    fn = tg.score_fn(sde)
    z_exact = scoresde.encode(fn, sde, x, rtol=1e-10, atol=1e-10)
    s1 = sde.scale(torch.tensor(sde.T, dtype=x.dtype))
    out = []
    for tol in TOLS:
        ll, nfe, probe, sig1 = kdiffusion_loglik(kds, tg, sde, x, tol=tol)
        tight, _ = tight_with_probe(fn, sde, x, probe)
        # k-diffusion's prior is N(0, sigma_max^2) on y = x/s
        prior_kd = torch.distributions.Normal(0.0, sig1).log_prob(z_exact / s1).flatten(1).sum(1)
        exact = exact_log_prob(tg, sde, x, z_exact, prior_kd - x[0].numel() * torch.log(s1))
        out.append((nfe, float((ll - tight).abs().mean()), float((ll - exact).abs().mean())))
    return out


def _scoresde_sweep(tg: GaussianMixture, sde: SDE, x: Tensor, seed: int = 5) -> list[tuple]:
    """scoresde over :data:`TOLS`: ``(mean nfe, solver error, total error)`` each."""
    fn = tg.score_fn(sde)
    tight, _ = tight_with_probe(fn, sde, x, fixed_probe(x, seed))
    out = []
    for tol in TOLS:
        gen = torch.Generator().manual_seed(seed)
        r = scoresde.log_likelihood(fn, sde, x, rtol=tol, atol=tol, generator=gen)
        exact = exact_log_prob(tg, sde, x, r.latent, r.prior_log_prob)
        e_s, e_t = (r.log_prob - tight).abs().mean(), (r.log_prob - exact).abs().mean()
        out.append((float(r.nfe.float().mean()), float(e_s), float(e_t)))
    return out


def part2(kds: Any, targets: dict[str, GaussianMixture], batch: int) -> str:
    """Hutchinson against k-diffusion at matched NFE, the first two targets."""
    rows, wins = [], 0
    for tname, tg in list(targets.items())[:2]:
        for sname, sde in sdes().items():
            x = tg.sample(batch, torch.Generator().manual_seed(11), dtype=torch.float64)
            ours = _scoresde_sweep(tg, sde, x)
            for nfe, e_s, e_t in _kdiffusion_sweep(kds, tg, sde, x):
                o_s, o_t = interp_loglog(ours, nfe, 1), interp_loglog(ours, nfe, 2)
                wins += o_s < e_s
                rows.append(
                    [tname, sname, nfe, f"{e_s:.1e}", f"{o_s:.1e}", f"{e_t:.1e}", f"{o_t:.1e}"]
                )
                log(" | ".join(map(str, rows[-1])))
    header = ["target", "SDE", "k-diff NFE", "k-diff solver err", "scoresde solver err @NFE"]
    header += ["k-diff total err", "scoresde total err @NFE"]
    return section(
        "2. Hutchinson (Rademacher, 1 probe) against k-diffusion at matched NFE",
        "Both sweep rtol=atol over 1e-2..1e-6. `solver err` = |result - the same probe's "
        "integral solved tightly (rtol 1e-10)|; `total err` = |result - exact log-density| "
        "(includes the estimator's own noise, same for both). scoresde's errors are "
        "interpolated (log-log) at each k-diffusion NFE.",
        header,
        rows,
        f"scoresde's solver error is lower at {wins} of {len(rows)} matched-NFE points.",
    )


def build(args: argparse.Namespace) -> str:
    """The chosen parts' Markdown."""
    out = []
    targets = make_targets(args.quick)
    batch = 8 if args.quick else 16
    if "1" in args.parts:
        out.append(part1(targets, batch))
    if "2" in args.parts:
        kds, how = load_kdiffusion_sampling()
        if kds is None:
            out += [f"### 2. k-diffusion: skipped ({how})", ""]
        else:
            out += [f"k-diffusion: {how}.", "", part2(kds, targets, batch)]
    return "\n".join(out)


def main() -> None:
    """Run the chosen parts; print the Markdown (or write it to ``--out``)."""
    ap = quick_parser(__doc__, "two targets, batch 8")
    ap.add_argument("--parts", default="12", help="which parts to run, e.g. 1 or 12")
    script_main(ap, build)


if __name__ == "__main__":
    main()
