"""Samplers benchmark: quality per function evaluation against diffusers and k-diffusion.

Every sampler is driven by the same exact model: the denoiser ``D(x; sigma)`` of an analytic
Gaussian mixture (Tweedie's posterior mean, computed in float32 by ``scoresde.targets``).

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

Run: ``python benchmarks/samplers.py [--quick] [--out DIR]``; writes ``samplers.json`` and
``samplers.md`` (tables) into ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import scoresde as S
from scoresde.metrics import mode_report, sliced_wasserstein
from scoresde.sampling import Schedule
from scoresde.targets import GaussianMixture

torch.set_num_threads(1)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
NFES = (5, 10, 20, 50)


# ------------------------------------------------------------------------------------------
# targets and the shared exact model
def ring2d() -> GaussianMixture:
    """Eight sharp modes on a circle of radius 2, std 0.03, unequal (geometric) weights."""
    k = 8
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
    w = 0.75 ** torch.arange(k, dtype=torch.float64)
    return GaussianMixture(means, torch.full((k,), 0.03**2), weights=w)


def aniso32d() -> GaussianMixture:
    """Four anisotropic modes in 32-D: per-axis std from 0.05 to 1, unequal weights."""
    g = torch.Generator().manual_seed(11)
    d, k = 32, 4
    means = torch.randn(k, d, generator=g, dtype=torch.float64) * 1.5
    std = torch.exp(torch.rand(k, d, generator=g, dtype=torch.float64) * math.log(20)) * 0.05
    return GaussianMixture(means, std**2, weights=[0.4, 0.3, 0.2, 0.1])


class Model:
    """The exact denoiser ``D(x; sigma)`` of a target, counting its evaluations."""

    def __init__(self, target: GaussianMixture) -> None:
        self.target, self.sde, self.nfe = target, S.EDMSDE(SIGMA_MIN, SIGMA_MAX), 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        sig = sigma.to(x.dtype).reshape(-1).expand(x.shape[0])
        score = self.target.marginal_score(x, sig.clamp(SIGMA_MIN * 0.5, SIGMA_MAX * 2.5), _WIDE)
        return x + sig[:, None] ** 2 * score

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """scoresde's ``score_fn`` for the EDM SDE (t = sigma)."""
        self.nfe += 1
        return self.target.marginal_score(x, t, self.sde)


_WIDE = S.EDMSDE(SIGMA_MIN * 0.5, SIGMA_MAX * 2.5)  # peers may query sigma a bit outside


# ------------------------------------------------------------------------------------------
# metrics
@dataclass
class Quality:
    tv: float
    frechet: float
    sw: float


def quality(target: GaussianMixture, x: torch.Tensor, ref: torch.Tensor) -> Quality:
    if not bool(torch.isfinite(x).all()):
        return Quality(float("inf"), float("inf"), float("inf"))
    rep = mode_report(target, x)
    sw = sliced_wasserstein(x, ref, 128, torch.Generator().manual_seed(5))
    return Quality(rep.tv, rep.frechet_weighted, sw)


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


def start_noise(n: int, d: int, seed: int) -> torch.Tensor:
    """The standard-normal draw every library starts from (common random numbers)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def steps_for(nfe: int, per_step: int, denoise: bool) -> int:
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


# ------------------------------------------------------------------------------------------
# k-diffusion (only its sampling module: the package's top-level import needs extras)
def load_k_sampling() -> Any:
    try:
        import k_diffusion.sampling as ks  # type: ignore[import-not-found]

        return ks
    except Exception:  # noqa: BLE001 - fall back to loading the file by path
        pass
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "sampling.py")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = []  # type: ignore[attr-defined]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x: torch.Tensor, n: int) -> torch.Tensor:
        return x[(...,) + (None,) * (n - x.ndim)]

    utils.append_dims = append_dims  # type: ignore[attr-defined]
    pkg.utils = utils  # type: ignore[attr-defined]
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    mspec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    sys.modules["k_diffusion.sampling"] = mod
    mspec.loader.exec_module(mod)
    return mod


K_SAMPLERS = {"euler": 1, "heun": 2, "lms": 1, "dpmpp_2m": 1, "dpm_2": 2}


def run_k(
    ks: Any, model: Model, n: int, name: str, nfe: int, seed: int
) -> tuple[torch.Tensor, int]:
    per = K_SAMPLERS[name]
    steps = max(1, (nfe + per - 1) // per) if per == 2 else nfe  # 2-NFE samplers: 2n - 1
    while per == 2 and 2 * steps - 1 > nfe:
        steps -= 1
    sigmas = ks.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    x = start_noise(n, model.target.dim, seed) * SIGMA_MAX
    torch.manual_seed(seed)
    model.nfe = 0
    fn = getattr(ks, f"sample_{name}")
    out = fn(lambda x, s: model.denoise(x, s), x, sigmas, disable=True)
    return out, model.nfe


# ------------------------------------------------------------------------------------------
# diffusers
def diffusers_schedulers() -> dict[str, Callable[[], Any]]:
    from diffusers import (  # type: ignore[import-not-found]
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    return {
        "DDIM": lambda: DDIMScheduler(clip_sample=False, timestep_spacing="trailing"),
        "DPMSolverMultistep": lambda: DPMSolverMultistepScheduler(),
        "DPMSolverMultistep(karras)": lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True),
        "UniPC": lambda: UniPCMultistepScheduler(),
        "Euler": lambda: EulerDiscreteScheduler(),
        "Euler(karras)": lambda: EulerDiscreteScheduler(use_karras_sigmas=True),
        "Heun": lambda: HeunDiscreteScheduler(),
    }


def run_diffusers(
    make: Callable[[], Any], model: Model, n: int, nfe: int, seed: int
) -> tuple[torch.Tensor, int]:
    heun = "Heun" in type(make()).__name__
    steps = (nfe + 1) // 2 if heun else nfe
    sch = make()
    sch.set_timesteps(steps)
    acp = sch.alphas_cumprod.to(torch.float64)
    x = start_noise(n, model.target.dim, seed) * float(sch.init_noise_sigma)
    torch.manual_seed(seed)
    model.nfe = 0
    for t in sch.timesteps:
        inp = sch.scale_model_input(x, t)
        if hasattr(sch, "sigmas") and getattr(sch, "step_index", None) is not None:
            sigma = sch.sigmas[sch.step_index].to(torch.float64)
        else:
            a = acp[int(t)]
            sigma = torch.sqrt((1 - a) / a)
        x_hat = inp * torch.sqrt(1 + sigma**2).to(inp.dtype)  # VP-scaled input -> x / s
        sig = sigma.to(inp.dtype).expand(n)
        eps = (x_hat - model.denoise(x_hat, sig)) / sig[:, None]
        x = sch.step(eps, t, x).prev_sample
    return x, model.nfe


# ------------------------------------------------------------------------------------------
FEW_STEP = ("dpm++2M", "dpm++3M", "dpm++2M+C", "dpm++3M+C")


def search_space() -> list[tuple[str, Schedule]]:
    """Karras (rho 3, 7) and log-SNR grids over the start and end noise levels."""
    out = []
    for kind, rho in (("logsnr", 7.0), ("karras", 7.0)):
        for smin in (0.02, 0.04, 0.07, 0.1):
            for smax in (80.0, 40.0, 20.0, 10.0):
                name = "logsnr" if kind == "logsnr" else f"karras{rho:g}"
                out.append(
                    (
                        f"{name}[{smin:g},{smax:g}]",
                        Schedule(kind, rho=rho, sigma_min=smin, sigma_max=smax),
                    )
                )
    return out


def floors(target: GaussianMixture, n: int) -> tuple[Quality, torch.Tensor]:
    ref = target.sample(n, torch.Generator().manual_seed(1000), dtype=torch.float32)
    other = target.sample(n, torch.Generator().manual_seed(2000), dtype=torch.float32)
    return quality(target, other, ref), ref


def main() -> None:  # noqa: C901 - a benchmark script reads best top to bottom
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, NFE 5/10 only")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    n = 2000 if args.quick else 3000
    nfes = (5, 10) if args.quick else NFES
    os.makedirs(args.out, exist_ok=True)
    search_seed, eval_seed = 1, 2
    ks = load_k_sampling()
    try:
        dsch = diffusers_schedulers()
    except Exception as e:  # noqa: BLE001
        print("diffusers unavailable:", e)
        dsch = {}
    results: dict[str, Any] = {"n": n, "targets": {}}
    t_start = time.time()
    for tname, make_target in (("ring2d", ring2d), ("aniso32d", aniso32d)):
        target = make_target()
        model = Model(target)
        floor, ref = floors(target, n)
        rows: list[dict[str, Any]] = []

        def record(
            lib: str,
            label: str,
            sched: str,
            nfe_budget: int,
            x: torch.Tensor,
            nfe: int,
            seed: int,
            _rows: list[dict[str, Any]] = rows,
            _t: GaussianMixture = target,
            _ref: torch.Tensor = ref,
        ) -> dict[str, Any]:
            q = quality(_t, x, _ref)
            row = {
                "lib": lib,
                "sampler": label,
                "schedule": sched,
                "budget": nfe_budget,
                "nfe": nfe,
                "seed": seed,
                "tv": q.tv,
                "frechet": q.frechet,
                "sw": q.sw,
            }
            _rows.append(row)
            return row

        # 1. every scoresde sampler x named schedule (search seed)
        for label, (sampler, opts, per) in SAMPLERS.items():
            for sname, sched in SCHEDULES.items():
                for budget in nfes:
                    x, nfe = run_ours(model, n, sampler, opts, per, sched, budget, search_seed)
                    record("scoresde", label, sname, budget, x, nfe, search_seed)
        # 2. peers on both seeds (the search seed's results steer the schedule search only)
        for seed in (search_seed, eval_seed):
            for name in K_SAMPLERS if ks is not None else ():
                for budget in nfes:
                    x, nfe = run_k(ks, model, n, name, budget, seed)
                    record("k-diffusion", name, "karras7", budget, x, nfe, seed)
            for name, make in dsch.items():
                for budget in nfes:
                    x, nfe = run_diffusers(make, model, n, budget, seed)
                    record("diffusers", name, "default", budget, x, nfe, seed)
        # 3. schedule search for the few-step ODE solvers (search seed)
        search = dict(search_space())
        for label in FEW_STEP:
            sampler, opts, per = SAMPLERS[label]
            for sname, sched in search.items():
                for budget in (5, 10):
                    x, nfe = run_ours(model, n, sampler, opts, per, sched, budget, search_seed)
                    record("scoresde-search", label, sname, budget, x, nfe, search_seed)
        # 4. the search seed's winner per budget (against the best peer of that seed),
        #    re-run on the evaluation seed
        winners: dict[int, dict[str, Any]] = {}
        for budget in nfes:
            peers = [
                r
                for r in rows
                if r["lib"] in ("diffusers", "k-diffusion")
                and r["budget"] == budget
                and r["seed"] == search_seed
            ]
            ptv = min(r["tv"] for r in peers) if peers else floor.tv
            pfr = min(r["frechet"] for r in peers) if peers else floor.frechet
            cands = [
                r
                for r in rows
                if r["lib"].startswith("scoresde")
                and r["budget"] == budget
                and r["seed"] == search_seed
            ]
            best = min(cands, key=lambda r, a=ptv, b=pfr: max(r["tv"] / a, r["frechet"] / b))
            label = best["sampler"]
            sampler, opts, per = SAMPLERS[label]
            sched = search.get(best["schedule"], SCHEDULES.get(best["schedule"]))
            x, nfe = run_ours(model, n, sampler, opts, per, sched, budget, eval_seed)
            winners[budget] = record(
                "scoresde-winner", label, best["schedule"], budget, x, nfe, eval_seed
            )
        # 5. the documented few-step default, evaluation seed
        for budget in nfes:
            x, nfe = run_ours(model, n, "fast", {}, 1, None, budget, eval_seed)
            record("scoresde-fast", "fast", "default", budget, x, nfe, eval_seed)
        results["targets"][tname] = {
            "floor": floor.__dict__,
            "rows": rows,
            "winners": {str(k): v for k, v in winners.items()},
        }
        print(f"{tname} done at {time.time() - t_start:.0f}s", flush=True)
    results["overhead"] = overhead(ks, dsch)
    results["seconds"] = time.time() - t_start
    with open(os.path.join(args.out, "samplers.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(args.out, "samplers.json.tmp"), os.path.join(args.out, "samplers.json"))
    md = report(results, nfes)
    with open(os.path.join(args.out, "samplers.md.tmp"), "w") as f:
        f.write(md)
    os.replace(os.path.join(args.out, "samplers.md.tmp"), os.path.join(args.out, "samplers.md"))
    print(md)


# ------------------------------------------------------------------------------------------
def overhead(
    ks: Any, dsch: dict[str, Callable[[], Any]], steps: int = 50, batch: int = 256
) -> dict[str, float]:
    """Microseconds per step outside the model call, with a small MLP as the model."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 64),
        torch.nn.SiLU(),
        torch.nn.Linear(64, 64),
        torch.nn.SiLU(),
        torch.nn.Linear(64, 2),
    )
    spent = [0.0, 0]

    def mlp(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = net(torch.cat([x, c.reshape(-1, 1).expand(x.shape[0], 1)], 1))
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return out

    def timed(fn: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(15):
            spent[0], spent[1] = 0.0, 0
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            total = time.perf_counter() - t0
            best = min(best, (total - spent[0]) / max(spent[1], 1) * 1e6)
        return best

    sde = S.EDMSDE(SIGMA_MIN, SIGMA_MAX)
    out: dict[str, float] = {}

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A stable score from the MLP (its output as a denoiser): (D - x) / sigma^2."""
        return (mlp(x, t) - x) / (t[:, None] ** 2)

    for name in ("euler", "dpm_solver", "heun", "euler_maruyama", "ddim"):
        out[f"scoresde:{name}"] = timed(
            lambda name=name: S.sample(
                score,
                sde,
                (batch, 2),
                sampler=name,
                steps=steps,
                generator=torch.Generator().manual_seed(0),
            )
        )
    if ks is not None:
        sig = ks.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX)
        for name in ("euler", "dpmpp_2m", "heun"):
            fn = getattr(ks, f"sample_{name}")
            out[f"k-diffusion:{name}"] = timed(
                lambda fn=fn: fn(mlp, torch.randn(batch, 2) * SIGMA_MAX, sig, disable=True)
            )
    for name in ("Euler", "DPMSolverMultistep", "DDIM"):
        if name not in dsch:
            continue
        make = dsch[name]

        def loop(make: Callable[[], Any] = make) -> None:
            sch = make()
            sch.set_timesteps(steps)
            x = torch.randn(batch, 2)
            for t in sch.timesteps:
                inp = sch.scale_model_input(x, t)
                x = sch.step(mlp(inp, t.float().expand(batch)), t, x).prev_sample

        out[f"diffusers:{name}"] = timed(loop)
    return out


def _fmt(v: float) -> str:
    return "inf" if not math.isfinite(v) else f"{v:.4f}" if v >= 1e-3 else f"{v:.1e}"


def report(results: dict[str, Any], nfes: tuple[int, ...]) -> str:
    lines: list[str] = []
    for tname, res in results["targets"].items():
        fl = res["floor"]
        lines.append(
            f"\n### {tname} (n = {results['n']}; floor: TV {_fmt(fl['tv'])}, "
            f"Fréchet {_fmt(fl['frechet'])}, SW2 {_fmt(fl['sw'])})\n"
        )
        rows = res["rows"]
        lines.append(
            "Best per library (evaluation seed; scoresde's winner was chosen on a "
            "separate search seed):\n"
        )
        lines.append("| NFE | library | sampler | schedule | NFE used | mode TV | Fréchet | SW2 |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for b in nfes:
            for lib in ("scoresde-winner", "scoresde-fast", "diffusers", "k-diffusion"):
                cand = [r for r in rows if r["lib"] == lib and r["budget"] == b and r["seed"] == 2]
                if not cand:
                    continue
                for key in ("tv", "frechet"):
                    r = min(cand, key=lambda r, key=key: r[key])
                    lines.append(
                        f"| {b} | {lib} (best {key}) | {r['sampler']} | {r['schedule']} "
                        f"| {r['nfe']} | {_fmt(r['tv'])} | {_fmt(r['frechet'])} "
                        f"| {_fmt(r['sw'])} |"
                    )
        lines.append(
            "\nAll samplers and named schedules (Fréchet / mode TV, search seed; scoresde on "
            "the EDM SDE, sigma in [0.002, 80]):\n"
        )
        labels = sorted(
            {
                (r["lib"], r["sampler"], r["schedule"])
                for r in rows
                if r["lib"] in ("scoresde", "diffusers", "k-diffusion")
            }
        )
        lines.append(
            "| library | sampler | schedule | " + " | ".join(f"NFE {b}" for b in nfes) + " |"
        )
        lines.append("|---|---|---|" + "---|" * len(nfes))
        for lib, s, sch in labels:
            cells = []
            for b in nfes:
                r = next(
                    (
                        r
                        for r in rows
                        if (r["lib"], r["sampler"], r["schedule"], r["budget"], r["seed"])
                        == (lib, s, sch, b, 1)
                    ),
                    None,
                )
                cells.append("-" if r is None else f"{_fmt(r['frechet'])} / {_fmt(r['tv'])}")
            lines.append(f"| {lib} | {s} | {sch} | " + " | ".join(cells) + " |")
    lines.append("\n### Overhead per step outside the model (µs, small MLP, batch 256, CPU)\n")
    lines.append("| loop | µs / step |")
    lines.append("|---|---|")
    for k, v in results["overhead"].items():
        lines.append(f"| {k} | {v:.0f} |")
    lines.append(f"\nTotal runtime: {results['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
