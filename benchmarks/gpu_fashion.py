"""Part ``fashion`` of ``benchmarks/gpu.py``: a timed Fashion-MNIST run and its sample quality.

Trains the U-Net on Fashion-MNIST for ``--minutes`` with the Trainer, then measures test-set
bits/dim (dequantised), writes an 8x8 sample grid PNG, and scores the ``fast`` sampler at NFE
10/20/50 against 1000-step Euler-Maruyama: squared Frechet distance (as in FID, Heusel et al.
2017) in the penultimate features of a small CNN classifier trained here, and its mean confidence.

Run: ``python benchmarks/gpu_fashion.py [gpu.py options]`` (``gpu.py --part fashion``).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scoresde
from gpu_common import Part, Sizes, attempt, n_params, sync
from scoresde.metrics import frechet_distance
from scoresde.parameterize import ScoreModel
from scoresde.train import TrainConfig, Trainer
from scoresde.train.build import to_data_space


class SmallCNN(nn.Module):
    """A small CNN classifier for 28x28x1 images; its 128-d penultimate layer is the feature."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, 128)`` of images in ``[0, 1]``."""
        return self.body(x * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)``."""
        return self.head(self.features(x))


@dataclass
class Classifier:
    """The feature network and its test accuracy."""

    net: SmallCNN
    test_accuracy: float
    seconds: float


@dataclass
class Quality:
    """Sample quality of one sampler setting."""

    sampler: str
    steps: int
    nfe: int
    n: int
    seconds: float
    frechet: float
    """Squared Frechet distance to the test set in the classifier's feature space."""
    confidence: float
    """Mean max-softmax probability of the classifier on the samples."""


@dataclass
class FashionRun:
    """The training run and what was measured on it."""

    minutes: float
    steps: int
    batch: int
    train_seconds: float
    images_per_s: float
    params_m: float
    compiled: bool
    loss_history: list[tuple[int, float]]
    classifier_accuracy: float
    reference_frechet: float
    """Frechet distance of as many *training* images as samples to the test set (the floor)."""
    reference_confidence: float


def load_fashion(sizes: Sizes, data_dir: str | None) -> tuple[Any, Any]:
    """Train (dequantised on access) and test splits of Fashion-MNIST."""
    from scoresde.data import load_dataset

    train = load_dataset(
        "fashion-mnist", split="train", root=data_dir, n=sizes.fashion_n, dequantize=True
    )
    test = load_dataset("fashion-mnist", split="test", root=data_dir)
    return train, test


def pixels01(ds: Any) -> Tensor:
    """Images of a quantised data set in ``[0, 1]`` (float)."""
    return ds.data.float() / (ds.info.levels - 1)


def train_classifier(sizes: Sizes, train: Any, test: Any, device: torch.device) -> Classifier:
    """Adam on the training images for ``clf_epochs`` epochs; accuracy on the test set."""
    start = time.perf_counter()
    torch.manual_seed(0)
    x, y = pixels01(train).to(device), train.labels.to(device)
    if sizes.clf_n is not None:
        x, y = x[: sizes.clf_n], y[: sizes.clf_n]
    clf = SmallCNN().to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(sizes.clf_epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).to(device).split(256):
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    xt, yt = pixels01(test).to(device), test.labels.to(device)
    with torch.no_grad():
        pred = torch.cat([clf(b).argmax(1) for b in xt.split(1000)])
    acc = float((pred == yt).float().mean())
    return Classifier(clf, acc, time.perf_counter() - start)


@torch.no_grad()
def feature_stats(clf: SmallCNN, x01: Tensor) -> tuple[Tensor, Tensor, float]:
    """Mean and covariance (float64) of the classifier features, and its mean confidence."""
    feats, conf = [], []
    for batch in x01.split(1000):
        f = clf.features(batch)
        feats.append(f.double())
        conf.append(clf.head(f).softmax(1).amax(1))
    f = torch.cat(feats)
    return f.mean(0), torch.cov(f.T), float(torch.cat(conf).mean())


def fashion_trainer(
    sizes: Sizes, device: torch.device, train: Any, out: Path, compiled: bool, minutes: float
) -> Trainer:
    """The Trainer for the run: 35.7M U-Net, bf16, channels-last, fused AdamW, EMA 0.999,
    stopped by its own ``max_minutes`` budget (compilation included)."""
    cfg = TrainConfig(
        out=str(out), model="unet_cifar", model_kwargs=dict(sizes.net),
        steps=sizes.fashion_max_steps or 10**9, max_minutes=minutes,
        batch_size=sizes.fashion_batch, optimizer="adamw", lr=2e-4, warmup_steps=200,
        precision="bf16", compile=compiled, channels_last=True, device=str(device),
        log_every=200, ckpt_every=10**9, keep_last=1, sample_n=0, progress=False,
        tensorboard=False,
    )  # fmt: skip
    return Trainer(cfg, train)


def train_for(trainer: Trainer) -> tuple[float, list]:
    """``Trainer.fit`` until its step or time budget; wall seconds and the loss history."""
    result = trainer.fit()
    return result.seconds, result.history


def draw(
    model: ScoreModel, sizes: Sizes, device: torch.device, sampler: str, steps: int
) -> tuple[Tensor, int, float]:
    """``quality_n`` samples in ``[0, 1]``, their NFE and seconds."""
    gen = torch.Generator(device=device).manual_seed(7)
    sync(device)
    start = time.perf_counter()
    res = scoresde.sample(
        model.score_fn(), model.sde, (sizes.quality_n, 1, 28, 28), sampler=sampler,
        steps=steps, generator=gen, device=device, dtype=torch.float32, return_info=True,
        precision="bf16" if device.type == "cuda" else "fp32",
    )  # fmt: skip
    sync(device)
    seconds = time.perf_counter() - start
    return to_data_space(res.samples, {"levels": 256}), res.nfe, seconds


def quality(
    model: ScoreModel, clf: SmallCNN, test_stats: tuple, sizes: Sizes, device: torch.device,
    sampler: str, steps: int,
) -> tuple[Quality, Tensor]:  # fmt: skip
    """Frechet distance and confidence of one sampler setting; also returns the samples."""
    x, nfe, seconds = draw(model, sizes, device, sampler, steps)
    mu, cov, conf = feature_stats(clf, x)
    fd = frechet_distance(mu, cov, test_stats[0], test_stats[1])
    return Quality(sampler, steps, nfe, x.shape[0], seconds, fd, conf), x


@dataclass
class BitsPerDim:
    """Test-set bits/dim of the trained model (dequantised, [-1, 1] data space)."""

    n: int
    mean: float
    sem: float
    nfe_mean: float
    seconds: float


def test_bpd(model: ScoreModel, test: Any, sizes: Sizes, device: torch.device) -> BitsPerDim:
    """``log_likelihood`` (Hutchinson) of ``bpd_n`` dequantised test images, fp32."""
    gen = torch.Generator().manual_seed(3)
    x = scoresde.dequantize(test.data[: sizes.bpd_n], data_range=(-1, 1), generator=gen)
    x = x.to(device)
    sync(device)
    start = time.perf_counter()
    res = scoresde.log_likelihood(
        model.score_fn(), model.sde, x, generator=torch.Generator(device=device).manual_seed(0),
        batch_size=256,
    )  # fmt: skip
    sync(device)
    bpd = scoresde.bits_per_dim(res.log_prob, x.shape, data_range=(-1, 1)).double()
    sem = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else math.nan
    return BitsPerDim(
        len(bpd), float(bpd.mean()), sem, float(res.nfe.double().mean()),
        time.perf_counter() - start,
    )  # fmt: skip


def write_grid(x01: Tensor, path: Path, title: str) -> str:
    """An 8x8 grid PNG through :mod:`scoresde.plots` (matplotlib), or why it was skipped."""
    try:
        from scoresde import plots

        plots.image_grid(x01[:64].cpu(), path, nrow=8, title=title)
    except ImportError as err:
        return f"grid skipped: {err}"
    return str(path)


def part_fashion(
    sizes: Sizes, device: torch.device, minutes: float, data_dir: str | None, out: Path,
    part: Part,
) -> dict[str, Any]:  # fmt: skip
    """Part 4: classifier, timed training run, then quality of ``fast`` (and the grid),
    bits/dim, and last the 1000-step Euler-Maruyama reference (the slowest)."""
    try:
        train, test = load_fashion(sizes, data_dir)
    except FileNotFoundError as err:
        part.result["skipped"] = f"Fashion-MNIST files not found: {err}"
        return part.result
    clf = train_classifier(sizes, train, test, device)
    test_stats = feature_stats(clf.net, pixels01(test).to(device))
    ref = pixels01(train)[torch.randperm(len(train), generator=torch.Generator().manual_seed(5))]
    ref_mu, ref_cov, ref_conf = feature_stats(clf.net, ref[: sizes.quality_n].to(device))
    ref_fd = frechet_distance(ref_mu, ref_cov, test_stats[0], test_stats[1])
    compiled = True in sizes.compile_cases
    with tempfile.TemporaryDirectory() as tmp:
        trainer = fashion_trainer(sizes, device, train, Path(tmp) / "run", compiled, minutes)
        seconds, history = train_for(trainer)
    part.result["run"] = FashionRun(
        minutes, trainer.step, trainer.local_batch, seconds,
        trainer.step * trainer.local_batch / seconds,
        n_params(trainer.net), compiled, history, clf.test_accuracy, ref_fd, ref_conf,
    )  # fmt: skip
    part.save()
    model = trainer.ema_score_model()
    measure = partial(quality, model, clf.net, test_stats, sizes, device)

    def fast(steps: int) -> Quality:
        got, x = measure("fast", steps)
        if steps == max(sizes.quality_steps):
            path = out / "fashion_grid.png"
            part.result["grid"] = write_grid(x, path, f"fast sampler, {got.nfe} NFE")
        return got

    for steps in sizes.quality_steps:
        part.measure(f"quality fast steps={steps}", partial(fast, steps))
    part.result["bpd"] = attempt("test bits/dim", lambda: test_bpd(model, test, sizes, device))
    part.save()
    part.measure("quality euler_maruyama", lambda: measure("euler_maruyama", sizes.em_steps)[0])
    return part.result


if __name__ == "__main__":
    import gpu

    gpu.main(["--part", "fashion", *sys.argv[1:]])
