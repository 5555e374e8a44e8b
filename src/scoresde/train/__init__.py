"""Training: config, trainer (EMA, warm-up, clipping, mixed precision, DDP), checkpoints.

``train(TrainConfig(data="moons", out="runs/moons", steps=2000))`` trains and returns a
:class:`TrainResult`; ``load_trained(path)`` rebuilds the EMA score model from a checkpoint.
``build_net`` is :func:`scoresde.nets.build_net`; the network a config describes comes from
:func:`scoresde.train.build.net_from_config`.
"""

from ..nets import build_net
from .build import as_dataset, build_score_model, build_sde, to_data_space
from .config import TrainConfig
from .distributed import DistInfo, cleanup_distributed, setup_distributed
from .ema import EMA
from .logs import CSV_FIELDS, read_metrics
from .loop import Trainer, TrainingDiverged, TrainResult, train
from .restore import TrainedModel, load_trained

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "TrainingDiverged",
    "as_dataset",
    "TrainedModel",
    "EMA",
    "DistInfo",
    "train",
    "load_trained",
    "build_sde",
    "build_net",
    "build_score_model",
    "to_data_space",
    "setup_distributed",
    "cleanup_distributed",
    "read_metrics",
    "CSV_FIELDS",
]
