"""Part ``likelihood`` of ``benchmarks/gpu.py``: ``log_likelihood`` against the SciPy round trip.

``scoresde.log_likelihood`` (Hutchinson, dopri5) with the U-Net at batch 32 against SciPy's RK45
over the flat batch with a NumPy round trip at every evaluation
(``benchmarks/likelihood_reference.py``): calls, NFE, wall time and the cost of one evaluation
against one forward + one VJP of the score.

Run: ``python benchmarks/gpu_likelihood.py [gpu.py options]`` (``gpu.py --part likelihood``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import scoresde
from gpu_common import DEFAULTS, Part, Sizes, sync, time_call, unet
from scoresde.parameterize import ScoreModel
from scoresde.sde import VPSDE


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


def load_scipy_reference() -> Callable[..., Any]:
    """``scipy_rk45_loglik`` of ``benchmarks/likelihood_reference.py`` (ImportError: no SciPy)."""
    from likelihood_reference import scipy_rk45_loglik

    return scipy_rk45_loglik


def scipy_likelihood(
    reference: Callable[..., Any], sizes: Sizes, device: torch.device
) -> LikelihoodTiming:
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
        log_prob, *_ = reference(
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
        reference = load_scipy_reference()
    except ImportError as err:
        part.result["scipy"] = f"SciPy baseline skipped: {err}"
        return part.result
    part.measure("SciPy RK45 baseline", lambda: scipy_likelihood(reference, sizes, device))
    return part.result


if __name__ == "__main__":
    import gpu

    gpu.main(["--part", "likelihood", *sys.argv[1:]])
