"""Exact likelihood through the probability-flow ODE: log-density, bits/dim, encode, decode.

Song et al. (2021), Sec. 4.3 and eq. 39. Modules: :mod:`.rk` (embedded Runge–Kutta pairs with
per-sample error control, and fixed steps), :mod:`.divergence` (exact or Hutchinson trace),
:mod:`.flow` (the PF ODE in the solver's variable and state), :mod:`.api` (the public functions
and the solve they share), :mod:`.grid` (fixed grids: the same batched calls for every sample),
:mod:`.fitting` (:func:`fit_grid`: a grid's nodes fitted to a model) and :mod:`.bpd` (bits/dim
and dequantisation).
"""

from .api import LikelihoodResult, decode, encode, log_likelihood
from .bpd import bits_per_dim, dequantize
from .fitting import fit_grid
from .grid import LikelihoodGrid, uniform_grid

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "encode",
    "decode",
    "bits_per_dim",
    "dequantize",
    "fit_grid",
    "LikelihoodGrid",
    "uniform_grid",
]
