"""Likelihood of trained networks: NFE at the SciPy RK45 baseline's accuracy, per formulation.

Run: ``.venv/bin/python benchmarks/likelihood_trained.py [--quick]`` (CPU; about 6 minutes with
the training, 2 with ``--quick``, which trains 40 steps and solves batches of 4).

The two ``make demo`` networks (moons MLP under VP, digits U-Net under EDM) are trained here with
the demo's settings. Hutchinson with one fixed probe, ``eps = sde.eps``, float32. Accuracy is
against a tight solve with the same probe (``likelihood_reference.tight_with_probe``, float64
copy of the trained model); ``NFE@eq`` = mean NFE per sample of the loosest rtol (sweep
1e-3..1e-7, 6 per decade) whose mean error is at most (a)'s.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import scoresde
from _shared import log
from likelihood_reference import (
    fixed_probe,
    loosest_accurate,
    quick_parser,
    scipy_rk45_loglik,
    script_main,
    section,
    tight_with_probe,
)
from likelihood_variants import variant_log_likelihood

FORMULATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "asinh sigma": {"variable": "asinh_sigma"},
    "t": {"variable": "t"},
    "t, x (ref. equations)": {"variable": "t", "state": "x", "residual": False},
}
"""Formulations compared, as ``variant_log_likelihood`` arguments (``{}``: the library's)."""
RTOLS = tuple(10 ** (-3 - k / 6) for k in range(25))
"""1e-3 to 1e-7, six per decade."""


def train_demo_models(
    root: Path, quick: bool, n: int, extra_model_kwargs: dict[str, Any] | None = None
) -> dict[str, tuple[str, Tensor]]:
    """The two ``make demo`` models, trained here: name -> (run dir, ``n`` test points).

    ``quick``: 40 training steps each instead of the demo's 1500 and 1200.
    ``extra_model_kwargs`` are added to both networks' ``model_kwargs`` (e.g. another
    ``embedding_scale``).
    """
    extra = dict(extra_model_kwargs or {})
    from scoresde.data import load_dataset, load_digits
    from scoresde.train import TrainConfig, Trainer

    common = dict(
        lr=2e-3, warmup_steps=20 if quick else 100, ema_decay=0.995, log_every=100,
        ckpt_every=100000, sample_n=0, tensorboard=False, seed=0, device="cpu", progress=False,
    )  # fmt: skip
    cfgs = {
        "moons MLP (VP)": TrainConfig(
            data="moons", out=str(root / "moons"), data_kwargs={"n": 20000, "seed": 0}, sde="vp",
            steps=40 if quick else 1500, batch_size=256,
            model_kwargs={"hidden": 128, "depth": 3, **extra},
            **common,
        ),
        "digits U-Net (EDM)": TrainConfig(
            data="digits", out=str(root / "digits"), sde="edm", model="unet",
            steps=40 if quick else 1200,
            model_kwargs={"channels": 16, "num_res_blocks": 1, **extra},
            batch_size=64, **common,
        ),
    }  # fmt: skip
    for cfg in cfgs.values():
        Trainer(cfg).fit()
    moons = load_dataset("moons", split="test", n=n, seed=0).tensors().float()
    raw = load_digits("test")[0][:n].float()  # 17 grey levels, dequantised into [-1, 1]
    digits = (raw + torch.rand(raw.shape, generator=torch.Generator().manual_seed(0))) / 17 * 2 - 1
    return {
        "moons MLP (VP)": (str(root / "moons"), moons),
        "digits U-Net (EDM)": (str(root / "digits"), digits),
    }


def _row(name: str, run: str, x: Tensor) -> list[str]:
    """(a)'s NFE and error, then each formulation's NFE at (a)'s accuracy."""
    trained = scoresde.load_trained(run)
    model, sde = trained.model, trained.sde
    probe = fixed_probe(x, 9)
    ref, _ = tight_with_probe(
        copy.deepcopy(model).double(), sde, x.double(), probe.double(), sde.eps
    )
    lp_a, _, _, n_a = scipy_rk45_loglik(model, sde, x, probes=probe, eps=sde.eps)
    err_a = float((lp_a.double() - ref).abs().mean())
    cells = [name, str(n_a), f"{err_a:.1e}"]

    def error(res: scoresde.LikelihoodResult) -> float:
        return float((res.log_prob.double() - ref).abs().mean())

    for kw in FORMULATIONS.values():

        def solve(tol: float, kw: dict[str, Any] = kw) -> scoresde.LikelihoodResult:
            return variant_log_likelihood(
                model, sde, x, rtol=tol, atol=tol, eps=sde.eps, fixed_probes=probe, **kw
            )

        _, _, r = loosest_accurate(solve, error, err_a, RTOLS)
        n_eq = float("nan") if r is None else float(r.nfe.float().mean())
        cells.append(f"{n_eq:.0f} ({n_eq / n_a:.2f})")
    return cells


def run(quick: bool) -> str:
    """Train, then the table (``quick``: 40 training steps, 4 test points)."""
    batch = 4 if quick else 32
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (run_dir, x) in train_demo_models(Path(tmp), quick, batch).items():
            rows.append(_row(name, run_dir, x))
            log(" | ".join(rows[-1]))
    header = ["model", "(a) NFE", "(a) err"] + [f"NFE@eq {k}" for k in FORMULATIONS]
    return section(
        f"Trained networks (the `make demo` models, trained here; batch {batch}, float32,"
        " Hutchinson 1 probe, eps = sde.eps)",
        "Accuracy is against a tight solve with the same probe (rtol=atol=1e-10, float64 copy"
        " of the trained model). `NFE@eq` = mean NFE per sample of the loosest rtol (sweep"
        " 1e-3..1e-7, 6 per decade) whose mean error is <= (a)'s.",
        header,
        rows,
    )


if __name__ == "__main__":
    script_main(
        quick_parser(__doc__, "40 training steps, batch 4 (smoke)"), lambda args: run(args.quick)
    )
