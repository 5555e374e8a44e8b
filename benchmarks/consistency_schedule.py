"""The consistency sampler's default multistep schedule on several targets (CPU).

For each Gaussian-mixture target (the 2-D ``three_modes`` of the quality test, the same scaled
by 0.1 and by 10, the 32-D ``aniso32d`` and the sharp 2-D ``ring2d`` of ``tests/conftest.py``)
a CD student (MLP 256 wide, 4000 steps at batch 256, lr 2e-3, the exact mixture score as
teacher, as in ``tests/test_consistency_quality.py``) samples 4000 points with 1, 2 and 3
steps. Two and three steps run on the default schedule (``consistency_schedule``: re-noise
levels read off the model), on the old default (the Karras grid from ``T``), and on every
fixed level of a log-spaced sweep (pairs of every other level for 3 steps); quality is
:func:`scoresde.metrics.mode_report` (mode-mass TV and the weighted per-mode Fréchet distance).

    python benchmarks/consistency_schedule.py [--quick] [--cache DIR] [--out FILE]

``--cache DIR`` keeps the trained students (``DIR/<target>.pt``) for later runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import scoresde
from _shared import log, markdown_table, write_text
from scoresde.consistency import ConsistencyModel, distill
from scoresde.metrics import mode_report
from scoresde.nets.mlp import MLP
from scoresde.parameterize import ScoreModel
from scoresde.sampling.base import ScheduleContext
from scoresde.sampling.consistency import consistency_schedule
from scoresde.sde import VPSDE
from scoresde.targets import GaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import aniso32d, ring2d, three_modes  # noqa: E402


def scaled(target: GaussianMixture, c: float) -> GaussianMixture:
    """``target`` with every point multiplied by ``c``."""
    covs = target.covariances() * c * c
    return GaussianMixture(target.means * c, covariances=covs, weights=target.weights)


TARGETS = {
    "mix2d": three_modes,
    "mix2d_x0.1": lambda: scaled(three_modes(), 0.1),
    "mix2d_x10": lambda: scaled(three_modes(), 10.0),
    "aniso32d": aniso32d,
    "ring2d": ring2d,
}


def student_for(name: str, steps: int, cache: Path | None) -> tuple[GaussianMixture, object, float]:
    """The target and its distilled student's score function (trained, or from ``cache``)."""
    sde, target = VPSDE(), TARGETS[name]()
    torch.manual_seed(0)
    data = target.sample(20000, generator=torch.Generator().manual_seed(0)).float()
    sd = float(data.std())
    net = ScoreModel(MLP(data.shape[1], hidden=256), sde, "edm", sigma_data=sd)
    student = ConsistencyModel(net, sde, sigma_data=sd)
    path = cache / f"{name}.pt" if cache is not None else None
    t0 = time.perf_counter()
    if path is not None and path.is_file():
        student.load_state_dict(torch.load(path))
    else:
        distill(target.score_fn(sde), sde, student, data, steps=steps, batch_size=256, lr=2e-3,
                generator=torch.Generator().manual_seed(2))  # fmt: skip
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(student.state_dict(), path)
    return target, student.eval(), time.perf_counter() - t0


def times_of(sigmas: list[float]) -> torch.Tensor:
    """``T``, the times of the re-noise levels ``sigmas`` (VP) and an end time below them."""
    sde = VPSDE()
    t = [sde.T] + [float(sde.sigma_inv(torch.tensor(s, dtype=torch.float64))) for s in sigmas]
    return torch.tensor([*t, t[-1] / 2], dtype=torch.float64)


def quality(target: GaussianMixture, fn: object, n: int, steps: int, schedule: object) -> tuple:
    """(TV, per-mode Fréchet) of ``n`` consistency samples."""
    with torch.no_grad():
        x = scoresde.sample(fn, VPSDE(), (n, target.means.shape[1]), sampler="consistency",
                            steps=steps, schedule=schedule,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    rep = mode_report(target, x)
    return rep.tv, rep.frechet_weighted


def default_levels(fn: object, d: int, steps: int) -> list[float]:
    """The re-noise levels the default schedule picks for ``steps``."""
    ctx = ScheduleContext(fn, VPSDE(), (d,), batch=1, device=torch.device("cpu"),  # type: ignore[arg-type]
                          dtype=torch.float32)  # fmt: skip
    times = consistency_schedule(steps, ctx)
    assert isinstance(times, torch.Tensor)
    return VPSDE().sigma(times[1:steps]).tolist()


def rows_for(name: str, args: argparse.Namespace) -> list[list[object]]:
    """One row per step count: 1 step, default, Karras, best of the sweep."""
    target, model, seconds = student_for(name, args.train_steps, args.cache)
    fn, d, n = model.score_fn(), target.means.shape[1], args.n  # type: ignore[attr-defined]
    grid = torch.logspace(math.log10(0.005), math.log10(40), args.levels).tolist()
    one = quality(target, fn, n, 1, None)
    rows: list[list[object]] = [[name, 1, "-", *one, "-", "-", "-", "-", "-"]]
    for steps in (2, 3):
        picked = default_levels(fn, d, steps)
        default = quality(target, fn, n, steps, None)
        karras = quality(target, fn, n, steps, "karras")
        sweep: dict[tuple[float, ...], tuple]
        if steps == 2:
            sweep = {(s,): quality(target, fn, n, 2, times_of([s])) for s in grid}
        else:
            pairs = [(a, b) for i, a in enumerate(grid) for b in grid[:i:2] if i % 2 == 0]
            sweep = {p: quality(target, fn, n, 3, times_of(list(p))) for p in pairs}
        best = min(sweep, key=lambda k: sweep[k][1] if math.isfinite(sweep[k][1]) else math.inf)
        levels = ", ".join(f"{s:.3g}" for s in picked)
        rows.append([name, steps, levels, *default, *karras, ", ".join(f"{s:.3g}" for s in best),
                     *sweep[best]])  # fmt: skip
    log(f"{name}: student {seconds:.0f} s")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--out", default="benchmarks/out/consistency_schedule.md")
    args = p.parse_args()
    args.train_steps, args.n, args.levels = (50, 500, 6) if args.quick else (4000, 4000, 14)
    torch.set_num_threads(1)
    rows = [row for name in TARGETS for row in rows_for(name, args)]
    head = ["target", "steps", "default levels", "TV", "Fréchet", "Karras TV", "Karras Fréchet",
            "best sweep levels", "best TV", "best Fréchet"]  # fmt: skip
    table = markdown_table(head, rows)
    print(table)
    write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
