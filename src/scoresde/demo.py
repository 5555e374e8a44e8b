"""``scoresde demo``: the main job end to end on built-in data, on a CPU, in about a minute.

1. Train a time-conditioned MLP on the 2-D ``moons`` set (VP SDE), sample it with the reverse
   SDE, and compare with held-out data by the sliced 2-Wasserstein distance, next to its floor
   (two independent draws of the data) and a ceiling (a Gaussian with the data's mean and
   covariance, i.e. what matching only the first two moments gives).
2. Train a small U-Net on scikit-learn's 8x8 digits (EDM SDE, preconditioning and loss), sample
   a grid with the reverse SDE, and judge the samples with
   a logistic-regression digit classifier fitted on the training images: its mean confidence on
   samples against held-out test images and a moment-matched Gaussian, and how evenly the
   samples cover the ten classes.

Writes ``samples.png`` (data beside samples), ``trajectory.png`` (the reverse diffusion),
``loss.png`` (both loss curves), ``digits_samples.png`` and ``digits_data.png`` into the output
folder, with the two training runs (checkpoints, ``metrics.csv``) in ``moons/`` and ``digits/``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import plots
from .data import load_dataset
from .metrics import sliced_wasserstein
from .sampling import sample
from .train import TrainConfig, Trainer, read_metrics

__all__ = ["DemoResult", "run_demo", "demo_threads", "classifier_report", "ClassifierReport"]


@dataclass
class ClassifierReport:
    """How a digit classifier sees a set of images."""

    confidence: float
    """Mean probability of the predicted class."""
    class_tv: float
    """Total variation between the predicted-class histogram and the uniform distribution."""


@dataclass
class DemoResult:
    """The demo's quality figures, timings and files."""

    toy_sw2: float
    """Sliced W2 between model samples and held-out moons."""
    toy_sw2_floor: float
    """Sliced W2 between two independent draws of the data (the best achievable)."""
    toy_sw2_gaussian: float
    """Sliced W2 of a moment-matched Gaussian (what learning only mean/covariance gives)."""
    digits_samples: ClassifierReport
    """Classifier figures on the U-Net's samples."""
    digits_test: ClassifierReport
    """Classifier figures on held-out test digits (the target)."""
    digits_gaussian: ClassifierReport
    """Classifier figures on a moment-matched Gaussian (the baseline)."""
    seconds: float
    """Wall time of the whole demo."""
    files: dict[str, Path] = field(default_factory=dict)
    """The PNGs written."""


def _fresh_run_dir(path: Path) -> None:
    """Remove a previous demo run in ``path`` (only if it is a scoresde run folder)."""
    if not path.exists():
        return
    if not (path / "config.yaml").is_file() and any(path.iterdir()):
        raise ValueError(
            f"{str(path)!r} exists and is not a scoresde run folder; choose another --out"
        )
    shutil.rmtree(path)


def _gaussian_like(x: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` draws from the Gaussian with ``x``'s mean and covariance (flattened)."""
    flat = x.reshape(x.shape[0], -1).double()
    mean = flat.mean(0)
    cov = torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1])
    lam, vec = torch.linalg.eigh(cov)
    z = torch.randn(n, flat.shape[1], generator=gen, dtype=torch.float64)
    out = mean + (z * lam.clamp_min(0).sqrt()) @ vec.T
    return out.float().reshape(n, *x.shape[1:])


def classifier_report(clf: object, images: Tensor) -> ClassifierReport:
    """Mean top-class probability and class-histogram TV of ``images`` in ``[0, 1]``."""
    feats = images.reshape(images.shape[0], -1).clamp(0, 1).double().numpy()
    proba = torch.as_tensor(clf.predict_proba(feats))  # type: ignore[attr-defined]
    hist = torch.bincount(proba.argmax(1), minlength=proba.shape[1]).double() / len(proba)
    tv = 0.5 * float((hist - 1.0 / proba.shape[1]).abs().sum())
    return ClassifierReport(confidence=float(proba.max(1).values.mean()), class_tv=tv)


def _train(cfg: TrainConfig) -> Trainer:
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer


def _sample(trainer: Trainer, n: int, steps: int, seed: int, keep: int) -> tuple[Tensor, list]:
    """Samples (data space) and ``keep`` snapshots ``(t, x)`` of the reverse diffusion."""
    gen = torch.Generator().manual_seed(seed)
    res = sample(
        trainer.ema_score_model().score_fn(),
        trainer.sde,
        (n, *trainer.info.shape),
        sampler="euler_maruyama",
        steps=steps,
        generator=gen,
        return_trajectory=True,
    )
    traj, times = res.trajectory, res.times
    picks = torch.linspace(0, traj.shape[0] - 1, keep).round().long().tolist()
    to_data = (lambda x: ((x + 1) / 2).clamp(0, 1)) if trainer.info.levels else (lambda x: x)
    snaps = [(float(times[min(i, len(times) - 1)]), to_data(traj[i])) for i in picks]
    return to_data(res.samples), snaps


def demo_threads() -> int:
    """Threads for the demo: the idle cores (at least 1, at most 2).

    Small networks gain little from more threads, and on a busy machine extra OpenMP threads
    wait on each other and can make a step many times slower.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - platforms without getloadavg
        busy = 0.0
    return max(1, min(2, cores - int(busy + 0.5)))


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    *,
    quick: bool = False,
    seed: int = 0,
    verbose: bool = True,
) -> DemoResult:
    """Run the demo (see the module docstring) and print its quality figures.

    ``quick=True`` runs the same pipeline with a few steps (seconds; poor samples), for tests.
    Uses one or two threads (see :func:`demo_threads`).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(demo_threads())
    try:
        return _run(Path(out), quick=quick, seed=seed, verbose=verbose)
    finally:
        torch.set_num_threads(old_threads)


def _run(out: Path, *, quick: bool, seed: int, verbose: bool) -> DemoResult:
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    scale = 0.02 if quick else 1.0

    # ---------------------------------------------------------------- 2-D toy set
    _fresh_run_dir(out / "moons")
    toy_cfg = TrainConfig(
        data="moons", out=str(out / "moons"), data_kwargs={"n": 20000, "seed": seed},
        sde="vp", steps=max(20, int(1500 * scale)), batch_size=256, lr=2e-3, warmup_steps=100,
        ema_decay=0.995, model_kwargs={"hidden": 128, "depth": 3}, log_every=25,
        ckpt_every=100000, sample_n=0, tensorboard=False, seed=seed, device="cpu",
        progress=verbose,
    )  # fmt: skip
    say("[1/2] moons: MLP, VP SDE")
    toy = _train(toy_cfg)
    n_toy = 500 if quick else 2000
    steps_toy = 20 if quick else 200
    toy_x, toy_snaps = _sample(toy, n_toy, steps_toy, seed + 1, keep=6)
    held = load_dataset("moons", split="test", n=2 * n_toy, seed=seed).tensors()
    gen = torch.Generator().manual_seed(seed + 2)
    proj = torch.Generator().manual_seed(seed + 3)
    sw = sliced_wasserstein(toy_x, held[:n_toy], generator=proj)
    proj = torch.Generator().manual_seed(seed + 3)
    floor = sliced_wasserstein(held[n_toy:], held[:n_toy], generator=proj)
    proj = torch.Generator().manual_seed(seed + 3)
    gauss = sliced_wasserstein(
        _gaussian_like(held[n_toy:], n_toy, gen), held[:n_toy], generator=proj
    )
    files = {
        "samples": plots.scatter_compare(
            held[:n_toy], toy_x, out / "samples.png", titles=("held-out data", "model samples"),
            suptitle=f"moons: sliced W2 {sw:.3f} (floor {floor:.3f}, Gaussian {gauss:.3f})"),
        "trajectory": plots.trajectory_plot(
            [x for _, x in toy_snaps], [t for t, _ in toy_snaps], out / "trajectory.png",
            title="reverse diffusion (VP SDE, Euler-Maruyama), moons"),
    }  # fmt: skip

    # ---------------------------------------------------------------- 8x8 digits
    _fresh_run_dir(out / "digits")
    dig_cfg = TrainConfig(
        data="digits", out=str(out / "digits"), sde="edm", model="unet",
        model_kwargs={"channels": 16, "num_res_blocks": 1}, steps=max(10, int(1200 * scale)),
        batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995, log_every=25,
        ckpt_every=100000, sample_n=0, tensorboard=False, seed=seed, device="cpu",
        progress=verbose,
    )  # fmt: skip
    say("[2/2] digits 8x8: U-Net, EDM SDE and preconditioning")
    dig = _train(dig_cfg)
    n_dig = 64 if quick else 256
    dig_x, dig_snaps = _sample(dig, n_dig, 20 if quick else 150, seed + 4, keep=6)
    train_img = load_dataset("digits", split="train")
    test_img = ((load_dataset("digits", split="test").tensors() + 1) / 2).clamp(0, 1)
    train01 = (train_img.tensors() + 1) / 2
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(train01.reshape(len(train01), -1).double().numpy(), train_img.labels.numpy())  # type: ignore[union-attr]
    rep_s = classifier_report(clf, dig_x)
    rep_t = classifier_report(clf, test_img)
    rep_g = classifier_report(clf, _gaussian_like(train01, n_dig, gen))
    files["digits_samples"] = plots.image_grid(
        dig_x[:64],
        out / "digits_samples.png",
        nrow=8,
        title=f"U-Net samples (classifier confidence {rep_s.confidence:.2f})",
    )
    files["digits_data"] = plots.image_grid(
        test_img[:64], out / "digits_data.png", nrow=8, title="held-out digits"
    )
    files["digits_trajectory"] = plots.trajectory_plot(
        [x for _, x in dig_snaps],
        [t for t, _ in dig_snaps],
        out / "digits_trajectory.png",
        title="reverse diffusion, digits",
    )
    curves = {}
    for name, trainer in (("moons (MLP)", toy), ("digits (U-Net)", dig)):
        rows = read_metrics(trainer.out / "metrics.csv")
        curves[name] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    files["loss"] = plots.loss_curve(curves, out / "loss.png")

    result = DemoResult(sw, floor, gauss, rep_s, rep_t, rep_g, time.perf_counter() - start, files)
    say("")
    say(
        f"moons  sliced W2 to held-out data: {sw:.4f}   (data-vs-data floor {floor:.4f}, "
        f"moment-matched Gaussian {gauss:.4f}; lower is better)"
    )
    say(
        f"digits classifier confidence: samples {rep_s.confidence:.3f}, test digits "
        f"{rep_t.confidence:.3f}, Gaussian {rep_g.confidence:.3f} (higher is better); class "
        f"coverage TV from uniform: samples {rep_s.class_tv:.3f}, test {rep_t.class_tv:.3f}"
    )
    say(f"wrote {', '.join(str(p) for p in files.values())}")
    say(f"demo finished in {result.seconds:.0f} s ({torch.get_num_threads()} thread(s))")
    if not math.isfinite(sw):
        raise RuntimeError("the demo produced non-finite samples")
    return result
