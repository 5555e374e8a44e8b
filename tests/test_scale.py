"""Issue 17, in one process: shard plans and folders, resume, SIGTERM, sharded sample/likelihood.

The two-process (gloo, torchrun) runs are in ``test_scale_torchrun.py`` (slow).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from scoresde.likelihood import log_likelihood
from scoresde.sampling import sample
from scoresde.sde import VESDE, VPSDE
from scoresde.shard import (
    ShardError,
    ShardFolder,
    ShardPlan,
    log_likelihood_sharded,
    run_shards,
    sample_sharded,
    shard_seed,
)
from scoresde.targets import GaussianMixture

TARGET = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])


def test_plan_cuts_items_into_shards_and_deals_them_round_robin() -> None:
    plan = ShardPlan(11, 3)
    assert plan.count == 4
    assert [plan.bounds(k) for k in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert plan.deal([0, 1, 2, 3], 0, 2) == [0, 2] and plan.deal([0, 1, 2, 3], 1, 2) == [1, 3]
    assert plan.deal([3], 1, 2) == []  # a rank may get nothing on resume
    with pytest.raises(IndexError):
        plan.bounds(4)
    for bad in ({"n": 0, "shard_size": 3}, {"n": 3, "shard_size": 0}, {"n": 2.0, "shard_size": 1}):
        with pytest.raises(ValueError, match="positive int"):
            ShardPlan(**bad)  # type: ignore[arg-type]


def test_shard_seeds_are_distinct_and_stable() -> None:
    seeds = {shard_seed(s, i, j) for s in range(3) for i in range(0, 40, 4) for j in range(2)}
    assert len(seeds) == 3 * 10 * 2 and all(0 <= s < 2**63 for s in seeds)
    assert shard_seed(7, 12) == shard_seed(7, 12)


@pytest.mark.parametrize(
    "sampler, sde",
    [("euler_maruyama", VPSDE()), ("pc", VESDE()), ("fast", VPSDE()), ("ode", VPSDE())],
)
def test_sharded_sampling_equals_one_batched_call_bit_for_bit(sampler: str, sde: object) -> None:
    score = TARGET.score_fn(sde)  # type: ignore[arg-type]
    kw: dict[str, object] = {"sampler": sampler, "steps": 8}
    if sampler == "ode":  # adaptive: its steps depend on the batch, which shards keep
        kw.update(rtol=1e-3, atol=1e-3)
    ref = sample(score, sde, (11, 2), generator=torch.Generator().manual_seed(3), batch_size=3,
                 **kw)  # fmt: skip
    res = sample_sharded(score, sde, (11, 2), seed=3, shard_size=3, **kw)  # type: ignore[arg-type]
    assert res.arrays is not None and torch.equal(res.arrays["samples"], ref)
    assert (res.computed, res.reused) == (4, 0)


def test_sharded_likelihood_equals_per_shard_calls() -> None:
    sde = VPSDE()
    x = TARGET.sample(5, torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = {"rtol": 1e-3, "atol": 1e-3, "divergence": "hutchinson"}
    res = log_likelihood_sharded(TARGET.score_fn(sde), sde, x, seed=2, shard_size=3, **kw)
    assert res.arrays is not None
    for start in (0, 3):
        gen = torch.Generator().manual_seed(shard_seed(2, start))
        one = log_likelihood(TARGET.score_fn(sde), sde, x[start : start + 3], generator=gen, **kw)
        assert torch.equal(res.arrays["log_prob"][start : start + 3], one.log_prob.double())
        assert torch.equal(res.arrays["nfe"][start : start + 3], one.nfe.double())


def _compute(calls: list[int], fail_at: int | None = None):  # type: ignore[no-untyped-def]
    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        if start == fail_at:
            raise RuntimeError("boom")
        calls.append(start)
        return {
            "a": torch.arange(start, stop, dtype=torch.float64),
            "b": torch.ones(stop - start, 2),
        }

    return compute


def test_resume_computes_only_the_missing_shards(tmp_path: Path) -> None:
    plan, fp = ShardPlan(10, 3), {"model": "m1"}
    folder = tmp_path / "f"
    calls: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        run_shards(plan, _compute(calls, fail_at=6), ShardFolder(folder, fp, plan))
    assert calls == [0, 3] and ShardFolder(folder, fp, plan).finished() == [0, 1]
    with pytest.raises(ShardError, match="--resume"):  # a rerun must say it continues
        run_shards(plan, _compute([]), ShardFolder(folder, fp, plan))
    calls.clear()
    res = run_shards(plan, _compute(calls), ShardFolder(folder, fp, plan), resume=True)
    assert calls == [6, 9] and (res.computed, res.reused) == (2, 2)
    assert res.arrays is not None and torch.equal(res.arrays["a"], torch.arange(10.0).double())
    assert res.arrays["b"].shape == (10, 2)


def test_resume_refuses_a_different_run_and_foreign_folders(tmp_path: Path) -> None:
    plan = ShardPlan(6, 3)
    run_shards(plan, _compute([]), ShardFolder(tmp_path / "f", {"model": "m1"}, plan))
    with pytest.raises(ShardError, match="different run.*model: 'm1' then, 'm2' now"):
        run_shards(plan, _compute([]), ShardFolder(tmp_path / "f", {"model": "m2"}, plan),
                   resume=True)  # fmt: skip
    other = ShardPlan(9, 3)
    with pytest.raises(ShardError, match="n: 6 then, 9 now"):
        run_shards(other, _compute([]), ShardFolder(tmp_path / "f", {"model": "m1"}, other),
                   resume=True)  # fmt: skip
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    with pytest.raises(ShardError, match="not a shard folder"):
        run_shards(plan, _compute([]), ShardFolder(tmp_path / "g", {}, plan))
    assert (tmp_path / "g" / "notes.txt").read_text() == "mine"


def test_a_shard_of_another_run_is_refused_on_reading(tmp_path: Path) -> None:
    plan = ShardPlan(6, 3)
    a, b = ShardFolder(tmp_path / "a", {"m": 1}, plan), ShardFolder(tmp_path / "b", {"m": 2}, plan)
    run_shards(plan, _compute([]), a)
    b.prepare(resume=False)
    b.file(0).write_bytes(a.file(0).read_bytes())  # a foreign file under the right name
    with pytest.raises(ShardError, match="does not belong to this run"):
        run_shards(plan, _compute([]), b, resume=True)


def test_sigterm_stops_the_run_with_advice_and_keeps_finished_shards(tmp_path: Path) -> None:
    plan = ShardPlan(9, 3)
    folder = ShardFolder(tmp_path / "f", {}, plan)

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        if start == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what torchrun sends when another rank dies
        return {"a": torch.zeros(stop - start)}

    with pytest.raises(ShardError, match=r"SIGTERM.*1 of 3 shards are finished.*--resume"):
        run_shards(plan, compute, folder)
    assert folder.finished() == [0]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
    meta = json.loads((tmp_path / "f" / "run.json").read_text())
    assert (meta["n"], meta["shard_size"]) == (9, 3)


def test_sharded_calls_reject_their_own_arguments() -> None:
    sde = VPSDE()
    with pytest.raises(TypeError, match="batch_size"):
        sample_sharded(TARGET.score_fn(sde), sde, (4, 2), seed=0, shard_size=2, batch_size=2)
    with pytest.raises(ValueError, match="n .* is required"):
        log_likelihood_sharded(TARGET.score_fn(sde), sde, lambda a, b: torch.zeros(b - a, 2),
                               seed=0, shard_size=2)  # fmt: skip
    with pytest.raises(ValueError, match="noise_offset"):
        sample(TARGET.score_fn(sde), sde, (2, 2), steps=2, noise_offset=-1)
