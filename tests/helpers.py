"""Test utilities shared by test modules (import as ``from helpers import ...``).

The SDE zoo and the analytic targets are in ``conftest.py``.
"""

from __future__ import annotations

from typing import Any

import torch


class HostReads:
    """Count reads of tensor values into Python (a device synchronisation on a GPU)."""

    NAMES = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> HostReads:
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def counted(t: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                self.count += 1
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
