"""Feature spaces for sample-quality metrics: raw coordinates, a cached classifier, Inception-v3.

The metrics of :mod:`scoresde.metrics` (Fréchet distance, precision/recall, KID) compare two
sets in a feature space:

- ``raw``: the samples' own coordinates, flattened (low-dimensional data such as the 2-D toy
  sets, where they are the natural space);
- ``classifier``: the penultimate layer of a small convolutional classifier that scoresde trains
  on a built-in image set's training split (digits, Fashion-MNIST) and caches, the way FID uses
  a classifier's features (Heusel et al. 2017) — a network that knows the data set, where an
  ImageNet network knows 8x8 digits poorly;
- ``inception``: the 2048-d pool features of the Inception-v3 port that FID and KID are defined
  with (torch-fidelity's ``inception-v3-compat``, also behind torchmetrics), read from the
  weights file already on disk (:data:`INCEPTION_WEIGHTS_FILE`): nothing is downloaded, and a
  missing file is an error that names it.

Every space maps a batch in the model's training space (``[-1, 1]`` for quantised images) to
float64 features ``(B, F)`` on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_choice
from .checkpoint import atomic_write_bytes
from .data import IMAGE_DATASETS, load_dataset

__all__ = [
    "FEATURE_KINDS",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_ENV",
    "CACHE_ENV",
    "FeatureSpace",
    "FeatureNet",
    "cache_dir",
    "raw_features",
    "classifier_features",
    "find_inception_weights",
    "check_inception",
    "inception_features",
    "feature_space",
]

FEATURE_KINDS = ("auto", "raw", "classifier", "inception")
"""The feature spaces of :func:`feature_space`."""
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
"""The Inception-v3 weights of torch-fidelity / torchmetrics (the TF FID graph, ported)."""
INCEPTION_WEIGHTS_ENV = "SCORESDE_INCEPTION_WEIGHTS"
"""Environment variable naming the Inception weights file (else torch hub's checkpoints)."""
CACHE_ENV = "SCORESDE_CACHE"
"""Environment variable naming scoresde's cache folder (default ``~/.cache/scoresde``)."""
_BATCH = 512


class FeatureSpace:
    """A named map from a batch in training space to float64 features ``(B, F)`` (CPU)."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], info: dict[str, Any]):
        self.name = name
        """``raw``, ``classifier:<data set>`` or ``inception``."""
        self.info = info
        """What describes the space (cache file, test accuracy, weights file ...)."""
        self._fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        """The features of ``x`` ``(B, ...)``, computed in batches."""
        if len(x) == 0:
            raise ValueError("no samples to compute features of")
        return torch.cat([self._fn(x[i : i + _BATCH]) for i in range(0, len(x), _BATCH)])

    def __repr__(self) -> str:
        return f"FeatureSpace({self.name!r})"


def raw_features() -> FeatureSpace:
    """The samples' coordinates, flattened, as float64."""
    return FeatureSpace("raw", lambda x: x.detach().reshape(len(x), -1).double().cpu(), {})


def cache_dir() -> Path:
    """The cache folder of scoresde: ``$SCORESDE_CACHE``, else ``$XDG_CACHE_HOME/scoresde``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scoresde"


# ------------------------------------------------------------------------------------------------
# the classifier


class FeatureNet(nn.Module):
    """A small CNN classifier whose penultimate layer gives the features (3 convolutions).

    ``conv3x3(C, w)``, ``conv3x3(w, 2w, stride 2)``, ``conv3x3(2w, 4w, stride 2)`` with SiLU,
    global average pooling, ``Linear(4w, features)`` + SiLU (the features), then the
    ``Linear(features, classes)`` head.
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32, features: int = 128):
        super().__init__()
        self.config = {"channels": channels, "num_classes": num_classes, "width": width,
                       "features": features}  # fmt: skip
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, features), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate-layer features ``(B, features)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.body(x))


_TRAINING = {"version": 1, "epochs": 3, "min_steps": 800, "batch_size": 128, "lr": 3e-3,
             "seed": 0, "dequantize": True}  # fmt: skip
"""How the feature classifier is trained (part of its cache key)."""


def _cache_key(name: str, data: Tensor, labels: Tensor, net: FeatureNet) -> str:
    h = hashlib.sha256(json.dumps([name, _TRAINING, net.config], sort_keys=True).encode())
    h.update(data.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _fit(net: FeatureNet, ds: Any, device: torch.device, progress: bool) -> None:
    """Train ``net`` on ``ds`` (Adam, cross-entropy, dequantised batches; fixed seed)."""
    cfg = _TRAINING
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    n, batch = len(ds), int(cfg["batch_size"])
    steps = int(max(cfg["min_steps"], cfg["epochs"] * n // batch))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="feature classifier", unit="step", leave=False)
    net.train()
    ds.dequantize = bool(cfg["dequantize"] and ds.info.levels is not None)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x, y = ds.get_batch(idx, gen)
        loss = nn.functional.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    net.eval()


@torch.no_grad()
def _accuracy(net: FeatureNet, x: Tensor, y: Tensor, device: torch.device) -> float:
    hits = sum(
        int((net(x[i : i + _BATCH].to(device)).argmax(1).cpu() == y[i : i + _BATCH]).sum())
        for i in range(0, len(x), _BATCH)
    )
    return hits / len(x)


def _train_and_cache(name: str, path: Path, net: FeatureNet, ds: Any, device: torch.device,
                     progress: bool) -> float:  # fmt: skip
    """Train the classifier, measure its test accuracy, write it to ``path``; the accuracy."""
    from safetensors.torch import save

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TRAINING["seed"])
        for p in net.parameters():  # a fixed initialisation, whatever the global RNG held
            if p.dim() > 1:
                nn.init.kaiming_uniform_(p, a=5**0.5)
            else:
                nn.init.zeros_(p)
    _fit(net.to(device), ds, device, progress)
    test = load_dataset(name, split="test")
    acc = _accuracy(net, test.tensors(), test.labels, device)  # type: ignore[arg-type]
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"data": name, "test_accuracy": repr(acc), "config": json.dumps(net.config)}
    atomic_write_bytes(path, save(state, metadata=meta))
    return acc


def classifier_features(
    name: str,
    *,
    device: torch.device | str = "cpu",
    cache: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> FeatureSpace:
    """Features of a classifier trained on the training split of the image set ``name``.

    Trained once (a fixed seed; a minute or two on a CPU for Fashion-MNIST) and cached under
    ``cache`` (default :func:`cache_dir`) ``/features/<name>-<key>.safetensors``, the key a hash
    of the training data and recipe; later calls load it. ``info["test_accuracy"]`` is its
    accuracy on the test split.

    Args:
        name: a built-in labelled image set (``digits``, ``fashion-mnist``).
        device: where to train and run the classifier.
        cache: the cache folder.
        progress: show a progress bar while training.
    """
    from safetensors import safe_open

    check_choice("data set for classifier features", name, IMAGE_DATASETS)
    dev = torch.device(device)
    ds = load_dataset(name, split="train")
    if ds.labels is None or ds.info.num_classes is None:
        raise ValueError(f"classifier features need a labelled data set; {name!r} has no labels")
    net = FeatureNet(ds.info.shape[0], ds.info.num_classes)
    root = Path(cache) if cache is not None else cache_dir()
    path = root / "features" / f"{name}-{_cache_key(name, ds.data, ds.labels, net)}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            net.load_state_dict({k: fh.get_tensor(k) for k in fh.keys()})
            acc = float((fh.metadata() or {})["test_accuracy"])
        net.to(dev).eval()
    else:
        acc = _train_and_cache(name, path, net, ds, dev, progress)

    @torch.no_grad()
    def fn(x: Tensor) -> Tensor:
        return net.features(x.to(dev, torch.float32).clamp(-1, 1)).double().cpu()

    return FeatureSpace(f"classifier:{name}", fn, {"cache": str(path), "test_accuracy": acc})


# ------------------------------------------------------------------------------------------------
# Inception-v3


def find_inception_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """The Inception-v3 weights file on disk; ``FileNotFoundError`` naming it when absent.

    Looks at ``path``, then ``$SCORESDE_INCEPTION_WEIGHTS``, then torch hub's checkpoint folder
    (where torch-fidelity and torchmetrics keep :data:`INCEPTION_WEIGHTS_FILE`). Nothing is
    downloaded.
    """
    places = [Path(p).expanduser() for p in (path, os.environ.get(INCEPTION_WEIGHTS_ENV)) if p]
    places.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE)
    for p in places:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"FID/KID need the Inception-v3 weights file {INCEPTION_WEIGHTS_FILE} (torch-fidelity's "
        f"port of the TensorFlow FID network), and it is not on this machine: looked at "
        f"{', '.join(map(str, places))}. scoresde downloads nothing: copy the file to one of "
        f"those places (or pass its path / set ${INCEPTION_WEIGHTS_ENV}), or leave out FID/KID"
    )


def _inception_class() -> Any:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (directly or as torchmetrics wraps it)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3 as FeatureExtractorInceptionV3
        except ImportError:
            raise ImportError(
                "FID/KID need torch-fidelity or torchmetrics for the Inception-v3 network: "
                "pip install torch-fidelity (or torchmetrics[image])"
            ) from None
    return FeatureExtractorInceptionV3


def check_inception(weights: str | os.PathLike[str] | None = None) -> Path:
    """Check that FID/KID can run here (weights on disk, a package for the network); the file.

    Raises ``FileNotFoundError`` naming the weights file, or ``ImportError`` naming the package
    (before a long run, not after it).
    """
    path = find_inception_weights(weights)
    _inception_class()
    return path


def inception_features(
    weights: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> FeatureSpace:
    """Inception-v3 pool features (2048-d), the space of FID and KID.

    Images ``(B, C, H, W)`` in ``data_range`` are mapped to ``uint8`` ``[0, 255]`` RGB (grey
    images repeated over three channels) and resized to 299x299 inside the network, as
    torch-fidelity does.

    Args:
        weights: the weights file (default: :func:`find_inception_weights`'s search).
        device: where to run the network.
        data_range: the range of the images given.
    """
    path = check_inception(weights)
    net = _inception_class()(
        "inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    )
    net = net.to(device).eval()
    lo, hi = data_range

    @torch.no_grad()
    def fn(x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need images (B, 1|3, H, W), got {tuple(x.shape)}")
        u8 = ((x.float() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
        out = net(u8.expand(-1, 3, -1, -1).to(device))
        return (out[0] if isinstance(out, (tuple, list)) else out).double().cpu()

    return FeatureSpace("inception", fn, {"weights": str(path)})


def feature_space(
    kind: str,
    data: str | None,
    *,
    is_image: bool,
    device: torch.device | str = "cpu",
    inception_weights: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> FeatureSpace:
    """The feature space ``kind`` for samples of the data set ``data``.

    ``"auto"``: the cached classifier for the built-in image sets (digits, Fashion-MNIST), raw
    coordinates for everything else.
    """
    check_choice("features", kind, FEATURE_KINDS)
    if kind == "auto":
        kind = "classifier" if data in IMAGE_DATASETS else "raw"
    if kind == "raw":
        return raw_features()
    if kind == "classifier":
        if data not in IMAGE_DATASETS:
            raise ValueError(
                f"classifier features exist for {list(IMAGE_DATASETS)}, not {data!r}; use "
                f"raw or inception features"
            )
        return classifier_features(data, device=device, progress=progress)
    if not is_image:
        raise ValueError("inception features need image data (C, H, W)")
    return inception_features(inception_weights, device=device)
