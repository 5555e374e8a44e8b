"""What every part of ``benchmarks/gpu.py`` shares: the run sizes, timing and the part record.

:class:`Sizes` holds every size and count of a run (:data:`FULL` for the GPU, :data:`SMOKE` for a
CPU correctness check); :func:`time_call` / :func:`time_steps` time synchronised calls;
:class:`Part` collects one part's rows and saves the report after every measurement.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.nets import UNet
from scoresde.train import TrainConfig

DEFAULTS = TrainConfig().resolved()  # the trainer's loss: parameterisation and weighting


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
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
    ),
    # train
    train_batch=4, train_window=2, train_warmup=1, compile_warmup=1, train_windows=1,
    compile_cases=(False,),
    # sample
    sample_batch=4, sample_steps=(2, 3), sample_repeats=1, forward_repeats=2,
    # likelihood
    lik_batch=2, lik_tol=1e-2, scipy_max_evals=400, scipy_max_seconds=10.0,
    # fashion
    fashion_n=512, fashion_max_steps=3, fashion_batch=8, clf_epochs=1, clf_n=512, quality_n=16,
    quality_steps=(2, 3), em_steps=4, bpd_n=2,
)  # fmt: skip


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


def random_images(n: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``n`` images in ``[-1, 1]`` (throughput does not depend on the content)."""
    gen = torch.Generator().manual_seed(0)
    return (torch.rand((n, *shape), generator=gen) * 2 - 1).to(device)
