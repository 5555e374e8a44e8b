"""Likelihood of MLP score models: wall time against SciPy RK45, and what the solver adds per eval.

Run: ``.venv/bin/python benchmarks/likelihood_overhead.py [--quick]`` (CPU, 1 thread; about 3
minutes, seconds with ``--quick``).

Small untrained MLPs behind EDM preconditioning (the ``1/sigma`` scale of a real network's score),
``d = 64``, batch 64, float32, Hutchinson with one fixed probe. Accuracy is against a tight solve
with the same probe (``likelihood_reference.tight_with_probe``, float64 copy of the model); (c)
uses the loosest tolerance whose mean error is at most (a)'s (the SciPy RK45 baseline). "Eval
overhead" = scoresde's wall time per sample-evaluation / (bare forward + one VJP at the full
batch, per sample): all that the solver adds.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

import scoresde
from _shared import best_of, log
from likelihood_reference import (
    fixed_probe,
    loosest_accurate,
    quick_parser,
    scipy_rk45_loglik,
    script_main,
    section,
    tight_with_probe,
)
from likelihood_variants import variant_log_likelihood
from scoresde import EDMSDE, SDE, VESDE, VPSDE


class MLPScore(nn.Module):
    """A small untrained MLP behind EDM preconditioning, as a score (Karras et al. 2022).

    In ``y = x / s``: ``D = c_skip y + c_out F(c_in y, log sigma)`` with ``sigma_data = 0.5``,
    and ``score_x = (D - y) / (s sigma^2)``: the ``1/sigma`` scale of a real network's score.
    """

    def __init__(self, sde: SDE, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.sde = sde
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        s, sig = self.sde.scale(t)[:, None], self.sde.sigma(t)[:, None]
        sd2 = 0.25
        y = x / s
        c_in = 1 / torch.sqrt(sig**2 + sd2)
        f = self.net(torch.cat([c_in * y, torch.log(sig) / 4], dim=1))
        d_minus_y = -(sig**2) / (sig**2 + sd2) * y + sig * 0.5 * c_in * f
        return d_minus_y / (s * sig**2)


def bare_eval_time(model: nn.Module, x: Tensor, v: Tensor, reps: int) -> float:
    """Seconds of one bare forward + one VJP at batch size ``len(x)``, per call, over ``reps``."""

    def once() -> None:
        xg = x.detach().requires_grad_(True)
        out = model(xg, torch.full((x.shape[0],), 0.5))
        torch.autograd.grad(out, xg, v)

    once()
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - t0) / reps


def _row(sname: str, sde: SDE, hidden: int, batch: int, dim: int, repeats: int) -> list[str]:
    """One SDE and width: (a), (c) at (a)'s accuracy, speed-up, overhead, the asinh variable."""
    torch.manual_seed(0)
    model = MLPScore(sde, dim, hidden).eval()
    x = 0.5 * torch.randn(batch, dim, generator=torch.Generator().manual_seed(3))
    probe = fixed_probe(x, 9)
    m64 = MLPScore(sde, dim, hidden).double()
    m64.load_state_dict(model.state_dict())
    ref, _ = tight_with_probe(m64, sde, x.double(), probe.double())
    t_a, (lp_a, _, _, n_a) = best_of(3, scipy_rk45_loglik, model, sde, x, probes=probe)
    err_a = float((lp_a.double() - ref).abs().mean())

    def error(r: scoresde.LikelihoodResult) -> float:
        return float((r.log_prob.double() - ref).abs().mean())

    def ours(rtol: float, **kw: Any) -> scoresde.LikelihoodResult:  # no kw: the library's
        gen = torch.Generator().manual_seed(9)
        return variant_log_likelihood(model, sde, x, rtol=rtol, atol=rtol, generator=gen, **kw)

    chosen, err_c, _ = loosest_accurate(ours, error, err_a)
    chosen = 1e-6 if chosen != chosen else chosen
    _, _, ra = loosest_accurate(lambda tol: ours(tol, variable="asinh_sigma"), error, err_a)
    nfe_asinh = float("nan") if ra is None else float(ra.nfe.float().mean())
    # interleaved, fastest of `repeats` each: the box's speed drifts between measurements
    t_c = t_bare = float("inf")
    for _ in range(repeats):
        gen = torch.Generator().manual_seed(9)
        t, r = best_of(
            1, scoresde.log_likelihood, model, sde, x, rtol=chosen, atol=chosen, generator=gen
        )
        t_c = min(t_c, t)
        t_bare = min(t_bare, bare_eval_time(model, x, probe[0], reps=30))
    overhead = (t_c / float(r.nfe.sum())) / (t_bare / batch)
    return [
        sname, str(hidden), str(n_a), f"{t_a:.2f}", f"{err_a:.1e}", f"{chosen:g}", f"{err_c:.1e}",
        f"{r.nfe.float().mean():.0f} / {r.calls}", f"{t_c:.2f}", f"{t_a / t_c:.2f}x",
        f"{overhead:.2f}", f"{nfe_asinh:.0f}",
    ]  # fmt: skip


def run(quick: bool, batch: int = 64, dim: int = 64) -> str:
    """The table for VP/VE/EDM and widths 256/1024 (``quick``: VP, 256, 2 repeats)."""
    cases = [("VP", VPSDE()), ("VE", VESDE()), ("EDM", EDMSDE())]
    widths: tuple[int, ...] = (256, 1024)
    repeats = 10
    if quick:
        cases, widths, repeats = cases[:1], (256,), 2
    rows = []
    for sname, sde in cases:
        for hidden in widths:
            rows.append(_row(sname, sde, hidden, batch, dim, repeats))
            log(" | ".join(rows[-1]))
    header = ["SDE", "hidden", "(a) NFE", "(a) s", "(a) err", "(c) rtol", "(c) err"]
    header += ["(c) NFE mean / calls", "(c) s", "speed-up", "eval overhead"]
    header.append("NFE@eq asinh sigma (previous default)")
    return section(
        f"MLP score models (d={dim}, 2 hidden layers, EDM-preconditioned, untrained; batch"
        f" {batch}, float32, Hutchinson 1 probe, 1 thread)",
        "Accuracy is against a tight solve with the same probe (rtol=atol=1e-10, float64 copy"
        " of the model). (c) uses the loosest rtol (sweep 1e-3..1e-6, 6 per decade) whose mean"
        " error is <= (a)'s. Times are the best of 3 runs for (a); (c) and the bare"
        f" evaluation (blocks of 30 calls) are timed alternately, fastest of {repeats} each."
        " Eval overhead = scoresde wall time per sample-evaluation / (bare forward + one VJP"
        " at the full batch, per sample).",
        header,
        rows,
    )


if __name__ == "__main__":
    script_main(
        quick_parser(__doc__, "VP only, width 256, 2 timing repeats"), lambda args: run(args.quick)
    )
