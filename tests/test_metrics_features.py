"""Issue 17: feature spaces of the sample metrics (cached classifier, raw, Inception checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scoresde.features as F
from scoresde.data import load_dataset
from scoresde.metrics import frechet_from_samples


def test_classifier_features_train_once_then_load_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(F._TRAINING, "min_steps", 30)  # a short recipe (its own cache key)
    monkeypatch.setitem(F._TRAINING, "epochs", 1)
    space = F.classifier_features("digits", cache=tmp_path)
    path = Path(space.info["cache"])
    assert (
        path.is_file()
        and path.parent == tmp_path / "features"
        and space.name == "classifier:digits"
    )
    assert 0.3 < space.info["test_accuracy"] <= 1.0  # 30 steps already beat chance (0.1)
    x = load_dataset("digits", split="test").tensors()[:50]
    feats = space(x)
    assert feats.shape == (50, 128) and feats.dtype == torch.float64

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr(F, "_fit", no_training)
    again = F.classifier_features("digits", cache=tmp_path)
    assert torch.equal(again(x), feats) and again.info == space.info
    monkeypatch.setitem(F._TRAINING, "min_steps", 31)  # another recipe: another file
    with pytest.raises(AssertionError, match="trained again"):
        F.classifier_features("digits", cache=tmp_path)


def test_feature_space_choices() -> None:
    raw = F.feature_space("auto", "moons", is_image=False)
    assert raw.name == "raw" and raw(torch.ones(3, 2)).dtype == torch.float64
    with pytest.raises(ValueError, match="classifier features exist for"):
        F.feature_space("classifier", "moons", is_image=False)
    with pytest.raises(ValueError, match="need image data"):
        F.feature_space("inception", "moons", is_image=False)
    with pytest.raises(ValueError, match="features"):
        F.feature_space("vgg", "moons", is_image=False)


def test_inception_weights_are_looked_up_on_disk_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(F.INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=F.INCEPTION_WEIGHTS_FILE) as err:
        F.find_inception_weights()
    assert str(tmp_path / "hub") in str(err.value)
    fake = tmp_path / "w.pth"
    fake.write_bytes(b"")
    monkeypatch.setenv(F.INCEPTION_WEIGHTS_ENV, str(fake))
    assert F.find_inception_weights() == fake
    hub = tmp_path / "hub" / "hub" / "checkpoints" / F.INCEPTION_WEIGHTS_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"")
    monkeypatch.delenv(F.INCEPTION_WEIGHTS_ENV)
    assert F.find_inception_weights() == hub


def test_inception_without_a_package_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    if any(importlib.util.find_spec(m) for m in ("torch_fidelity", "torchmetrics")):
        pytest.skip("an Inception package is installed here")
    fake = tmp_path / "w.pth"
    fake.write_bytes(b"")
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        F.check_inception(fake)


@pytest.mark.slow
def test_the_cached_digit_classifier_separates_data_from_noise(tmp_path: Path) -> None:
    space = F.classifier_features("digits", cache=tmp_path)  # the real recipe
    assert space.info["test_accuracy"] > 0.85
    train = load_dataset("digits", split="train").tensors()
    test = load_dataset("digits", split="test").tensors()
    noise = torch.rand(len(test), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = space(train[:297])
    held_out, far = frechet_from_samples(space(test), ref), frechet_from_samples(space(noise), ref)
    assert far > 20 * held_out
