"""Data loading: toy sets, digits, Fashion-MNIST IDX files, image folders, arrays, errors."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.data import (
    DATASETS,
    TOY_DATASETS,
    ArrayDataset,
    load_dataset,
    read_idx,
    scale_quantized,
    toy_data,
    toy_mixture,
)
from scoresde.data.sources import FASHION_MNIST_DIR
from scoresde.metrics import mode_report


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_reproducible_and_of_unit_scale(name: str) -> None:
    x, y = toy_data(name, 4000, seed=3, return_labels=True)  # type: ignore[misc]
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy_data(name, 4000, seed=3))  # type: ignore[arg-type]
    assert not torch.equal(x, toy_data(name, 4000, seed=4))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(3)
    assert torch.equal(x, toy_data(name, 4000, g))  # type: ignore[arg-type]
    assert 0.6 < float(x.std(0).min()) and float(x.std(0).max()) < 1.7
    assert float(x.mean(0).abs().max()) < 0.5
    if y is not None:
        counts = torch.bincount(y)
        assert len(counts) >= 2 and int(counts.min()) > 0


def test_eight_gaussians_follow_their_mixture() -> None:
    gm = toy_mixture()
    x = toy_data("8gaussians", 8000, seed=0)
    rep = mode_report(gm, x.double())  # type: ignore[arg-type]
    # 8 equal modes, n = 8000: each mass has sd 0.0037, so the expected TV is about 0.012
    assert rep.tv < 0.03
    assert rep.frechet_weighted < 0.01


def test_toy_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'moons'"):
        toy_data("moon", 10)
    with pytest.raises(ValueError, match="positive"):
        toy_data("moons", 0)


def test_digits() -> None:
    ds = load_dataset("digits")
    info = ds.info
    assert (len(ds), info.shape, info.levels, info.num_classes) == (1500, (1, 8, 8), 17, 10)
    assert info.is_image and info.data_range == (-1.0, 1.0)
    x = ds.tensors()
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert len(load_dataset("digits", split="test")) == 297
    assert len(load_dataset("digits", split="all")) == 1797
    item, label = ds[5]
    assert item.shape == (1, 8, 8) and label.dtype == torch.long and 0 <= int(label) < 10
    # values are the 17 grey levels mapped onto [-1, 1]
    levels = torch.unique(x)
    torch.testing.assert_close(levels, torch.linspace(-1, 1, 17)[: len(levels)], atol=1e-6, rtol=0)


def test_dequantization_covers_each_bin_uniformly() -> None:
    k = torch.full((20000,), 3, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    x = scale_quantized(k, 17, dequantize=True, generator=g)
    lo, hi = 2 * 3 / 17 - 1, 2 * 4 / 17 - 1
    assert float(x.min()) >= lo and float(x.max()) < hi
    # uniform on [lo, hi): mean and variance within 5 standard errors
    width = hi - lo
    assert abs(float(x.mean()) - (lo + hi) / 2) < 5 * width / math.sqrt(12 * 20000)
    assert abs(float(x.var()) / (width**2 / 12) - 1) < 0.05


def test_flip_and_get_batch_with_generator() -> None:
    data = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 1, 3, 4).repeat(500, 1, 1, 1)
    from scoresde.data.dataset import make_info

    info = make_info("grid", data, None, levels=256)
    ds = ArrayDataset(data, None, info, random_flip=True)
    g = torch.Generator().manual_seed(0)
    x, y = ds.get_batch(torch.arange(1000), g)
    assert y is None
    plain = ds.tensors()
    flipped = (x == plain.flip(-1)).flatten(1).all(1)
    same = (x == plain).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert abs(float(flipped.double().mean()) - 0.5) < 5 * 0.5 / math.sqrt(1000)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(ds.get_batch(torch.arange(1000), g2)[0], x)
    with pytest.raises(ValueError, match="random_flip needs images"):
        load_dataset("moons", n=10, random_flip=True)
    with pytest.raises(ValueError, match="dequantize needs quantised"):
        load_dataset("moons", n=10, dequantize=True)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = load_dataset("fashion-mnist", split="test", root=tmp_path)
    assert ds.info.shape == (1, 28, 28) and len(ds) == 7 and ds.info.levels == 256
    assert np.array_equal(ds.data[:, 0].numpy(), images)
    assert ds.labels is not None and np.array_equal(ds.labels.numpy(), labels)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", split="train", root=tmp_path)
    # a truncated file is refused
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_installed_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist", split="test", n=100)
    assert ds.info.shape == (1, 28, 28) and ds.info.num_classes == 10 and len(ds) == 100


def save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
    save_png(tmp_path / "cats" / "a.png", grey)
    save_png(tmp_path / "dogs" / "b.PNG", grey[::-1].copy())
    save_png(tmp_path / "dogs" / "c.png", grey[:, ::-1].copy())
    ds = load_dataset(tmp_path)
    assert ds.info.shape == (1, 6, 5) and ds.info.num_classes == 2
    assert ds.labels is not None and ds.labels.tolist() == [0, 1, 1]
    assert np.array_equal(ds.data[0, 0].numpy(), grey)
    # one colour image makes them all RGB
    save_png(tmp_path / "dogs" / "d.png", rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8))
    assert load_dataset(tmp_path).info.shape == (3, 6, 5)
    # mixed sizes: a clear error, and resize as the fix
    save_png(tmp_path / "dogs" / "e.png", rng.integers(0, 256, size=(7, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="different sizes.*resize"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, resize=4).info.shape == (3, 4, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        load_dataset(empty)
    (empty / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_dataset(empty)


def test_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "flat.npy", flat)
    ds = load_dataset(tmp_path / "flat.npy")
    assert ds.info.shape == (3,) and not ds.info.is_image and ds.info.levels is None
    assert np.array_equal(ds.tensors().numpy(), flat)
    nhwc = rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=nhwc, labels=np.array([0, 1, 2, 1]))
    ds = load_dataset(tmp_path / "imgs.npz")
    assert ds.info.shape == (3, 6, 6) and ds.info.num_classes == 3 and ds.info.levels == 256
    assert np.array_equal(ds.data.numpy(), nhwc.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "samples.npz", samples=flat)  # what `scoresde sample` writes
    assert load_dataset(tmp_path / "samples.npz", n=10).info.n == 10
    np.savez(tmp_path / "two.npz", a=flat, b=flat)
    with pytest.raises(ValueError, match="name the samples"):
        load_dataset(tmp_path / "two.npz")
    np.save(tmp_path / "ints.npy", np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="dtype int64"):
        load_dataset(tmp_path / "ints.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        load_dataset(tmp_path / "empty.npy")
    np.save(tmp_path / "nan.npy", np.full((3, 2), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_dataset(tmp_path / "nan.npy")


def test_unknown_names_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'swissroll'"):
        load_dataset("swiss-roll")
    with pytest.raises(ValueError, match="Did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")
    with pytest.raises(ValueError, match="Did you mean 'fashion-mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="Did you mean '8gaussians'"):
        load_dataset("gaussians")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=".npy or .npz"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="validation")
    assert set(TOY_DATASETS) < set(DATASETS)


def test_dataloader_compatible() -> None:
    ds = load_dataset("moons", n=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (16, 2) and y.shape == (16,)
    torch.testing.assert_close(x, ds.tensors()[:16])
