"""Part ``train`` of ``benchmarks/gpu.py``: training throughput of the 35.7M DDPM++ U-Net.

Images/s at 32x32x3, batch 128, bf16 autocast, channels-last, fused AdamW of (i)
:class:`scoresde.train.Trainer` (its own per-window ``it_per_s``), eager and ``torch.compile``;
(ii) a bare PyTorch loop of the same network and loss, with and without the trainer's gradient
clipping and EMA; (iii) diffusers' ``UNet2DModel`` in the DDPM CIFAR configuration with its DDPM
epsilon-loss; (i) also at the 28x28x1 Fashion-MNIST shape.

Run: ``python benchmarks/gpu_train.py [gpu.py options]`` (``gpu.py --part train``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpu_common import (
    DEFAULTS,
    Part,
    Sizes,
    amp,
    diffusers_unet,
    n_params,
    random_images,
    time_steps,
    try_diffusers,
    unet,
)
from scoresde.parameterize import ScoreModel, sample_training_times
from scoresde.sde import VPSDE
from scoresde.train import TrainConfig, Trainer, read_metrics


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


if __name__ == "__main__":
    import gpu

    gpu.main(["--part", "train", *sys.argv[1:]])
