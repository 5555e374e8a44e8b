"""Samplers for the reverse-time SDE and the probability-flow ODE, behind :func:`sample`.

Every sampler is registered with its contract (:mod:`.base`); the table below is rendered from
that registry by :func:`~scoresde.sampling.base.sampler_table` when the package is imported (see
``help(scoresde.sampling)``), and each sampler's options are the keyword-only parameters of its
function (see its docstring).

"""

from . import (  # noqa: F401  (register the samplers)
    consistency,
    ddim,
    dpm_solver,
    edm,
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
    ScheduleContext,
    available_samplers,
    get_sampler,
    is_variance_exploding,
    is_variance_preserving,
    register,
    sampler_help,
    sampler_table,
)
from .fit import FitResult, fit_schedule
from .noise import CounterNoise
from .schedules import SCHEDULES, Schedule, get_times

__all__ = [
    "sample",
    "SampleResult",
    "Context",
    "ScheduleContext",
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
    "fit_schedule",
    "FitResult",
    "sampler_table",
    "sampler_help",
]

__doc__ = (__doc__ or "") + sampler_table()
