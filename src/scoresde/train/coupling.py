"""Couplings of data and noise for flow-matching training: independent, minibatch OT, fixed pairs.

A flow-matching loss (:func:`scoresde.losses.flow_matching_loss`) regresses the velocity of
``x_t = s x0 + std z`` for pairs ``(x0, z)`` drawn from a *coupling* of data and noise:

* ``"independent"``: ``z ~ N(0, I)`` independent of ``x0`` (Lipman et al. 2023; Liu et al. 2023);
* ``"ot"``: minibatch optimal transport (Pooladian et al. 2023; Tong et al. 2024): within each
  batch the noise rows are permuted to the exact minimiser of ``sum_i ||x0_i - z_pi(i)||^2``,
  a linear assignment solved by SciPy's ``linear_sum_assignment`` (the Jonker-Volgenant
  algorithm, Crouse 2016). Exact and ``O(B^3)``, so a batch per process is capped at
  :data:`OT_MAX_BATCH`. The paths then cross less, so few-step sampling is straighter;
* ``"pairs"``: fixed ``(noise, sample)`` pairs drawn by a teacher's probability-flow ODE, the
  reflow of Liu et al. 2023 (``scoresde reflow``): :func:`save_pairs` / :func:`load_pairs`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import ArrayDataset, DatasetInfo

__all__ = [
    "COUPLINGS",
    "OT_MAX_BATCH",
    "check_coupling",
    "ot_pair",
    "PairDataset",
    "save_pairs",
    "load_pairs",
]

COUPLINGS = ("independent", "ot", "pairs")
"""The couplings of data and noise a training run can use."""
OT_MAX_BATCH = 2048
"""The largest batch (per process) for ``coupling="ot"``: the exact assignment is ``O(B^3)``
(about 1 s at 2048 on a CPU core, 7 s at 4096)."""


def _linear_sum_assignment() -> Any:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise ImportError(
            "coupling='ot' needs SciPy for the exact assignment: pip install scipy"
        ) from None
    return linear_sum_assignment


def check_coupling(coupling: str, batch: int) -> None:
    """Raise a one-line error unless ``coupling`` can run with ``batch`` samples per process."""
    if coupling != "ot":
        return
    _linear_sum_assignment()
    if batch > OT_MAX_BATCH:
        raise ValueError(
            f"coupling='ot' solves an exact assignment per batch (O(B^3)): a batch of {batch} "
            f"per process is above {OT_MAX_BATCH}; lower --batch-size, use more processes, "
            "or --coupling independent"
        )


@torch.no_grad()
def ot_pair(x0: Tensor, z: Tensor) -> Tensor:
    """Permute the rows of ``z`` to the optimal-transport pairing with ``x0`` (squared distance).

    Returns ``z[perm]`` with ``perm`` the exact minimiser of ``sum_i ||x0_i - z_perm(i)||^2``
    (one host transfer of the ``B x B`` cost, solved on the CPU). Raises ``ValueError`` above
    :data:`OT_MAX_BATCH` rows.
    """
    if x0.shape != z.shape:
        raise ValueError(
            f"x0 and z must have one shape, got {tuple(x0.shape)} and {tuple(z.shape)}"
        )
    check_coupling("ot", x0.shape[0])
    a, b = x0.flatten(1).double(), z.flatten(1).double()
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    _, cols = _linear_sum_assignment()(cost.cpu().numpy())
    return z[torch.from_numpy(cols).to(z.device)]


class PairDataset(ArrayDataset):
    """Samples with the noise each was drawn from (reflow pairs): ``noise[i]`` maps to ``x[i]``.

    The samples are already in training space (float); ``info`` is the teacher's data
    description (levels, image or not) so the student maps samples back the same way.
    """

    def __init__(self, data: Tensor, noise: Tensor, info: DatasetInfo) -> None:
        if noise.shape != data.shape:
            raise ValueError(
                f"noise must have the samples' shape {tuple(data.shape)}, got {tuple(noise.shape)}"
            )
        super().__init__(data, None, info)
        self.noise = noise

    def noise_batch(self, indices: Tensor) -> Tensor:
        """The noise paired with the samples at ``indices``."""
        return self.noise[indices]

    def to(self, device: torch.device | str) -> PairDataset:
        """A copy on ``device``."""
        return PairDataset(self.data.to(device), self.noise.to(device), self.info)


def save_pairs(
    path: str | os.PathLike[str], noise: Tensor, samples: Tensor, info: DatasetInfo
) -> Path:
    """Write reflow pairs as an ``.npz`` (``x``, ``noise``, ``info`` as JSON), atomically.

    The file is also an ordinary data file (its samples are the array ``x``).
    """
    from ..checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    meta = json.dumps(dataclasses.asdict(info))
    np.savez(
        buf,
        x=samples.detach().float().cpu().numpy(),
        noise=noise.detach().float().cpu().numpy(),
        info=np.array(meta),
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_pairs(path: str | os.PathLike[str]) -> PairDataset:
    """Read a file of :func:`save_pairs` (``ValueError`` naming what is missing)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"pairs file {str(p)!r} does not exist; make one with scoresde reflow")
    with np.load(p, allow_pickle=False) as archive:
        missing = [k for k in ("x", "noise", "info") if k not in archive]
        if missing:
            raise ValueError(
                f"{str(p)!r} is not a reflow pairs file (no {missing}); coupling='pairs' "
                "trains on the output of scoresde reflow"
            )
        x = torch.from_numpy(np.asarray(archive["x"], dtype=np.float32))
        z = torch.from_numpy(np.asarray(archive["noise"], dtype=np.float32))
        meta = json.loads(str(archive["info"]))
    meta["shape"] = tuple(meta["shape"])
    meta["data_range"] = tuple(meta["data_range"])
    if not bool(torch.isfinite(x).all() & torch.isfinite(z).all()):
        raise ValueError(f"{str(p)!r} holds NaN or infinite values")
    info = dataclasses.replace(DatasetInfo(**meta), n=int(x.shape[0]))
    return PairDataset(x, z, info)
