"""Checkpoints: atomic writes, pruning, and refusal of truncated, corrupted or foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import scoresde.checkpoint as ck
from scoresde.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from scoresde.train import TrainConfig, Trainer, load_trained, train


def _save(root: Path, step: int, **kw: object) -> Path:
    w = {"a.weight": torch.randn(4, 3), "a.bias": torch.arange(3.0)}
    state = {"step": step, "rng": [{"torch": torch.get_rng_state()}], "opt": {"lr": 0.1}}
    return save_checkpoint(root, step, model=w, ema=w, state=state, config={"x": 1}, **kw)  # type: ignore[arg-type]


def test_roundtrip_and_keep_last(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030", "step_00000040"]
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
    c = load_checkpoint(tmp_path)  # the folder of checkpoints -> the newest
    assert c.step == 40 and c.config == {"x": 1} and c.state is not None
    assert torch.equal(c.model["a.bias"], torch.arange(3.0))
    assert resolve_checkpoint(tmp_path / "step_00000030" / "model.safetensors").name == (
        "step_00000030"
    )
    _save(tmp_path, 40)  # rewriting the same step replaces it whole
    assert load_checkpoint(tmp_path / "step_00000040").step == 40


def test_crash_during_save_leaves_previous_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path, 10)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 20)
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000010"]
    assert load_checkpoint(tmp_path).step == 10


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("truncate", "corrupted: model.safetensors has"),
        ("flip", "SHA-256 of ema.safetensors does not match"),
        ("state", "SHA-256 of state.pt"),
        ("no_manifest", "not a scoresde checkpoint: manifest.json is missing"),
        ("foreign_manifest", "not a scoresde checkpoint \\(manifest format"),
        ("bad_json", "unreadable manifest.json"),
        ("missing_file", "incomplete: config.json is missing"),
    ],
)
def test_damaged_checkpoint_is_refused(tmp_path: Path, damage: str, match: str) -> None:
    ckpt = _save(tmp_path, 5)
    if damage == "truncate":
        f = ckpt / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-7])
    elif damage == "flip":
        f = ckpt / "ema.safetensors"
        data = bytearray(f.read_bytes())
        data[-3] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "state":
        f = ckpt / "state.pt"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    elif damage == "no_manifest":
        (ckpt / "manifest.json").unlink()
    elif damage == "foreign_manifest":
        (ckpt / "manifest.json").write_text(json.dumps({"format": "other-tool"}))
    elif damage == "bad_json":
        (ckpt / "manifest.json").write_text("{not json")
    elif damage == "missing_file":
        (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(ckpt)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(f))
    with pytest.raises(CheckpointError, match="not part of a scoresde checkpoint"):
        load_checkpoint(f)
    with pytest.raises(CheckpointError, match="no scoresde checkpoint in"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_trainer_refuses_to_resume_from_a_corrupted_checkpoint(tmp_path: Path) -> None:
    x = torch.randn(200, 2)
    cfg = TrainConfig(out=str(tmp_path / "r"), steps=4, batch_size=32, ckpt_every=4,
                      progress=False, tensorboard=False, sample_n=0,
                      model_kwargs={"hidden": 16, "depth": 1})  # fmt: skip
    train(cfg, x)
    f = tmp_path / "r" / "checkpoints" / "step_00000004" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or modified"):
        Trainer(cfg.replace(steps=8), x, resume=True)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_trained(tmp_path / "r")
