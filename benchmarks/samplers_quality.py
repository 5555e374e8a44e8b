"""Samplers benchmark: quality per function evaluation against diffusers and k-diffusion.

Every sampler is driven by the same exact model: the denoiser ``D(x; sigma)`` of an analytic
Gaussian mixture (``samplers_peers.py``).

* scoresde: every sampler x schedule on the EDM SDE (sigma in [0.002, 80]) at NFE 5/10/20/50,
  then a schedule search (Karras rho x sigma_min) for the few-step ODE solvers on a *search*
  seed; winners are re-run with a fresh *evaluation* seed, as are all peers.
* diffusers: DDIM (clip_sample=False), DPMSolverMultistep (default and Karras sigmas), UniPC,
  Euler and Heun discrete schedulers on the DDPM linear-beta schedule, with an exact
  epsilon-prediction model evaluated at the scheduler's exact sigma.
* k-diffusion: ``k_diffusion.sampling`` euler, heun, lms, dpmpp_2m, dpm_2 on Karras sigmas
  (rho = 7, sigma in [0.002, 80]).

Metrics (``scoresde.metrics``): per-mode mass TV, mass-weighted per-mode Frechet, sliced W2 to
an exact sample set, each beside its floor (two exact sample sets of the same size).

Run: ``python benchmarks/samplers_quality.py [--quick | --smoke] [--out DIR]``; writes
``samplers_quality.json`` and ``samplers_quality.md`` (tables) into ``--out`` (default
``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import markdown_table, write_text
from samplers_peers import (
    K_SAMPLERS,
    NFES,
    TARGETS,
    Model,
    load_peers,
    run_diffusers,
    run_k,
    start_noise,
)
from scoresde.metrics import mode_report, sliced_wasserstein
from scoresde.sampling import Schedule
from scoresde.targets import GaussianMixture

SEARCH_SEED, EVAL_SEED = 1, 2
PEERS = ("diffusers", "k-diffusion")


# ------------------------------------------------------------------------------------------
# metrics
@dataclass
class Quality:
    """Per-mode mass TV, mass-weighted per-mode Frechet and sliced W2 of a sample set."""

    tv: float
    frechet: float
    sw: float


def quality(target: GaussianMixture, x: torch.Tensor, ref: torch.Tensor) -> Quality:
    """The three metrics of ``x`` (``inf`` when a sample is not finite)."""
    if not bool(torch.isfinite(x).all()):
        return Quality(float("inf"), float("inf"), float("inf"))
    rep = mode_report(target, x)
    sw = sliced_wasserstein(x, ref, 128, torch.Generator().manual_seed(5))
    return Quality(rep.tv, rep.frechet_weighted, sw)


def floors(target: GaussianMixture, n: int) -> tuple[Quality, torch.Tensor]:
    """The metrics of one exact sample set against another (the floor), and the reference."""
    ref = target.sample(n, torch.Generator().manual_seed(1000), dtype=torch.float32)
    other = target.sample(n, torch.Generator().manual_seed(2000), dtype=torch.float32)
    return quality(target, other, ref), ref


# ------------------------------------------------------------------------------------------
# scoresde
SAMPLERS: dict[str, tuple[str, dict[str, Any], int]] = {
    # label: (sampler, options, NFE per step); + 1 NFE for the final denoising step
    "euler_maruyama": ("euler_maruyama", {}, 1),
    "reverse_diffusion": ("reverse_diffusion", {}, 1),
    "ancestral": ("ancestral", {}, 1),
    "pc(ald)": ("pc", {"corrector": "ald"}, 2),
    "langevin": ("langevin", {"corrector_steps": 1}, 1),
    "ode_heun": ("ode_heun", {}, 2),
    "euler": ("euler", {}, 1),
    "heun": ("heun", {}, 2),
    "edm(churn=10)": ("edm", {"s_churn": 10.0}, 2),
    "ddim(eta=0)": ("ddim", {}, 1),
    "ddim(eta=1)": ("ddim", {"eta": 1.0}, 1),
    "dpm++2M": ("dpm_solver", {"order": 2}, 1),
    "dpm++3M": ("dpm_solver", {"order": 3, "singlestep_start": False}, 1),
    "dpm++2M-sde": ("dpm_solver_sde", {}, 1),
    "dpm++2M+C": ("dpm_solver", {"order": 2, "corrector": True}, 1),
    "dpm++3M+C": ("dpm_solver", {"order": 3, "corrector": True}, 1),
}
SCHEDULES: dict[str, Any] = {
    "uniform": "uniform",
    "quadratic": "quadratic",
    "logsnr": "logsnr",
    "karras7": Schedule("karras", rho=7.0),
}
FEW_STEP = ("dpm++2M", "dpm++3M", "dpm++2M+C", "dpm++3M+C")
"""The few-step ODE solvers of the schedule search."""


def steps_for(nfe: int, per_step: int, denoise: bool) -> int:
    """The most steps within ``nfe`` evaluations (the final denoising step costs one)."""
    return max(1, (nfe - int(denoise)) // per_step)


def run_ours(
    model: Model,
    n: int,
    sampler: str,
    options: dict[str, Any],
    per_step: int,
    schedule: Any,
    nfe: int,
    seed: int,
) -> tuple[torch.Tensor, int]:
    """``scoresde.sample`` from the common start noise within ``nfe`` evaluations."""
    denoise = True
    steps = steps_for(nfe, per_step, denoise)
    if schedule is None:
        schedule = S.sampling.get_sampler(sampler).schedule
        if callable(schedule):
            schedule = schedule(steps)
    t0 = float(S.get_times(model.sde, steps, schedule, dtype=torch.float64)[0])
    x_init = start_noise(n, model.target.dim, seed) * t0  # EDM SDE: std(t) = t
    res = S.sample(
        model.score,
        model.sde,
        (n, model.target.dim),
        sampler=sampler,
        steps=steps,
        schedule=schedule,
        denoise=denoise,
        generator=torch.Generator().manual_seed(seed),
        return_info=True,
        x_init=x_init,
        **options,
    )
    return res.samples, res.nfe


def search_space() -> list[tuple[str, Schedule]]:
    """Karras (rho 7) and log-SNR grids over the start and end noise levels."""
    out = []
    for kind, rho in (("logsnr", 7.0), ("karras", 7.0)):
        for smin in (0.02, 0.04, 0.07, 0.1):
            for smax in (80.0, 40.0, 20.0, 10.0):
                name = "logsnr" if kind == "logsnr" else f"karras{rho:g}"
                sched = Schedule(kind, rho=rho, sigma_min=smin, sigma_max=smax)
                out.append((f"{name}[{smin:g},{smax:g}]", sched))
    return out


# ------------------------------------------------------------------------------------------
# one target
@dataclass
class Runs:
    """Every run on one target: its rows, scored against the exact reference set."""

    target: GaussianMixture
    n: int
    nfes: tuple[int, ...]
    floor: Quality
    ref: torch.Tensor
    rows: list[dict[str, Any]] = field(default_factory=list)
    model: Model = field(init=False)

    def __post_init__(self) -> None:
        self.model = Model(self.target)

    def record(
        self, lib: str, label: str, sched: str, budget: int, x: torch.Tensor, nfe: int, seed: int
    ) -> dict[str, Any]:
        """Score ``x`` and add its row."""
        q = quality(self.target, x, self.ref)
        row = {"lib": lib, "sampler": label, "schedule": sched, "budget": budget, "nfe": nfe,
               "seed": seed, "tv": q.tv, "frechet": q.frechet, "sw": q.sw}  # fmt: skip
        self.rows.append(row)
        return row

    def ours(self, lib: str, label: str, sname: str, sched: Any, budget: int, seed: int) -> dict:
        """Run the scoresde sampler ``label`` and record it."""
        sampler, opts, per = SAMPLERS[label]
        x, nfe = run_ours(self.model, self.n, sampler, opts, per, sched, budget, seed)
        return self.record(lib, label, sname, budget, x, nfe, seed)

    def at(self, budget: int, seed: int, libs: tuple[str, ...]) -> list[dict[str, Any]]:
        """The rows of ``libs`` (or of every ``scoresde*`` lib, if empty) at a budget and seed."""
        return [r for r in self.rows if r["budget"] == budget and r["seed"] == seed
                and (r["lib"] in libs if libs else r["lib"].startswith("scoresde"))]  # fmt: skip


def sweep_ours(runs: Runs) -> None:
    """1. Every scoresde sampler x named schedule (search seed)."""
    for label in SAMPLERS:
        for sname, sched in SCHEDULES.items():
            for budget in runs.nfes:
                runs.ours("scoresde", label, sname, sched, budget, SEARCH_SEED)


def run_peers(runs: Runs, ks: Any, dsch: dict[str, Any]) -> None:
    """2. The peers on both seeds (the search seed's results steer the schedule search only)."""
    model = runs.model
    for seed in (SEARCH_SEED, EVAL_SEED):
        for name in K_SAMPLERS if ks is not None else ():
            for budget in runs.nfes:
                x, nfe = run_k(ks, model, runs.n, name, budget, seed)
                runs.record("k-diffusion", name, "karras7", budget, x, nfe, seed)
        for name, make in dsch.items():
            for budget in runs.nfes:
                x, nfe = run_diffusers(make, model, runs.n, budget, seed)
                runs.record("diffusers", name, "default", budget, x, nfe, seed)


def search_schedules(runs: Runs, search: dict[str, Schedule]) -> None:
    """3. Schedule search for the few-step ODE solvers (search seed, NFE 5 and 10)."""
    for label in FEW_STEP:
        for sname, sched in search.items():
            for budget in (b for b in (5, 10) if b in runs.nfes):
                runs.ours("scoresde-search", label, sname, sched, budget, SEARCH_SEED)


def run_winners(runs: Runs, search: dict[str, Schedule]) -> dict[int, dict[str, Any]]:
    """4. The search seed's winner per budget (against the best peer of that seed), re-run on
    the evaluation seed; 5. the documented few-step default ``fast``, evaluation seed."""
    winners: dict[int, dict[str, Any]] = {}
    for budget in runs.nfes:
        peers = runs.at(budget, SEARCH_SEED, PEERS)
        ptv = min(r["tv"] for r in peers) if peers else runs.floor.tv
        pfr = min(r["frechet"] for r in peers) if peers else runs.floor.frechet
        cands = runs.at(budget, SEARCH_SEED, ())
        best = min(cands, key=lambda r, a=ptv, b=pfr: max(r["tv"] / a, r["frechet"] / b))
        sched = search.get(best["schedule"], SCHEDULES.get(best["schedule"]))
        winners[budget] = runs.ours(
            "scoresde-winner", best["sampler"], best["schedule"], sched, budget, EVAL_SEED
        )
    for budget in runs.nfes:
        x, nfe = run_ours(runs.model, runs.n, "fast", {}, 1, None, budget, EVAL_SEED)
        runs.record("scoresde-fast", "fast", "default", budget, x, nfe, EVAL_SEED)
    return winners


def run_target(
    target: GaussianMixture, n: int, nfes: tuple[int, ...], ks: Any, dsch: dict[str, Any]
) -> dict[str, Any]:
    """Every measurement on one target: the floor, the rows and the winners."""
    floor, ref = floors(target, n)
    runs = Runs(target, n, nfes, floor, ref)
    search = dict(search_space())
    sweep_ours(runs)
    run_peers(runs, ks, dsch)
    search_schedules(runs, search)
    winners = run_winners(runs, search)
    return {
        "floor": floor.__dict__,
        "rows": runs.rows,
        "winners": {str(k): v for k, v in winners.items()},
    }


# ------------------------------------------------------------------------------------------
# report
def metric(v: float) -> str:
    """A metric for a table cell: 4 decimals, or 2 significant figures below 1e-3."""
    return "inf" if not math.isfinite(v) else f"{v:.4f}" if v >= 1e-3 else f"{v:.1e}"


def best_table(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> str:
    """Per budget and library, the evaluation-seed row with the best TV and the best Frechet."""
    out = []
    for b in nfes:
        for lib in ("scoresde-winner", "scoresde-fast", *PEERS):
            cand = [r for r in rows if r["lib"] == lib and r["budget"] == b
                    and r["seed"] == EVAL_SEED]  # fmt: skip
            for key in ("tv", "frechet") if cand else ():
                r = min(cand, key=lambda r, key=key: r[key])
                out.append([b, f"{lib} (best {key})", r["sampler"], r["schedule"], r["nfe"],
                            metric(r["tv"]), metric(r["frechet"]), metric(r["sw"])])  # fmt: skip
    header = ["NFE", "library", "sampler", "schedule", "NFE used", "mode TV", "Fréchet", "SW2"]
    return markdown_table(header, out)


def sweep_table(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> str:
    """Frechet / mode TV of every sampler and named schedule at every budget (search seed)."""
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r["seed"] == SEARCH_SEED:
            first.setdefault((r["lib"], r["sampler"], r["schedule"], r["budget"]), r)
    labels = sorted({(r["lib"], r["sampler"], r["schedule"]) for r in rows
                     if r["lib"] in ("scoresde", *PEERS)})  # fmt: skip
    out = []
    for label in labels:
        got = [first.get((*label, b)) for b in nfes]
        cells = ["-" if r is None else f"{metric(r['frechet'])} / {metric(r['tv'])}" for r in got]
        out.append([*label, *cells])
    return markdown_table(["library", "sampler", "schedule", *(f"NFE {b}" for b in nfes)], out)


def report(results: dict[str, Any], nfes: tuple[int, ...]) -> str:
    """The Markdown tables of every target (for ``benchmarks/RESULTS.md``)."""
    lines: list[str] = []
    for tname, res in results["targets"].items():
        fl = res["floor"]
        lines.append(
            f"\n### {tname} (n = {results['n']}; floor: TV {metric(fl['tv'])}, "
            f"Fréchet {metric(fl['frechet'])}, SW2 {metric(fl['sw'])})\n"
        )
        lines.append(
            "Best per library (evaluation seed; scoresde's winner was chosen on a "
            "separate search seed):\n"
        )
        lines.append(best_table(res["rows"], nfes))
        lines.append(
            "\nAll samplers and named schedules (Fréchet / mode TV, search seed; scoresde on "
            "the EDM SDE, sigma in [0.002, 80]):\n"
        )
        lines.append(sweep_table(res["rows"], nfes))
    lines.append(f"\nTotal runtime: {results['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every target; write ``samplers_quality.json`` / ``.md`` and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, NFE 5/10 only")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a measurement")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n = 128 if args.smoke else 2000 if args.quick else 3000
    nfes = (5,) if args.smoke else (5, 10) if args.quick else NFES
    ks, dsch = load_peers()
    results: dict[str, Any] = {"n": n, "targets": {}}
    t_start = time.time()
    for tname, make_target in TARGETS.items():
        results["targets"][tname] = run_target(make_target(), n, nfes, ks, dsch)
        print(f"{tname} done at {time.time() - t_start:.0f}s", flush=True)
    results["seconds"] = time.time() - t_start
    write_text(Path(args.out) / "samplers_quality.json", json.dumps(results, indent=1))
    md = report(results, nfes)
    write_text(Path(args.out) / "samplers_quality.md", md)
    print(md)
    return results


if __name__ == "__main__":
    main()
