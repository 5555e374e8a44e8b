"""``scoresde demo``: the main job end to end on built-in data, on a CPU, in about a minute.

Score-based generative modelling through SDEs (Song et al. 2021) in two runs:

1. Train a time-conditioned MLP on the 2-D ``moons`` set (VP SDE, eq. 11) by denoising score
   matching (eq. 7), sample it with the reverse SDE (eq. 6, Euler-Maruyama), and compare with
   held-out data by the sliced 2-Wasserstein distance, next to its floor (two independent draws
   of the data) and a ceiling (a Gaussian with the data's mean and covariance, i.e. what
   matching only the first two moments gives).
2. Train a small U-Net on scikit-learn's 8x8 digits (the EDM SDE, preconditioning and loss of
   Karras et al. 2022), sample a grid with the reverse SDE, and judge the samples with a
   logistic-regression digit classifier fitted on the training images: its mean confidence on
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
from typing import Any

import torch
from torch import Tensor

from . import plots
from .data import load_dataset
from .metrics import sliced_wasserstein
from .sampling import sample
from .train import TrainConfig, Trainer, read_metrics, to_data_space

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
    info = {"levels": trainer.info.levels}
    snaps = [(float(times[min(i, len(times) - 1)]), to_data_space(traj[i], info)) for i in picks]
    return to_data_space(res.samples, info), snaps


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


@dataclass
class _Moons:
    """The moons run and its figures."""

    trainer: Trainer
    sw: float
    floor: float
    gauss: float
    files: dict[str, Path]


@dataclass
class _Digits:
    """The digits run and its classifier reports (samples, test digits, Gaussian)."""

    trainer: Trainer
    samples: ClassifierReport
    test: ClassifierReport
    gaussian: ClassifierReport
    files: dict[str, Path]


def _config(out: Path, data: str, seed: int, verbose: bool, **fields: Any) -> TrainConfig:
    """The demo's training settings for ``data`` (no checkpoints until the end, no TensorBoard)."""
    _fresh_run_dir(out / data)
    return TrainConfig(
        data=data, out=str(out / data), lr=2e-3, warmup_steps=100, ema_decay=0.995,
        log_every=25, ckpt_every=100000, sample_n=0, tensorboard=False, seed=seed, device="cpu",
        progress=verbose, **fields,
    )  # fmt: skip


def _moons(out: Path, quick: bool, seed: int, verbose: bool, gen: torch.Generator) -> _Moons:
    """Train and sample the MLP on moons; sliced W2 to held-out data, its floor and ceiling."""
    cfg = _config(
        out, "moons", seed, verbose, data_kwargs={"n": 20000, "seed": seed}, sde="vp",
        steps=30 if quick else 1500, batch_size=256, model_kwargs={"hidden": 128, "depth": 3},
    )  # fmt: skip
    toy = _train(cfg)
    n = 500 if quick else 2000
    x, snaps = _sample(toy, n, 20 if quick else 200, seed + 1, keep=6)
    held = load_dataset("moons", split="test", n=2 * n, seed=seed).tensors()

    def sw2(a: Tensor) -> float:
        return sliced_wasserstein(a, held[:n], generator=torch.Generator().manual_seed(seed + 3))

    sw, floor, gauss = sw2(x), sw2(held[n:]), sw2(_gaussian_like(held[n:], n, gen))
    files = {
        "samples": plots.scatter_compare(
            held[:n], x, out / "samples.png", titles=("held-out data", "model samples"),
            suptitle=f"moons: sliced W2 {sw:.3f} (floor {floor:.3f}, Gaussian {gauss:.3f})"),
        "trajectory": plots.trajectory_plot(
            [s for _, s in snaps], [t for t, _ in snaps], out / "trajectory.png",
            title="reverse diffusion (VP SDE, Euler-Maruyama), moons"),
    }  # fmt: skip
    return _Moons(toy, sw, floor, gauss, files)


def _digits(out: Path, quick: bool, seed: int, verbose: bool, gen: torch.Generator) -> _Digits:
    """Train and sample the U-Net on 8x8 digits; a digit classifier's view of the samples."""
    from sklearn.linear_model import LogisticRegression

    cfg = _config(
        out, "digits", seed, verbose, sde="edm", model="unet", batch_size=64,
        model_kwargs={"channels": 16, "num_res_blocks": 1}, steps=24 if quick else 1200,
    )  # fmt: skip
    dig = _train(cfg)
    n = 64 if quick else 256
    x, snaps = _sample(dig, n, 20 if quick else 150, seed + 4, keep=6)
    train_img = load_dataset("digits", split="train")
    levels = {"levels": train_img.info.levels}
    test01 = to_data_space(load_dataset("digits", split="test").tensors(), levels)
    train01 = to_data_space(train_img.tensors(), levels)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(train01.reshape(len(train01), -1).double().numpy(), train_img.labels.numpy())  # type: ignore[union-attr]
    rep_s, rep_t, rep_g = (
        classifier_report(clf, im) for im in (x, test01, _gaussian_like(train01, n, gen))
    )
    title = f"U-Net samples (classifier confidence {rep_s.confidence:.2f})"
    files = {
        "digits_samples": plots.image_grid(x[:64], out / "digits_samples.png", nrow=8, title=title),
        "digits_data": plots.image_grid(
            test01[:64], out / "digits_data.png", nrow=8, title="held-out digits"),
        "digits_trajectory": plots.trajectory_plot(
            [s for _, s in snaps], [t for t, _ in snaps], out / "digits_trajectory.png",
            title="reverse diffusion, digits"),
    }  # fmt: skip
    return _Digits(dig, rep_s, rep_t, rep_g, files)


def _loss_plot(out: Path, runs: dict[str, Trainer]) -> Path:
    """Both training loss curves in one plot."""
    curves = {}
    for name, trainer in runs.items():
        rows = read_metrics(trainer.out / "metrics.csv")
        curves[name] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    return plots.loss_curve(curves, out / "loss.png")


def _summary(result: DemoResult) -> str:
    """The demo's figures as printed lines."""
    rep_s, rep_t, rep_g = result.digits_samples, result.digits_test, result.digits_gaussian
    return (
        f"moons  sliced W2 to held-out data: {result.toy_sw2:.4f}   (data-vs-data floor "
        f"{result.toy_sw2_floor:.4f}, moment-matched Gaussian {result.toy_sw2_gaussian:.4f}; "
        f"lower is better)\n"
        f"digits classifier confidence: samples {rep_s.confidence:.3f}, test digits "
        f"{rep_t.confidence:.3f}, Gaussian {rep_g.confidence:.3f} (higher is better); class "
        f"coverage TV from uniform: samples {rep_s.class_tv:.3f}, test {rep_t.class_tv:.3f}\n"
        f"wrote {', '.join(str(p) for p in result.files.values())}"
    )


def _run(out: Path, *, quick: bool, seed: int, verbose: bool) -> DemoResult:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    gen = torch.Generator().manual_seed(seed + 2)  # the moment-matched Gaussians
    say("[1/2] moons: MLP, VP SDE")
    toy = _moons(out, quick, seed, verbose, gen)
    say("[2/2] digits 8x8: U-Net, EDM SDE and preconditioning")
    dig = _digits(out, quick, seed, verbose, gen)
    files = {**toy.files, **dig.files}
    files["loss"] = _loss_plot(out, {"moons (MLP)": toy.trainer, "digits (U-Net)": dig.trainer})
    result = DemoResult(
        toy.sw, toy.floor, toy.gauss, dig.samples, dig.test, dig.gaussian,
        time.perf_counter() - start, files,
    )  # fmt: skip
    say("")
    say(_summary(result))
    say(f"demo finished in {result.seconds:.0f} s ({torch.get_num_threads()} thread(s))")
    if not math.isfinite(toy.sw):
        raise RuntimeError("the demo produced non-finite samples")
    return result
