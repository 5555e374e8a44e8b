"""Fitted likelihood grids: batched score calls against the SciPy RK45 reference at equal accuracy.

Run: ``.venv/bin/python benchmarks/likelihood_grid.py [--quick] [--parts ab]`` (CPU, one torch
thread; on the shared 2-core box 12 minutes for (a); (b) 31 minutes with ``--digits-tols 1e-5``
plus 32 for ``--tols - --digits-tols 1e-6``, run beside other jobs; ``--quick`` is a smoke run
of a few minutes).

Issue 21 asks that ``scoresde.likelihood.fit_grid`` + ``log_likelihood(..., grid=...)`` need at
most half the *batched* score calls of the SciPy RK45-in-``t`` reference
(``likelihood_reference.scipy_rk45_loglik``: the whole batch one flat vector, one error norm) at
equal accuracy, about 3e-3 bits/dim, on analytic mixtures; and on the two trained demo networks
the same ratio, plus how a smoother time conditioning changes NFE and bits/dim.

(a) Analytic targets (``scoresde.targets``: exact log-densities), float64, exact divergence.
Each grid is fitted on 256 calibration points and scored on 128 other points (the 64-d target:
32 and 64, and 24 trial solves instead of 48). The error of a fixed grid on a mixture is
erratic in the calls (it depends on where nodes fall against the sharp turns of the hardest
trajectories), and with 64 calibration points the calibration error did not predict the
held-out one; with 256 it did, within about 2x. Accuracy is the
RMS over the points of the error in bits/dim against the exact ODE answer
(``likelihood_reference.exact_log_prob``). SciPy's batched calls are those of the loosest
tolerance of the sweep 1e-3..1e-6 (6 per decade) that reaches the target; the grid's those of
the fewest calls (6 per dopri5 step) whose fitted grid reaches it on the held-out points. The
same search (any number of calls) for ``fit_grid(..., method="expint4")``, the exponential
multistep predictor-corrector in ``lambda = -log sigma`` (``scoresde.likelihood.expint``).

(b) The two ``make demo`` networks (moons MLP under VP, digits U-Net under EDM), trained here
with the demo settings (``likelihood_trained.train_demo_models``), and again with a smoother
time embedding (Fourier scale 4 instead of 16, otherwise identical); tolerances ``--tols``
(default 1e-5 and 1e-6; ``--digits-tols`` for the U-Nets), 16 trial solves per dopri5 fit (the
fits of several hundred calls dominate the run on a CPU); the expint4 grid is fitted on the
same calibration points and searched the same way (any number of calls). Moons: exact trace;
digits: Hutchinson with one fixed probe. Errors (RMSE, nats/dim) are against a tight solve of the
float32 model's ODE (rtol = atol = 1e-10 in ``log sigma``, float64 copy:
``likelihood_reference``). The grid is fitted on as many other test points (moons: float64
copy, reference 1e-9; digits: the float32 U-Net, reference 1e-6).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import scoresde
from _shared import log
from likelihood_reference import (
    RTOLS,
    exact_log_prob,
    fixed_probe,
    make_targets,
    quick_parser,
    scipy_rk45_loglik,
    script_main,
    sdes,
    section,
    tight_with_probe,
)
from likelihood_trained import train_demo_models
from likelihood_variants import variant_log_likelihood
from scoresde.likelihood import LikelihoodGrid, fit_grid, log_likelihood, uniform_grid
from scoresde.likelihood.fitting import Calibration, calibrate, fit_calibrated
from scoresde.targets import GaussianMixture

TARGET = 3e-3
"""Accuracy of part (a): RMS error in bits/dim."""
PER_STEP = 6
"""Batched calls of one fixed dopri5 step."""
MAX_NFE = 240
TEST_MOONS, TEST_DIGITS = 64, 16
"""Test points of part (b) (the grids are fitted on as many others)."""
SMOOTH_SCALE = 4.0
"""The smoother Fourier time embedding of part (b) (the networks' default is 16)."""
LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# (a) analytic mixtures
def extra_targets() -> dict[str, GaussianMixture]:
    """Two more mixtures beside ``likelihood_reference.make_targets``: a ring and a 16-d one."""
    g = torch.Generator().manual_seed(7)
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    ring = torch.stack([angles.cos(), angles.sin()], dim=1) * 2.0
    wide = 3.0 * torch.randn(3, 16, generator=g, dtype=torch.float64)
    return {
        "ring d=2 (8 modes, std 0.05, weights 1..8)": GaussianMixture(
            ring, variances=[0.0025] * 8, weights=torch.arange(1.0, 9.0).double()
        ),
        "mixture d=16 (3 modes, std 0.2-0.7, scale 3)": GaussianMixture(
            wide, variances=[0.04, 0.2, 0.5], weights=[0.6, 0.3, 0.1]
        ),
    }


def _bits(err_nats: Tensor, d: int) -> float:
    """RMS over the points of an error in nats, as bits/dim."""
    return float(err_nats.double().pow(2).mean().sqrt()) / (d * LN2)


def _scipy_at_target(tg: GaussianMixture, sde: scoresde.SDE, x: Tensor) -> tuple[float, int, float]:
    """``(rtol, batched calls, error)`` of the loosest SciPy tolerance reaching :data:`TARGET`."""
    score, d = tg.score_fn(sde), x[0].numel()
    err = math.nan
    for tol in RTOLS:
        lp, z, prior, calls = scipy_rk45_loglik(score, sde, x, rtol=tol, atol=tol)
        err = _bits(lp - exact_log_prob(tg, sde, x, z, prior), d)
        if err <= TARGET:
            return tol, calls, err
    return math.nan, 0, err


def _grid_error(tg: GaussianMixture, sde: scoresde.SDE, x: Tensor, grid: LikelihoodGrid) -> float:
    r = log_likelihood(tg.score_fn(sde), sde, x, divergence="exact", grid=grid)
    return _bits(r.log_prob - exact_log_prob(tg, sde, x, r.latent, r.prior_log_prob), x[0].numel())


def fewest_calls(
    make: Callable[[int], LikelihoodGrid],
    error: Callable[[LikelihoodGrid], float],
    start: int,
    target: float = TARGET,
    max_nfe: int = MAX_NFE,
    per_step: int = PER_STEP,
) -> tuple[int, float, LikelihoodGrid | None]:
    """The fewest calls (a multiple of ``per_step``) whose grid meets ``target``, from ``start``.

    Brackets by factors of 1.5, then bisects (the error taken as monotone in the calls).
    Returns ``(nfe, error, grid)``; ``(0, error at max_nfe, None)`` when none up to it does.
    """
    seen: dict[int, tuple[float, LikelihoodGrid]] = {}
    least = max(per_step, 2)  # expint4 (per_step 1) needs 2 calls

    def _sixes(v: float) -> int:
        return max(least, round(v / per_step) * per_step)

    def ok(nfe: int) -> bool:
        if nfe not in seen:
            grid = make(nfe)
            seen[nfe] = (error(grid), grid)
        return seen[nfe][0] <= target

    lo, hi = 0, _sixes(min(start, max_nfe))
    if ok(hi):
        while hi > least:
            lo = _sixes(hi / 1.5) if _sixes(hi / 1.5) < hi else hi - per_step
            if not ok(lo):
                break
            hi, lo = lo, 0
    else:
        while not ok(hi):
            if hi >= max_nfe:
                return 0, seen[hi][0], None
            lo, hi = hi, min(_sixes(hi * 1.5), max_nfe)
    while lo and hi - lo > per_step:
        mid = min(max(_sixes((lo + hi) / 2), lo + per_step), hi - per_step)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi, seen[hi][0], seen[hi][1]


def analytic_row(name: str, tg: GaussianMixture, sde_name: str, sde: scoresde.SDE) -> list[str]:
    """One case of part (a): SciPy at the target, the fitted and the uniform grid."""
    dtype, big = torch.float64, tg.means.shape[1] > 16  # exact traces of 64-d: fewer points
    xc = tg.sample(32 if big else 256, generator=torch.Generator().manual_seed(1), dtype=dtype)
    x = tg.sample(64 if big else 128, generator=torch.Generator().manual_seed(2), dtype=dtype)
    d, score = x[0].numel(), tg.score_fn(sde)
    tol, n_ref, e_ref = _scipy_at_target(tg, sde, x)
    t0 = time.perf_counter()
    fits: list[LikelihoodGrid] = []

    def fitted(nfe: int) -> LikelihoodGrid:
        fits.append(fit_grid(score, sde, xc, nfe=nfe, method="dopri5", divergence="exact",
                             max_solves=24 if big else 48))  # fmt: skip
        return fits[-1]

    half = max(PER_STEP, n_ref // 2) if n_ref else 60
    n_fit, e_fit, g = fewest_calls(fitted, lambda gr: _grid_error(tg, sde, x, gr), half)
    secs = time.perf_counter() - t0
    n_uni, e_uni, _ = fewest_calls(
        lambda nfe: uniform_grid(sde, (d,), nfe=nfe), lambda gr: _grid_error(tg, sde, x, gr),
        n_fit or half,
    )  # fmt: skip
    ratio = f"{n_fit / n_ref:.2f}" if n_fit and n_ref else "-"
    cost = f"{g.fit_calls} ({secs / max(len(fits), 1):.1f} s)" if g is not None else "-"
    t0, n_fits = time.perf_counter(), [0]

    def fitted_exp(nfe: int) -> LikelihoodGrid:
        n_fits[0] += 1
        return fit_grid(score, sde, xc, nfe=nfe, method="expint4", divergence="exact")

    n_exp, e_exp, ge = fewest_calls(
        fitted_exp, lambda gr: _grid_error(tg, sde, x, gr), half, per_step=1
    )  # fmt: skip
    secs = (time.perf_counter() - t0) / max(n_fits[0], 1)
    return [
        name, sde_name, f"{tol:.2g}", str(n_ref), f"{e_ref:.1e}",
        str(n_fit or f">{MAX_NFE}"), f"{e_fit:.1e}", ratio, str(n_uni or f">{MAX_NFE}"), cost,
        str(n_exp or f">{MAX_NFE}"), f"{e_exp:.1e}",
        f"{n_exp / n_ref:.2f}" if n_exp and n_ref else "-",
        f"{ge.fit_calls} ({secs:.1f} s)" if ge is not None else "-",
    ]  # fmt: skip


def part_a(quick: bool) -> str:
    """Part (a)'s table and verdict."""
    targets = {**make_targets(quick), **extra_targets()}
    chosen = sdes() if not quick else {k: v for k, v in sdes().items() if k in ("VP", "EDM")}
    rows = []
    for name, tg in targets.items():
        for sde_name, sde in chosen.items():
            rows.append(analytic_row(name, tg, sde_name, sde))
            log(" | ".join(rows[-1]))
    verdict = []
    for label, col in (("dopri5 grid", 7), ("expint4 grid", 12)):
        for scope, keep in (("all", lambda r: True), ("mixtures", lambda r: "gauss" not in r[0])):
            ratios = [float(r[col]) for r in rows if r[col] != "-" and keep(r)]
            met = sum(q <= 0.5 for q in ratios)
            gm = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
            verdict.append(f"{label}, {scope}: ratio <= 0.5 in {met} of {len(ratios)} cases,"
                           f" geometric mean {gm:.2f}.")  # fmt: skip
    header = ["target", "SDE", "SciPy rtol", "SciPy calls", "SciPy err", "dopri5 grid calls",
              "grid err", "ratio", "uniform grid calls", "fit cost: calls (s per fit)",
              "expint4 grid calls", "expint4 err", "expint4 ratio",
              "expint4 fit cost: calls (s per fit)"]  # fmt: skip
    return section(
        f"(a) Analytic targets: batched calls at {TARGET:g} bits/dim (RMS, 128 held-out points"
        " (64-d: 64), float64, exact divergence)",
        "SciPy = RK45 in t on the flat batch, loosest rtol = atol of the sweep 1e-3..1e-6 reaching"
        " the target. Grid = `fit_grid(..., nfe, method='dopri5')` on 256 other points (64-d: 32),"
        " fewest calls (multiples of 6, bracketing and bisection) reaching it on the held-out"
        " points;"
        " uniform grid = nodes uniform in sigma/(0.6+sigma). Fit cost = batched calls over the"
        ' calibration points. expint4 = `fit_grid(..., method="expint4")`: exponential'
        " multistep predictor-corrector in lambda = -log sigma, one call per node, any number"
        " of calls (searched the same way).",
        header,
        rows,
        " ".join(verdict),
    )


# ---------------------------------------------------------------------------------------------
# (b) trained networks
class Trained:
    """One trained network, its test points, the tight reference and the error measure."""

    def __init__(self, run: str, x: Tensor, n_cal: int) -> None:
        self.trained = scoresde.load_trained(run)
        self.model, self.sde = self.trained.model, self.trained.sde
        self.eps = float(self.sde.eps)
        self.xc, self.x = x[:n_cal], x[n_cal:]
        self.d = self.x[0].numel()
        self.exact = self.d <= 16
        self.probe = None if self.exact else fixed_probe(self.x, 9)
        self.m64 = copy.deepcopy(self.model).double()
        self.ref = self._tight()
        self.cal: Calibration | None = None

    def _tight(self) -> Tensor:
        if self.probe is not None:
            return tight_with_probe(self.m64, self.sde, self.x.double(), self.probe.double(),
                                    self.eps)[0]  # fmt: skip
        return variant_log_likelihood(
            self.m64, self.sde, self.x.double(), variable="log_sigma", first_probe=1.0,
            divergence="exact", rtol=1e-10, atol=1e-10, eps=self.eps,
        ).log_prob  # fmt: skip

    def rmse(self, log_prob: Tensor) -> float:
        """RMSE against the tight solve, nats/dim."""
        return float((log_prob.double() - self.ref).pow(2).mean().sqrt()) / self.d

    def scipy(self, tol: float) -> tuple[int, float]:
        """SciPy RK45 at ``tol``: ``(batched calls, RMSE)``."""
        lp, _, _, calls = scipy_rk45_loglik(self.model, self.sde, self.x, rtol=tol, atol=tol,
                                            eps=self.eps, probes=self.probe)  # fmt: skip
        return calls, self.rmse(lp)

    def solve(self, **kw: Any) -> scoresde.LikelihoodResult:
        """``log_likelihood`` on the test points (the probe of the reference)."""
        gen = torch.Generator().manual_seed(9)
        div = "exact" if self.exact else "hutchinson"
        return log_likelihood(self.model, self.sde, self.x, divergence=div, eps=self.eps,
                              generator=gen, **kw)  # fmt: skip

    def fit(self, nfe: int, method: str = "dopri5") -> LikelihoodGrid:
        """A grid fitted on the calibration points (their reference solved once).

        Moons: float64 copy, reference at 1e-9; digits: the float32 U-Net, reference at 1e-6.
        """
        if self.cal is None:
            model, xc = (self.m64, self.xc.double()) if self.exact else (self.model, self.xc)
            self.cal = calibrate(
                model, self.sde, xc, eps=self.eps, generator=torch.Generator().manual_seed(5),
                divergence="exact" if self.exact else "hutchinson",
            )  # fmt: skip
        grid = fit_calibrated(self.cal, nfe, method=method, max_solves=16)
        log(f"  {method} {nfe} calls: calibration error {grid.calibration_error:.1e} bits/dim")
        return grid

    def nll(self) -> str:
        """The tight reference's NLL: nats/dim (moons) or bits/dim (digits, 17 levels)."""
        if self.exact:
            return f"{float(-self.ref.mean()) / self.d:.3f} nats/dim"
        bpd = scoresde.bits_per_dim(self.ref.float(), self.x.shape, data_range=(-1, 1), bins=17)
        return f"{float(bpd.mean()):.3f} bits/dim"


def _grid_search(
    t: Trained, method: str, n_ref: int, e_ref: float, start: int
) -> tuple[int, list[str]]:
    """The fewest calls of a ``method`` grid fitted on ``t``'s calibration points whose RMSE is
    <= ``e_ref`` (dopri5: multiples of 6): the calls (0: none up to ``2 n_ref``) and the cells
    ``calls / RMSE``, ratio to ``n_ref``, fit cost."""
    t0, fits = time.perf_counter(), [0]

    def make(nfe: int) -> LikelihoodGrid:
        fits[0] += 1
        return t.fit(nfe, method)

    per_step = PER_STEP if method == "dopri5" else 1
    n, e, g = fewest_calls(make, lambda gr: t.rmse(t.solve(grid=gr).log_prob), start, e_ref,
                           2 * n_ref, per_step)  # fmt: skip
    secs = (time.perf_counter() - t0) / max(fits[0], 1)
    cost = f"{g.fit_calls} ({secs:.0f} s)" if g is not None else "-"
    return n, [f"{n or '-'} / {e:.1e}", f"{n / n_ref:.2f}" if n else "-", cost]


def trained_rows(label: str, run: str, x: Tensor, tols: list[float]) -> list[list[str]]:
    """The rows of one network: SciPy, adaptive scoresde and the fitted grids at ``tols``."""
    n_test = TEST_MOONS if x[0].numel() <= 16 else TEST_DIGITS
    n_cal = min(n_test, x.shape[0] // 2)
    t = Trained(run, x[: n_cal + n_test], n_cal)
    rows = []
    for tol in tols:
        t0 = time.perf_counter()
        n_ref, e_ref = t.scipy(tol)
        ad = t.solve(rtol=tol, atol=tol)
        n_d, dopri = _grid_search(t, "dopri5", n_ref, e_ref, n_ref // 2)
        exp = _grid_search(t, "expint4", n_ref, e_ref, n_d or n_ref // 2)[1]
        rows.append([
            label, t.nll(), f"{tol:g}", f"{n_ref} / {e_ref:.1e}",
            f"{ad.calls} ({float(ad.nfe.float().mean()):.0f}) / {t.rmse(ad.log_prob):.1e}",
            *dopri[:2], *exp, f"{time.perf_counter() - t0:.0f}",
        ])  # fmt: skip
        log(" | ".join(rows[-1]))
    return rows


def part_b(quick: bool, tols: list[float], digits_tols: list[float]) -> str:
    """Part (b)'s table: both networks, default and smoother time embedding."""
    n = 24 if quick else 2 * TEST_MOONS
    rows = []
    for scale in (None, SMOOTH_SCALE):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            extra = None if scale is None else {"embedding_scale": scale}
            models = train_demo_models(Path(tmp), quick, n, extra)
            log(f"trained (embedding scale {scale or 16}) in {time.perf_counter() - t0:.0f} s")
            for name, (run, x) in models.items():
                use = digits_tols if "digits" in name else tols
                rows += (
                    []
                    if not use
                    else trained_rows(f"{name}, emb. scale {scale or 16:g}", run, x, use)
                )
    header = ["model", "NLL (tight)", "tol", "SciPy calls / RMSE", "scoresde adaptive calls"
              " (mean NFE) / RMSE", "dopri5 grid calls / RMSE", "dopri5 ratio grid/SciPy",
              "expint4 grid calls / RMSE", "expint4 ratio grid/SciPy",
              "expint4 fit cost: calls (s per fit)", "row s"]  # fmt: skip
    return section(
        f"(b) Trained demo networks ({TEST_MOONS} / {TEST_DIGITS} test points, float32; RMSE in"
        " nats/dim against a tight solve)",
        "Grids = fewest calls of a grid fitted on as many other test points whose RMSE is <="
        " SciPy's at that tolerance (found by bracketing and bisection; dopri5: multiples of 6;"
        ' expint4 = `fit_grid(..., method="expint4")`, any number, on the same calibration'
        " points and reference). Moons: exact trace; digits: Hutchinson, one fixed probe (the"
        " same for every solver). Issue 21's moons MLP (3000 training steps, 200 points): SciPy"
        " 422 / 878 calls at 1e-5 / 1e-6, scoresde adaptive 548 / 1100. Row s = wall seconds of"
        " the row (SciPy, adaptive, both searches).",
        header,
        rows,
    )


def _tols(text: str) -> list[float]:
    """Comma-separated tolerances; ``-`` for none."""
    return [float(v) for v in text.split(",") if v.strip() not in ("", "-")]


def run(quick: bool, parts: str, tols: str = "1e-5,1e-6", digits_tols: str = "") -> str:
    """The parts asked for, as Markdown (part (b): moons at ``tols``, digits at ``digits_tols``
    or, when empty, ``tols``)."""
    out = []
    if "a" in parts:
        out.append(part_a(quick))
    if "b" in parts:
        out.append(part_b(quick, _tols(tols), _tols(digits_tols or tols)))
    return "\n".join(out)


if __name__ == "__main__":
    ap = quick_parser(__doc__, "VP and EDM only, no 64-d target, 40 training steps (smoke)")
    ap.add_argument("--parts", default="ab", help="which parts: a, b or ab (default)")
    ap.add_argument("--tols", default="1e-5,1e-6", help="part (b)'s, comma-separated (- none)")
    ap.add_argument("--digits-tols", default="", help="the digits U-Nets' (default: --tols)")
    script_main(ap, lambda args: run(args.quick, args.parts, args.tols, args.digits_tols))
