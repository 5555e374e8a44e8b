"""Part ``sample`` of ``benchmarks/gpu.py``: sampler overhead against the network's forward.

Wall time of ``scoresde.sample`` for every fixed-step sampler at 10 and 20 steps, batch 256, the
35.7M U-Net in bf16 autocast, against ``NFE x`` one network forward (and one wrapped-score call)
at batch 256; beside it diffusers' ``DPMSolverMultistepScheduler`` loop with ``UNet2DModel``.

Run: ``python benchmarks/gpu_sample.py [gpu.py options]`` (``gpu.py --part sample``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

import scoresde
from gpu_common import (
    DEFAULTS,
    Part,
    Sizes,
    amp,
    attempt,
    diffusers_unet,
    time_call,
    try_diffusers,
    unet,
)
from scoresde.nets import UNet
from scoresde.parameterize import ScoreModel
from scoresde.sde import VPSDE

ADAPTIVE_SAMPLERS = ("ode",)  # step count chosen by the solver: not a fixed-step sampler


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


if __name__ == "__main__":
    import gpu

    gpu.main(["--part", "sample", *sys.argv[1:]])
