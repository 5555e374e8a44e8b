"""The trainer: learns an analytic mixture, resumes bit-identically, stops on NaN, config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import four_mode_mixture
from scoresde.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from scoresde.data import ArrayDataset
from scoresde.data.dataset import make_info
from scoresde.likelihood import log_likelihood
from scoresde.metrics import mode_report
from scoresde.train import (
    EMA,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    load_trained,
    read_metrics,
    train,
)


def _cfg(out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        out=str(out), steps=20, batch_size=32, lr=1e-3, log_every=5, ckpt_every=10,
        progress=False, tensorboard=False, sample_n=0, model_kwargs={"hidden": 32, "depth": 2},
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_trained_mlp_recovers_mixture_mode_masses(tmp_path: Path) -> None:
    """Short version of benchmarks/training.py: per-mode mass TV <= 0.03 on 4000 samples, NLL.

    With 4000 samples the TV of a perfect sampler is about 0.01 (multinomial noise), so the
    bound leaves room for about 0.02 of model error.
    """
    gm = four_mode_mixture()
    x = gm.sample(20000, torch.Generator().manual_seed(1))
    cfg = _cfg(tmp_path / "mix", steps=1000, batch_size=256, lr=2e-3, warmup_steps=100,
               ema_decay=0.995, log_every=100, ckpt_every=1000,
               model_kwargs={"hidden": 64, "depth": 2})  # fmt: skip
    result = train(cfg, x)
    assert result.step == 1000 and math.isfinite(result.loss)
    model = load_trained(tmp_path / "mix")
    s = model.sample(4000, steps=200, generator=torch.Generator().manual_seed(3))
    report = mode_report(gm, s)
    assert report.tv <= 0.03, report.mass
    assert report.frechet_weighted <= 0.1, report.frechet
    # test NLL (probability-flow ODE, exact divergence) against the true log-density on the
    # same points: the benchmark's 3-minute run is within 0.1 nats; this short run within 0.2
    test = gm.sample(400, torch.Generator().manual_seed(5))
    lp = log_likelihood(model.score_fn, model.sde, test, divergence="exact", rtol=1e-4,
                        atol=1e-4).log_prob.double()  # fmt: skip
    gap = float((gm.log_prob(test.double()) - lp).mean())
    assert abs(gap) <= 0.2, gap


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    """Interrupt at step 20 (mid-epoch 2, with dropout and LR warm-up); resume to 40."""
    torch.manual_seed(123)
    x = torch.randn(600, 2)
    common = dict(
        deterministic=True, warmup_steps=15, model_kwargs={"hidden": 32, "depth": 2, "dropout": 0.2}
    )
    full = train(_cfg(tmp_path / "a", steps=40, **common), x)
    train(_cfg(tmp_path / "b", steps=20, **common), x)
    resumed = train(_cfg(tmp_path / "b", steps=40, **common), x, resume=True)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a.step == b.step == 40
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
        assert torch.equal(a.ema[key], b.ema[key]), key
    assert a.state is not None and b.state is not None
    opt_a, opt_b = a.state["optimizer"]["state"], b.state["optimizer"]["state"]
    for k in opt_a:
        assert torch.equal(opt_a[k]["exp_avg_sq"], opt_b[k]["exp_avg_sq"])
    rows_a = read_metrics(tmp_path / "a" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]  # no duplicated rows
    assert [r["loss"] for r in rows_b] == [r["loss"] for r in rows_a]


class _CrashAt(ArrayDataset):
    """Raises (like a killed process) when asked for its ``at``-th batch."""

    def __init__(self, data: torch.Tensor, at: int) -> None:
        super().__init__(data, None, make_info("crash", data, None, levels=None))
        self.at, self.calls = at, 0

    def to(self, device: torch.device | str) -> _CrashAt:
        return self

    def get_batch(self, indices, generator=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().get_batch(indices, generator)


def test_metrics_after_resume_match_uninterrupted_run(tmp_path: Path) -> None:
    """log_every=4 is no divisor of ckpt_every=6: the rows after a resume still average the
    same steps, after a crash (newest checkpoint at 6, row 8 redone) and after a shorter run
    (its last row at 10 is off the grid and is reopened)."""
    torch.manual_seed(5)
    x = torch.randn(400, 2)
    kw: dict[str, object] = dict(steps=24, log_every=4, ckpt_every=6, warmup_steps=5)
    train(_cfg(tmp_path / "full", **kw), x)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tmp_path / "crash", **kw), _CrashAt(x, at=9)).fit()
    train(_cfg(tmp_path / "crash", **kw), x, resume=True)
    train(_cfg(tmp_path / "short", **{**kw, "steps": 10}), x)
    assert read_metrics(tmp_path / "short" / "metrics.csv")[-1]["step"] == 10
    train(_cfg(tmp_path / "short", **kw), x, resume=True)
    cols = ("step", "loss", "lr", "grad_norm")
    want = [[r[c] for c in cols] for r in read_metrics(tmp_path / "full" / "metrics.csv")]
    assert [r[0] for r in want] == [4, 8, 12, 16, 20, 24]
    for run in ("crash", "short"):
        got = [[r[c] for c in cols] for r in read_metrics(tmp_path / run / "metrics.csv")]
        assert got == want, run


def test_changed_run_definition_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    x = torch.randn(200, 2)
    train(_cfg(tmp_path / "r", steps=10), x)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(_cfg(tmp_path / "r", steps=20), x)
    with pytest.raises(ValueError, match="batch_size: 32 -> 16"):
        Trainer(_cfg(tmp_path / "r", steps=20, batch_size=16), x, resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        Trainer(_cfg(tmp_path / "empty"), x, resume=True)
    with pytest.raises(ValueError, match="larger than the data set"):
        Trainer(_cfg(tmp_path / "big", batch_size=512), x)
    bad = x.clone()
    bad[7, 1] = math.nan  # checked once up front (the training step's loss is unchecked)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Trainer(_cfg(tmp_path / "n"), ArrayDataset(bad, None, make_info("b", x, None, levels=None)))


class _PoisonAfter(ArrayDataset):
    """Serves finite but huge batches after ``after`` batches: the loss overflows to inf/NaN."""

    def __init__(self, data: torch.Tensor, after: int) -> None:
        super().__init__(data, None, make_info("poison", data, None, levels=None))
        self.after, self.calls = after, 0

    def to(self, device: torch.device | str) -> _PoisonAfter:
        return self

    def get_batch(self, indices, generator=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        x, y = super().get_batch(indices, generator)
        return (x * 1e37 if self.calls > self.after else x), y


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    data = _PoisonAfter(torch.randn(400, 2), after=13)
    cfg = _cfg(tmp_path / "nan", steps=30, ckpt_every=5, keep_last=10)
    with pytest.raises(TrainingDiverged, match="NaN or infinite at step 14") as info:
        Trainer(cfg, data).fit()
    assert info.value.step == 14
    assert info.value.checkpoint == latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert [p.name for p in list_checkpoints(tmp_path / "nan" / "checkpoints")] == [
        "step_00000005", "step_00000010"]  # fmt: skip
    good = load_checkpoint(info.value.checkpoint)  # verified, finite
    assert all(bool(torch.isfinite(v).all()) for v in good.model.values())
    assert "last good checkpoint" in str(info.value)


def test_ema_warmup_follows_closed_form() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.9, warmup=True)
    expected = 0.0
    for n in range(30):
        with torch.no_grad():
            net.weight.fill_(float(n + 1))
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * (n + 1)
        ema.update(net)
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_clipping_and_logs(tmp_path: Path) -> None:
    x = torch.randn(300, 2) * 50.0  # large data -> large gradients, clipped to 0.5
    cfg = _cfg(tmp_path / "log", steps=12, log_every=1, ckpt_every=12, warmup_steps=4,
               grad_clip=0.5, tensorboard=True, sample_n=64, sample_steps=5)  # fmt: skip
    result = train(cfg, x)
    rows = read_metrics(tmp_path / "log" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["lr"] for r in rows[:5]] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert rows[0]["grad_norm"] > 0.5  # the norm before clipping is reported
    assert any((tmp_path / "log" / "tb").iterdir())
    assert result.samples is not None and result.samples.stat().st_size > 1000
    assert (tmp_path / "log" / "config.yaml").read_text().startswith("data:")


def test_config_yaml_overrides_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("data: digits\nsteps: 7\nmodel_kwargs: {channels: 8}\nbetas: [0.8, 0.99]\n")
    cfg = TrainConfig.from_yaml(f, steps=9)
    assert (cfg.data, cfg.steps, cfg.betas) == ("digits", 9, (0.8, 0.99))
    cfg = cfg.apply_overrides(["model_kwargs.num_res_blocks=1", "lr=3e-4", "grad_clip=null"])
    assert cfg.model_kwargs == {"channels": 8, "num_res_blocks": 1}
    assert cfg.lr == 3e-4 and cfg.grad_clip is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    r = TrainConfig(sde="edm").resolved()
    assert (r.parameterization, r.weighting, r.time_sampling) == ("edm", "natural", "edm")
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="Did you mean 'vp'"):
        TrainConfig(sde="vpp")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cfg.apply_overrides(["steps"])


@pytest.mark.parametrize("sde", ["ve", "subvp", "edm"])
def test_every_sde_trains_and_samples(tmp_path: Path, sde: str) -> None:
    x = torch.randn(256, 2)
    res = train(_cfg(tmp_path / sde, sde=sde, steps=6, ckpt_every=6), x)
    assert math.isfinite(res.loss)
    m = load_trained(res.out)
    assert m.sde.__class__.__name__.lower().startswith(sde[:2])
    s = m.sample(8, steps=5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (8, 2) and bool(torch.isfinite(s).all())


def test_max_minutes_stops_with_a_final_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    x = torch.randn(256, 2)
    cfg = _cfg(tmp_path, steps=10**6, max_minutes=0.02, ckpt_every=10**5, log_every=10**5)
    res = Trainer(cfg, x).fit()
    assert 0 < res.step < 10**6 and res.seconds < 30  # stopped by the 1.2 s budget
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt is not None and load_checkpoint(ckpt).step == res.step
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows[-1]["step"] == res.step and math.isfinite(rows[-1]["loss"])
    more = train(_cfg(tmp_path, steps=res.step + 7), x, resume=True)
    assert more.step == res.step + 7
    with pytest.raises(ValueError, match="max_minutes"):
        _cfg(tmp_path, max_minutes=0).validate()
