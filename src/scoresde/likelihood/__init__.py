"""Exact likelihood through the probability-flow ODE: log-density, bits/dim, encode, decode.

Song et al. (2021), Sec. 4.3 and eq. 39. Modules: :mod:`.rk` (embedded Runge–Kutta pairs with
per-sample error control), :mod:`.divergence` (exact or Hutchinson trace), :mod:`.flow` (the PF
ODE in the solver's variable and state), :mod:`.api` (the public functions and the solve they
share) and :mod:`.bpd` (bits/dim and dequantisation).
"""

from .api import LikelihoodResult, decode, encode, log_likelihood
from .bpd import bits_per_dim, dequantize

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "encode",
    "decode",
    "bits_per_dim",
    "dequantize",
]
