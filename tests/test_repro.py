"""Reproducibility on CPU: the same seed gives bit-identical samples, likelihoods and training.

Also: drawing samples in chunks (``batch_size=``) gives exactly the samples of one batch, and
sample ``i`` does not depend on how many samples are drawn with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import scoresde as S
from conftest import STD_SDES as SDES
from conftest import two_modes
from scoresde import cli
from scoresde.checkpoint import latest_checkpoint, load_checkpoint
from scoresde.sampling.base import get_sampler
from scoresde.train import TrainConfig, train

GM = two_modes()
ADAPTIVE = {"ode"}  # torchdiffeq's adaptive steps are shared by the batch


@pytest.fixture(autouse=True)
def _restore_deterministic() -> Iterator[None]:
    """The trainer's deterministic-algorithms switch does not leak to other tests."""
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(det)


def _draw(sampler: str, sde: S.SDE, n: int, seed: int, **kw: object) -> torch.Tensor:
    return S.sample(GM.score_fn(sde), sde, (n, 2), sampler=sampler, steps=6,
                    generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_same_seed_same_samples_and_chunking_is_invisible(sde_name: str) -> None:
    sde = SDES[sde_name]()
    for sampler in S.available_samplers():
        if not get_sampler(sampler).supports(sde):
            continue
        a, b = _draw(sampler, sde, 10, 7), _draw(sampler, sde, 10, 7)
        assert torch.equal(a, b), sampler
        assert not torch.equal(a, _draw(sampler, sde, 10, 8)), sampler
        chunked = _draw(sampler, sde, 10, 7, batch_size=3)
        few = _draw(sampler, sde, 4, 7)
        if sampler in ADAPTIVE:
            torch.testing.assert_close(chunked, a, rtol=1e-3, atol=1e-3)
        else:
            assert torch.equal(chunked, a), sampler
            assert torch.equal(few, a[:4]), sampler


def test_chunked_result_info_and_trajectory() -> None:
    sde = S.VPSDE()
    one = S.sample(GM.score_fn(sde), sde, (7, 2), sampler="pc", steps=4, return_trajectory=True,
                   generator=torch.Generator().manual_seed(1))  # fmt: skip
    many = S.sample(GM.score_fn(sde), sde, (7, 2), sampler="pc", steps=4, batch_size=2,
                    return_trajectory=True, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(one.samples, many.samples)
    assert one.trajectory is not None and many.trajectory is not None
    assert torch.equal(one.trajectory, many.trajectory)
    assert many.nfe == 4 * one.nfe  # four chunks, each as many calls as the single batch
    x_init = torch.randn(7, 2, generator=torch.Generator().manual_seed(2))
    a = S.sample(GM.score_fn(sde), sde, (7, 2), sampler="ode_heun", steps=4, x_init=x_init)
    b = S.sample(GM.score_fn(sde), sde, (7, 2), sampler="ode_heun", steps=4, x_init=x_init,
                 batch_size=3)  # fmt: skip
    assert torch.equal(a, b)


def test_likelihood_is_reproducible_and_chunk_independent() -> None:
    sde = S.VPSDE()
    x = GM.sample(9, torch.Generator().manual_seed(0))

    def ll(seed: int, **kw: object) -> S.LikelihoodResult:
        return S.log_likelihood(GM.score_fn(sde), sde, x, rtol=1e-3, atol=1e-3,
                                generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip

    a, b = ll(3), ll(3)
    assert torch.equal(a.log_prob, b.log_prob) and torch.equal(a.latent, b.latent)
    assert not torch.equal(a.log_prob, ll(4).log_prob)  # Hutchinson probes follow the seed
    exact = ll(0, divergence="exact")
    chunked = ll(0, divergence="exact", batch_size=4)
    assert torch.equal(exact.log_prob, chunked.log_prob)
    assert torch.equal(exact.nfe, chunked.nfe)


def test_dsm_loss_is_reproducible() -> None:
    sde = S.VESDE()
    x = GM.sample(64, torch.Generator().manual_seed(0))
    losses = [S.dsm_loss(GM.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(5))
              for _ in range(2)]  # fmt: skip
    assert torch.equal(losses[0], losses[1])


def _cfg(out: Path, seed: int) -> TrainConfig:
    return TrainConfig(out=str(out), steps=25, batch_size=32, lr=1e-3, seed=seed, ckpt_every=25,
                       progress=False, tensorboard=False, sample_n=0,
                       model_kwargs={"hidden": 16, "depth": 2, "dropout": 0.1})  # fmt: skip


def test_same_seed_same_training(tmp_path: Path) -> None:
    """Two runs with one seed: equal weights, EMA and losses; another seed differs."""
    x = GM.sample(256, torch.Generator().manual_seed(0))
    runs = [train(_cfg(tmp_path / name, seed), x) for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (load_checkpoint(latest_checkpoint(r.out / "checkpoints")) for r in runs)  # type: ignore[arg-type]
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
        assert torch.equal(a.ema[key], b.ema[key]), key
    assert runs[0].history == runs[1].history
    assert any(not torch.equal(a.model[k], c.model[k]) for k in a.model)


def test_cli_samples_follow_the_seed_not_the_batch_size(tmp_path: Path) -> None:
    import numpy as np

    x = GM.sample(256, torch.Generator().manual_seed(0))
    train(_cfg(tmp_path / "run", 1), x)
    outs = []
    for i, (seed, bs) in enumerate(((3, 2), (3, 5), (4, 5))):
        out = tmp_path / f"s{i}.npz"
        argv = ["sample", "--ckpt", str(tmp_path / "run"), "--n", "7", "--steps", "3",
                "--seed", str(seed), "--batch-size", str(bs), "--out", str(out)]  # fmt: skip
        assert cli.main(argv) == 0
        outs.append(np.load(out)["samples"])
    # same noise for every sample; a network's matmul kernels may round differently per batch
    # size, so the values agree to float32 rounding (exact scores agree bit for bit, see above)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    assert np.abs(outs[1] - outs[2]).max() > 0.1
