"""scoresde: score-based generative modelling through stochastic differential equations."""

from . import (
    checkpoint,
    guidance,
    inverse,
    langevin,
    losses,
    metrics,
    nets,
    parameterize,
    sampling,
    targets,
    train,
)
from ._version import __version__ as __version__
from .guidance import cfg, guided
from .inverse import colorize, inpaint
from .likelihood import LikelihoodResult, bits_per_dim, decode, dequantize, encode, log_likelihood
from .losses import dsm_loss, flow_matching_loss
from .parameterize import ScoreModel
from .sampling import (
    SampleResult,
    Schedule,
    available_samplers,
    fit_schedule,
    get_times,
    sample,
)
from .sampling.base import sampler_help
from .sde import (
    EDMSDE,
    SDE,
    VESDE,
    VPSDE,
    AffineSDE,
    InterpolantSDE,
    Marginal,
    RectifiedFlow,
    ReverseSDE,
    ScoreWithDenoiser,
    SubVPSDE,
)
from .train import TrainConfig, Trainer, load_trained

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "EDMSDE",
    "AffineSDE",
    "InterpolantSDE",
    "RectifiedFlow",
    "ScoreWithDenoiser",
    "ReverseSDE",
    "Marginal",
    "sample",
    "SampleResult",
    "Schedule",
    "fit_schedule",
    "available_samplers",
    "sampler_help",
    "get_times",
    "dsm_loss",
    "flow_matching_loss",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "encode",
    "decode",
    "ScoreModel",
    "nets",
    "parameterize",
    "losses",
    "metrics",
    "sampling",
    "targets",
    "guidance",
    "inverse",
    "langevin",
    "guided",
    "cfg",
    "inpaint",
    "colorize",
    "train",
    "checkpoint",
    "TrainConfig",
    "Trainer",
    "load_trained",
]
