"""Flow matching against denoising score matching: the same MLP, the same steps, NFE 1 to 50.

For each data set (2-D ``moons`` and ``8gaussians``, 8x8 ``digits`` flattened for the MLP) one
network architecture and one training budget (steps, batch, learning rate, EMA, clipping: the
:class:`scoresde.train.Trainer` defaults) are trained as

* ``DSM VP`` / ``DSM EDM``: denoising score matching on the VP and EDM SDEs (``TrainConfig``
  defaults: EDM preconditioning, sigma^2 resp. EDM weighting and times);
* ``FM indep`` / ``FM OT``: conditional flow matching on :class:`scoresde.RectifiedFlow`
  (``parameterization="flow"``) with independent and minibatch-OT couplings;
* ``FM reflow``: one reflow of ``FM indep`` (``scoresde reflow``'s recipe: pairs from the
  teacher's ODE by Heun, student initialised from the teacher, ``--reflow-steps`` more steps);
* ``torchcfm`` / ``flow_matching``: the peers' own path/loss objects (torchcfm's
  ``ConditionalFlowMatcher`` and ``ExactOptimalTransportConditionalFlowMatcher``, Meta's
  ``AffineProbPath(CondOTScheduler())``) in a plain loop with the same network, optimiser, clip
  and EMA, when they import (``pip install --no-deps torchcfm pot flow_matching``).

Every model is sampled by the same first-order deterministic solver at NFE 1, 2, 5, 10, 50:
Euler (EDM Algorithm 1 = DDIM; for rectified flow exactly Euler in ``t``). Flows step a uniform
grid in ``t`` from ``T = 1`` with no final denoising step (NFE = steps); DSM models the Karras
grid with the final Tweedie step (NFE = steps + 1, one step without it at NFE 1). Peers'
velocity nets (noise at ``t = 0``) enter through ``parameterize.from_velocity`` with time
flipped. Quality: sliced 2-Wasserstein distance to held-out data (2-D) and the pixel-space
Fréchet distance to the test split (digits), each with the floor of real data against the same
held-out set.

Run: ``python benchmarks/flow_training.py [--steps N] [--quick] [--out FILE]``; prints markdown
tables for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _shared import log, markdown_table, write_text
from scoresde.data import ArrayDataset, load_dataset
from scoresde.metrics import frechet_distance, sliced_wasserstein
from scoresde.nets import net_for_data
from scoresde.parameterize import from_velocity
from scoresde.sampling import sample
from scoresde.sde import RectifiedFlow
from scoresde.train import TrainConfig, Trainer, load_trained
from scoresde.train.coupling import PairDataset
from scoresde.train.ema import EMA
from scoresde.train.optim import GradClip

torch.set_num_threads(1)

NFES = (1, 2, 5, 10, 50)
DATASETS = {  # name -> (MLP widths, held-out / sample size)
    "moons": ({"hidden": 128, "depth": 3}, 4000),
    "8gaussians": ({"hidden": 128, "depth": 3}, 4000),
    "digits": ({"hidden": 256, "depth": 3}, 1000),
}
OURS = {  # method -> TrainConfig fields
    "DSM VP": {"sde": "vp"},
    "DSM EDM": {"sde": "edm"},
    "FM indep": {"sde": "rectified_flow"},
    "FM OT": {"sde": "rectified_flow", "coupling": "ot"},
}


def config(out: str, name: str, kw: dict, steps: int, batch: int, **fields: Any) -> TrainConfig:
    """The one training budget of every method (only the fields of ``fields`` differ)."""
    return TrainConfig(data=name, out=out, model="mlp", model_kwargs=kw, steps=steps,
                       batch_size=batch, lr=1e-3, warmup_steps=0, log_every=max(1, steps // 4),
                       ckpt_every=steps, sample_n=0, progress=False, tensorboard=False,
                       device="cpu", **fields)  # fmt: skip


def train_ours(tmp: str, name: str, data: ArrayDataset, steps: int, batch: int) -> dict:
    """Train the four scoresde methods; return ``method -> (score_fn, sde, seconds, run)``."""
    kw = DATASETS[name][0]
    out = {}
    for method, fields in OURS.items():
        run = f"{tmp}/{name}-{method.replace(' ', '_')}"
        t0 = time.perf_counter()
        Trainer(config(run, name, kw, steps, batch, **fields), data).fit()
        trained = load_trained(run)
        out[method] = (trained.score_fn, trained.sde, time.perf_counter() - t0, run)
        log(f"{name}: {method} trained in {out[method][2]:.0f} s")
    return out


def reflow(tmp: str, name: str, teacher_run: str, pairs: int, steps: int, batch: int) -> tuple:
    """One reflow of ``teacher_run`` (as ``scoresde reflow``): Heun pairs, teacher init."""
    teacher = load_trained(teacher_run)
    t0 = time.perf_counter()
    z = torch.randn((pairs, *teacher.event_shape), generator=torch.Generator().manual_seed(7))
    x = sample(teacher.score_fn, teacher.sde, tuple(z.shape), sampler="heun", steps=16, x_init=z)
    ds = PairDataset(x, z, load_dataset(name, n=pairs).info)
    run = f"{tmp}/{name}-reflow"
    trainer = Trainer(
        config(run, name, DATASETS[name][0], steps, batch, sde="rectified_flow", coupling="pairs"),
        ds,
    )
    weights = teacher.model.net.state_dict()
    trainer.net.load_state_dict(weights)
    trainer.ema.load_state_dict(weights, 0)
    trainer.fit()
    trained = load_trained(run)
    return trained.score_fn, trained.sde, time.perf_counter() - t0, run


# ------------------------------------------------------------------------------------------------
# the peers' own flow-matching objectives, in one plain loop


def peer_objectives() -> tuple[dict[str, Callable], dict[str, str]]:
    """``name -> fn(noise, data, t) -> (x_t, u_t)`` in the peers' convention (data at t = 1)."""
    found: dict[str, Callable] = {}
    notes: dict[str, str] = {}
    try:
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )

        classes = {
            "indep": ConditionalFlowMatcher,
            "OT": ExactOptimalTransportConditionalFlowMatcher,
        }
        for key, cls in classes.items():
            label, matcher = f"torchcfm {key}", cls(sigma=0.0)

            def fn(x0: Tensor, x1: Tensor, t: Tensor, m: Any = matcher) -> tuple[Tensor, Tensor]:
                _, xt, ut = m.sample_location_and_conditional_flow(x0, x1, t=t)
                return xt, ut

            found[label] = fn
    except Exception as err:  # report, do not fail the benchmark
        notes["torchcfm"] = f"not run: {type(err).__name__}: {err}"
    try:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        path = AffineProbPath(scheduler=CondOTScheduler())

        def fm(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            s = path.sample(t=t, x_0=x0, x_1=x1)
            return s.x_t, s.dx_t

        found["flow_matching"] = fm
    except Exception as err:
        notes["flow_matching"] = f"not run: {type(err).__name__}: {err}"
    return found, notes


class Velocity(nn.Module):
    """A velocity net ``v(x, t)`` on flat or image data (the MLP takes ``(x, c_noise = t)``)."""

    def __init__(self, shape: tuple[int, ...], kw: dict) -> None:
        super().__init__()
        self.net = net_for_data(shape, "mlp", **kw)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, t)


def train_peer(objective: Callable, data: ArrayDataset, kw: dict, steps: int, batch: int) -> tuple:
    """The same budget as the Trainer's (Adam 1e-3, clip 1, EMA 0.999 with warm-up)."""
    torch.manual_seed(0)
    model = Velocity(tuple(data.info.shape), kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    clip, ema = GradClip(list(model.parameters()), 1.0), EMA(model, 0.999)
    x_all, g = data.tensors(), torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        x1 = x_all[torch.randint(len(x_all), (batch,), generator=g)]
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(batch, generator=g)
        xt, ut = objective(x0, x1, t)
        loss = (model(xt, t) - ut).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip()
        opt.step()
        ema.update(model)
    net = ema.module
    rf = RectifiedFlow()
    # ours: data at t = 0, v = dx/dt; theirs: data at t = 1, so v_ours(x, t) = -v(x, 1 - t)
    score = from_velocity(lambda x, t: -net(x, 1.0 - t), rf)
    return score, rf, time.perf_counter() - t0, None


# ------------------------------------------------------------------------------------------------
# evaluation


def draw(score: Any, sde: Any, n: int, shape: tuple[int, ...], nfe: int) -> Tensor:
    """``n`` samples by Euler at ``nfe`` network evaluations (see the module docstring)."""
    flow = sde.zero_terminal_snr
    if flow:
        steps, schedule, denoise = nfe, "uniform", False
    else:
        steps, schedule, denoise = max(1, nfe - 1), None, nfe > 1
    gen = torch.Generator().manual_seed(11)
    res = sample(score, sde, (n, *shape), sampler="euler", steps=steps, schedule=schedule,
                 denoise=denoise, generator=gen, return_info=True)  # fmt: skip
    assert res.nfe == nfe, (res.nfe, nfe)
    return res.samples


def metric(name: str, x: Tensor, ref: Tensor) -> float:
    """Sliced W2 (2-D) or pixel Fréchet distance (digits) of ``x`` to ``ref``."""
    x, ref = x.flatten(1).double(), ref.flatten(1).double()
    if name != "digits":
        return sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(3))
    return frechet_distance(x.mean(0), torch.cov(x.T), ref.mean(0), torch.cov(ref.T))


def evaluate(name: str, models: dict, shape: tuple[int, ...], n: int) -> tuple[list, float]:
    """The table rows of one data set and its metric floor."""
    if name == "digits":
        ref, real = load_dataset(name, split="test").tensors(), load_dataset(name).tensors()[:n]
    else:
        ref = load_dataset(name, split="test", n=n).tensors()
        real = load_dataset(name, n=n, seed=5).tensors()
    floor = metric(name, real, ref)
    rows = []
    for method, (score, sde, secs, _) in models.items():
        vals = []
        for nfe in NFES:
            x = draw(score, sde, n, shape, nfe)
            vals.append(metric(name, x, ref) if bool(torch.isfinite(x).all()) else math.nan)
        rows.append([name, method, *vals, round(secs)])
        log(f"{name}: {method}: " + ", ".join(f"{v:.3g}" for v in vals))
    return rows, floor


def run_dataset(name: str, tmp: str, args: argparse.Namespace, peers: dict) -> tuple[list, float]:
    kw, n = DATASETS[name]
    data = load_dataset(name, n=20000) if name != "digits" else load_dataset(name)
    shape = tuple(data.info.shape)
    models = train_ours(tmp, name, data, args.steps, args.batch)
    pairs = 1500 if name == "digits" else args.pairs
    models["FM reflow"] = reflow(tmp, name, models["FM indep"][3], pairs, args.reflow_steps,
                                 args.batch)  # fmt: skip
    for label, objective in peers.items():
        models[label] = train_peer(objective, data, kw, args.steps, args.batch)
        log(f"{name}: {label} trained in {models[label][2]:.0f} s")
    return evaluate(name, models, shape, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps of every method")
    p.add_argument("--reflow-steps", type=int, default=750, help="steps of the reflow student")
    p.add_argument("--pairs", type=int, default=10000, help="reflow pairs (2-D sets)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--quick", action="store_true", help="a smoke run (60 steps, moons)")
    p.add_argument("--out", type=Path, help="also write the markdown here")
    args = p.parse_args()
    if args.quick:
        args.steps, args.reflow_steps, args.pairs, args.datasets = 60, 30, 500, ["moons"]
    peers, notes = peer_objectives()
    t0 = time.perf_counter()
    rows, floors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            r, floor = run_dataset(name, tmp, args, peers)
            rows += r
            floors.append(f"{name} {floor:.3g}")
    header = ["data", "method", *(f"NFE {k}" for k in NFES), "train s"]
    text = (
        f"{args.steps} steps (reflow: +{args.reflow_steps}), batch {args.batch}; metric: sliced "
        f"W2 (2-D), pixel Fréchet (digits); floor (real data): {', '.join(floors)}; "
        f"total {time.perf_counter() - t0:.0f} s\n\n" + markdown_table(header, rows) + "\n"
    )
    for pkg, why in notes.items():
        text += f"\n{pkg}: {why}\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
