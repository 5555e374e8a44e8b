"""DDP: two gloo processes on the CPU keep identical replicas and match one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scoresde.checkpoint import load_checkpoint
from scoresde.train import TrainConfig, Trainer, train

pytestmark = pytest.mark.slow  # two-process DDP runs: `make test-all`

WORLD = 2


def _config(out: Path, **kw: object) -> TrainConfig:
    # 256 points, global batch 32 (16 per rank): 8 batches per epoch, so 10 steps cross an
    # epoch boundary; checkpoints at 5 and 10 gather both ranks' RNG states.
    return TrainConfig(
        out=str(out), steps=10, batch_size=32, lr=3e-3, warmup_steps=3, log_every=5,
        ckpt_every=5, progress=False, tensorboard=False, sample_n=0, device="cpu",
        model_kwargs={"hidden": 32, "depth": 2}, max_minutes=60.0,
    ).apply_overrides([f"{k}={v}" for k, v in kw.items()])  # fmt: skip


def _data() -> torch.Tensor:
    return torch.randn(256, 2, generator=torch.Generator().manual_seed(7)) * 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    trainer = Trainer(_config(Path(out) / "ddp"), _data())
    assert trainer.dist.world_size == WORLD and trainer.local_batch == 16
    trainer.fit()
    assert not dist.is_initialized()  # the trainer leaves the process group
    state = {"net": trainer.net.state_dict(), "ema": trainer.ema.state_dict()}
    torch.save(state, Path(out) / f"rank{rank}.pt")


@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("net", "ema"):
        for key in r0[part]:
            assert torch.equal(r0[part][key], r1[part][key]), f"replicas differ: {part} {key}"
    ckpt = load_checkpoint(tmp_path / "ddp")  # written by rank 0 only, with both RNG states
    assert ckpt.step == 10 and ckpt.state is not None and len(ckpt.state["rng"]) == WORLD
    for key in r0["net"]:
        assert torch.equal(ckpt.model[key], r0["net"][key])

    torch.set_num_threads(1)
    single = train(_config(tmp_path / "single"), _data())
    ref = load_checkpoint(single.checkpoint)
    for key in ref.model:  # same global batches and noise; only summation order differs
        torch.testing.assert_close(r0["net"][key], ref.model[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r0["ema"][key], ref.ema[key], rtol=1e-4, atol=1e-5)
    moved = max(float((ref.model[k] - ckpt.model[k]).abs().max()) for k in ref.model)
    start = Trainer(_config(tmp_path / "fresh"), _data()).net.state_dict()
    travelled = max(float((ref.model[k] - start[k]).abs().max()) for k in ref.model)
    assert travelled > 100 * max(moved, 1e-7)  # training moved the weights far more


def _timed_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    # rank 1 is slowed down: the ranks must still stop at the same step (agreed at log steps)
    cfg = _config(Path(out) / "timed", steps=10**6, max_minutes=0.02, ckpt_every=10**5)
    trainer = Trainer(cfg, _data())
    if rank == 1:
        step = trainer.train_step

        def slow(batch: torch.Tensor) -> object:
            import time

            time.sleep(0.002)
            return step(batch)

        trainer.train_step = slow  # type: ignore[method-assign]
    result = trainer.fit()
    (Path(out) / f"timed{rank}.txt").write_text(str(result.step))


@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
def test_max_minutes_under_ddp_stops_all_ranks_at_one_log_step(tmp_path: Path) -> None:
    mp.spawn(_timed_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    s0, s1 = (int((tmp_path / f"timed{r}.txt").read_text()) for r in range(WORLD))
    assert s0 == s1 and 0 < s0 < 10**6 and s0 % 5 == 0  # log_every = 5
    assert load_checkpoint(tmp_path / "timed").step == s0
