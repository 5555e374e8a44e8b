"""Samplers for the reverse-time SDE and the probability-flow ODE, behind :func:`sample`."""

from . import euler_maruyama, ode_heun  # noqa: F401  (register the samplers)
from .api import sample
from .base import Context, SamplerSpec, available_samplers, get_sampler, register
from .schedules import SCHEDULES, get_times

__all__ = [
    "sample",
    "Context",
    "SamplerSpec",
    "available_samplers",
    "get_sampler",
    "register",
    "get_times",
    "SCHEDULES",
]
