"""Samplers for the reverse-time SDE and the probability-flow ODE, behind :func:`sample`."""

from . import (  # noqa: F401  (register the samplers)
    ddim,
    dpm_solver,
    edm,
    euler_maruyama,
    fast,
    ode,
    ode_heun,
    pc,
    predictors,
)
from .api import SampleResult, sample
from .base import (
    Context,
    SamplerSpec,
    available_samplers,
    get_sampler,
    is_variance_exploding,
    is_variance_preserving,
    register,
)
from .noise import CounterNoise
from .schedules import SCHEDULES, Schedule, get_times

__all__ = [
    "sample",
    "SampleResult",
    "Context",
    "SamplerSpec",
    "available_samplers",
    "get_sampler",
    "register",
    "is_variance_preserving",
    "is_variance_exploding",
    "CounterNoise",
    "get_times",
    "Schedule",
    "SCHEDULES",
]
