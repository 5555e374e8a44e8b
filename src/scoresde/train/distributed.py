"""Process-group setup for ``torchrun``: NCCL on GPUs, gloo on CPU; rank and device lookup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly single-process) job."""

    rank: int
    """Global rank (0 without DDP)."""
    world_size: int
    """Number of processes (1 without DDP)."""
    local_rank: int
    """Rank on this machine (selects the GPU)."""
    device: torch.device
    """The device this process trains on."""

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one process is in use."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes checkpoints)."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; else as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:K") from err
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no values; use auto, cpu, cuda or cuda:K")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was asked for but CUDA is not available; use --device cpu"
            )
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup_distributed(device: str = "auto", timeout: timedelta | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    ``WORLD_SIZE > 1`` starts DDP: NCCL when training on CUDA, gloo on CPU. Each rank on CUDA
    uses ``cuda:LOCAL_RANK``. Without those variables this is a single process (rank 0 of 1).
    ``timeout``: how long a collective call waits for the other ranks (default torch's, 30
    minutes for gloo): the sharded commands meet only at the end of a run, where the ranks may
    finish far apart.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    if world > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
