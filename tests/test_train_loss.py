"""The trainer's loss is the library's denoising score-matching loss, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scoresde as S
from conftest import four_mode_mixture
from helpers import HostReads
from scoresde.train import TrainConfig, Trainer


@pytest.mark.parametrize(
    ("sde", "parameterization", "weighting"),
    [("vp", "eps", "sigma2"), ("ve", "x0", "likelihood"), ("edm", "auto", "auto")],
)
def test_train_step_loss_is_the_public_loss(
    tmp_path: Path, sde: str, parameterization: str, weighting: str
) -> None:
    """One optimizer step reports the loss that ``dsm_loss`` / ``ScoreModel.loss`` give."""
    x = four_mode_mixture().sample(256, torch.Generator().manual_seed(0))
    cfg = TrainConfig(out=str(tmp_path), sde=sde, parameterization=parameterization,
                      weighting=weighting, steps=1, batch_size=32, progress=False,
                      tensorboard=False, sample_n=0,
                      model_kwargs={"hidden": 16, "depth": 1})  # fmt: skip
    trainer = Trainer(cfg, x)
    idx = next(trainer._batches())
    x0, _ = trainer.data.get_batch(idx)
    t, z = trainer._times_and_noise(trainer.step)
    resolved = trainer.cfg.weighting
    with torch.no_grad():
        if resolved == "natural":
            want = trainer.model.loss(x0, t=t, noise=z, weighting="natural")
        else:
            want = S.dsm_loss(trainer.model, trainer.sde, x0, t=t, noise=z, weighting=resolved)  # type: ignore[arg-type]
    loss, _ = trainer.train_step(idx)
    assert torch.equal(loss, want)


def test_train_step_reads_no_tensor_values(tmp_path: Path) -> None:
    """The step (batch, times and noise, loss, backward, clip, Adam, EMA) never syncs the host."""
    x = four_mode_mixture().sample(256, torch.Generator().manual_seed(0))
    cfg = TrainConfig(out=str(tmp_path), steps=3, batch_size=32, progress=False,
                      tensorboard=False, sample_n=0, grad_clip=1.0,
                      model_kwargs={"hidden": 16, "depth": 1})  # fmt: skip
    trainer = Trainer(cfg, x)
    batches = trainer._batches()
    trainer.train_step(next(batches))  # the first step creates the optimizer state
    with HostReads() as reads:
        for _ in range(2):
            trainer.train_step(next(batches))
    assert reads.count == 0
