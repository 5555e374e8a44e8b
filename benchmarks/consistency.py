"""Consistency models on moons and digits (CPU): the teacher at NFE 2 / 10 / 50 against CD and CT.

The teachers are the demo's models (``scoresde.demo``): moons, MLP 128 x 3 on the VP SDE (1500
steps at batch 256); digits, the U-Net ch16 on the EDM SDE (1200 steps at batch 64); both with
lr 2e-3 and EMA 0.995. CD distils the teacher's EMA score (``scoresde.consistency.distill``,
Heun teacher step, student initialised from the teacher); CT (iCT) trains a fresh network of
the same architecture with no teacher. The teacher samples with ``fast`` (NFE = steps + 1);
the students take 1 step, or 2 on the consistency sampler's default schedule (the re-noise
level read off the model, :func:`scoresde.sampling.consistency.consistency_schedule`) and, for
comparison, on the old default (the Karras grid) and re-noising to fixed levels 0.1 and 1.

Quality is the demo's figures: on moons the sliced 2-Wasserstein distance of 2000 samples to
held-out data (with the data-vs-data floor); on digits the Fréchet distance in the cached digit
classifier's features (``scoresde.features.classifier_features``) to the test digits, and the
demo's logistic-regression classifier's mean confidence and class-histogram TV from uniform
(with the test digits as reference row). Training times are wall seconds (CD: including the
teacher's).

    python benchmarks/consistency.py [--part moons|digits|all] [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import scoresde
from _shared import log, markdown_table, write_text
from scoresde.consistency import ConsistencyModel, consistency_train, distill
from scoresde.data import load_dataset
from scoresde.metrics import frechet_from_samples, sliced_wasserstein
from scoresde.train import TrainConfig, Trainer, to_data_space


@dataclass
class Budget:
    """Training steps and sample counts of one part."""

    teacher: int
    cd: int
    ct: int
    n: int
    cd_lr: float = 2e-4
    ct_lr: float = 1e-3
    batch: int = 256


MOONS = Budget(teacher=1500, cd=2000, ct=4000, n=2000)
DIGITS = Budget(teacher=1200, cd=1500, ct=3000, n=512, batch=64)
QUICK = {"moons": Budget(60, 30, 30, 200), "digits": Budget(40, 10, 10, 64, batch=32)}


def train_teacher(budget: Budget, **fields: Any) -> tuple[Trainer, float]:
    """The demo's recipe for ``fields`` (data, SDE, model), in a temporary run folder."""
    cfg = TrainConfig(out=tempfile.mkdtemp(prefix="cm_teacher_"), lr=2e-3, warmup_steps=100,
                      ema_decay=0.995, ckpt_every=10**6, sample_n=0, tensorboard=False,
                      device="cpu", progress=False, steps=budget.teacher, **fields)  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.fit()
    seconds = time.perf_counter() - t0
    shutil.rmtree(cfg.out, ignore_errors=True)  # the teacher stays in memory
    log(f"teacher of {fields['data']}: {seconds:.0f} s")
    return trainer, seconds


def students(trainer: Trainer, budget: Budget, t_teacher: float) -> dict[str, tuple[Any, float]]:
    """CD (from the teacher's EMA weights) and CT (fresh weights): model and training seconds."""
    sde, teacher = trainer.sde, trainer.ema_score_model().eval()
    data = trainer.data.tensors()
    out = {}
    t0 = time.perf_counter()
    cd = ConsistencyModel(copy.deepcopy(teacher).requires_grad_(True), sde,
                          sigma_data=trainer.sigma_data)  # fmt: skip
    distill(teacher.score_fn(), sde, cd, data, steps=budget.cd, lr=budget.cd_lr,
            batch_size=budget.batch, generator=torch.Generator().manual_seed(2))  # fmt: skip
    out["CD"] = cd, t_teacher + time.perf_counter() - t0
    log(f"CD: {out['CD'][1]:.0f} s")
    t0 = time.perf_counter()
    fresh = copy.deepcopy(teacher)
    with torch.random.fork_rng():  # a fresh initialisation that does not depend on the past
        torch.manual_seed(3)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    ct = ConsistencyModel(fresh.requires_grad_(True), sde, sigma_data=trainer.sigma_data)
    consistency_train(ct, data, steps=budget.ct, lr=budget.ct_lr, batch_size=budget.batch,
                      generator=torch.Generator().manual_seed(4))  # fmt: skip
    out["CT"] = ct, time.perf_counter() - t0
    log(f"CT: {out['CT'][1]:.0f} s")
    return out


def comparison_rows(
    trainer: Trainer, budget: Budget, t_teacher: float, quality: Callable[[torch.Tensor], list]
) -> list[list[object]]:
    """Teacher ``fast`` at NFE 2/10/50, then each student at 1 and 2 steps: label, NFE,
    quality figures, training seconds."""
    sde, shape = trainer.sde, (budget.n, *trainer.info.shape)
    rows: list[list[object]] = []
    teacher = trainer.ema_score_model().eval()
    for steps in (1, 9, 49):  # fast: NFE = steps + 1
        with torch.no_grad():
            x = scoresde.sample(teacher.score_fn(), sde, shape, sampler="fast", steps=steps,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
        rows.append([f"teacher fast, NFE {steps + 1}", steps + 1, *quality(x), t_teacher])
    runs: list[tuple[int, object, str]] = [
        (1, None, "1 step"), (2, None, "2 steps"), (2, "karras", "2 steps, Karras grid")
    ]  # fmt: skip
    for sigma in (0.1, 1.0):  # fixed re-noise levels (Song et al. 2023 use 0.821 on CIFAR-10)
        t = float(sde.sigma_inv(torch.tensor(sigma, dtype=torch.float64)))
        runs.append((2, torch.tensor([sde.T, t, t / 2]), f"2 steps, re-noise σ = {sigma}"))
    for name, (model, seconds) in students(trainer, budget, t_teacher).items():
        for steps, sched, label in runs:
            with torch.no_grad():
                x = scoresde.sample(model.score_fn(), sde, shape, sampler="consistency",
                                    steps=steps, schedule=sched,
                                    generator=torch.Generator().manual_seed(1))  # fmt: skip
            rows.append([f"{name}, {label}", steps, *quality(x), seconds])
    return rows


def moons(budget: Budget) -> str:
    """The moons table: sliced W2 to held-out data."""
    trainer, t_teacher = train_teacher(
        budget, data="moons", sde="vp", data_kwargs={"n": 20000, "seed": 0},
        batch_size=256, model_kwargs={"hidden": 128, "depth": 3},
    )  # fmt: skip
    n = budget.n
    held = load_dataset("moons", split="test", n=2 * n, seed=0).tensors()

    def sw2(x: torch.Tensor) -> list:
        return [sliced_wasserstein(x, held[:n], generator=torch.Generator().manual_seed(3))]

    rows = [["data floor", "-", *sw2(held[n:]), "-"]]
    rows += comparison_rows(trainer, budget, t_teacher, sw2)
    head = ["model", "NFE", "sliced W2", "training s (CD: incl. teacher)"]
    return "## Moons\n\n" + markdown_table(head, rows) + "\n"


def digits(budget: Budget) -> str:
    """The digits table: classifier-feature Fréchet to the test digits, LR confidence, class TV."""
    from interop_digits import digit_classifier
    from scoresde.demo import classifier_report
    from scoresde.features import classifier_features

    trainer, t_teacher = train_teacher(
        budget, data="digits", sde="edm", model="unet", batch_size=budget.batch,
        model_kwargs={"channels": 16, "num_res_blocks": 1},
    )  # fmt: skip
    clf, test01, _ = digit_classifier()
    feats = classifier_features("digits")
    test_feats = feats(test01 * 2 - 1)
    levels = {"levels": trainer.info.levels}

    def quality(x: torch.Tensor) -> list:
        rep = classifier_report(clf, to_data_space(x, levels))
        fd = frechet_from_samples(feats(x.clamp(-1, 1)), test_feats)
        return [fd, rep.confidence, rep.class_tv]

    train = trainer.data.tensors()
    floor = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(5))]
    rows = [["train digits (floor)", "-", *quality(floor[: budget.n]), "-"]]
    rows += comparison_rows(trainer, budget, t_teacher, quality)
    head = ["model", "NFE", "classifier FD", "confidence", "class TV", "training s"]
    return "## Digits\n\n" + markdown_table(head, rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("moons", "digits", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--out-dir", default="benchmarks/out")
    args = p.parse_args()
    torch.set_num_threads(1)
    parts = {"moons": (moons, MOONS), "digits": (digits, DIGITS)}
    for name, (run, budget) in parts.items():
        if args.part not in (name, "all"):
            continue
        t0 = time.perf_counter()
        text = run(QUICK[name] if args.quick else budget)
        text += f"\n{name}: {time.perf_counter() - t0:.0f} s wall in all.\n"
        print(text)
        suffix = "" if name == "moons" else "_digits"
        write_text(Path(args.out_dir) / f"consistency{suffix}{'_quick' if args.quick else ''}.md",
                   text)  # fmt: skip


if __name__ == "__main__":
    main()
