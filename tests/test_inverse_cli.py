"""`scoresde inpaint`, `scoresde train-classifier` and `scoresde sample --class K --classifier`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.cli import main
from scoresde.data import load_dataset
from scoresde.train import TrainConfig, train


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        data="digits",
        model="mlp",
        model_kwargs=dict(hidden=32, depth=1),
        steps=5,
        batch_size=16,
        out=str(out),
        progress=False,
        tensorboard=False,
        ckpt_every=5,
        sample_n=4,
        sample_steps=2,
        device="cpu",
    )
    train(cfg)
    return out


def test_inpaint_npz_keeps_known_pixels(ckpt: Path, tmp_path: Path) -> None:
    x = load_dataset("digits", split="test").tensors()[:3]
    img = ((x + 1) / 2).numpy()  # [0, 1]
    np.save(tmp_path / "img.npy", img)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4] = 1
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "done.npz"
    rc = main(
        [
            "inpaint",
            "--ckpt",
            str(ckpt),
            "--image",
            str(tmp_path / "img.npy"),
            "--mask",
            str(tmp_path / "mask.npy"),
            "--out",
            str(out),
            "--n",
            "2",
            "--steps",
            "5",
            "--corrector",
            "ald",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    with np.load(out) as z:
        comp = z["completions"]
    assert comp.shape == (2, 3, 1, 8, 8)
    assert np.array_equal(
        comp[:, :, :, :4], np.broadcast_to(img[:, :, :4], (2, 3, 1, 4, 8)).astype(comp.dtype)
    )
    assert (comp >= 0).all() and (comp <= 1).all()


def test_inpaint_png_in_and_out(ckpt: Path, tmp_path: Path) -> None:
    from PIL import Image

    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(img).save(tmp_path / "img.png")
    m = np.zeros((8, 8), dtype=np.uint8)
    m[:, :4] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    out = tmp_path / "grid.png"
    rc = main(
        [
            "inpaint",
            "--ckpt",
            str(ckpt),
            "--image",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "--out",
            str(out),
            "--steps",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and out.stat().st_size > 0


def test_inpaint_errors(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "img.npy", np.zeros((1, 1, 6, 6)))
    np.save(tmp_path / "mask.npy", np.ones((8, 8)))
    base = ["inpaint", "--ckpt", str(ckpt), "--mask", str(tmp_path / "mask.npy"), "--device", "cpu"]
    assert main(base + ["--image", str(tmp_path / "img.npy"), "--out", "a.png"]) == 1
    assert "6x6" in capsys.readouterr().err
    np.save(tmp_path / "img.npy", np.zeros((1, 1, 8, 8)))
    assert main(base + ["--image", str(tmp_path / "img.npy"), "--out", "a.png"]) == 1
    assert "nothing to inpaint" in capsys.readouterr().err
    assert main(base + ["--image", str(tmp_path / "img.npy"), "--out", "a.jpg"]) == 1
    assert ".png or .npz" in capsys.readouterr().err


def test_train_classifier_and_guided_sample(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clf = tmp_path / "clf.safetensors"
    assert (
        main(
            [
                "train-classifier",
                "--ckpt",
                str(ckpt),
                "--out",
                str(clf),
                "--steps",
                "3",
                "--hidden",
                "16",
                "--depth",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(ckpt),
                "--n",
                "4",
                "--steps",
                "3",
                "--class",
                "7",
                "--classifier",
                str(clf),
                "--classifier-scale",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with np.load(out) as z:
        assert z["samples"].shape == (4, 1, 8, 8) and (z["labels"] == 7).all()
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(ckpt),
                "--n",
                "2",
                "--classifier",
                str(clf),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "--classifier needs --class" in capsys.readouterr().err
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(ckpt),
                "--n",
                "2",
                "--class",
                "12",
                "--classifier",
                str(clf),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "[0, 9]" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"not a classifier")
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(ckpt),
                "--n",
                "2",
                "--class",
                "1",
                "--classifier",
                str(tmp_path / "bad.safetensors"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "not a scoresde noise-conditional classifier" in capsys.readouterr().err
    torch.manual_seed(0)
