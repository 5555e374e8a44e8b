"""Shared fixtures: the SDE zoo."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
import torch

import scoresde as S
from helpers import cosine_affine

# The suite's tensors are small: one intra-op thread is faster than two and does not slow down
# by an order of magnitude when the machine is busy (measured by several test files here).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test starts on one thread, whatever the previous one left behind."""
    torch.set_num_threads(1)
    yield


SDE_FACTORIES = {
    "ve": S.VESDE,
    "vp": S.VPSDE,
    "subvp": S.SubVPSDE,
    "edm": S.EDMSDE,
    "affine": cosine_affine,
}


@pytest.fixture(params=sorted(SDE_FACTORIES))
def any_sde(request: pytest.FixtureRequest) -> S.SDE:
    """Every SDE of the library, including a user-defined affine one."""
    return SDE_FACTORIES[request.param]()


@pytest.fixture(params=["ve", "vp", "subvp", "edm"])
def std_sde(request: pytest.FixtureRequest) -> S.SDE:
    """The four named SDEs of the public contract."""
    return SDE_FACTORIES[request.param]()


@pytest.fixture(scope="session")
def fuzz_cases(pytestconfig: pytest.Config) -> collections.Counter[str]:
    """Counter of the fuzz cases tried (by suite); reported in the terminal summary."""
    counter: collections.Counter[str] = collections.Counter()
    pytestconfig.stash[_FUZZ_KEY] = counter
    return counter


_FUZZ_KEY = pytest.StashKey[collections.Counter]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the number of fuzz cases tried (tests/test_fuzz*.py)."""
    counter = config.stash.get(_FUZZ_KEY, None)
    if counter:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
        terminalreporter.write_line(f"fuzz cases tried: {sum(counter.values())} ({parts})")
