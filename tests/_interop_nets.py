"""Tiny seeded diffusers networks and exact-oracle stand-ins for the interop tests.

Import as ``from _interop_nets import ...`` after ``pytest.importorskip("diffusers")``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.targets import GaussianMixture

UNET_SIZES: dict[str, dict[str, Any]] = {
    "small": dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ),
    "wide": dict(
        sample_size=(8, 12),
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 24),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    ),
}
"""Two sizes of randomly initialised ``UNet2DModel`` (grey 8x8; RGB 8x12 with attention)."""


def tiny_unet(size: str = "small", seed: int = 0, dtype: torch.dtype = torch.float64, **kw: Any):
    """A seeded ``UNet2DModel`` of one of :data:`UNET_SIZES`, in eval mode."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    net = UNet2DModel(**{**UNET_SIZES[size], **kw})
    # the default init zeroes the norm biases: perturb every parameter so all of them matter
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return (net.double() if dtype == torch.float64 else net.float()).eval()


def event_shape(size: str) -> tuple[int, ...]:
    cfg = UNET_SIZES[size]
    hw = cfg["sample_size"]
    hw = (hw, hw) if isinstance(hw, int) else hw
    return (cfg["in_channels"], *hw)


def noised_mixture(mix: GaussianMixture, alpha_bar: float) -> GaussianMixture:
    """The diagonal mixture of ``sqrt(a) x0 + sqrt(1 - a) z`` (independent of any scoresde SDE)."""
    return GaussianMixture(
        mix.means * math.sqrt(alpha_bar),
        variances=mix.evals * alpha_bar + (1.0 - alpha_bar),
        weights=mix.weights,
        event_shape=mix.event_shape,
    )


def mixture_score(mix: GaussianMixture, x: Tensor) -> Tensor:
    """``grad log p(x)`` of a clean mixture by autograd of its log-density."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(mix.log_prob(xr).sum(), xr)
    return g


class OracleUNet(nn.Module):
    """Stands in for a diffusers UNet: the exact target of a Gaussian mixture at integer timesteps.

    ``forward(x, timestep)`` returns ``eps``, ``v`` or ``x0`` (diffusers' ``prediction_type``)
    of the mixture noised with ``alphas_cumprod[timestep]``, by diffusers' own formulas.
    """

    def __init__(self, mix: GaussianMixture, alphas_cumprod: Tensor, prediction_type: str):
        super().__init__()
        self.mix, self.ab, self.prediction_type = mix, alphas_cumprod.double(), prediction_type

    def forward(self, x: Tensor, timestep: Tensor) -> Tensor:
        k = torch.round(timestep).long()
        assert torch.allclose(timestep.double(), k.double(), atol=1e-9), "integer timesteps only"
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            a = float(self.ab[k[i]])
            score = mixture_score(noised_mixture(self.mix, a), x[i : i + 1])
            eps = -math.sqrt(1 - a) * score
            x0 = (x[i : i + 1] - math.sqrt(1 - a) * eps) / math.sqrt(a)
            v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0
            out[i] = {"epsilon": eps, "sample": x0, "v_prediction": v}[self.prediction_type][0]
        return out


def edm_precond(unet: nn.Module, sigma_data: float = 0.5) -> nn.Module:
    """EDM's preconditioning (Karras et al. 2022, Table 1) around a UNet: a denoiser D(x, sigma)."""

    class Precond(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
            s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            r = torch.sqrt(s**2 + sigma_data**2)
            c_skip, c_out, c_in = sigma_data**2 / r**2, s * sigma_data / r, 1.0 / r
            c_noise = torch.log(sigma.to(x.dtype)) / 4
            f = self.unet(c_in * x, c_noise, class_labels=class_labels).sample
            return c_skip * x + c_out * f

    return Precond()
