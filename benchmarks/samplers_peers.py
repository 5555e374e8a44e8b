"""What the sampler benchmarks share: the analytic targets, their exact model and the peers.

Every sampler is driven by the same exact model: the denoiser ``D(x; sigma)`` of an analytic
Gaussian mixture (Tweedie's formula, ``D = x + sigma^2 grad log p_sigma(x)``, Efron 2011), in
float32 by ``scoresde.targets``. The peers: diffusers' schedulers on the DDPM linear-beta
schedule with an exact epsilon-prediction model, and ``k_diffusion.sampling`` on Karras sigmas
(Karras et al. 2022; rho = 7, sigma in [0.002, 80]).

Used by ``samplers_quality.py`` (quality per NFE) and ``samplers_overhead.py`` (time per step
outside the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

import scoresde as S
from _shared import load_kdiffusion_sampling, log
from scoresde.targets import GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
NFES = (5, 10, 20, 50)


# ------------------------------------------------------------------------------------------
# targets and the shared exact model
def ring2d() -> GaussianMixture:
    """Eight sharp modes on a circle of radius 2, std 0.03, unequal (geometric) weights."""
    k = 8
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
    w = 0.75 ** torch.arange(k, dtype=torch.float64)
    return GaussianMixture(means, torch.full((k,), 0.03**2), weights=w)


def aniso32d() -> GaussianMixture:
    """Four anisotropic modes in 32-D: per-axis std from 0.05 to 1, unequal weights."""
    g = torch.Generator().manual_seed(11)
    d, k = 32, 4
    means = torch.randn(k, d, generator=g, dtype=torch.float64) * 1.5
    std = torch.exp(torch.rand(k, d, generator=g, dtype=torch.float64) * math.log(20)) * 0.05
    return GaussianMixture(means, std**2, weights=[0.4, 0.3, 0.2, 0.1])


TARGETS: dict[str, Callable[[], GaussianMixture]] = {"ring2d": ring2d, "aniso32d": aniso32d}


class Model:
    """The exact denoiser ``D(x; sigma)`` of a target, counting its evaluations."""

    def __init__(self, target: GaussianMixture) -> None:
        self.target, self.sde, self.nfe = target, S.EDMSDE(SIGMA_MIN, SIGMA_MAX), 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Tweedie's posterior mean ``x + sigma^2 score`` (peers may query sigma a bit outside)."""
        self.nfe += 1
        sig = sigma.to(x.dtype).reshape(-1).expand(x.shape[0])
        score = self.target.marginal_score(x, sig.clamp(SIGMA_MIN * 0.5, SIGMA_MAX * 2.5), _WIDE)
        return x + sig[:, None] ** 2 * score

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """scoresde's ``score_fn`` for the EDM SDE (t = sigma)."""
        self.nfe += 1
        return self.target.marginal_score(x, t, self.sde)


_WIDE = S.EDMSDE(SIGMA_MIN * 0.5, SIGMA_MAX * 2.5)  # peers may query sigma a bit outside


def start_noise(n: int, d: int, seed: int) -> torch.Tensor:
    """The standard-normal draw every library starts from (common random numbers)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------
# the peers
def load_peers() -> tuple[Any, dict[str, Callable[[], Any]]]:
    """``k_diffusion.sampling`` (or ``None``) and diffusers' schedulers (empty without it)."""
    ks, how = load_kdiffusion_sampling()
    log(f"k-diffusion: {how}")
    try:
        dsch = diffusers_schedulers()
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken dependency
        print("diffusers unavailable:", e)
        dsch = {}
    return ks, dsch


K_SAMPLERS = {"euler": 1, "heun": 2, "lms": 1, "dpmpp_2m": 1, "dpm_2": 2}
"""k-diffusion's samplers of the comparison and their NFE per step."""


def run_k(
    ks: Any, model: Model, n: int, name: str, nfe: int, seed: int
) -> tuple[torch.Tensor, int]:
    """k-diffusion's ``sample_<name>`` on Karras sigmas within ``nfe`` evaluations."""
    per = K_SAMPLERS[name]
    steps = max(1, (nfe + per - 1) // per) if per == 2 else nfe  # 2-NFE samplers: 2n - 1
    while per == 2 and 2 * steps - 1 > nfe:
        steps -= 1
    sigmas = ks.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    x = start_noise(n, model.target.dim, seed) * SIGMA_MAX
    torch.manual_seed(seed)
    model.nfe = 0
    fn = getattr(ks, f"sample_{name}")
    out = fn(lambda x, s: model.denoise(x, s), x, sigmas, disable=True)
    return out, model.nfe


def diffusers_schedulers() -> dict[str, Callable[[], Any]]:
    """diffusers' schedulers of the comparison, by label (raises ImportError without it)."""
    from diffusers import (  # type: ignore[import-not-found]
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    return {
        "DDIM": lambda: DDIMScheduler(clip_sample=False, timestep_spacing="trailing"),
        "DPMSolverMultistep": lambda: DPMSolverMultistepScheduler(),
        "DPMSolverMultistep(karras)": lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True),
        "UniPC": lambda: UniPCMultistepScheduler(),
        "Euler": lambda: EulerDiscreteScheduler(),
        "Euler(karras)": lambda: EulerDiscreteScheduler(use_karras_sigmas=True),
        "Heun": lambda: HeunDiscreteScheduler(),
    }


def run_diffusers(
    make: Callable[[], Any], model: Model, n: int, nfe: int, seed: int
) -> tuple[torch.Tensor, int]:
    """A diffusers scheduler's loop with the exact epsilon-prediction model at its sigma."""
    heun = "Heun" in type(make()).__name__
    steps = (nfe + 1) // 2 if heun else nfe
    sch = make()
    sch.set_timesteps(steps)
    acp = sch.alphas_cumprod.to(torch.float64)
    x = start_noise(n, model.target.dim, seed) * float(sch.init_noise_sigma)
    torch.manual_seed(seed)
    model.nfe = 0
    for t in sch.timesteps:
        inp = sch.scale_model_input(x, t)
        if hasattr(sch, "sigmas") and getattr(sch, "step_index", None) is not None:
            sigma = sch.sigmas[sch.step_index].to(torch.float64)
        else:
            a = acp[int(t)]
            sigma = torch.sqrt((1 - a) / a)
        x_hat = inp * torch.sqrt(1 + sigma**2).to(inp.dtype)  # VP-scaled input -> x / s
        sig = sigma.to(inp.dtype).expand(n)
        eps = (x_hat - model.denoise(x_hat, sig)) / sig[:, None]
        x = sch.step(eps, t, x).prev_sample
    return x, model.nfe
