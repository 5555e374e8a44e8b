"""Shared fixtures: the SDE zoo."""

from __future__ import annotations

import pytest

import scoresde as S
from helpers import cosine_affine

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
