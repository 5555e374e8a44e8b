"""``sampler="fast"``: the recommended few-step sampler (NFE 5-20), chosen by benchmark.

See ``benchmarks/samplers.py`` and the "Samplers" section of ``benchmarks/RESULTS.md``: this is
the sampler/schedule pair that gave the best per-mode quality at NFE 5 and 10 on the analytic
mixtures, ahead of diffusers' and k-diffusion's samplers driven by the same model.
"""

from __future__ import annotations

from torch import Tensor

from .base import Context, register
from .dpm_solver import _run
from .schedules import Schedule

__all__ = ["fast", "fast_schedule"]


def fast_schedule(steps: int) -> Schedule:
    """The schedule ``"fast"`` uses unless ``schedule=`` is given, by number of steps.

    Uniform in log-SNR down to ``sigma_min``, then the Tweedie step to 0. With very few steps
    the last solver step cannot resolve fine detail, so stopping early and denoising is
    better: up to 5 steps, ``sigma_min = 0.15`` and the grid starts at noise level 40 instead of
    ``sigma(T)`` (no step is spent where the noised data are still nearly Gaussian); up to 12
    steps ``sigma_min = 0.04``, beyond ``0.02``, both from ``T``. Tuned on data of roughly unit
    scale (benchmarks/samplers.py); for other scales pass ``schedule=Schedule("logsnr",
    sigma_min=..., sigma_max=...)`` with ``sigma_min`` near the data's finest detail and
    ``sigma_max`` far above the data's spread. Starting below ``sigma(T)`` draws the start from
    an isotropic Gaussian that only approximates the noised data, which biases mode masses
    when the data are far from the origin; that bias is why it is used only for <= 5 steps,
    where the discretisation error dominates.
    """
    if steps <= 5:
        return Schedule("logsnr", sigma_min=0.15, sigma_max=40.0)
    return Schedule("logsnr", sigma_min=0.04 if steps <= 12 else 0.02)


@register(
    "fast",
    order=3,
    stochastic=False,
    denoise=True,
    schedule=fast_schedule,
    description="recommended few-step sampler: DPM-Solver++(3M) + corrector, tuned schedule",
)
def fast(ctx: Context, x: Tensor, times: Tensor) -> Tensor:
    """DPM-Solver++(3M) with the UniC-style corrector on the PF ODE, benchmark-tuned schedule.

    ``steps`` solver steps cost ``steps`` score evaluations, plus one for the final Tweedie
    step to noise level 0 (``denoise=True``): ``steps=9`` is NFE 10.
    """
    return _run(ctx, x, times, 3, 0.0, lower_order_final=False, corrector=True)
