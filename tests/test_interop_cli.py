"""Local diffusers folders: ``from_diffusers(folder)``, ``scoresde sample|likelihood|inpaint
--ckpt FOLDER``, and one clear line for every bad input (nothing downloaded)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as S
from scoresde import cli

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on NumPy 2

from _interop_nets import tiny_unet  # noqa: E402
from scoresde.interop import from_diffusers, is_diffusers_folder  # noqa: E402

F32 = torch.float32


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DDPM pipeline folder, a model folder (config.json + scheduler_config.json), a VE
    pipeline folder and a class-conditional model folder, saved with save_pretrained."""
    root = tmp_path_factory.mktemp("diffusers")
    unet = tiny_unet(seed=1, dtype=F32)
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=ddpm).save_pretrained(root / "pipe")
    unet.save_pretrained(root / "model")
    diffusers.DDIMScheduler(num_train_timesteps=100).save_pretrained(root / "model")
    ve_unet = tiny_unet(seed=2, dtype=F32, time_embedding_type="fourier", flip_sin_to_cos=False)
    ve = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=20.0)
    diffusers.ScoreSdeVePipeline(unet=ve_unet, scheduler=ve).save_pretrained(root / "ve")
    tiny_unet(seed=3, dtype=F32, num_class_embeds=3).save_pretrained(root / "cond")
    ddpm.save_pretrained(root / "cond")
    return {k: root / k for k in ("pipe", "model", "ve", "cond")}


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_folders_load_without_the_network(folders: dict[str, Path], monkeypatch) -> None:
    _no_network(monkeypatch)
    pipe, model = from_diffusers(folders["pipe"]), from_diffusers(folders["model"])
    assert pipe.prediction == "v" and model.prediction == "eps"
    assert pipe.event_shape == model.event_shape == (1, 8, 8)
    ve = from_diffusers(folders["ve"])
    assert isinstance(ve.sde, S.VESDE) and ve.data_range == (0.0, 1.0)
    assert from_diffusers(folders["cond"]).num_classes == 3
    with pytest.raises(ValueError, match="not a diffusers folder"):
        from_diffusers("google/ddpm-cifar10-32")  # a Hub id is not fetched
    assert all(is_diffusers_folder(p) for p in folders.values())


def test_cli_sample_equals_the_python_api(folders: dict[str, Path], tmp_path: Path) -> None:
    for name in ("pipe", "model"):
        out = tmp_path / f"{name}.npz"
        assert run("sample", "--ckpt", folders[name], "--n", 4, "--steps", 3, "--sampler",
                   "ddim", "--out", out, "--device", "cpu") == 0  # fmt: skip
        got = np.load(out)["samples"]
        m = from_diffusers(folders[name])
        x = S.sample(m.score_fn, m.sde, (4, 1, 8, 8), sampler="ddim", steps=3, device="cpu",
                     generator=torch.Generator().manual_seed(0), batch_size=1000)  # fmt: skip
        assert got.shape == (4, 1, 8, 8) and 0 <= got.min() and got.max() <= 1
        np.testing.assert_allclose(got, m.to_data(x).numpy(), atol=1e-6)
    png = tmp_path / "ve.png"
    assert run("sample", "--ckpt", folders["ve"], "--n", 4, "--steps", 3, "--sampler", "pc",
               "--out", png) == 0  # fmt: skip
    assert png.stat().st_size > 100


def test_cli_likelihood_reports_bits_per_dim(folders: dict[str, Path], tmp_path: Path) -> None:
    js = tmp_path / "ll.json"
    assert run("likelihood", "--ckpt", folders["pipe"], "--data", "digits", "--n", 3,
               "--rtol", 1e-2, "--atol", 1e-2, "--out", js) == 0  # fmt: skip
    res = json.loads(js.read_text())
    assert res["n"] == 3 and res["levels"] == 17 and np.isfinite(res["bits_per_dim"])


def test_cli_inpaint_keeps_the_known_pixels(folders: dict[str, Path], tmp_path: Path) -> None:
    img = np.random.default_rng(0).random((2, 1, 8, 8))
    mask = np.zeros((1, 1, 8, 8))
    mask[..., :3] = 1
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "mask.npy", mask)
    for name in ("pipe", "ve"):
        out = tmp_path / f"{name}.npz"
        assert run("inpaint", "--ckpt", folders[name], "--image", tmp_path / "img.npy", "--mask",
                   tmp_path / "mask.npy", "--out", out, "--steps", 3) == 0  # fmt: skip
        comp = np.load(out)["completions"]
        assert comp.shape == (1, 2, 1, 8, 8) and np.isfinite(comp).all()
        np.testing.assert_allclose(comp[0, ..., :3], img[..., :3], atol=1e-6)


def test_cli_class_and_guidance(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.npz"
    assert run("sample", "--ckpt", folders["cond"], "--n", 2, "--steps", 2, "--class", 1,
               "--out", out) == 0  # fmt: skip
    assert np.load(out)["labels"].tolist() == [1, 1]
    capsys.readouterr()
    assert run("sample", "--ckpt", folders["cond"], "--n", 2, "--steps", 2, "--class", 1,
               "--guidance", 2, "--out", out) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "null label" in err


# ------------------------------------------------------------------------------------------------
# bad input: one line naming what is supported


def _write_folder(path: Path, scheduler: dict) -> Path:
    tiny_unet(dtype=F32).save_pretrained(path)
    (path / "scheduler_config.json").write_text(json.dumps(scheduler))
    return path


@pytest.mark.parametrize(
    ("scheduler", "match"),
    [
        ({"_class_name": "LCMScheduler"}, "scheduler 'LCMScheduler' is not supported; supported: "
         "DDPMScheduler"),
        ({"_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"},
         "beta_schedule 'sigmoid' is not supported; supported: linear, scaled_linear"),
        ({"_class_name": "DDIMScheduler", "prediction_type": "flow_prediction"},
         "prediction_type 'flow_prediction' is not supported; supported: epsilon"),
        ({"_class_name": "EulerDiscreteScheduler", "timestep_type": "continuous"},
         "timestep_type 'continuous' is not supported"),
    ],
)  # fmt: skip
def test_unsupported_folders_are_one_clear_line(
    tmp_path: Path, capsys, scheduler: dict, match: str
) -> None:
    folder = _write_folder(tmp_path / "f", scheduler)
    with pytest.raises(ValueError, match=match):
        from_diffusers(folder)
    assert run("sample", "--ckpt", folder, "--n", 1, "--out", tmp_path / "s.npz") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match.split(";")[0] in err and "internal" not in err


def test_unsupported_scheduler_objects_are_one_clear_error() -> None:
    unet = tiny_unet()
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler' is not supported"):
        from_diffusers(unet, diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="beta_schedule 'sigmoid' is not supported"):
        from_diffusers(unet, diffusers.DDPMScheduler(beta_schedule="sigmoid"))
    with pytest.raises(ValueError, match="prediction_type 'x' is not supported"):
        from_diffusers(unet, diffusers.DDPMScheduler(prediction_type="x"))
    with pytest.raises(TypeError, match="needs the model's scheduler"):
        from_diffusers(unet)


def test_a_folder_that_is_not_a_diffusers_model(tmp_path: Path, capsys) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}')
    with pytest.raises(ValueError, match="is not a diffusers folder: expected a pipeline folder"):
        from_diffusers(tmp_path / "half")
    assert run("likelihood", "--ckpt", tmp_path / "half", "--data", "digits") == 1
    assert "is not a diffusers folder" in capsys.readouterr().err
    (tmp_path / "ours").mkdir()  # a scoresde checkpoint folder also has a config.json
    (tmp_path / "ours" / "config.json").write_text('{"train": {}}')
    assert not is_diffusers_folder(tmp_path / "ours")
    assert not is_diffusers_folder(tmp_path / "nothing")


def test_diffusers_not_installed(folders: dict[str, Path], tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails
    with pytest.raises(ImportError, match=r"pip install scoresde\[diffusers\]"):
        from_diffusers(folders["pipe"])
    assert run("sample", "--ckpt", folders["pipe"], "--n", 1, "--out", tmp_path / "s.npz") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install scoresde[diffusers]" in err
    assert "internal" not in err
