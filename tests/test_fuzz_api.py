"""Fuzzing the public API: every bad input ends in ValueError/TypeError/FileNotFoundError.

Each test draws one bad argument (or a damaged file) per example and calls the public entry
point; the call must raise one of the allowed exceptions with a message, never an internal error
(AttributeError, RuntimeError, IndexError, ...) and never return silently. The number of cases
tried is printed in pytest's terminal summary (``fuzz cases tried: ...``).
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scoresde as S
from conftest import STD_SDES, two_modes
from scoresde import data
from scoresde.checkpoint import load_checkpoint
from scoresde.parameterize import PARAMETERIZATIONS
from scoresde.sampling.schedules import SCHEDULES
from scoresde.train import TrainConfig, Trainer, load_trained

ALLOWED = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GM = two_modes()

NAN = float("nan")
INF = float("inf")


def _nan_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, NAN)


def _inf_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, INF)


def _short_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x[:, :1]


def _list_score(x: torch.Tensor, t: torch.Tensor) -> Any:
    return x.tolist()


def _expect_clear_error(fn: Callable[[], Any]) -> BaseException:
    """Run ``fn``; it must raise an allowed exception whose message is not empty."""
    with pytest.raises(ALLOWED) as info:
        fn()
    assert str(info.value).strip(), f"empty message from {type(info.value).__name__}"
    return info.value


# ------------------------------------------------------------------------------------------------
# bad arguments of sample() and log_likelihood()

SAMPLE_BAD: list[tuple[str, Any]] = [
    ("shape", ()),
    ("shape", (0, 2)),
    ("shape", (-1, 2)),
    ("shape", (2.5, 2)),
    ("shape", "ab"),
    ("shape", 4),
    ("shape", None),
    ("shape", (4, 3)),  # the score is for 2-D points
    ("steps", 0),
    ("steps", -3),
    ("steps", 2.5),
    ("steps", "3"),
    ("steps", None),
    ("eps", -1.0),
    ("eps", 0.0),
    ("eps", NAN),
    ("eps", INF),
    ("eps", 1e9),  # beyond T for every SDE
    ("schedule", "karas"),
    ("schedule", torch.tensor([0.1, 0.5, 1.0])),
    ("schedule", torch.tensor([1.0, NAN, 0.01])),
    ("schedule", torch.ones(2, 2)),
    ("schedule", torch.tensor([5.0, 1.0, 0.01])),
    ("schedule", 3),
    ("rho", 0.0),
    ("rho", -1.0),
    ("rho", NAN),
    ("device", "meta"),
    ("device", "bogus"),
    ("device", "cuda:7"),
    ("device", 3),
    ("dtype", torch.int64),
    ("dtype", torch.bool),
    ("dtype", "float32"),
    ("x_init", torch.full((4, 2), NAN)),
    ("x_init", torch.full((4, 2), INF)),
    ("x_init", torch.ones(4, 3)),
    ("x_init", torch.ones(4, 2, dtype=torch.long)),
    ("x_init", [[1.0, 2.0]] * 4),
    ("x_init", torch.ones(4, 2, device="meta")),
    ("generator", 3),
    ("generator", "seed"),
    ("batch_size", 0),
    ("batch_size", -2),
    ("batch_size", 1.5),
    ("batch_size", "2"),
    ("foo", 1),
    ("score_fn", _nan_score),
    ("score_fn", _inf_score),
    ("score_fn", _short_score),
    ("score_fn", _list_score),
    ("score_fn", 3),
    ("sde", "vp"),
    ("sde", None),
]


@FUZZ
@given(
    bad=st.sampled_from(SAMPLE_BAD),
    sampler=st.sampled_from(S.available_samplers()),
    sde_name=st.sampled_from(sorted(STD_SDES)),
)
def test_sample_rejects_bad_arguments(
    bad: tuple[str, Any], sampler: str, sde_name: str, fuzz_cases: collections.Counter[str]
) -> None:
    fuzz_cases["api"] += 1
    if sampler == "ancestral" and sde_name == "subvp":
        sde_name = "vp"  # an unsupported pair would fail whatever the bad argument
    sde = STD_SDES[sde_name]()
    kwargs: dict[str, Any] = dict(
        score_fn=GM.score_fn(sde), sde=sde, shape=(4, 2), sampler=sampler, steps=3
    )
    if bad[0] == "rho":
        kwargs["schedule"] = "karras"
    kwargs[bad[0]] = bad[1]
    _expect_clear_error(lambda: S.sample(**kwargs))


LIKELIHOOD_BAD: list[tuple[str, Any]] = [
    ("x", torch.full((3, 2), NAN)),
    ("x", torch.full((3, 2), -INF)),
    ("x", torch.ones(3)),
    ("x", torch.ones(0, 2)),
    ("x", torch.ones(3, 0)),
    ("x", torch.ones(3, 2, dtype=torch.long)),
    ("x", torch.ones(3, 2, device="meta")),
    ("x", [[1.0, 2.0]]),
    ("x", torch.ones(3, 5)),
    ("rtol", -1.0),
    ("rtol", NAN),
    ("atol", 0.0),
    ("atol", INF),
    ("method", "dopri"),
    ("method", "rk45"),
    ("divergence", "hutch"),
    ("probe", "gauss"),
    ("probes", 0),
    ("probes", 1.5),
    ("eps", 0.0),
    ("eps", 1e9),
    ("eps", NAN),
    ("generator", 7),
    ("batch_size", 0),
    ("batch_size", "8"),
    ("score_fn", _nan_score),
    ("score_fn", _inf_score),
    ("score_fn", _short_score),
    ("score_fn", _list_score),
    ("score_fn", None),
    ("sde", "ve"),
]


@FUZZ
@given(bad=st.sampled_from(LIKELIHOOD_BAD), sde_name=st.sampled_from(sorted(STD_SDES)))
def test_log_likelihood_rejects_bad_arguments(
    bad: tuple[str, Any], sde_name: str, fuzz_cases: collections.Counter[str]
) -> None:
    fuzz_cases["api"] += 1
    sde = STD_SDES[sde_name]()
    kwargs: dict[str, Any] = dict(
        score_fn=GM.score_fn(sde), sde=sde, x=torch.ones(3, 2), rtol=1e-2, atol=1e-2
    )
    kwargs[bad[0]] = bad[1]
    _expect_clear_error(lambda: S.log_likelihood(**kwargs))


# ------------------------------------------------------------------------------------------------
# SDE, schedule and loss parameters

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**6), 10**6),
    st.sampled_from([None, "1.0", "abc", [1.0], True]),
)


@FUZZ
@given(name=st.sampled_from(sorted(STD_SDES)), a=NUMBERS, b=NUMBERS)
def test_sde_parameters_are_validated(
    name: str, a: Any, b: Any, fuzz_cases: collections.Counter[str]
) -> None:
    """Any two parameters: a working SDE with finite marginals, or a clear error."""
    fuzz_cases["api"] += 1
    cls = STD_SDES[name]
    try:
        sde = cls(a, b)
    except ALLOWED as err:
        assert str(err).strip()
        return
    t = torch.linspace(sde.eps, sde.T, 5, dtype=torch.float64)
    m = sde.marginal(torch.zeros(5, 1, dtype=torch.float64), t)
    assert torch.isfinite(m.std).all() and (m.std > 0).all(), (a, b)


@FUZZ
@given(
    kind=st.one_of(st.sampled_from(SCHEDULES), st.text(max_size=8)),
    rho=NUMBERS,
    lo=st.one_of(st.none(), NUMBERS),
    hi=st.one_of(st.none(), NUMBERS),
    steps=st.one_of(st.integers(-3, 6), st.floats(allow_nan=True)),
)
def test_schedules_are_validated(
    kind: str, rho: Any, lo: Any, hi: Any, steps: Any, fuzz_cases: collections.Counter[str]
) -> None:
    """A schedule either gives a strictly decreasing finite grid or raises a clear error."""
    fuzz_cases["api"] += 1
    sde = S.VESDE()
    try:
        sch = S.Schedule(kind, rho=rho, sigma_min=lo, sigma_max=hi)
        times = S.get_times(sde, steps, sch)
    except ALLOWED as err:
        assert str(err).strip()
        return
    assert torch.isfinite(times).all() and (times.diff() < 0).all()
    assert 0 < float(times[-1]) and float(times[0]) <= sde.T


LOSS_BAD: list[tuple[str, Any]] = [
    ("x0", torch.full((3, 2), NAN)),
    ("x0", torch.ones(3, 2, dtype=torch.long)),
    ("x0", torch.ones(3)),
    ("x0", "data"),
    ("weighting", "sigma"),
    ("reduction", "avg"),
    ("t", torch.ones(5)),
    ("t", torch.full((3,), NAN)),
    ("noise", torch.ones(5)),
    ("noise", torch.full((3, 2), INF)),
    ("eps", -1.0),
    ("score_fn", _short_score),
    ("score_fn", _list_score),
    ("generator", "g"),
]


@FUZZ
@given(bad=st.sampled_from(LOSS_BAD))
def test_dsm_loss_rejects_bad_arguments(
    bad: tuple[str, Any], fuzz_cases: collections.Counter[str]
) -> None:
    fuzz_cases["api"] += 1
    sde = S.VPSDE()
    kwargs: dict[str, Any] = dict(score_fn=GM.score_fn(sde), sde=sde, x0=torch.ones(3, 2))
    kwargs[bad[0]] = bad[1]
    _expect_clear_error(lambda: S.dsm_loss(**kwargs))


# ------------------------------------------------------------------------------------------------
# unknown names: a "did you mean" suggestion


def _typo(name: str, pos: int, kind: int) -> str:
    """One edit of ``name`` (drop, double or swap a character) that is no longer ``name``."""
    i = pos % len(name)
    if kind == 0:
        return name[:i] + name[i + 1 :]
    if kind == 1:
        return name[:i] + name[i] + name[i:]
    j = min(i + 1, len(name) - 1)
    swapped = list(name)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    return "".join(swapped) if "".join(swapped) != name else name + name[-1]


REGISTRIES: dict[str, tuple[list[str], Callable[[str], Any]]] = {
    "sampler": (
        S.available_samplers(),
        lambda n: S.sample(lambda x, t: x, S.VPSDE(), (2, 2), sampler=n, steps=2),
    ),
    "schedule": (list(SCHEDULES), lambda n: S.get_times(S.VPSDE(), 3, n)),
    "data set": (
        ["moons", "swissroll", "checkerboard", "pinwheel", "spirals", "digits"],
        lambda n: data.load_dataset(n),
    ),
    "parameterization": (
        [p for p in PARAMETERIZATIONS if len(p) > 2],
        lambda n: S.ScoreModel(torch.nn.Linear(2, 2), S.VPSDE(), n),  # type: ignore[arg-type]
    ),
    "config key": (
        ["steps", "batch_size", "ema_decay", "warmup_steps", "sample_every"],
        lambda n: TrainConfig.from_dict({n: 1}),
    ),
    "sde name": (["edm", "subvp"], lambda n: TrainConfig(sde=n)),
    "likelihood method": (
        ["dopri5", "tsit5", "bosh3"],
        lambda n: S.log_likelihood(lambda x, t: -x, S.VPSDE(), torch.ones(2, 2), method=n),
    ),
}


@FUZZ
@given(
    registry=st.sampled_from(sorted(REGISTRIES)),
    which=st.integers(0, 100),
    pos=st.integers(0, 100),
    kind=st.integers(0, 2),
)
def test_unknown_names_suggest_a_valid_one(
    registry: str, which: int, pos: int, kind: int, fuzz_cases: collections.Counter[str]
) -> None:
    fuzz_cases["api"] += 1
    names, call = REGISTRIES[registry]
    name = names[which % len(names)]
    typo = _typo(name, pos, kind)
    if typo in names:
        return
    err = _expect_clear_error(lambda: call(typo))
    assert isinstance(err, ValueError)
    assert "did you mean" in str(err).lower(), str(err)


# ------------------------------------------------------------------------------------------------
# data: arrays with NaN/inf, empty, wrong dtypes; image folders of mixed sizes


ARRAYS: list[Any] = [
    np.full((20, 2), np.nan, dtype=np.float32),
    np.concatenate([np.zeros((19, 2)), [[np.inf, 0.0]]]).astype(np.float64),
    np.zeros((0, 2), dtype=np.float32),
    np.ones(20, dtype=np.float32),
    np.ones((20, 2), dtype=np.int64),
    np.ones((20, 2), dtype=np.complex64),
    np.array([{"a": 1}] * 3, dtype=object),
    b"not a numpy file",
    b"",
]


@FUZZ
@given(which=st.integers(0, len(ARRAYS) - 1), suffix=st.sampled_from([".npy", ".npz"]))
def test_bad_array_files_are_refused(
    which: int, suffix: str, tmp_path_factory: pytest.TempPathFactory,
    fuzz_cases: collections.Counter[str],
) -> None:  # fmt: skip
    fuzz_cases["api"] += 1
    path = tmp_path_factory.mktemp("arr") / f"bad{suffix}"
    arr = ARRAYS[which]
    if isinstance(arr, bytes):
        path.write_bytes(arr)
    elif suffix == ".npz":
        np.savez(path, x=arr)
    else:
        np.save(path, arr, allow_pickle=True)
    _expect_clear_error(lambda: data.load_dataset(str(path)))


TENSORS: list[Any] = [
    torch.full((20, 2), NAN),
    torch.cat([torch.zeros(19, 2), torch.tensor([[0.0, -INF]])]),
    torch.zeros(0, 2),
    torch.ones(20),
    torch.ones(20, 2, dtype=torch.long),
    "moons.npy",
    [1, 2, 3],
]


@FUZZ
@given(which=st.integers(0, len(TENSORS) - 1))
def test_trainer_refuses_bad_data(
    which: int, tmp_path_factory: pytest.TempPathFactory, fuzz_cases: collections.Counter[str]
) -> None:
    """Bad in-memory data is refused before anything is written to the run folder."""
    fuzz_cases["api"] += 1
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = TrainConfig(out=str(out), steps=2, batch_size=4, progress=False, sample_n=0,
                      tensorboard=False, model_kwargs={"hidden": 8, "depth": 1})  # fmt: skip
    _expect_clear_error(lambda: Trainer(cfg, TENSORS[which]))
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_mixed_size_images_are_refused(
    tmp_path: Path, fuzz_cases: collections.Counter[str]
) -> None:
    from PIL import Image

    fuzz_cases["api"] += 1
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(tmp_path / "b.png")
    err = _expect_clear_error(lambda: data.load_dataset(str(tmp_path)))
    assert "different sizes" in str(err)


# ------------------------------------------------------------------------------------------------
# checkpoints: missing, truncated, corrupted, foreign


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    cfg = TrainConfig(out=str(out), steps=2, batch_size=8, progress=False, sample_n=0,
                      tensorboard=False, model_kwargs={"hidden": 8, "depth": 1})  # fmt: skip
    Trainer(cfg, torch.randn(64, 2, generator=torch.Generator().manual_seed(0))).fit()
    return out


DAMAGES = ("truncate", "flip", "delete", "replace", "empty")


@FUZZ
@given(
    file=st.sampled_from(
        ["model.safetensors", "ema.safetensors", "state.pt", "config.json", "manifest.json"]
    ),  # fmt: skip
    damage=st.sampled_from(DAMAGES),
    where=st.floats(0.0, 1.0),
    loader=st.sampled_from(["load_checkpoint", "load_trained"]),
)
def test_damaged_checkpoints_are_refused(
    file: str, damage: str, where: float, loader: str, good_run: Path,
    tmp_path_factory: pytest.TempPathFactory, fuzz_cases: collections.Counter[str],
) -> None:  # fmt: skip
    fuzz_cases["api"] += 1
    src = next((good_run / "checkpoints").iterdir())
    ckpt = tmp_path_factory.mktemp("bad") / src.name
    shutil.copytree(src, ckpt)
    f = ckpt / file
    raw = f.read_bytes()
    cut = min(int(where * len(raw)), len(raw) - 1)
    if damage == "truncate":
        f.write_bytes(raw[:cut])
    elif damage == "flip":
        f.write_bytes(raw[:cut] + bytes([raw[cut] ^ 0x5A]) + raw[cut + 1 :])
    elif damage == "delete":
        f.unlink()
    elif damage == "replace":
        f.write_bytes(os.urandom(max(len(raw), 16)))
    else:
        f.write_bytes(b"")
    if loader == "load_checkpoint":
        _expect_clear_error(lambda: load_checkpoint(ckpt))
    else:
        _expect_clear_error(lambda: load_trained(ckpt))


@FUZZ
@given(
    content=st.sampled_from([b"", b"{}", b'{"format": "other"}', b"\x00" * 64, b"PK\x03\x04"]),
    name=st.sampled_from(["model.safetensors", "ema.safetensors", "x.pt", "manifest.json"]),
)
def test_foreign_and_missing_checkpoint_paths_are_refused(
    content: bytes, name: str, tmp_path_factory: pytest.TempPathFactory,
    fuzz_cases: collections.Counter[str],
) -> None:  # fmt: skip
    fuzz_cases["api"] += 1
    d = tmp_path_factory.mktemp("foreign")
    (d / name).write_bytes(content)
    for path in (d / name, d, d / "missing", d / "missing" / "model.safetensors"):
        _expect_clear_error(lambda p=path: load_trained(p))  # type: ignore[misc]
        _expect_clear_error(lambda p=path: load_checkpoint(p))  # type: ignore[misc]


def test_unwritable_run_folder_leaves_nothing(
    tmp_path: Path, fuzz_cases: collections.Counter[str]
) -> None:
    """A run folder below a regular file: an OSError naming it, no stray files."""
    fuzz_cases["api"] += 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = TrainConfig(out=str(blocker / "run"), steps=2, batch_size=8, progress=False,
                      sample_n=0, tensorboard=False, model_kwargs={"hidden": 8})  # fmt: skip
    with pytest.raises(OSError, match="file"):
        Trainer(cfg, torch.randn(64, 2)).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
