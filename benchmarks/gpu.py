"""GPU benchmarks for issue #6: training throughput, sampler overhead, likelihood, Fashion-MNIST.

Parts (``--part``, comma-separated, or ``all``):

1. ``train``: images/s of the 35.7M DDPM++ U-Net (``UNet.cifar``) at 32x32x3, batch 128, bf16
   autocast, channels-last, fused AdamW: (i) :class:`scoresde.train.Trainer` (its own per-window
   ``it_per_s`` from ``metrics.csv``, windows after warm-up and compilation), eager and
   ``torch.compile``; (ii) a bare PyTorch loop of the same network and loss, with and without
   the trainer's extra work (gradient clipping + EMA); (iii) diffusers' ``UNet2DModel`` in the
   DDPM CIFAR configuration with diffusers' DDPM epsilon-loss (if ``import diffusers`` works).
   Also (i) at the 28x28x1 Fashion-MNIST shape (the U-Net runs at any size).
2. ``sample``: wall time of ``scoresde.sample`` for every fixed-step sampler at 10 and 20 steps,
   batch 256, the U-Net in bf16 autocast, against ``NFE x`` one network forward at batch 256;
   beside it diffusers' ``DPMSolverMultistepScheduler`` loop with ``UNet2DModel``.
3. ``likelihood``: ``scoresde.log_likelihood`` (Hutchinson, dopri5) with the U-Net at batch 32
   against the SciPy RK45 NumPy round trip of ``benchmarks/likelihood.py``: NFE, wall time and the
   cost of one evaluation against one forward + one VJP.
4. ``fashion``: train on Fashion-MNIST for ``--minutes`` with the Trainer's step, then test-set
   bits/dim (dequantised), an 8x8 sample grid PNG and sample quality of the ``fast`` sampler at
   NFE 10/20/50 against 1000-step Euler-Maruyama: Frechet distance in the penultimate features
   of a small CNN classifier trained here, and its mean confidence.

Timing: ``torch.cuda.synchronize`` around a fixed number of calls after warm-up (compilation is
excluded); medians of repeats. ``--smoke`` shrinks every size so the whole script runs on a CPU
in well under a minute (a correctness check, not a measurement).

Writes ``<out>/gpu.json`` (every number; parts of an earlier run in the same folder are kept)
and ``<out>/gpu.md`` (tables for ``benchmarks/RESULTS.md``) after every part, and
``<out>/fashion_grid.png``.

Run: ``PYTHONPATH=src python benchmarks/gpu.py --part all --out OUT`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scoresde
from scoresde.metrics import frechet_distance
from scoresde.nets import UNet
from scoresde.parameterize import ScoreModel, sample_training_times
from scoresde.sde import VPSDE
from scoresde.train import TrainConfig, Trainer, read_metrics
from scoresde.train.build import to_data_space

PARTS = ("train", "sample", "likelihood", "fashion")
DEFAULTS = TrainConfig().resolved()  # the trainer's loss: parameterisation and weighting
ADAPTIVE_SAMPLERS = ("ode",)  # step count chosen by the solver: not a fixed-step sampler


# ----------------------------------------------------------------------------------------------
# sizes
@dataclass(frozen=True)
class Sizes:
    """Every size and count of a run (full GPU run or ``--smoke``)."""

    image: int = 32
    net: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``UNet.cifar`` (empty: the 35.7M configuration)."""
    diffusers_net: dict[str, Any] = field(default_factory=dict)
    train_batch: int = 128
    train_window: int = 10
    """Steps per timed window (the trainer's ``log_every``)."""
    train_warmup: int = 3
    """Windows discarded before timing (eager)."""
    compile_warmup: int = 5
    """Windows discarded before timing (compiled: compilation and recompiles)."""
    train_windows: int = 5
    compile_cases: tuple[bool, ...] = (False, True)
    """``torch.compile`` off/on cases of part 1; the fashion run compiles if ``True`` is in."""
    sample_batch: int = 256
    sample_steps: tuple[int, ...] = (10, 20)
    sample_repeats: int = 3
    forward_repeats: int = 20
    lik_batch: int = 32
    lik_tol: float = 1e-5
    scipy_max_evals: int = 3000
    scipy_max_seconds: float = 150.0
    fashion_n: int | None = None
    """Training images for the fashion run (``None``: all 60000)."""
    fashion_max_steps: int | None = None
    fashion_batch: int = 128
    clf_epochs: int = 3
    clf_n: int | None = None
    quality_n: int = 1000
    quality_steps: tuple[int, ...] = (10, 20, 50)
    em_steps: int = 1000
    bpd_n: int = 256


FULL = Sizes()
SMOKE = Sizes(
    image=8,
    net=dict(channels=16, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], resolution=8),
    diffusers_net=dict(
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    ),
    train_batch=4,
    train_window=2,
    train_warmup=1,
    compile_warmup=1,
    train_windows=1,
    compile_cases=(False,),
    sample_batch=4,
    sample_steps=(2, 3),
    sample_repeats=1,
    forward_repeats=2,
    lik_batch=2,
    lik_tol=1e-2,
    scipy_max_evals=400,
    scipy_max_seconds=10.0,
    fashion_n=512,
    fashion_max_steps=3,
    fashion_batch=8,
    clf_epochs=1,
    clf_n=512,
    quality_n=16,
    quality_steps=(2, 3),
    em_steps=4,
    bpd_n=2,
)


# ----------------------------------------------------------------------------------------------
# small helpers
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing elsewhere (mixed precision is CUDA-only here)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_call(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` synchronised calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_steps(step: Callable[[], Any], sizes: Sizes, warmup: int, device: torch.device) -> float:
    """Median seconds per step over timed windows of ``train_window`` steps, after warm-up."""
    for _ in range(warmup * sizes.train_window):
        step()
    per_step = []
    for _ in range(sizes.train_windows):
        sync(device)
        start = time.perf_counter()
        for _ in range(sizes.train_window):
            step()
        sync(device)
        per_step.append((time.perf_counter() - start) / sizes.train_window)
    return statistics.median(per_step)


def n_params(net: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in net.parameters()) / 1e6


def unet(sizes: Sizes, channels: int) -> UNet:
    """The benchmark U-Net: ``UNet.cifar`` (35.7M) or the smoke run's tiny variant."""
    return UNet.cifar(in_channels=channels, **sizes.net)


def try_diffusers() -> tuple[Any, str]:
    """``(diffusers module, "")`` or ``(None, why not)``."""
    try:
        import diffusers  # type: ignore[import-not-found]

        return diffusers, ""
    except Exception as err:  # ImportError, or a broken dependency
        return None, f"diffusers not installed ({type(err).__name__}: {err})"


def diffusers_unet(diffusers: Any, sizes: Sizes) -> nn.Module:
    """diffusers' ``UNet2DModel`` in the DDPM CIFAR-10 configuration (35.7M parameters)."""
    config: dict[str, Any] = dict(
        sample_size=sizes.image,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        dropout=0.1,
        attention_head_dim=None,
        norm_eps=1e-6,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
    )
    config.update(sizes.diffusers_net)
    return diffusers.UNet2DModel(**config)


def attempt(what: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; on failure return ``{"name", "error"}`` so the others still run."""
    print(f"[gpu.py] {what} ...", flush=True)
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:
        traceback.print_exc()
        return {"name": what, "error": f"{type(err).__name__}: {err}"}
    print(f"[gpu.py] {what}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


class Part:
    """The result of one part; written to the report after every measurement."""

    def __init__(self, save: Callable[[dict[str, Any]], None]) -> None:
        self.result: dict[str, Any] = {"rows": []}
        self._save = save

    def measure(self, what: str, fn: Callable[[], Any]) -> Any:
        """:func:`attempt` ``fn``, add its row(s) to ``rows`` and save; return what it gave."""
        got = attempt(what, fn)
        self.result["rows"].extend(got if isinstance(got, list) else [got])
        self.save()
        return got

    def save(self) -> None:
        """Write the report now."""
        self._save(self.result)


def as_json(obj: Any) -> Any:
    """Dataclasses, tuples and tensors as JSON-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: as_json(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): as_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_json(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def random_images(n: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``n`` images in ``[-1, 1]`` (throughput does not depend on the content)."""
    gen = torch.Generator().manual_seed(0)
    return (torch.rand((n, *shape), generator=gen) * 2 - 1).to(device)


# ----------------------------------------------------------------------------------------------
# 1. training throughput
@dataclass
class Throughput:
    """Training speed of one configuration."""

    name: str
    shape: tuple[int, ...]
    batch: int
    params_m: float
    compiled: bool
    images_per_s: float
    step_ms: float


def trainer_config(sizes: Sizes, device: torch.device, out: Path, compiled: bool) -> TrainConfig:
    """The Trainer's settings for a throughput run: bf16, channels-last, fused AdamW."""
    warmup = sizes.compile_warmup if compiled else sizes.train_warmup
    return TrainConfig(
        out=str(out),
        model="unet_cifar",
        model_kwargs=dict(sizes.net),
        steps=(warmup + sizes.train_windows) * sizes.train_window,
        batch_size=sizes.train_batch,
        optimizer="adamw",
        precision="bf16",
        compile=compiled,
        channels_last=True,
        device=str(device),
        log_every=sizes.train_window,
        ckpt_every=10**9,
        keep_last=1,
        sample_n=0,
        progress=False,
        tensorboard=False,
    )


def trainer_throughput(
    sizes: Sizes, device: torch.device, shape: tuple[int, ...], compiled: bool
) -> Throughput:
    """(i) ``Trainer.fit``'s own per-window ``it_per_s`` (median of the windows after warm-up)."""
    data = random_images(sizes.train_batch * 8, shape, torch.device("cpu"))
    warmup = sizes.compile_warmup if compiled else sizes.train_warmup
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(trainer_config(sizes, device, Path(tmp) / "run", compiled), data)
        trainer.fit()
        rows = read_metrics(Path(tmp) / "run" / "metrics.csv")
        params = n_params(trainer.net)
    its = [r["it_per_s"] for r in rows if r["step"] > warmup * sizes.train_window]
    step_s = 1.0 / statistics.median(its)
    return Throughput(
        "scoresde Trainer", shape, sizes.train_batch, params, compiled,
        sizes.train_batch / step_s, 1e3 * step_s,
    )  # fmt: skip


def bare_step(
    sizes: Sizes, device: torch.device, shape: tuple[int, ...], compiled: bool, extra: bool
) -> tuple[Callable[[], None], nn.Module]:
    """(ii) One step of a plain loop: the trainer's network, loss and fused AdamW.

    ``extra`` adds what the trainer does besides: global-norm clipping at 1 and an EMA update
    (torch's own ``clip_grad_norm_`` and ``_foreach_lerp_``).
    """
    torch.manual_seed(0)
    net = unet(sizes, shape[0]).to(device).to(memory_format=torch.channels_last)
    ema = [p.detach().clone() for p in net.parameters()]
    data = random_images(sizes.train_batch * 8, shape, device)
    sde = VPSDE()
    run_net = torch.compile(net) if compiled else net
    model = ScoreModel(run_net, sde, DEFAULTS.parameterization, sigma_data=float(data.std()))
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, fused=device.type in ("cuda", "cpu"))
    gen = torch.Generator(device=device).manual_seed(0)
    batch = sizes.train_batch

    def step() -> None:
        idx = torch.randint(0, data.shape[0], (batch,), device=device, generator=gen)
        x0 = data[idx].contiguous(memory_format=torch.channels_last)
        t = sample_training_times(sde, batch, generator=gen, device=device)
        z = torch.randn(x0.shape, generator=gen, device=device)
        opt.zero_grad(set_to_none=True)
        with amp(device):
            loss = model._loss(x0, t, z, None, DEFAULTS.weighting, "mean")
        loss.backward()
        if extra:
            nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        if extra:
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - 0.999)

    return step, net


def bare_throughput(
    sizes: Sizes, device: torch.device, shape: tuple[int, ...], compiled: bool, extra: bool
) -> Throughput:
    """(ii) images/s of :func:`bare_step`."""
    step, net = bare_step(sizes, device, shape, compiled, extra)
    warmup = sizes.compile_warmup if compiled else sizes.train_warmup
    step_s = time_steps(step, sizes, warmup, device)
    name = "bare loop + clip + EMA" if extra else "bare loop"
    return Throughput(
        name, shape, sizes.train_batch, n_params(net), compiled, sizes.train_batch / step_s,
        1e3 * step_s,
    )  # fmt: skip


def diffusers_throughput(
    diffusers: Any, sizes: Sizes, device: torch.device, compiled: bool, channels_last: bool
) -> Throughput:
    """(iii) diffusers' ``UNet2DModel`` with diffusers' DDPM epsilon-loss, fused AdamW, bf16."""
    torch.manual_seed(0)
    shape = (3, sizes.image, sizes.image)
    net = diffusers_unet(diffusers, sizes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    run_net = torch.compile(net) if compiled else net
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    data = random_images(sizes.train_batch * 8, shape, device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, fused=device.type in ("cuda", "cpu"))
    gen = torch.Generator(device=device).manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch = sizes.train_batch

    def step() -> None:
        idx = torch.randint(0, data.shape[0], (batch,), device=device, generator=gen)
        x0 = data[idx].contiguous(memory_format=fmt)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        steps = torch.randint(0, 1000, (batch,), device=device, generator=gen)
        noisy = scheduler.add_noise(x0, noise, steps)
        opt.zero_grad(set_to_none=True)
        with amp(device):
            pred = run_net(noisy, steps).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()

    warmup = sizes.compile_warmup if compiled else sizes.train_warmup
    step_s = time_steps(step, sizes, warmup, device)
    name = "diffusers UNet2DModel" + (" + channels-last" if channels_last else "")
    return Throughput(name, shape, batch, n_params(net), compiled, batch / step_s, 1e3 * step_s)


def part_train(sizes: Sizes, device: torch.device, part: Part) -> dict[str, Any]:
    """Every training-throughput measurement of part 1."""
    cifar, fashion = (3, sizes.image, sizes.image), (1, 28, 28)
    for c in sizes.compile_cases:
        tag = f"compile={c}"
        part.measure(f"trainer {cifar} {tag}", partial(trainer_throughput, sizes, device, cifar, c))
        for extra in (False, True):
            bare = partial(bare_throughput, sizes, device, cifar, c, extra)
            part.measure(f"bare extra={extra} {tag}", bare)
        part.measure(
            f"trainer {fashion} {tag}", partial(trainer_throughput, sizes, device, fashion, c)
        )
    diffusers, why = try_diffusers()
    part.result["diffusers"] = why or f"diffusers {diffusers.__version__}"
    if diffusers is None:
        return part.result
    cases = {False: [(False, False), (False, True)], True: [(True, True)]}
    for c, cl in [case for on in sizes.compile_cases for case in cases[on]]:
        what = f"diffusers compile={c} channels_last={cl}"
        part.measure(what, partial(diffusers_throughput, diffusers, sizes, device, c, cl))
    return part.result


# ----------------------------------------------------------------------------------------------
# 2. sampler overhead
@dataclass
class SamplerTiming:
    """Wall time of one sampler run against ``nfe`` forwards of the network."""

    sampler: str
    steps: int
    nfe: int
    wall_ms: float
    net_forward_ms: float
    overhead_pct: float
    """``wall / (nfe x net forward) - 1``, in percent."""
    score_forward_ms: float = math.nan
    """One call of the wrapped score (network + parameterisation arithmetic)."""
    overhead_vs_score_pct: float = math.nan


def fixed_step_samplers() -> list[str]:
    """Registered samplers with a fixed step grid (all but the adaptive ODE solver)."""
    return [s for s in scoresde.available_samplers() if s not in ADAPTIVE_SAMPLERS]


def autocast_score(score: Callable[[Tensor, Tensor], Tensor], device: torch.device) -> Any:
    """``score_fn`` that runs the network under bf16 autocast (CUDA) and returns fp32."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        with amp(device):
            return score(x, t)

    return fn


def sample_setup(sizes: Sizes, device: torch.device) -> tuple[UNet, ScoreModel, Tensor, Tensor]:
    """The U-Net (eval), its EDM-preconditioned score on VP, a batch and its times."""
    torch.manual_seed(0)
    net = unet(sizes, 3).to(device).eval().to(memory_format=torch.channels_last)
    model = ScoreModel(net, VPSDE(), DEFAULTS.parameterization, sigma_data=0.5)
    x = torch.randn(sizes.sample_batch, 3, sizes.image, sizes.image, device=device)
    t = torch.full((sizes.sample_batch,), 0.5, device=device)
    return net, model, x, t


def forward_times(model: ScoreModel, x: Tensor, t: Tensor, sizes: Sizes) -> tuple[float, float]:
    """Median seconds of one network forward and one wrapped-score call at the batch ``x``."""
    c_noise = model.coefficients(t).c_noise
    score = autocast_score(model.score_fn(), x.device)
    with torch.no_grad():

        def forward() -> None:
            with amp(x.device):
                model.net(x, c_noise)

        net_s = time_call(forward, sizes.forward_repeats, x.device)
        score_s = time_call(lambda: score(x, t), sizes.forward_repeats, x.device)
    return net_s, score_s


def sampler_timing(
    model: ScoreModel, sizes: Sizes, name: str, steps: int, net_s: float, score_s: float
) -> SamplerTiming:
    """Median wall time of ``scoresde.sample`` with ``name`` at ``steps`` steps."""
    device = next(model.parameters()).device
    precision = "bf16" if device.type == "cuda" else "fp32"  # the library's autocast option
    shape = (sizes.sample_batch, 3, sizes.image, sizes.image)
    gen = torch.Generator(device=device).manual_seed(0)
    info: dict[str, int] = {}

    def run() -> None:
        res = scoresde.sample(
            model.score_fn(), model.sde, shape, sampler=name, steps=steps, generator=gen,
            device=device, dtype=torch.float32, return_info=True, precision=precision,
        )  # fmt: skip
        info["nfe"] = res.nfe

    wall = time_call(run, sizes.sample_repeats, device)
    nfe = info["nfe"]
    return SamplerTiming(
        name, steps, nfe, 1e3 * wall, 1e3 * net_s, 100 * (wall / (nfe * net_s) - 1),
        1e3 * score_s, 100 * (wall / (nfe * score_s) - 1),
    )  # fmt: skip


def diffusers_dpm_timing(diffusers: Any, sizes: Sizes, device: torch.device) -> list[Any]:
    """diffusers' DPMSolverMultistep loop with ``UNet2DModel`` in bf16 at each step count."""
    torch.manual_seed(0)
    net = diffusers_unet(diffusers, sizes).to(device).eval()
    x = torch.randn(sizes.sample_batch, 3, sizes.image, sizes.image, device=device)
    t_mid = torch.tensor(500, device=device)
    with torch.no_grad():

        def forward() -> None:
            with amp(device):
                net(x, t_mid)

        net_s = time_call(forward, sizes.forward_repeats, device)
        rows: list[Any] = []
        for steps in sizes.sample_steps:

            def loop(n: int = steps) -> None:
                scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000)
                scheduler.set_timesteps(n, device=device)
                xt = x * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    with amp(device):
                        eps = net(xt, t).sample
                    xt = scheduler.step(eps, t, xt).prev_sample

            wall = time_call(loop, sizes.sample_repeats, device)
            rows.append(SamplerTiming(
                "diffusers DPMSolverMultistep", steps, steps, 1e3 * wall, 1e3 * net_s,
                100 * (wall / (steps * net_s) - 1),
            ))  # fmt: skip
    return rows


def part_sample(sizes: Sizes, device: torch.device, part: Part) -> dict[str, Any]:
    """Every sampler-overhead measurement of part 2."""
    _, model, x, t = sample_setup(sizes, device)
    part.result["batch"] = sizes.sample_batch
    times = attempt("forward at sample batch", lambda: forward_times(model, x, t, sizes))
    if isinstance(times, dict):
        part.result["rows"].append(times)
        return part.result
    net_s, score_s = times
    for name in fixed_step_samplers():
        for steps in sizes.sample_steps:
            timing = partial(sampler_timing, model, sizes, name, steps, net_s, score_s)
            part.measure(f"sample {name} steps={steps}", timing)
    diffusers, why = try_diffusers()
    part.result["diffusers"] = why or f"diffusers {diffusers.__version__}"
    if diffusers is not None:
        dpm = partial(diffusers_dpm_timing, diffusers, sizes, device)
        part.measure("diffusers DPMSolverMultistep", dpm)
    return part.result


# ----------------------------------------------------------------------------------------------
# 3. likelihood
@dataclass
class LikelihoodTiming:
    """One likelihood solve of a batch."""

    method: str
    batch: int
    rtol: float
    calls: int
    """Batched score calls (scoresde: over the still-unfinished samples)."""
    nfe_mean: float
    wall_s: float
    per_call_ms: float
    fwd_vjp_ms: float
    """One forward + one VJP of the score at the full batch."""
    call_vs_fwd_vjp: float
    bpd_mean: float
    note: str = ""


class EvalBudget(RuntimeError):
    """The SciPy baseline ran past its evaluation or time budget."""


def likelihood_setup(sizes: Sizes, device: torch.device) -> tuple[ScoreModel, Tensor]:
    """fp32 U-Net score (output layer re-drawn small: an untrained stand-in) and a batch.

    The U-Net's output layer starts at zero, which makes the score exactly linear; it is
    re-drawn at 0.1 x PyTorch's default scale so the ODE sees a non-linear network.
    """
    torch.manual_seed(0)
    net = unet(sizes, 3).to(device).eval()
    net.conv_out.reset_parameters()
    with torch.no_grad():
        net.conv_out.weight.mul_(0.1)
    model = ScoreModel(net, VPSDE(), DEFAULTS.parameterization, sigma_data=0.5)
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (sizes.lik_batch, 3, sizes.image, sizes.image), generator=gen)
    x = scoresde.dequantize(pixels, data_range=(-1, 1), generator=gen).to(device)
    return model, x


def fwd_vjp_seconds(model: ScoreModel, x: Tensor, sizes: Sizes) -> float:
    """Median seconds of one forward + one VJP of the score at the batch ``x``."""
    t = torch.full((x.shape[0],), 0.5, device=x.device)
    v = torch.ones_like(x)

    def fwd_vjp() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xg, t), xg, v)

    return time_call(fwd_vjp, max(3, sizes.forward_repeats // 2), x.device)


def scoresde_likelihood(sizes: Sizes, device: torch.device) -> LikelihoodTiming:
    """``scoresde.log_likelihood`` (Hutchinson, dopri5, per-sample steps) on the device."""
    model, x = likelihood_setup(sizes, device)
    fv = fwd_vjp_seconds(model, x, sizes)
    gen = torch.Generator(device=device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    res = scoresde.log_likelihood(
        model.score_fn(), model.sde, x, rtol=sizes.lik_tol, atol=sizes.lik_tol, generator=gen
    )
    sync(device)
    wall = time.perf_counter() - start
    bpd = scoresde.bits_per_dim(res.log_prob, x.shape, data_range=(-1, 1))
    return LikelihoodTiming(
        "scoresde log_likelihood", x.shape[0], sizes.lik_tol, res.calls,
        float(res.nfe.double().mean()), wall, 1e3 * wall / res.calls, 1e3 * fv,
        wall / res.calls / fv, float(bpd.mean()),
    )  # fmt: skip


def load_bench_likelihood() -> Any:
    """``benchmarks/likelihood.py`` loaded by path (it needs SciPy)."""
    path = Path(__file__).resolve().parent / "likelihood.py"
    spec = importlib.util.spec_from_file_location("_bench_likelihood", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def scipy_likelihood(bench: Any, sizes: Sizes, device: torch.device) -> LikelihoodTiming:
    """The reference's SciPy RK45 over the flat batch, host round trip at every evaluation.

    ``x`` stays on the host (NumPy state); every evaluation moves it to the device for the
    network and the result back, as the reference implementation does. Stops with a note after
    ``scipy_max_evals`` evaluations or ``scipy_max_seconds``.
    """
    model, x = likelihood_setup(sizes, device)
    fv = fwd_vjp_seconds(model, x, sizes)
    score = model.score_fn()
    calls = [0]
    start = time.perf_counter()

    def host_score(xs: Tensor, tt: Tensor) -> Tensor:
        calls[0] += 1
        if (
            calls[0] > sizes.scipy_max_evals
            or time.perf_counter() - start > sizes.scipy_max_seconds
        ):
            raise EvalBudget
        return score(xs.to(device), tt.to(device)).to(xs.device)

    gen = torch.Generator().manual_seed(0)
    probes = torch.randint(0, 2, (1, *x.flatten(1).shape), generator=gen).float() * 2 - 1
    note, bpd = "", math.nan
    try:
        log_prob, *_ = bench.scipy_rk45_loglik(
            host_score, model.sde, x.cpu(), rtol=sizes.lik_tol, atol=sizes.lik_tol, probes=probes
        )
        bpd = float(scoresde.bits_per_dim(log_prob, x.shape, data_range=(-1, 1)).mean())
    except EvalBudget:
        note = (
            f"stopped at the budget ({sizes.scipy_max_evals} evals / {sizes.scipy_max_seconds} s)"
        )
    sync(device)
    wall = time.perf_counter() - start
    n = min(calls[0], sizes.scipy_max_evals)
    return LikelihoodTiming(
        "SciPy RK45 round trip", x.shape[0], sizes.lik_tol, n, float(n), wall, 1e3 * wall / n,
        1e3 * fv, wall / n / fv, bpd, note,
    )  # fmt: skip


def part_likelihood(sizes: Sizes, device: torch.device, part: Part) -> dict[str, Any]:
    """Every likelihood measurement of part 3."""
    part.measure("scoresde log_likelihood", lambda: scoresde_likelihood(sizes, device))
    try:
        bench = load_bench_likelihood()
    except ImportError as err:
        part.result["scipy"] = f"SciPy baseline skipped: {err}"
        return part.result
    part.measure("SciPy RK45 baseline", lambda: scipy_likelihood(bench, sizes, device))
    return part.result


# ----------------------------------------------------------------------------------------------
# 4. Fashion-MNIST run
class SmallCNN(nn.Module):
    """A small CNN classifier for 28x28x1 images; its 128-d penultimate layer is the feature."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, 128)`` of images in ``[0, 1]``."""
        return self.body(x * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)``."""
        return self.head(self.features(x))


@dataclass
class Classifier:
    """The feature network and its test accuracy."""

    net: SmallCNN
    test_accuracy: float
    seconds: float


@dataclass
class Quality:
    """Sample quality of one sampler setting."""

    sampler: str
    steps: int
    nfe: int
    n: int
    seconds: float
    frechet: float
    """Squared Frechet distance to the test set in the classifier's feature space."""
    confidence: float
    """Mean max-softmax probability of the classifier on the samples."""


@dataclass
class FashionRun:
    """The training run and what was measured on it."""

    minutes: float
    steps: int
    batch: int
    train_seconds: float
    images_per_s: float
    params_m: float
    compiled: bool
    loss_history: list[tuple[int, float]]
    classifier_accuracy: float
    reference_frechet: float
    """Frechet distance of as many *training* images as samples to the test set (the floor)."""
    reference_confidence: float


def load_fashion(sizes: Sizes, data_dir: str | None) -> tuple[Any, Any]:
    """Train (dequantised on access) and test splits of Fashion-MNIST."""
    from scoresde.data import load_dataset

    train = load_dataset(
        "fashion-mnist", split="train", root=data_dir, n=sizes.fashion_n, dequantize=True
    )
    test = load_dataset("fashion-mnist", split="test", root=data_dir)
    return train, test


def pixels01(ds: Any) -> Tensor:
    """Images of a quantised data set in ``[0, 1]`` (float)."""
    return ds.data.float() / (ds.info.levels - 1)


def train_classifier(sizes: Sizes, train: Any, test: Any, device: torch.device) -> Classifier:
    """Adam on the training images for ``clf_epochs`` epochs; accuracy on the test set."""
    start = time.perf_counter()
    torch.manual_seed(0)
    x, y = pixels01(train).to(device), train.labels.to(device)
    if sizes.clf_n is not None:
        x, y = x[: sizes.clf_n], y[: sizes.clf_n]
    clf = SmallCNN().to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(sizes.clf_epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).to(device).split(256):
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    xt, yt = pixels01(test).to(device), test.labels.to(device)
    with torch.no_grad():
        pred = torch.cat([clf(b).argmax(1) for b in xt.split(1000)])
    acc = float((pred == yt).float().mean())
    return Classifier(clf, acc, time.perf_counter() - start)


@torch.no_grad()
def feature_stats(clf: SmallCNN, x01: Tensor) -> tuple[Tensor, Tensor, float]:
    """Mean and covariance (float64) of the classifier features, and its mean confidence."""
    feats, conf = [], []
    for batch in x01.split(1000):
        f = clf.features(batch)
        feats.append(f.double())
        conf.append(clf.head(f).softmax(1).amax(1))
    f = torch.cat(feats)
    return f.mean(0), torch.cov(f.T), float(torch.cat(conf).mean())


def fashion_trainer(
    sizes: Sizes, device: torch.device, train: Any, out: Path, compiled: bool, minutes: float
) -> Trainer:
    """The Trainer for the run: 35.7M U-Net, bf16, channels-last, fused AdamW, EMA 0.999,
    stopped by its own ``max_minutes`` budget (compilation included)."""
    cfg = TrainConfig(
        out=str(out), model="unet_cifar", model_kwargs=dict(sizes.net),
        steps=sizes.fashion_max_steps or 10**9, max_minutes=minutes,
        batch_size=sizes.fashion_batch, optimizer="adamw", lr=2e-4, warmup_steps=200,
        precision="bf16", compile=compiled, channels_last=True, device=str(device),
        log_every=200, ckpt_every=10**9, keep_last=1, sample_n=0, progress=False,
        tensorboard=False,
    )  # fmt: skip
    return Trainer(cfg, train)


def train_for(trainer: Trainer) -> tuple[float, list]:
    """``Trainer.fit`` until its step or time budget; wall seconds and the loss history."""
    result = trainer.fit()
    return result.seconds, result.history


def draw(
    model: ScoreModel, sizes: Sizes, device: torch.device, sampler: str, steps: int
) -> tuple[Tensor, int, float]:
    """``quality_n`` samples in ``[0, 1]``, their NFE and seconds."""
    gen = torch.Generator(device=device).manual_seed(7)
    sync(device)
    start = time.perf_counter()
    res = scoresde.sample(
        model.score_fn(), model.sde, (sizes.quality_n, 1, 28, 28), sampler=sampler,
        steps=steps, generator=gen, device=device, dtype=torch.float32, return_info=True,
        precision="bf16" if device.type == "cuda" else "fp32",
    )  # fmt: skip
    sync(device)
    seconds = time.perf_counter() - start
    return to_data_space(res.samples, {"levels": 256}), res.nfe, seconds


def quality(
    model: ScoreModel, clf: SmallCNN, test_stats: tuple, sizes: Sizes, device: torch.device,
    sampler: str, steps: int,
) -> tuple[Quality, Tensor]:  # fmt: skip
    """Frechet distance and confidence of one sampler setting; also returns the samples."""
    x, nfe, seconds = draw(model, sizes, device, sampler, steps)
    mu, cov, conf = feature_stats(clf, x)
    fd = frechet_distance(mu, cov, test_stats[0], test_stats[1])
    return Quality(sampler, steps, nfe, x.shape[0], seconds, fd, conf), x


@dataclass
class BitsPerDim:
    """Test-set bits/dim of the trained model (dequantised, [-1, 1] data space)."""

    n: int
    mean: float
    sem: float
    nfe_mean: float
    seconds: float


def test_bpd(model: ScoreModel, test: Any, sizes: Sizes, device: torch.device) -> BitsPerDim:
    """``log_likelihood`` (Hutchinson) of ``bpd_n`` dequantised test images, fp32."""
    gen = torch.Generator().manual_seed(3)
    x = scoresde.dequantize(test.data[: sizes.bpd_n], data_range=(-1, 1), generator=gen)
    x = x.to(device)
    sync(device)
    start = time.perf_counter()
    res = scoresde.log_likelihood(
        model.score_fn(), model.sde, x, generator=torch.Generator(device=device).manual_seed(0),
        batch_size=256,
    )  # fmt: skip
    sync(device)
    bpd = scoresde.bits_per_dim(res.log_prob, x.shape, data_range=(-1, 1)).double()
    sem = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else math.nan
    return BitsPerDim(
        len(bpd), float(bpd.mean()), sem, float(res.nfe.double().mean()),
        time.perf_counter() - start,
    )  # fmt: skip


def write_grid(x01: Tensor, path: Path, title: str) -> str:
    """An 8x8 grid PNG through :mod:`scoresde.plots` (matplotlib), or why it was skipped."""
    try:
        from scoresde import plots

        plots.image_grid(x01[:64].cpu(), path, nrow=8, title=title)
    except ImportError as err:
        return f"grid skipped: {err}"
    return str(path)


def part_fashion(
    sizes: Sizes, device: torch.device, minutes: float, data_dir: str | None, out: Path,
    part: Part,
) -> dict[str, Any]:  # fmt: skip
    """Part 4: classifier, timed training run, then quality of ``fast`` (and the grid),
    bits/dim, and last the 1000-step Euler-Maruyama reference (the slowest)."""
    try:
        train, test = load_fashion(sizes, data_dir)
    except FileNotFoundError as err:
        part.result["skipped"] = f"Fashion-MNIST files not found: {err}"
        return part.result
    clf = train_classifier(sizes, train, test, device)
    test_stats = feature_stats(clf.net, pixels01(test).to(device))
    ref = pixels01(train)[torch.randperm(len(train), generator=torch.Generator().manual_seed(5))]
    ref_mu, ref_cov, ref_conf = feature_stats(clf.net, ref[: sizes.quality_n].to(device))
    ref_fd = frechet_distance(ref_mu, ref_cov, test_stats[0], test_stats[1])
    compiled = True in sizes.compile_cases
    with tempfile.TemporaryDirectory() as tmp:
        trainer = fashion_trainer(sizes, device, train, Path(tmp) / "run", compiled, minutes)
        seconds, history = train_for(trainer)
    part.result["run"] = FashionRun(
        minutes, trainer.step, trainer.local_batch, seconds,
        trainer.step * trainer.local_batch / seconds,
        n_params(trainer.net), compiled, history, clf.test_accuracy, ref_fd, ref_conf,
    )  # fmt: skip
    part.save()
    model = trainer.ema_score_model()
    measure = partial(quality, model, clf.net, test_stats, sizes, device)

    def fast(steps: int) -> Quality:
        got, x = measure("fast", steps)
        if steps == max(sizes.quality_steps):
            path = out / "fashion_grid.png"
            part.result["grid"] = write_grid(x, path, f"fast sampler, {got.nfe} NFE")
        return got

    for steps in sizes.quality_steps:
        part.measure(f"quality fast steps={steps}", partial(fast, steps))
    part.result["bpd"] = attempt("test bits/dim", lambda: test_bpd(model, test, sizes, device))
    part.save()
    part.measure("quality euler_maruyama", lambda: measure("euler_maruyama", sizes.em_steps)[0])
    return part.result


# ----------------------------------------------------------------------------------------------
# report
def meta(device: torch.device, smoke: bool) -> dict[str, Any]:
    """Device name, versions and date of this run."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "scoresde": scoresde.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": smoke,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "argv": sys.argv[1:],
    }


def fmt(v: Any, digits: int = 1) -> str:
    """A number for a table cell."""
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]


def errors(rows: list[Any]) -> list[str]:
    """Lines for the measurements that failed."""
    return [f"- {r['name']}: **error** {r['error']}" for r in rows if "error" in r]


def md_train(part: dict[str, Any]) -> list[str]:
    """Training-throughput table."""
    rows = [r for r in part["rows"] if "error" not in r]
    lines = table(
        ["what", "shape", "batch", "params (M)", "compile", "images/s", "ms/step"],
        [[r["name"], "x".join(map(str, r["shape"])), r["batch"], fmt(r["params_m"], 2),
          r["compiled"], r["images_per_s"], fmt(r["step_ms"], 2)] for r in rows],
    )  # fmt: skip
    return lines + errors(part["rows"]) + [f"- diffusers: {part.get('diffusers', '')}"]


def md_sample(part: dict[str, Any]) -> list[str]:
    """Sampler-overhead table."""
    rows = [r for r in part["rows"] if "error" not in r]
    lines = table(
        ["sampler", "steps", "NFE", "wall (ms)", "net fwd (ms)", "overhead vs net (%)",
         "overhead vs score (%)"],
        [[r["sampler"], r["steps"], r["nfe"], r["wall_ms"], fmt(r["net_forward_ms"], 2),
          r["overhead_pct"], r["overhead_vs_score_pct"]] for r in rows],
    )  # fmt: skip
    return lines + errors(part["rows"]) + [f"- diffusers: {part.get('diffusers', '')}"]


def md_likelihood(part: dict[str, Any]) -> list[str]:
    """Likelihood table."""
    rows = [r for r in part["rows"] if "error" not in r]
    lines = table(
        ["method", "batch", "rtol", "calls", "NFE/sample", "wall (s)", "ms/call",
         "fwd+VJP (ms)", "call / (fwd+VJP)", "bits/dim", "note"],
        [[r["method"], r["batch"], f"{r['rtol']:g}", r["calls"], r["nfe_mean"],
          fmt(r["wall_s"], 2), r["per_call_ms"], r["fwd_vjp_ms"], fmt(r["call_vs_fwd_vjp"], 2),
          fmt(r["bpd_mean"], 3), r["note"]] for r in rows],
    )  # fmt: skip
    return lines + errors(part["rows"]) + ([f"- {part['scipy']}"] if "scipy" in part else [])


def md_fashion(part: dict[str, Any]) -> list[str]:
    """Fashion-MNIST run summary and quality table."""
    if "skipped" in part:
        return [f"- skipped: {part['skipped']}"]
    if "run" not in part:
        return []
    run = part["run"]
    last_loss = fmt(run["loss_history"][-1][1], 4) if run["loss_history"] else "n/a"
    lines = [
        f"- trained {run['steps']} steps of batch {run.get('batch', '')} in "
        f"{run['train_seconds']:.0f} s ({run['images_per_s']:.0f} images/s including "
        f"compilation, {run['params_m']:.2f}M params, compile={run['compiled']}); "
        f"last loss {last_loss}",
        f"- classifier test accuracy {run['classifier_accuracy']:.3f}; reference (as many "
        f"training images vs test) Frechet {run['reference_frechet']:.2f}, confidence "
        f"{run['reference_confidence']:.3f}",
    ]
    bpd = part.get("bpd")
    if isinstance(bpd, dict) and "error" not in bpd:
        lines.append(
            f"- test bits/dim {bpd['mean']:.3f} +- {fmt(bpd['sem'], 3)} on {bpd['n']} images "
            f"(NFE/sample {bpd['nfe_mean']:.0f}, {bpd['seconds']:.0f} s)"
        )
    elif isinstance(bpd, dict):
        lines.append(f"- test bits/dim: **error** {bpd['error']}")
    lines.append(f"- grid: {part.get('grid') or 'not written'}")
    rows = [q for q in part["rows"] if "error" not in q]
    return (
        lines
        + [""]
        + table(
            ["sampler", "steps", "NFE", "samples", "seconds", "Frechet", "confidence"],
            [
                [
                    q["sampler"],
                    q["steps"],
                    q["nfe"],
                    q["n"],
                    q["seconds"],
                    fmt(q["frechet"], 2),
                    fmt(q["confidence"], 3),
                ]
                for q in rows
            ],
        )  # fmt: skip
        + errors(part["rows"])
    )


def markdown(report: dict[str, Any]) -> str:
    """The ``benchmarks/RESULTS.md`` fragment of every part in ``report``."""
    titles = {
        "train": ("Training throughput (bf16 autocast, channels-last, fused AdamW)", md_train),
        "sample": ("Sampler overhead (batch 256, bf16)", md_sample),
        "likelihood": ("Likelihood (fp32, Hutchinson)", md_likelihood),
        "fashion": ("Fashion-MNIST run", md_fashion),
    }
    out = ["## GPU performance (issue #6)", ""]
    for key, (title, render) in titles.items():
        if key not in report:
            continue
        m = report[key]["meta"]
        out += [f"### {title}", "", f"{m['device']}, torch {m['torch']}, {m['date_utc']}"
                + (" (SMOKE RUN: sizes are tiny, numbers mean nothing)" if m["smoke"] else ""),
                ""]  # fmt: skip
        failed, warning = report[key].get("error"), report[key].get("warning")
        out += render(report[key]) + ([f"- **part error** {failed}"] if failed else [])
        out += ([f"- **warning** {warning}"] if warning else []) + [""]
    return "\n".join(out)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def merge_part(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the rows of an earlier run of the same part kept before its own."""
    if not old:
        return new
    merged = {**old, **new, "rows": old.get("rows", []) + new.get("rows", [])}
    devices = sorted({old["meta"]["device"], new["meta"]["device"]})
    if len(devices) > 1:
        merged["warning"] = f"rows measured on different devices: {devices}"
    return merged


class Report:
    """``gpu.json`` and ``gpu.md`` in the output folder, rewritten after every part.

    A ``gpu.json`` already in the folder is kept: a part run again adds its rows after the
    earlier ones (so ``--compile off`` and ``--compile only`` runs of ``train`` combine).
    """

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta = out, meta
        out.mkdir(parents=True, exist_ok=True)
        path = out / "gpu.json"
        self.earlier: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.data: dict[str, Any] = dict(self.earlier)

    def save(self, part: str, result: dict[str, Any]) -> None:
        """Record ``result`` as ``part`` (with this run's meta) and rewrite both files."""
        new = {"meta": self.meta, **as_json(result)}
        self.data[part] = merge_part(self.earlier.get(part), new)
        self.data["meta"] = self.meta
        self.write()

    def merge_file(self, path: Path) -> None:
        """Add every part of another run's ``gpu.json`` (e.g. one device call's results)."""
        other = json.loads(Path(path).read_text())
        for part in PARTS:
            if part in other:
                self.data[part] = merge_part(self.data.get(part), other[part])
        self.data["meta"] = other.get("meta", self.meta)
        self.write()

    def write(self) -> None:
        """Rewrite ``gpu.json`` and ``gpu.md``."""
        write_atomic(self.out / "gpu.json", json.dumps(self.data, indent=1))
        write_atomic(self.out / "gpu.md", markdown(self.data))


# ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU correctness check")
    p.add_argument("--part", default="all", help=f"comma-separated of {PARTS} or 'all'")
    p.add_argument("--out", default="benchmarks/out/gpu", help="folder for gpu.json / gpu.md")
    p.add_argument("--minutes", type=float, default=6.0, help="fashion: training wall time")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument(
        "--compile",
        choices=("both", "off", "only"),
        default="both",
        help="torch.compile cases: both, off (eager only), only (compiled only); the fashion "
        "run compiles unless 'off' (smoke: always off)",
    )
    p.add_argument("--quality-n", type=int, default=None, help="fashion: samples per sampler")
    p.add_argument("--bpd-n", type=int, default=None, help="fashion: test images for bits/dim")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only merge these gpu.json files (e.g. of several device calls) into --out",
    )
    args = p.parse_args(argv)
    parts = PARTS if args.part == "all" else tuple(s.strip() for s in args.part.split(","))
    bad = [s for s in parts if s not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; choose from {list(PARTS)} or 'all'")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen parts; returns the report dict (also written to ``--out``)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    sizes = SMOKE if args.smoke else FULL
    if not args.smoke:
        cases = {"both": (False, True), "off": (False,), "only": (True,)}[args.compile]
        sizes = dataclasses.replace(sizes, compile_cases=cases)
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for name in ("quality_n", "bpd_n"):
        if getattr(args, name) is not None:
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    out = Path(args.out)
    report = Report(out, meta(device, args.smoke))
    if args.merge:
        for path in args.merge:
            report.merge_file(Path(path))
        print(markdown(report.data))
        return report.data
    minutes = 0.2 if args.smoke else args.minutes
    for name in args.parts:
        start = time.perf_counter()
        part = Part(partial(report.save, name))
        runner: Callable[[], dict[str, Any]] = {
            "train": partial(part_train, sizes, device, part),
            "sample": partial(part_sample, sizes, device, part),
            "likelihood": partial(part_likelihood, sizes, device, part),
            "fashion": partial(part_fashion, sizes, device, minutes, args.data_dir, out, part),
        }[name]
        got = attempt(f"part {name}", runner)
        if "error" in got:  # the part itself broke: keep its rows and the error
            part.result["error"] = got["error"]
        part.save()
        print(f"[gpu.py] part {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    print(markdown(report.data))
    return report.data


if __name__ == "__main__":
    main()
