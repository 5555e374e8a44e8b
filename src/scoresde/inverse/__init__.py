"""Inverse problems with a score prior: imputation, linear measurements, exact posteriors."""

from .impute import IMPUTE_METHODS, TWISTS, colorize, decoupling_basis, inpaint
from .linear import (
    METHODS,
    SOLVERS,
    deblur,
    inpaint_linear,
    linear_posterior_score,
    solve_linear,
    super_resolve,
    tweedie_mean,
)
from .operators import (
    Blur,
    ChannelMean,
    Downsample,
    LinearOperator,
    Mask,
    MatrixOperator,
    as_operator,
    gaussian_kernel,
    random_projection,
)
from .particles import PosteriorSamples
from .posterior import gaussian_mixture_conditional, gaussian_mixture_posterior
from .smc import SMCResult, smc_linear, systematic_resample

__all__ = [
    "inpaint",
    "colorize",
    "IMPUTE_METHODS",
    "TWISTS",
    "PosteriorSamples",
    "decoupling_basis",
    "LinearOperator",
    "MatrixOperator",
    "Mask",
    "ChannelMean",
    "Downsample",
    "Blur",
    "as_operator",
    "gaussian_kernel",
    "random_projection",
    "gaussian_mixture_posterior",
    "gaussian_mixture_conditional",
    "METHODS",
    "SOLVERS",
    "tweedie_mean",
    "linear_posterior_score",
    "solve_linear",
    "super_resolve",
    "deblur",
    "inpaint_linear",
    "SMCResult",
    "smc_linear",
    "systematic_resample",
]
