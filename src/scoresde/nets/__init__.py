"""Networks ``net(x, c_noise, y=None)``: a time-conditioned MLP and a DDPM++-style U-Net.

A network maps a (scaled) noisy input and a ``(B,)`` noise input ``c_noise`` (and optional class
labels) to an output shaped like ``x``; :class:`scoresde.parameterize.ScoreModel` turns it into
a score function for an SDE and decides what ``c_noise`` is.
"""

from .embedding import GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from .factory import NETWORKS, build_net, net_for_data, net_spec
from .mlp import MLP
from .unet import UNet

__all__ = [
    "MLP",
    "UNet",
    "NETWORKS",
    "build_net",
    "net_for_data",
    "net_spec",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "LabelEmbedding",
]
