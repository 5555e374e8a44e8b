"""Every sampler recovers analytic mixtures (2-D and 32-D, unequal weights) for every SDE it
supports, measured against the sampling floor of two exact sample sets of the same size."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import scoresde as S
from conftest import STD_SDES as SDES
from conftest import aniso32d, ring2d
from scoresde.metrics import mode_report
from scoresde.sampling import get_sampler

N = 2000

# sampler name -> (steps, options); step counts are "high" for each method's order
CONFIGS: dict[str, tuple[int, dict[str, Any]]] = {
    "euler_maruyama": (250, {}),
    "reverse_diffusion": (250, {}),
    "ancestral": (250, {}),
    "pc": (150, {"corrector": "ald", "snr": 0.1}),
    "pc_langevin_per_sample": (150, {"snr": 0.1}),
    "langevin": (300, {"corrector_steps": 3}),
    "ode": (1, {"rtol": 1e-4, "atol": 1e-4}),
    "euler": (150, {}),
    "heun": (25, {}),
    "edm": (40, {"s_churn": 10.0}),
    "ddim": (100, {"eta": 1.0}),
    "dpm_solver": (20, {"order": 3}),
    "dpm_solver_sde": (60, {}),
    "ode_heun": (60, {}),
    "fast": (30, {}),
}

HALF_STEPS_32D = {
    "langevin",
    "pc",
    "pc_langevin_per_sample",
    "euler_maruyama",
    "reverse_diffusion",
    "ancestral",
}

TARGETS = {"2d": ring2d, "32d": aniso32d}
_FLOORS: dict[str, tuple[float, float]] = {}


def _floor(name: str) -> tuple[float, float]:
    """Mode TV and weighted Frechet of exact samples (the floor), computed once per target."""
    if name not in _FLOORS:
        target = TARGETS[name]()
        vals = [
            mode_report(target, target.sample(N, torch.Generator().manual_seed(s)))
            for s in (101, 102, 103)
        ]
        _FLOORS[name] = (max(r.tv for r in vals), max(r.frechet_weighted for r in vals))
    return _FLOORS[name]


def _cases() -> list[Any]:
    cases = []
    for key in CONFIGS:
        sampler = "pc" if key == "pc_langevin_per_sample" else key
        for sde_name, factory in SDES.items():
            for tname in TARGETS:
                if key == "pc_langevin_per_sample" and tname == "2d":
                    continue  # per-sample SNR step sizes are for high dimension (see below)
                if not get_sampler(sampler).supports(factory()):
                    continue
                cases.append(pytest.param(key, sde_name, tname, id=f"{key}-{sde_name}-{tname}"))
    return cases


@pytest.mark.parametrize(("key", "sde_name", "tname"), _cases())
def test_sampler_recovers_mixture(key: str, sde_name: str, tname: str) -> None:
    torch.manual_seed(0)
    sampler = "pc" if key == "pc_langevin_per_sample" else key
    steps, options = CONFIGS[key]
    if tname == "32d":  # the 32-D floor is larger, so half the steps meet the same tolerance
        steps = max(1, steps // 2) if key in HALF_STEPS_32D else steps
    sde, target = SDES[sde_name](), TARGETS[tname]()
    x = S.sample(
        target.score_fn(sde),
        sde,
        (N, target.dim),
        sampler=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(1),
        **options,
    )
    assert x.shape == (N, target.dim) and bool(torch.isfinite(x).all())
    rep = mode_report(target, x)
    tv_floor, fr_floor = _floor(tname)
    # mode masses: TV within a few sampling standard deviations of the exact-sample floor
    w = target.weights
    tv_sd = 0.5 * float(torch.sqrt(w * (1 - w) / N).sum())
    assert rep.tv <= tv_floor + 2.5 * tv_sd, (rep.mass, w)
    # per-mode Frechet: within a small multiple of the floor of two exact sets
    assert rep.frechet_weighted <= 3 * fr_floor + 0.006 * math.sqrt(target.dim / 2), (
        rep.frechet,
        fr_floor,
    )


def test_unsupported_combination_raises() -> None:
    target = ring2d()
    sde = S.SubVPSDE()
    with pytest.raises(ValueError, match="does not support SubVPSDE"):
        S.sample(target.score_fn(sde), sde, (8, 2), sampler="ancestral", steps=5)
    with pytest.raises(ValueError, match="does not support SubVPSDE"):
        S.sample(target.score_fn(sde), sde, (8, 2), sampler="pc", predictor="ancestral", steps=5)
