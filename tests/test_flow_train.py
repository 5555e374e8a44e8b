"""Flow-matching training (issue 14): the loss, time sampling, couplings, the trainer, and the
``train`` / ``likelihood`` / ``reflow`` commands on a rectified flow, with their one-line errors."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import scoresde as S
from scoresde import cli
from scoresde.checkpoint import load_checkpoint
from scoresde.losses import flow_matching_loss, sample_training_times
from scoresde.parameterize import ScoreModel
from scoresde.sde import RectifiedFlow
from scoresde.train import TrainConfig, Trainer
from scoresde.train.coupling import (
    OT_MAX_BATCH,
    PairDataset,
    check_coupling,
    load_pairs,
    ot_pair,
    save_pairs,
)

DT = torch.float64
TINY = ["--set", "model_kwargs={hidden: 16, depth: 1}", "--no-progress", "--no-tensorboard"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


class Linear(nn.Linear):
    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(torch.cat([x, c_noise[:, None]], 1))


# ------------------------------------------------------------------------------------------
# loss and times


def test_flow_matching_loss_is_the_natural_loss_of_the_flow_parameterisation() -> None:
    torch.manual_seed(0)
    rf = RectifiedFlow()
    model = ScoreModel(Linear(3, 2, dtype=DT), rf, "flow")
    x0 = torch.randn(32, 2, generator=gen(0), dtype=DT)
    z = torch.randn(32, 2, generator=gen(1), dtype=DT)
    t = torch.rand(32, generator=gen(2), dtype=DT)
    t[:4] = 1.0  # T itself: the target z - x0 is finite, so is the loss
    t[4:8] = 1e-5
    got = model.loss(x0, t=t, noise=z, reduction="none")
    v = model.raw_output(rf.perturb(x0, t, z), t)
    want = (v - (z - x0)).pow(2).sum(1)  # Liu et al. 2023, eq. 1: || v - (z - x0) ||^2
    torch.testing.assert_close(got, want)
    ref = flow_matching_loss(lambda x, tt: model.raw_output(x, tt), rf, x0, t=t, noise=z,
                             reduction="none")  # fmt: skip
    torch.testing.assert_close(ref, want)
    # for t < T it is DSM with lambda = 1 / out^2 (the one DSM loss, reweighted)
    inner = slice(8, None)
    out = model.coefficients(t[inner]).out
    dsm = S.dsm_loss(model, rf, x0[inner], weighting="none", t=t[inner], noise=z[inner],
                     reduction="none")  # fmt: skip
    torch.testing.assert_close(dsm / out**2, want[inner], rtol=1e-7, atol=1e-9)


def test_logit_normal_times() -> None:
    rf = RectifiedFlow()
    n = 20000
    t = sample_training_times(rf, n, method="logit_normal", logit_mean=0.5, logit_std=0.8,
                              eps=0.0, generator=gen(3), dtype=DT)  # fmt: skip
    assert float(t.min()) > 0 and float(t.max()) < 1
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean()) - 0.5) < 5 * 0.8 / math.sqrt(n)
    assert abs(float(logit.std()) - 0.8) < 5 * 0.8 / math.sqrt(2 * n)
    with pytest.raises(ValueError, match="logit_std"):
        sample_training_times(rf, 4, method="logit_normal", logit_std=0.0)


# ------------------------------------------------------------------------------------------
# couplings


def test_ot_pair_is_the_exact_assignment() -> None:
    x0 = torch.randn(7, 3, generator=gen(4))
    z = torch.randn(7, 3, generator=gen(5))
    paired = ot_pair(x0, z)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, z.tolist()))  # a permutation
    cost = float((x0 - paired).pow(2).sum())
    brute = min(float((x0 - z[list(p)]).pow(2).sum()) for p in itertools.permutations(range(7)))
    assert cost == pytest.approx(brute, rel=1e-6)


def test_ot_batch_limit_is_a_one_line_error() -> None:
    big = torch.zeros(OT_MAX_BATCH + 1, 2)
    with pytest.raises(ValueError, match=r"coupling='ot'.*--coupling independent") as err:
        ot_pair(big, big)
    assert "\n" not in str(err.value)
    check_coupling("ot", OT_MAX_BATCH)
    check_coupling("independent", 10**6)


def test_pairs_file_round_trip_and_errors(tmp_path: Path) -> None:
    ds = S.data.load_dataset("moons", n=64)
    z = torch.randn(64, 2, generator=gen(6))
    path = save_pairs(tmp_path / "p.npz", z, ds.tensors(), ds.info)
    back = load_pairs(path)
    assert isinstance(back, PairDataset) and back.info.name == "moons" and back.info.n == 64
    assert torch.equal(back.noise, z) and torch.equal(back.tensors(), ds.tensors())
    assert torch.equal(back.to("cpu").noise_batch(torch.tensor([3, 5])), z[[3, 5]])
    np.savez(tmp_path / "plain.npz", x=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="not a reflow pairs file"):
        load_pairs(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="does not exist"):
        load_pairs(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------
# configuration and trainer


def test_config_resolves_flow_defaults_and_checks() -> None:
    r = TrainConfig(sde="rectified_flow").resolved()
    assert (r.parameterization, r.weighting, r.time_sampling) == ("flow", "natural", "uniform")
    assert TrainConfig().resolved().parameterization == "edm"  # unchanged elsewhere
    with pytest.raises(ValueError, match="unknown coupling"):
        TrainConfig(coupling="sinkhorn")
    with pytest.raises(ValueError, match="logit_std"):
        TrainConfig(logit_std=-1.0)


def _cfg(tmp_path: Path, **kw: object) -> TrainConfig:
    base = dict(data="moons", data_kwargs={"n": 512}, out=str(tmp_path / "run"), steps=4,
                sde="rectified_flow", batch_size=32, sample_n=0, device="cpu", progress=False,
                model_kwargs={"hidden": 16, "depth": 1}, tensorboard=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_trainer_with_ot_and_pairs(tmp_path: Path) -> None:
    res = Trainer(_cfg(tmp_path, coupling="ot", time_sampling="logit_normal")).fit()
    assert res.step == 4 and math.isfinite(res.loss)
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(_cfg(tmp_path, out=str(tmp_path / "eps"), parameterization="eps"))
    with pytest.raises(ValueError, match=r"pairs file .moons. does not exist; make one"):
        Trainer(_cfg(tmp_path, out=str(tmp_path / "p"), coupling="pairs"))


def test_pairs_training_uses_the_paired_noise(tmp_path: Path) -> None:
    """With pairs (x, z) and x = z the exact velocity is 0 at every t (z - x0 = 0): the loss of
    the zero network is zero, whatever the times."""
    x = torch.randn(64, 2, generator=gen(7))
    ds = PairDataset(x, x.clone(), S.data.load_dataset("moons", n=64).info)
    trainer = Trainer(_cfg(tmp_path, coupling="pairs", data="unused"), data=ds)
    for p in trainer.net.parameters():
        nn.init.zeros_(p)
    loss, _ = trainer.train_step(torch.arange(32))
    assert float(loss) == 0.0


# ------------------------------------------------------------------------------------------
# the commands


def test_cli_train_likelihood_reflow(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = tmp_path / "rf"
    assert run("train", "--data", "moons", "--out", teacher, "--sde", "rectified_flow",
               "--coupling", "ot", "--steps", 20, "--batch-size", 64, "--sample-n", 16,
               "--set", "data_kwargs.n=1000", *TINY) == 0  # fmt: skip
    cap = capsys.readouterr()
    assert "RectifiedFlow, flow parameterisation, natural weighting" in cap.out + cap.err
    js = tmp_path / "ll.json"
    assert run("likelihood", "--ckpt", teacher, "--n", 16, "--out", js, "--rtol", 1e-3,
               "--atol", 1e-3) == 0  # fmt: skip
    result = json.loads(js.read_text())
    assert result["divergence"] == "exact" and math.isfinite(result["nll_nats"])
    student = tmp_path / "rf2"
    assert run("reflow", "--teacher", teacher, "--out", student, "--pairs", 128, "--steps", 6,
               "--sampler-steps", 4, "--no-progress", "--set", "tensorboard=false",
               "--set", "sample_n=0") == 0  # fmt: skip
    cap = capsys.readouterr()
    assert "wrote 128 pairs" in cap.out and "reflow: trained 6 steps" in cap.out
    ckpt = load_checkpoint(student, state=False)
    train_cfg = ckpt.config["train"]
    assert train_cfg["coupling"] == "pairs" and train_cfg["data"] == str(student / "pairs.npz")
    assert ckpt.config["data"]["name"] == "moons"  # the teacher's data, for likelihood/sample
    assert run("train", "--out", student, "--resume", "--steps", 8, "--no-progress") == 0
    assert load_checkpoint(student, state=False).step == 8  # the pairs file resumes the run
    assert run("sample", "--ckpt", student, "--n", 8, "--out", tmp_path / "s.npz",
               "--sampler", "euler", "--steps", 1) == 0  # fmt: skip


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run("train", "--data", "moons", "--out", tmp_path / "a", "--sde", "rectified_flow",
               "--parameterization", "eps", "--steps", 2, *TINY) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "does not fit" in err and "parameterization='flow'" in err and "\n" not in err
    assert run("train", "--data", "moons", "--out", tmp_path / "b", "--sde", "rectified_flow",
               "--coupling", "ot", "--batch-size", 4096, "--steps", 2, *TINY) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "coupling='ot'" in err and "--batch-size" in err and "\n" not in err
    vp = tmp_path / "vp"
    assert run("train", "--data", "moons", "--out", vp, "--steps", 2, "--batch-size", 32,
               "--sample-n", 0, "--set", "data_kwargs.n=256", *TINY) == 0  # fmt: skip
    capsys.readouterr()
    assert run("reflow", "--teacher", vp, "--out", tmp_path / "c", "--pairs", 8) == 1
    err = capsys.readouterr().err.strip()
    assert "rectified-flow teacher" in err and "\n" not in err
