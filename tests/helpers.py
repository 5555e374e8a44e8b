"""Test utilities shared by test modules (import as ``from helpers import ...``).

The SDE zoo and the analytic targets are in ``conftest.py``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import torch

ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""torchrun's default for its workers, here for every process a test starts."""


def run_scoresde(
    *argv: object, nproc: int = 0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m scoresde ARGV`` in a real process, or through ``torchrun --standalone
    --nproc_per_node=NPROC`` (torchrun's own entry point); asserts exit status 0 if ``check``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc else [sys.executable]  # fmt: skip
    proc = subprocess.run([*launcher, "-m", "scoresde", *map(str, argv)], capture_output=True,
                          text=True, timeout=600, env=ONE_THREAD_ENV)  # fmt: skip
    if check:
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


class HostReads:
    """Count reads of tensor values into Python (a device synchronisation on a GPU)."""

    NAMES = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> HostReads:
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def counted(t: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                self.count += 1
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)


def draw64(target: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` float64 samples of ``target`` (likelihood errors are measured at 1e-3 bits/dim)."""
    return target.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rms_bits_error(target: Any, sde: Any, x: torch.Tensor, res: Any, eps: float = 1e-5) -> float:
    """RMS error (bits/dim) of ``res.log_prob`` against what the exact ODE with this prior gives."""
    exact = (
        target.marginal_log_prob(x, eps, sde)
        - target.marginal_log_prob(res.latent, sde.T, sde)
        + res.prior_log_prob
    )
    d = x[0].numel()
    return float((res.log_prob - exact).pow(2).mean().sqrt()) / (d * math.log(2.0))


def grid_calls_and_reads(target: Any, sde: Any, method: str = "dopri5", **kw: Any) -> list[int]:
    """``log_likelihood`` on uniform grids (``method``) of 12 and 48 calls, batches 3 and 40.

    Asserts that every run makes exactly the grid's calls, each on the whole batch, with finite
    results; returns the host reads of each run (``kw`` goes to ``log_likelihood``).
    """
    from scoresde.likelihood import log_likelihood, uniform_grid

    score = target.score_fn(sde)
    calls: list[int] = []

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return score(x, t)

    reads = []
    for batch, nfe in ((3, 12), (40, 12), (40, 48)):
        x = draw64(target, batch, batch)
        calls.clear()
        with HostReads() as h:
            grid = uniform_grid(sde, tuple(x.shape[1:]), nfe=nfe, method=method)
            r = log_likelihood(counted, sde, x, grid=grid, **kw)
        reads.append(h.count)
        assert len(calls) == r.calls == nfe and set(calls) == {batch}
        assert (r.nfe == nfe).all() and torch.isfinite(r.log_prob).all()
    return reads
