"""Fitted schedules: ``fast`` on its default grid vs on a grid from ``scoresde.fit_schedule``.

The two targets of ``samplers_peers.py`` (ring2d: eight sharp modes on a circle with unequal
weights; aniso32d: four anisotropic 32-D modes) with their exact model on the EDM SDE (sigma in
[0.002, 80]). At NFE 5 and 10 (``fast`` with 4 and 9 steps plus its Tweedie step) the schedule
is fitted on ``--fit-n`` starting noises (seed 0) and both grids are then scored on ``--n``
fresh noises (seed 2; `fast` draws its own start, as by default): mode-mass TV and the
mass-weighted per-mode Frechet distance (``scoresde.metrics.mode_report``), each beside its
floor (one exact sample set of the same size), and the best k-diffusion peer on Karras sigmas
(when k-diffusion is importable). The fitting cost is reported in batched score calls and
seconds (``torch.set_num_threads(--threads)``), also on a random 64-D mixture of 8 modes with
256 and 512 fitting noises (what a many-target benchmark would call).

Run: ``python benchmarks/fit_schedule.py [--smoke] [--out DIR]``; writes ``fit_schedule.json``
and ``fit_schedule.md`` into ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import log, markdown_table, write_text
from samplers_general import run_fast
from samplers_peers import K_SAMPLERS, TARGETS, Model, load_peers, run_k
from samplers_quality import EVAL_SEED, Quality, floors, quality
from scoresde.targets import GaussianMixture

NFES = (5, 10)
FIT_SEED = 0


def best_peer(ks: Any, model: Model, n: int, nfe: int, seed: int, ref: torch.Tensor) -> dict:
    """The k-diffusion sampler with the lowest Frechet at ``nfe`` (and its TV)."""
    best: dict[str, Any] = {}
    for name in K_SAMPLERS:
        x, _ = run_k(ks, model, n, name, nfe, seed)
        q = quality(model.target, x.float(), ref)
        if not best or q.frechet < best["frechet"]:
            best = {"name": name, **q.__dict__}
    return best


def fit(model: Model, steps: int, fit_n: int) -> tuple[S.Schedule, dict[str, Any]]:
    """The fitted schedule and what it cost."""
    res = S.fit_schedule(
        model.score, model.sde, steps, sampler="fast", n=fit_n, event_shape=(model.target.dim,),
        generator=torch.Generator().manual_seed(FIT_SEED), return_info=True,
    )  # fmt: skip
    cost = {
        "calls": res.calls, "seconds": res.seconds, "evaluations": res.evaluations,
        "loss_default": res.loss_default, "loss_fitted": res.loss_fitted,
        "holdout_default": res.holdout_default, "holdout_fitted": res.holdout_fitted,
        "default_sigmas": _sigmas(model, res.default_times),
        "fitted_sigmas": _sigmas(model, res.schedule.times or ()),
    }  # fmt: skip
    return res.schedule, cost


def _sigmas(model: Model, times: tuple[float, ...]) -> list[float]:
    return [round(float(model.sde.sigma(torch.tensor(t))), 4) for t in times]


def run_target(
    target: GaussianMixture, n: int, fit_n: int, ks: Any
) -> dict[str, Any]:  # one target
    """Floor, then per NFE: default and fitted ``fast`` (and the best peer)."""
    floor, ref = floors(target, n)
    model = Model(target)
    rows: dict[str, Any] = {"floor": floor.__dict__, "nfe": {}}
    for nfe in NFES:
        steps = nfe - 1
        sched, cost = fit(model, steps, fit_n)
        log(f"  NFE {nfe}: fitted in {cost['seconds']:.1f} s, {cost['calls']} calls")
        q_def = quality(target, run_fast(model, n, steps + 1, EVAL_SEED), ref)
        q_fit = quality(target, run_fast(model, n, steps + 1, EVAL_SEED, sched), ref)
        peer = best_peer(ks, model, n, nfe, EVAL_SEED, ref) if ks is not None else None
        rows["nfe"][nfe] = {
            "default": q_def.__dict__, "fitted": q_fit.__dict__, "peer": peer, "cost": cost,
        }  # fmt: skip
    return rows


def mixture64() -> GaussianMixture:
    """Eight random modes in 64-D, per-axis std 0.02-1, weights 1 to 50 (for the cost only)."""
    g = torch.Generator().manual_seed(64)
    means = torch.randn(8, 64, generator=g, dtype=torch.float64) * 2
    std = torch.exp(torch.rand(8, 64, generator=g, dtype=torch.float64) * 3.9) * 0.02
    return GaussianMixture(means, std**2, weights=torch.logspace(0, 1.7, 8).tolist())


def cost64(sizes: tuple[int, ...]) -> list[list[Any]]:
    """Fitting time and calls on :func:`mixture64` at NFE 5 and 10 per number of noises."""
    model, rows = Model(mixture64()), []
    for fit_n in sizes:
        for nfe in NFES:
            _, c = fit(model, nfe - 1, fit_n)
            rows.append([fit_n, nfe, c["calls"], c["seconds"]])
            log(f"  64-D, n {fit_n}, NFE {nfe}: {c['seconds']:.1f} s")
    return rows


def report(results: dict[str, Any]) -> str:
    """The Markdown table of every target and NFE."""
    head = ["target", "NFE", "TV default", "TV fitted", "TV floor", "Fréchet default",
            "Fréchet fitted", "Fréchet floor", "best k-diffusion (Fréchet / TV)",
            "fit calls", "fit s"]  # fmt: skip
    rows = []
    for tname, res in results["targets"].items():
        fl = Quality(**res["floor"])
        for nfe, r in res["nfe"].items():
            d, f, c, p = r["default"], r["fitted"], r["cost"], r["peer"]
            peer = "-" if p is None else f"{p['name']}: {p['frechet']:.3g} / {p['tv']:.3g}"
            rows.append([tname, nfe, d["tv"], f["tv"], fl.tv, d["frechet"], f["frechet"],
                         fl.frechet, peer, c["calls"], c["seconds"]])  # fmt: skip
    sig = []
    for tname, res in results["targets"].items():
        for nfe, r in res["nfe"].items():
            sig.append(f"- {tname} NFE {nfe}: default sigmas {r['cost']['default_sigmas']}; "
                       f"fitted {r['cost']['fitted_sigmas']}")  # fmt: skip
    cost = markdown_table(["fit noises", "NFE", "calls", "seconds"], results["cost64"])
    return (markdown_table(head, rows) + "\n\n" + "\n".join(sig)
            + "\n\nFitting cost on a 64-D mixture of 8 modes:\n\n" + cost + "\n")  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Every target; write ``fit_schedule.json`` / ``.md`` and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="evaluation samples (default 4000)")
    ap.add_argument("--fit-n", type=int, default=512, help="fitting noises (default 512)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a measurement")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, fit_n = (200, 32) if args.smoke else (args.n, args.fit_n)
    ks, _ = load_peers()
    results: dict[str, Any] = {"n": n, "fit_n": fit_n, "threads": args.threads, "targets": {}}
    for tname, make in TARGETS.items():
        log(f"{tname}")
        results["targets"][tname] = run_target(make(), n, fit_n, ks)
    results["cost64"] = cost64((32,) if args.smoke else (256, 512))
    write_text(Path(args.out) / "fit_schedule.json", json.dumps(results, indent=1))
    md = report(results)
    write_text(Path(args.out) / "fit_schedule.md", md)
    print(md)
    return results


if __name__ == "__main__":
    main()
