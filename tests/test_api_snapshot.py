"""Snapshot of the public API: names and signatures that code outside the repository calls.

A change to the public API shows up here as a diff against ``tests/api_snapshot.json``. When the
change is intended (a new name, a new keyword), regenerate the snapshot with
``python tests/test_api_snapshot.py`` and say so in the CHANGELOG; renaming or removing a name
breaks users and needs a deprecation instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("api_snapshot.json")


def _public_packages() -> list[str]:
    """``scoresde`` and its subpackages (not private ones)."""
    import scoresde

    names = ["scoresde"]
    for info in pkgutil.iter_modules(scoresde.__path__, "scoresde."):
        if info.ispkg and not info.name.rsplit(".", 1)[1].startswith("_"):
            names.append(info.name)
    return sorted(names)


def _signature(obj: Any) -> str:
    return str(inspect.signature(obj))


def current_api() -> dict[str, Any]:
    """The public names and the signatures under contract, as plain JSON data."""
    import scoresde
    from scoresde import inverse

    api: dict[str, Any] = {"__all__": {}}
    for name in _public_packages():
        mod = importlib.import_module(name)
        api["__all__"][name] = sorted(getattr(mod, "__all__", []))
    api["signatures"] = {
        "scoresde.sample": _signature(scoresde.sample),
        "scoresde.log_likelihood": _signature(scoresde.log_likelihood),
        "scoresde.inverse.inpaint": _signature(inverse.inpaint),
    }
    sde_methods = {}
    for name, member in inspect.getmembers(scoresde.SDE):
        if name.startswith("_"):
            continue
        if inspect.isfunction(member):
            sde_methods[name] = _signature(member)
        elif isinstance(member, property):
            sde_methods[name] = "property"
    api["SDE"] = sde_methods
    api["TrainConfig"] = {
        f.name: {
            "type": str(f.type),
            "default": repr(f.default)
            if f.default is not dataclasses.MISSING
            else "factory"
            if f.default_factory is not dataclasses.MISSING
            else "required",
        }
        for f in dataclasses.fields(scoresde.TrainConfig)
    }
    return api


def test_public_api_matches_the_snapshot() -> None:
    want = json.loads(SNAPSHOT.read_text())
    got = json.loads(json.dumps(current_api()))
    for section in sorted(set(want) | set(got)):
        assert got.get(section) == want.get(section), (
            f"public API section {section!r} changed; if intended, run "
            f"`python tests/test_api_snapshot.py` and record it in the CHANGELOG"
        )


def test_every_name_in_all_exists() -> None:
    for name in _public_packages():
        mod = importlib.import_module(name)
        missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
        assert not missing, f"{name}.__all__ names missing attributes: {missing}"


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current_api(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
