"""Consistency models on moons (CPU): the teacher at NFE 2 / 10 / 50 against CD and CT.

The teacher is the demo's moons model (MLP 128 x 3, VP SDE, EDM parameterisation, 1500 steps
at batch 256, lr 2e-3); quality is the demo's figure, the sliced 2-Wasserstein distance of 2000
samples to held-out data (with the data-vs-data floor). CD distils the teacher's EMA score
(``scoresde.consistency.distill``, Heun teacher step, student initialised from the teacher);
CT (iCT) trains a fresh network of the same size with no teacher. Consistency samples take 1
step, or 2 with re-noising to ``sigma = 0.1``. Digits are not run here (a U-Net per objective
is beyond a short CPU budget).

    python benchmarks/consistency.py [--out benchmarks/out/consistency.md] [--cd-steps N]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time

import torch

import scoresde
from _shared import log, markdown_table, write_text
from scoresde.consistency import ConsistencyModel, consistency_train, distill
from scoresde.data import load_dataset
from scoresde.metrics import sliced_wasserstein
from scoresde.train import TrainConfig, Trainer

N = 2000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/out/consistency.md")
    p.add_argument("--teacher-steps", type=int, default=1500)
    p.add_argument("--cd-steps", type=int, default=2000)
    p.add_argument("--ct-steps", type=int, default=4000)
    args = p.parse_args()
    torch.set_num_threads(1)
    held = load_dataset("moons", split="test", n=2 * N, seed=0).tensors()

    def sw2(x: torch.Tensor) -> float:
        return sliced_wasserstein(x, held[:N], generator=torch.Generator().manual_seed(3))

    cfg = TrainConfig(data="moons", out=tempfile.mkdtemp(prefix="cm_teacher_"), lr=2e-3,
                      warmup_steps=100, ema_decay=0.995, ckpt_every=10**6, sample_n=0,
                      tensorboard=False, device="cpu", progress=False, sde="vp",
                      data_kwargs={"n": 20000, "seed": 0}, steps=args.teacher_steps,
                      batch_size=256, model_kwargs={"hidden": 128, "depth": 3})  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.fit()
    t_teacher = time.perf_counter() - t0
    shutil.rmtree(cfg.out, ignore_errors=True)  # the teacher stays in memory
    sde, teacher = trainer.sde, trainer.ema_score_model().eval()
    data = trainer.data.tensors()
    rows: list[list[object]] = [["data floor", "-", sw2(held[N:]), "-"]]
    for steps in (1, 9, 49):  # fast: NFE = steps + 1
        x = scoresde.sample(teacher.score_fn(), sde, (N, 2), sampler="fast", steps=steps,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
        rows.append([f"teacher fast, NFE {steps + 1}", steps + 1, sw2(x), t_teacher])
    students = {}
    t0 = time.perf_counter()
    cd = ConsistencyModel(copy.deepcopy(teacher).requires_grad_(True), sde,
                          sigma_data=trainer.sigma_data)  # fmt: skip
    distill(teacher.score_fn(), sde, cd, data, steps=args.cd_steps, lr=2e-4,
            generator=torch.Generator().manual_seed(2))  # fmt: skip
    students["CD"] = cd, t_teacher + time.perf_counter() - t0
    t0 = time.perf_counter()
    fresh = copy.deepcopy(teacher)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    ct = ConsistencyModel(fresh.requires_grad_(True), sde, sigma_data=trainer.sigma_data)
    consistency_train(ct, data, steps=args.ct_steps, lr=1e-3,
                      generator=torch.Generator().manual_seed(4))  # fmt: skip
    students["CT"] = ct, time.perf_counter() - t0
    mid = float(sde.sigma_inv(torch.tensor(0.1)))
    for name, (model, seconds) in students.items():
        for steps, sched in ((1, None), (2, torch.tensor([1.0, mid, 1e-3]))):
            with torch.no_grad():
                x = scoresde.sample(model.score_fn(), sde, (N, 2), sampler="consistency",
                                    steps=steps, schedule=sched,
                                    generator=torch.Generator().manual_seed(1))  # fmt: skip
            rows.append([f"{name}, {steps} step(s)", steps, sw2(x), seconds])
        log(f"{name} done")
    table = markdown_table(["model", "NFE", "sliced W2", "training s (CD: incl. teacher)"], rows)
    print(table)
    write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
