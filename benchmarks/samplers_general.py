"""Few-step sampling that generalises: ``fast`` on random Gaussian mixtures it was not tuned on.

Targets: ``--targets`` random Gaussian mixtures (seeds listed in the output), drawn by
:func:`random_target`: dimension 2-64 (log-uniform), 2-8 modes, data scale 0.1-10 (log-uniform;
the mode means are ``scale * N(0, I)``), mode widths 0.01-1 relative to the scale (log-uniform
per mode, and per axis for half of the targets), weights from balanced to 100:1.

Every sampler is driven by the same exact model (``samplers_peers.Model``: EDM SDE, sigma in
[0.002, 80]) from the same start noise. Peers: diffusers' DDIM / DPM-Solver++ (default and
Karras) / UniPC / Euler (default and Karras) / Heun and k-diffusion's euler / heun / lms /
dpmpp_2m / dpm_2 on Karras sigmas. Ours: ``fast`` with its default schedule, and (unless
``--no-fit``) ``fast`` on :func:`scoresde.fit_schedule`'s schedule for the target.

Metrics (``scoresde.metrics.mode_report``): mode-mass TV and the mass-weighted per-mode Fréchet
over the modes expected to get at least ``3 (d + 1)`` samples. Floors: the same metrics of exact
sample sets of the same size (mean of three). A win at one NFE: Fréchet below the best peer's,
and TV at most the best peer's TV plus the TV floor (the exact-sampling noise of ``n``).

Run: ``python benchmarks/samplers_general.py [--targets 24] [--first-seed 0] [--nfe 5 10]
[--quick] [--no-fit] [--out DIR]``; writes ``samplers_general.json`` / ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import log, markdown_table, write_text
from samplers_peers import K_SAMPLERS, Model, load_peers, run_diffusers, run_k
from scoresde.metrics import mode_report
from scoresde.targets import GaussianMixture

EVAL_SEED = 2


# ------------------------------------------------------------------------------------------
# targets
@dataclass
class TargetInfo:
    """How a random target was drawn."""

    seed: int
    dim: int
    modes: int
    scale: float
    width_min: float
    width_max: float
    weight_ratio: float
    anisotropic: bool


def random_target(seed: int) -> tuple[GaussianMixture, TargetInfo]:
    """A random Gaussian mixture (module docstring), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(10_000 + seed)

    def unif(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape or (1,), generator=g, dtype=torch.float64)

    d = int(round(math.exp(float(unif(math.log(2), math.log(64))))))
    k = int(torch.randint(2, 9, (1,), generator=g))
    scale = math.exp(float(unif(math.log(0.1), math.log(10))))
    aniso = bool(torch.rand(1, generator=g) < 0.5)
    means = scale * torch.randn(k, d, generator=g, dtype=torch.float64)
    width = torch.exp(unif(math.log(0.01), 0.0, k))  # relative to the scale, per mode
    per_axis = torch.exp(unif(math.log(0.2), 0.0, k, d)) if aniso else torch.ones(k, d)
    std = scale * width[:, None] * per_axis
    ratio = math.exp(float(unif(0.0, math.log(100))))
    u = unif(0.0, 1.0, k)
    u[0], u[-1] = 0.0, 1.0
    weights = ratio ** (-u)
    info = TargetInfo(seed, d, k, scale, float(std.min()), float(std.max()), ratio, aniso)
    return GaussianMixture(means, std**2, weights=weights), info


# ------------------------------------------------------------------------------------------
# metrics
def eligible(target: GaussianMixture, n: int) -> torch.Tensor:
    """The modes expected to get at least ``3 (d + 1)`` of ``n`` samples (a Fréchet needs them)."""
    return target.weights * n >= 3 * (target.dim + 1)


def quality(target: GaussianMixture, x: torch.Tensor, keep: torch.Tensor) -> tuple[float, float]:
    """Mode-mass TV and the per-mode Fréchet weighted over the ``keep`` modes (inf if broken)."""
    if not bool(torch.isfinite(x).all()):
        return float("inf"), float("inf")
    rep = mode_report(target, x)
    w = target.weights[keep]
    fr = rep.frechet[keep]
    return rep.tv, float((w * fr).sum() / w.sum())


def sample_size(target: GaussianMixture, base: int) -> int:
    """``base``, raised (up to 16x) so that the heaviest half of the modes count in Fréchet."""
    need = 3 * (target.dim + 1) / float(target.weights.median())
    return int(min(16 * base, max(base, math.ceil(need / 1024) * 1024)))


def floors(target: GaussianMixture, n: int, keep: torch.Tensor) -> tuple[float, float]:
    """Mean TV and Fréchet of three exact sample sets of size ``n`` (the sampling noise)."""
    draws = [torch.Generator().manual_seed(900 + i) for i in range(3)]
    vals = [quality(target, target.sample(n, g, dtype=torch.float32), keep) for g in draws]
    return sum(v[0] for v in vals) / 3, sum(v[1] for v in vals) / 3


# ------------------------------------------------------------------------------------------
# runs
def run_fast(model: Model, n: int, nfe: int, seed: int, schedule: Any = None) -> torch.Tensor:
    """``fast`` within ``nfe`` evaluations (``nfe - 1`` steps + the denoising step).

    Its own start: ``fast`` draws it from the Gaussian matching the noised data's moments
    (``matched_start``), so it is not given the peers' start noise.
    """
    return S.sample(
        model.score,
        model.sde,
        (n, model.target.dim),
        sampler="fast",
        steps=nfe - 1,
        schedule=schedule,
        generator=torch.Generator().manual_seed(seed),
    )


def run_peers(
    model: Model, n: int, nfe: int, ks: Any, dsch: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Every peer's samples at ``nfe``."""
    out = {}
    if ks is not None:
        for name in K_SAMPLERS:
            out[f"k:{name}"] = run_k(ks, model, n, name, nfe, EVAL_SEED)[0]
    for label, make in dsch.items():
        out[f"d:{label}"] = run_diffusers(make, model, n, nfe, EVAL_SEED)[0]
    return out


def fitted(model: Model, nfe: int, n_fit: int) -> tuple[Any, float, int]:
    """``scoresde.fit_schedule`` for ``fast`` at ``nfe``: the schedule, seconds and calls."""
    res = S.fit_schedule(
        model.score, model.sde, nfe - 1, sampler="fast", n=n_fit, return_info=True,
        generator=torch.Generator().manual_seed(7), event_shape=(model.target.dim,),
    )  # fmt: skip
    return res.schedule, res.seconds, res.calls


def one_target(seed: int, nfes: list[int], base_n: int, fit: bool, ks: Any, dsch: Any) -> dict:
    """Every run on the target of ``seed``; its rows."""
    target, info = random_target(seed)
    model = Model(target)
    n = sample_size(target, base_n)
    keep = eligible(target, n)
    tv0, fr0 = floors(target, n, keep)
    row: dict[str, Any] = {"info": asdict(info), "n": n, "floor_tv": tv0, "floor_fr": fr0}
    for nfe in nfes:
        res = {k: quality(target, x, keep) for k, x in run_peers(model, n, nfe, ks, dsch).items()}
        res["fast"] = quality(target, run_fast(model, n, nfe, EVAL_SEED), keep)
        if fit:
            sched, secs, calls = fitted(model, nfe, 256)
            res["fit"] = quality(target, run_fast(model, n, nfe, EVAL_SEED, sched), keep)
            row[f"fit_cost_{nfe}"] = {"seconds": secs, "calls": calls}
        row[str(nfe)] = res
    return row


# ------------------------------------------------------------------------------------------
# verdicts and tables
def verdict(row: dict, nfe: int, ours: str) -> dict[str, Any]:
    """Best peers and whether ``ours`` wins (Fréchet below, TV within the floor) at ``nfe``."""
    res = row[str(nfe)]
    peers = {k: v for k, v in res.items() if k.startswith(("k:", "d:"))}
    p_tv = min(peers, key=lambda k: peers[k][0])
    p_fr = min(peers, key=lambda k: peers[k][1])
    tv, fr = res[ours]
    best_tv, best_fr = peers[p_tv][0], peers[p_fr][1]
    tv_ok = tv <= best_tv + row["floor_tv"]
    fr_ok = fr < best_fr
    return {"tv": tv, "fr": fr, "peer_tv": best_tv, "peer_tv_name": p_tv, "peer_fr": best_fr,
            "peer_fr_name": p_fr, "tv_ok": tv_ok, "fr_ok": fr_ok, "win": tv_ok and fr_ok,
            "half": fr <= 0.5 * best_fr}  # fmt: skip


def report(rows: list[dict], nfes: list[int], ours: list[str]) -> str:
    """The per-target tables and the summary (Markdown)."""
    parts = []
    for nfe in nfes:
        for o in ours:
            body, wins, halves = [], 0, 0
            for r in rows:
                v, i = verdict(r, nfe, o), r["info"]
                wins, halves = wins + v["win"], halves + v["half"]
                body.append([i["seed"], i["dim"], i["modes"], f"{i['scale']:.2g}",
                             f"{i['width_min']:.2g}-{i['width_max']:.2g}",
                             f"{i['weight_ratio']:.0f}", r["n"], f"{r['floor_tv']:.4f}",
                             f"{v['tv']:.4f}", f"{v['peer_tv']:.4f} {v['peer_tv_name']}",
                             f"{v['fr']:.3g}", f"{v['peer_fr']:.3g} {v['peer_fr_name']}",
                             "yes" if v["win"] else ("TV" if v["fr_ok"] else "no")])  # fmt: skip
            head = ["seed", "d", "K", "scale", "std range", "w ratio", "n", "TV floor", f"TV {o}",
                    "TV best peer", f"Fréchet {o}", "Fréchet best peer", "win"]  # fmt: skip
            parts.append(
                f"### NFE {nfe}, `{o}`: wins {wins}/{len(rows)}, Fréchet <= 1/2 best peer's "
                f"{halves}/{len(rows)}\n\n" + markdown_table(head, body)
            )
    return "\n\n".join(parts) + "\n"


def main() -> None:
    """Run the benchmark (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=24)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--n", type=int, default=4096, help="base sample size per target")
    ap.add_argument("--quick", action="store_true", help="4 targets, n = 1024")
    ap.add_argument("--no-fit", action="store_true", help="skip fit_schedule")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out"))
    a = ap.parse_args()
    torch.set_num_threads(1)  # small exact-model batches: threads only contend
    count, base = (4, 1024) if a.quick else (a.targets, a.n)
    ks, dsch = load_peers()
    fit = not a.no_fit
    rows = []
    for seed in range(a.first_seed, a.first_seed + count):
        t0 = time.perf_counter()
        rows.append(one_target(seed, a.nfe, base, fit, ks, dsch))
        v = {nfe: verdict(rows[-1], nfe, "fast") for nfe in a.nfe}
        log(f"seed {seed}: {time.perf_counter() - t0:.1f} s; "
            + "; ".join(f"NFE {k}: fast {x['tv']:.4f}/{x['fr']:.3g} peer {x['peer_tv']:.4f}/"
                        f"{x['peer_fr']:.3g} win={x['win']}" for k, x in v.items()))  # fmt: skip
    ours = ["fast"] + (["fit"] if fit else [])
    stem = Path(a.out) / f"samplers_general_{a.first_seed}"
    write_text(stem.with_suffix(".json"), json.dumps(rows, indent=1))
    text = report(rows, a.nfe, ours)
    write_text(stem.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
