"""``scoresde train``'s options are generated from TrainConfig's fields."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from scoresde import cli
from scoresde.cli.train import NOT_FLAGS, flag_fields, train_config_from_args
from scoresde.train import TrainConfig

# the options the command had when they were written by hand; each must keep its meaning
HAND_WRITTEN = {
    "--data": "data", "--out": "out", "--sde": "sde", "--model": "model",
    "--parameterization": "parameterization", "--weighting": "weighting",
    "--class-conditional": "class_conditional", "--steps": "steps", "--batch-size": "batch_size",
    "--lr": "lr", "--warmup-steps": "warmup_steps", "--grad-clip": "grad_clip",
    "--ema-decay": "ema_decay", "--seed": "seed", "--device": "device",
    "--precision": "precision", "--compile": "compile", "--channels-last": "channels_last",
    "--max-minutes": "max_minutes", "--ckpt-every": "ckpt_every", "--keep-last": "keep_last",
    "--log-every": "log_every", "--sample-every": "sample_every", "--no-progress": "progress",
}  # fmt: skip


def train_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def config(*argv: str) -> TrainConfig:
    args = cli.build_parser().parse_args(["train", "--data", "moons", "--out", "o", *argv])
    return train_config_from_args(args)


def test_every_field_is_an_option_or_listed_as_not_one() -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {f.name for f in flag_fields()}
    assert flags | set(NOT_FLAGS) == names and not flags & set(NOT_FLAGS)
    options = {o: a.dest for a in train_parser()._actions for o in a.option_strings}
    for name in flags:
        assert options[f"--{name.replace('_', '-')}"] == name
    for option, field in HAND_WRITTEN.items():
        assert options[option] == field, option
    assert {"--config", "--resume", "--set"} <= set(options)


def test_options_set_their_fields_with_the_fields_types() -> None:
    default = TrainConfig(data="moons", out="o")
    assert config() == default  # no option given: nothing overridden
    cfg = config("--sde", "ve", "--steps", "7", "--lr", "3e-3", "--class-conditional",
                 "--no-progress", "--no-ema-warmup", "--grad-clip", "0", "--max-minutes", "2.5",
                 "--sigma-data", "none", "--sampler", "ode_heun", "--sample-n", "0")  # fmt: skip
    changed = {k: v for k, v in cfg.to_dict().items() if v != default.to_dict()[k]}
    assert changed == {"sde": "ve", "steps": 7, "lr": 3e-3, "class_conditional": True,
                       "progress": False, "ema_warmup": False, "grad_clip": None,
                       "max_minutes": 2.5, "sampler": "ode_heun", "sample_n": 0}  # fmt: skip
    assert type(cfg.steps) is int and type(cfg.lr) is float
    assert config("--grad-clip", "none").grad_clip is None
    assert config("--compile", "--no-compile").compile is False  # the last one wins


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--steps", "1.5"], "--steps"), (["--sde", "vq"], "--sde"), (["--sampler", "eulr"],
     "--sampler"), (["--max-minutes", "soon"], "expected a number or none"),
     (["--progress", "yes"], "unrecognized arguments: yes"), (["--optimizer", "sgd"], "'sgd'")],
)  # fmt: skip
def test_bad_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        config(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_help_shows_each_fields_default() -> None:
    text = " ".join(train_parser().format_help().split())
    assert "optimizer steps (default 10000)" in text
    assert "peak learning rate (default 0.0002)" in text
    assert "show a progress bar (default on)" in text
    assert "(required, here or in --config)" in text
