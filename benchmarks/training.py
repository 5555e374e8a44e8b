"""Training benchmark: trainer overhead against a bare PyTorch loop, and a 3-minute quality run.

1. Overhead (CPU, one thread): per-step time of :class:`scoresde.train.Trainer` (EMA, gradient
   clipping, LR warm-up, the per-step NaN check, data order and per-step noise seeding, CSV
   logging) against a bare loop of the *same* network and loss (the trainer's default
   parameterisation and weighting): random batch from an in-memory tensor, ``ScoreModel.loss``
   with uniform times and Gaussian noise, ``zero_grad``, ``backward``, ``Adam.step`` -- with
   torch's default Adam (single-tensor on CPU), with the multi-tensor (``foreach``) Adam, and
   ("same work") with the fused Adam the trainer uses plus the gradient clipping and EMA
   update the trainer does, written by hand with torch's own functions. Per-step time is the
   slope between two run lengths (so setup and the final checkpoint cancel), median of
   interleaved repeats; both CPU time (robust on a shared box) and wall time are reported.
2. Quality (CPU, about 3 minutes): an MLP trained on samples of the analytic 4-mode 2-D mixture
   of ``tests/helpers.py``; 20000 reverse-SDE samples give the per-mode mass TV (target <= 0.03)
   and the mass-weighted per-mode Frechet distance; the probability-flow likelihood of 2000
   held-out points gives the test NLL against the mixture's true entropy (target: within 0.1
   nats).
3. GPU (when CUDA is available): images/s of the 35.7M DDPM++ U-Net at 32x32 with bf16
   autocast, with and without ``torch.compile``.

Run: ``python benchmarks/training.py [--quick] [--skip-quality] [--skip-overhead]``; prints a
markdown summary (copy it into ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import four_mode_mixture  # noqa: E402
from scoresde.data import ArrayDataset  # noqa: E402
from scoresde.data.dataset import make_info  # noqa: E402
from scoresde.likelihood import log_likelihood  # noqa: E402
from scoresde.metrics import mode_report  # noqa: E402
from scoresde.nets import net_for_data  # noqa: E402
from scoresde.parameterize import ScoreModel, sample_training_times  # noqa: E402
from scoresde.sde import VPSDE  # noqa: E402
from scoresde.train import TrainConfig, Trainer, load_trained  # noqa: E402

torch.set_num_threads(1)

_DEFAULTS = TrainConfig().resolved()  # the trainer's loss: parameterisation and weighting
PARAM, WEIGHTING = _DEFAULTS.parameterization, _DEFAULTS.weighting


# ------------------------------------------------------------------------------------------------
# 1. overhead
class Bare:
    """A plain PyTorch loop of the trainer's network and loss, written without the trainer."""

    def __init__(
        self, data: torch.Tensor, net_kwargs: dict, batch: int, shape: tuple, name: str
    ) -> None:
        torch.manual_seed(0)
        self.net = net_for_data(shape, name, **net_kwargs)
        self.sde = VPSDE()
        sigma_data = float(data.std())
        self.model = ScoreModel(self.net, self.sde, PARAM, sigma_data=sigma_data)  # type: ignore[arg-type]
        self.data, self.batch = data, batch
        self.gen = torch.Generator().manual_seed(1)
        self.params = list(self.net.parameters())
        self.ema = [p.detach().clone() for p in self.params]

    def step(
        self, opt: torch.optim.Optimizer, ema_clip: bool = False, checked: bool = True
    ) -> None:
        """One step: random batch, loss with uniform times and Gaussian noise, backward, Adam.

        ``ema_clip`` adds what the trainer does by default, written by hand: gradient-norm
        clipping at 1 and an EMA update (``torch._foreach_lerp_``). ``checked=False`` calls the
        unchecked loss the trainer calls, ``ScoreModel._loss``.
        """
        gen, batch = self.gen, self.batch
        idx = torch.randint(len(self.data), (batch,), generator=gen)
        x0 = self.data[idx]
        t = sample_training_times(self.sde, batch, generator=gen)
        z = torch.randn(x0.shape, generator=gen)
        if checked:
            loss = self.model.loss(x0, weighting=WEIGHTING, t=t, noise=z)  # type: ignore[arg-type]
        else:
            loss = self.model._loss(x0, t, z, None, WEIGHTING, "mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if ema_clip:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        opt.step()
        if ema_clip:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 0.001)


def bare_loop(
    data: torch.Tensor,
    net_kwargs: dict,
    batch: int,
    steps: int,
    *,
    shape: tuple,
    name: str,
    adam: str = "default",
    ema_clip: bool = False,
) -> tuple[float, float]:
    """Seconds (cpu, wall) of ``steps`` plain PyTorch steps of the same network and loss.

    ``adam``: ``"default"``, ``"foreach"`` or ``"fused"``; ``ema_clip``: see :meth:`Bare.step`.
    """
    bare = Bare(data, net_kwargs, batch, shape, name)
    opt = _adam(bare.params, adam)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        bare.step(opt, ema_clip)
    return time.process_time() - c0, time.perf_counter() - w0


def _adam(params: object, kind: str) -> torch.optim.Optimizer:
    extra = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kind]
    return torch.optim.Adam(params, lr=1e-3, **extra)  # type: ignore[arg-type]


def trainer_run(
    data: torch.Tensor, net_kwargs: dict, batch: int, steps: int, name: str
) -> tuple[float, float]:
    """Seconds (cpu, wall) of ``Trainer.fit`` for ``steps`` steps (defaults: EMA, clipping)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=tmp, model=name, model_kwargs=net_kwargs, steps=steps,
                          batch_size=batch, lr=1e-3, warmup_steps=10, log_every=50,
                          ckpt_every=10**9, sample_n=0, progress=False, tensorboard=False,
                          device="cpu")  # fmt: skip
        ds = ArrayDataset(data, None, make_info("bench", data, None, levels=None))
        trainer = Trainer(cfg, ds)
        c0, w0 = time.process_time(), time.perf_counter()
        trainer.fit()
        return time.process_time() - c0, time.perf_counter() - w0


ALT_KEYS = ("bare", "bare_foreach", "bare_same", "bare_same_unchecked", "trainer")
"""The alternating measurement's columns (see :func:`alternating`)."""


def alternating(
    data: torch.Tensor, net_kwargs: dict, batch: int, shape: tuple, name: str, steps: int
) -> dict[str, float]:
    """Median CPU ms per step of bare steps and a trainer step, run alternately.

    A trainer step is what ``Trainer.fit`` does every step on a CPU: ``train_step`` (batch,
    noise, loss, backward, clipping, Adam, EMA) plus the per-step NaN check; logging and
    checkpoints happen every N steps and are left out. The bare steps: ``bare`` (torch's
    default Adam), ``bare_foreach`` (multi-tensor Adam), ``bare_same`` (the same work as the
    trainer written by hand: fused Adam, ``clip_grad_norm_(foreach=True)`` at 1, an EMA
    ``_foreach_lerp_``) and ``bare_same_unchecked`` (that with the unchecked loss the trainer
    calls, ``ScoreModel._loss``). Alternating step by step makes all see the same load, which
    the slope method cannot guarantee on a shared machine.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            out=tmp,
            model=name,
            model_kwargs=net_kwargs,
            steps=10**6,
            batch_size=batch,
            lr=1e-3,
            log_every=10**6,
            ckpt_every=10**6,
            sample_n=0,
            progress=False,
            tensorboard=False,
            device="cpu",
        )
        trainer = Trainer(cfg, ArrayDataset(data, None, make_info("b", data, None, levels=None)))
        batches = trainer._batches()
        bare = Bare(data, net_kwargs, batch, shape, name)
        opts = {k: _adam(bare.params, k) for k in ("default", "foreach", "fused")}
        window = torch.zeros((), dtype=torch.float64)

        def trainer_step() -> None:
            nonlocal window
            loss, _ = trainer.train_step(next(batches))
            window += loss
            if not math.isfinite(float(window)):
                raise RuntimeError("diverged")

        fns = {
            "bare": lambda: bare.step(opts["default"]),
            "bare_foreach": lambda: bare.step(opts["foreach"]),
            "bare_same": lambda: bare.step(opts["fused"], ema_clip=True),
            "bare_same_unchecked": lambda: bare.step(opts["fused"], ema_clip=True, checked=False),
            "trainer": trainer_step,
        }
        times: dict[str, list[float]] = {k: [] for k in ALT_KEYS}
        for i in range(steps + 5):
            for key in ALT_KEYS:
                c0 = time.process_time()
                fns[key]()
                if i >= 5:  # warm-up
                    times[key].append(time.process_time() - c0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _print_alternating(label: str, alt: dict[str, float]) -> None:
    ms = ", ".join(f"{k} {alt[k]:.3f}" for k in ALT_KEYS)
    vs = ", ".join(
        f"{100 * (alt['trainer'] / alt[k] - 1):+.1f}% vs {k}" for k in ALT_KEYS if k != "trainer"
    )
    print(f"{label}: alternating steps, median ms cpu: {ms}; trainer {vs}", flush=True)


def overhead(quick: bool, alternating_only: bool = False, repeats: int = 3) -> list[dict]:
    cases = [
        ("MLP 128x3, 2-D, batch 256", "mlp", {"hidden": 128, "depth": 3}, (2,), 256, 300),
        ("MLP 512x4, 2-D, batch 512", "mlp", {"hidden": 512, "depth": 4}, (2,), 512, 40),
        ("U-Net ch16 1 block, 8x8, batch 64", "unet", {"channels": 16, "num_res_blocks": 1},
         (1, 8, 8), 64, 30),
    ]  # fmt: skip
    reps = 1 if quick else repeats
    rows = []
    for label, name, kw, shape, batch, n in cases:
        n = max(10, n // 4) if quick else n
        data = torch.randn(20000, *shape, generator=torch.Generator().manual_seed(0))
        if alternating_only:
            for _ in range(reps):
                alt = alternating(data, kw, batch, shape, name, 20 if quick else 3 * n)
                rows.append({"case": label, **{f"alt_{k}_ms": v for k, v in alt.items()}})
                _print_alternating(label, alt)
            continue
        runs = {
            "bare": partial(bare_loop, data, kw, batch, shape=shape, name=name),
            "bare_foreach": partial(bare_loop, data, kw, batch, shape=shape, name=name,
                                    adam="foreach"),
            "bare_same": partial(bare_loop, data, kw, batch, shape=shape, name=name,
                                 adam="fused", ema_clip=True),
            "trainer": partial(trainer_run, data, kw, batch, name=name),
        }  # fmt: skip
        res: dict[str, list[float]] = {f"{k}_{u}": [] for k in runs for u in ("cpu", "wall")}
        for _ in range(reps):  # interleaved; slope n -> 2n steps
            for key, fn in runs.items():
                (c1, w1), (c2, w2) = fn(n), fn(2 * n)
                res[f"{key}_cpu"].append((c2 - c1) / n)
                res[f"{key}_wall"].append((w2 - w1) / n)
        med = {k: statistics.median(v) for k, v in res.items()}
        alt = alternating(data, kw, batch, shape, name, 20 if quick else 3 * n)
        _print_alternating(label, alt)
        r = {"case": label, **med, **{f"alt_{k}_ms": v for k, v in alt.items()}}
        for ref in ("bare", "bare_foreach", "bare_same"):
            for u in ("cpu", "wall"):
                r[f"overhead_{ref}_{u}"] = med[f"trainer_{u}"] / med[f"{ref}_{u}"] - 1
        rows.append(r)
        print(
            f"{label}: slope ms/step cpu (wall): "
            + ", ".join(
                f"{k} {1e3 * med[f'{k}_cpu']:.3f} ({1e3 * med[f'{k}_wall']:.3f})" for k in runs
            )
            + "; trainer overhead cpu "
            + ", ".join(
                f"{100 * r[f'overhead_{k}_cpu']:+.1f}% vs {k}" for k in runs if k != "trainer"
            ),
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------------
# 2. quality
def quality(quick: bool) -> dict:
    gm = four_mode_mixture()
    x = gm.sample(50000, torch.Generator().manual_seed(1))
    steps = 600 if quick else 6000
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=tmp, steps=steps, batch_size=512, lr=2e-3, warmup_steps=200,
                          ema_decay=0.999, log_every=200, ckpt_every=steps, sample_n=0,
                          model_kwargs={"hidden": 128, "depth": 3}, progress=False,
                          tensorboard=False, device="cpu")  # fmt: skip
        w0 = time.perf_counter()
        Trainer(cfg, x).fit()
        train_s = time.perf_counter() - w0
        model = load_trained(tmp)
    n = 4000 if quick else 20000
    w0 = time.perf_counter()
    s = model.sample(n, steps=500, generator=torch.Generator().manual_seed(3))
    sample_s = time.perf_counter() - w0
    rep = mode_report(gm, s)
    # floor: exact samples of the same size
    floor = mode_report(gm, gm.sample(n, torch.Generator().manual_seed(4)))
    test = gm.sample(500 if quick else 2000, torch.Generator().manual_seed(5))
    w0 = time.perf_counter()
    lp = log_likelihood(
        model.score_fn, model.sde, test, divergence="exact", rtol=1e-5, atol=1e-5
    ).log_prob.double()
    ll_s = time.perf_counter() - w0
    nll = float(-lp.mean())
    nll_err = float(lp.std() / math.sqrt(len(lp)))
    true_nll = float(-gm.log_prob(test.double()).mean())  # same points: paired difference
    entropy = float(-gm.log_prob(gm.sample(200000, torch.Generator().manual_seed(6))).mean())
    out = {
        "steps": steps,
        "train_s": train_s,
        "sample_s": sample_s,
        "likelihood_s": ll_s,
        "n": n,
        "tv": rep.tv,
        "tv_floor": floor.tv,
        "frechet": rep.frechet_weighted,
        "frechet_floor": floor.frechet_weighted,
        "mass": rep.mass.tolist(),
        "nll": nll,
        "nll_stderr": nll_err,
        "nll_true_same_points": true_nll,
        "entropy": entropy,
    }
    out["cpu_s"] = time.process_time() - cpu0
    print(
        f"quality: train {train_s:.0f} s, sample {sample_s:.0f} s, likelihood {ll_s:.0f} s "
        f"(wall), {out['cpu_s']:.0f} s CPU in all;"
        f" {steps} steps; TV {rep.tv:.4f} (floor {floor.tv:.4f}), "
        f"Frechet {rep.frechet_weighted:.4f} (floor {floor.frechet_weighted:.4f}); test NLL "
        f"{nll:.4f} +- {nll_err:.4f} nats vs true {true_nll:.4f} on the same points "
        f"(entropy {entropy:.4f})",
        flush=True,
    )
    return out


# ------------------------------------------------------------------------------------------------
# 3. GPU
def gpu_throughput() -> list[dict]:
    """Images/s of the CIFAR-size U-Net (bf16, channels-last) with and without compile."""
    from scoresde.train import read_metrics

    rows = []
    batch = 128
    for compiled in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            data = torch.rand(4096, 3, 32, 32) * 2 - 1
            cfg = TrainConfig(out=tmp, model="unet_cifar", steps=100, batch_size=batch,
                              lr=2e-4, precision="bf16", compile=compiled, channels_last=True,
                              log_every=20, ckpt_every=10**9, sample_n=0, progress=False,
                              tensorboard=False, device="cuda")  # fmt: skip
            Trainer(cfg, data).fit()
            its = [
                r["it_per_s"] for r in read_metrics(Path(tmp) / "metrics.csv") if r["step"] > 40
            ]  # after compilation and warm-up
            ips = batch * statistics.median(its)
            rows.append({"compile": compiled, "images_per_s": ips})
            print(
                f"U-Net 35.7M, 32x32, bf16, batch {batch}, compile={compiled}: {ips:.0f} images/s",
                flush=True,
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--skip-overhead", action="store_true", help="skip the overhead part")
    p.add_argument("--skip-quality", action="store_true", help="skip the quality part")
    p.add_argument(
        "--alternating-only",
        action="store_true",
        help="overhead by alternating steps only (skip the slower slope method)",
    )
    p.add_argument("--repeats", type=int, default=3, help="overhead measurements per case (median)")
    args = p.parse_args()
    if not args.skip_overhead:
        overhead(args.quick, args.alternating_only, args.repeats)
    if not args.skip_quality:
        quality(args.quick)
    if torch.cuda.is_available():
        gpu_throughput()
    else:
        print("no CUDA device: GPU throughput not measured")


if __name__ == "__main__":
    main()
