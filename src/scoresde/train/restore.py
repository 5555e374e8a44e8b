"""Rebuild a trained score model from a checkpoint, for sampling and likelihoods."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import nets
from ..checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from ..parameterize import ScoreModel
from ..sampling import sample
from ..sde import SDE, ScoreFn
from .build import build_score_model, build_sde, to_data_space
from .config import TrainConfig

__all__ = ["TrainedModel", "load_trained", "resume_checkpoint"]


@dataclass
class TrainedModel:
    """A trained score model with everything needed to sample it and read its samples."""

    model: ScoreModel
    """The network (EMA weights by default) wrapped as the score; ``model.score_fn()``."""
    sde: SDE
    """The forward SDE it was trained for."""
    config: TrainConfig
    """The training configuration."""
    event_shape: tuple[int, ...]
    """Shape of one sample."""
    is_image: bool
    """Whether samples are images ``(C, H, W)``."""
    num_classes: int | None
    """Number of classes for a class-conditional model, else ``None``."""
    data_info: dict[str, Any]
    """How training space maps back to data space (see :func:`scoresde.train.to_data_space`)."""
    step: int
    """Training steps of the checkpoint."""
    path: Path
    """The checkpoint directory."""

    @property
    def score_fn(self) -> ScoreFn:
        """The unconditional score ``score_fn(x, t)`` for samplers and likelihoods.

        For a run trained with ``objective="consistency"`` it is the consistency model's
        (:class:`~scoresde.consistency.ConsistencyFunction`, for ``sampler="consistency"``).
        """
        if self.config.objective == "consistency":
            from ..consistency import ConsistencyModel

            sd = float(self.data_info["sigma_data"])
            return ConsistencyModel(self.model, self.sde, sigma_data=sd).score_fn()
        return self.model.score_fn()

    def to_data(self, x: Tensor) -> Tensor:
        """Map samples from training space back to data space."""
        return to_data_space(x, self.data_info)

    def sample(
        self,
        n: int,
        *,
        sampler: str = "euler_maruyama",
        steps: int = 500,
        generator: torch.Generator | None = None,
        data_space: bool = True,
        **options: Any,
    ) -> Tensor:
        """Draw ``n`` samples (in data space unless ``data_space=False``)."""
        dev = next(self.model.parameters()).device
        x = sample(
            self.score_fn,
            self.sde,
            (n, *self.event_shape),
            sampler=sampler,
            steps=steps,
            generator=generator,
            device=dev,
            **options,
        )
        return self.to_data(x) if data_space else x


def load_trained(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", ema: bool = True
) -> TrainedModel:
    """Load a checkpoint (run folder, checkpoint folder or a file in it) as a score model.

    Uses the EMA weights unless ``ema=False``. Raises :class:`CheckpointError` for missing,
    corrupted or foreign checkpoints.
    """
    ckpt = load_checkpoint(path, state=False)
    try:
        cfg = TrainConfig.from_dict(ckpt.config["train"]).resolved()
        data = ckpt.config["data"]
        shape = tuple(int(s) for s in data["shape"])
        spec = ckpt.config["net"]
        net = nets.build_net(spec["name"], **spec["config"])
        net.load_state_dict(ckpt.ema if ema else ckpt.model)
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {str(ckpt.path)!r} does not match this version of scoresde: {err}"
        ) from err
    net = net.to(device).eval()
    sde = build_sde(cfg)
    model = build_score_model(cfg, net, sde, float(data["sigma_data"])).eval()
    return TrainedModel(
        model=model,
        sde=sde,
        config=cfg,
        event_shape=shape,
        is_image=bool(data["is_image"]),
        num_classes=data.get("num_classes"),
        data_info=dict(data),
        step=ckpt.step,
        path=ckpt.path,
    )


def resume_checkpoint(out: str | os.PathLike[str]) -> Path:
    """The newest checkpoint of the run folder ``out``, to resume from.

    Raises ``ValueError`` saying that there is no run to resume (no folder ``out``, or no
    checkpoint in ``out/checkpoints``): the one check behind ``Trainer(resume=True)`` and
    ``scoresde train --resume``, made before anything else is asked of the command line.
    """
    run = Path(out)
    last = latest_checkpoint(run / "checkpoints")
    if last is not None:
        return last
    where = (
        f"there is no run folder {str(run)!r}"
        if not run.exists()
        else f"{str(run / 'checkpoints')!r} holds no checkpoint"
    )
    raise ValueError(
        f"nothing to resume: {where}; check --out (the folder of the run to continue), or "
        f"drop --resume to start a new run"
    )
