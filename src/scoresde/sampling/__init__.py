"""Samplers for the reverse-time SDE and the probability-flow ODE, behind :func:`sample`.

=================  =====  ==========  ====================================================
name               order  stochastic  what
=================  =====  ==========  ====================================================
euler_maruyama     1      yes         Euler-Maruyama on the reverse SDE (any SDE)
reverse_diffusion  1      yes         discretisation-matched reverse diffusion (any SDE)
ancestral          1      yes         DDPM / SMLD ancestral sampling (VP and VE only)
pc                 1      yes         predictor + ``langevin`` / ``ald`` corrector
langevin           1      yes         annealed Langevin dynamics (corrector only)
ode                5      no          adaptive torchdiffeq PF-ODE solve (NFE reported)
ode_heun           2      no          Heun in t on the PF ODE
euler, heun        1, 2   no          EDM Algorithm 1 in sigma (any SDE)
edm                2      yes         EDM Algorithm 2 (churn), any SDE
ddim               1      eta > 0     DDIM, ``eta`` in [0, 1], any SDE
dpm_solver         1-3    no          DPM-Solver++ multistep in log-SNR (+ ``corrector``)
dpm_solver_sde     1-3    yes         SDE-DPM-Solver++ (``eta = 1``)
fast               3      no          recommended few-step sampler (NFE 5-20)
=================  =====  ==========  ====================================================
"""

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
