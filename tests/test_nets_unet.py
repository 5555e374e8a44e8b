"""The DDPM++-style U-Net and the network factory."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as S
from scoresde.nets import MLP, UNet, build_net, net_for_data, net_spec
from scoresde.nets.unet import AttnBlock
from scoresde.parameterize import ScoreModel


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def randomize(m: torch.nn.Module) -> None:
    """Move every weight off its (partly zero) init so every path carries signal."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_cifar_config_has_about_35m_parameters() -> None:
    with torch.device("meta"):
        net = UNet.cifar()
    assert 35.0e6 < n_params(net) < 36.5e6  # DDPM's CIFAR-10 U-Net: 35.7M
    with torch.device("meta"):
        cond = UNet.cifar(num_classes=10)
    assert n_params(cond) - n_params(net) == 11 * 512  # ten classes + null, 4 * 128 wide


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 12)])
def test_small_shapes_and_zero_init(channels: int, size: int) -> None:
    torch.manual_seed(0)
    net = UNet.small(channels, size)
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.zeros(2))
    assert out.shape == x.shape
    assert float(out.detach().abs().max()) == 0.0  # output convolution starts at zero
    assert n_params(net) < 2e6


def test_output_depends_on_input_noise_and_labels() -> None:
    torch.manual_seed(0)
    net = UNet.small(1, 8, num_classes=3)
    randomize(net)
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    c = torch.zeros(2)
    base = net(x, c, torch.tensor([0, 1]))
    assert (net(x, c + 1, torch.tensor([0, 1])) - base).abs().max() > 1e-4
    assert (net(x, c, torch.tensor([2, 1])) - base)[0].abs().max() > 1e-4
    torch.testing.assert_close(net(x, c, torch.tensor([2, 1]))[1], base[1])  # per-sample
    assert (net(x.flip(-1), c, torch.tensor([0, 1])) - base).abs().max() > 1e-4
    torch.testing.assert_close(net(x, c), net(x, c, torch.tensor([3, 3])))  # None = null


def test_attention_matches_naive_formula() -> None:
    torch.manual_seed(0)
    block = AttnBlock(8, head_channels=4)  # two heads
    randomize(block)
    x = torch.randn(2, 8, 3, 5)
    got = block(x)
    b, c, h, w = x.shape
    qkv = block.qkv(block.norm(x)).reshape(b, 3, 2, 4, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, heads, d, HW)
    att = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(4), dim=-1)
    o = torch.einsum("bhij,bhdj->bhdi", att, v).reshape(b, c, h, w)
    want = (x + block.proj(o)) / math.sqrt(2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = UNet.small(3, 8)
    randomize(net)
    net.eval()
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2)
    ref = net(x, c)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.contiguous(memory_format=torch.channels_last), c)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    model = ScoreModel(net_cl, S.VPSDE(), "eps")
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        full = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    assert low.dtype == torch.float32
    assert float((low - full).norm() / full.norm()) < 0.05


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = UNet.small(1, 8, num_classes=2)
    randomize(net)
    model = ScoreModel(net, S.VESDE(), "edm")
    loss = model.loss(torch.randn(3, 1, 8, 8), y=torch.tensor([0, 1, 2]))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_bad_inputs() -> None:
    net = UNet.small(1, 8)
    with pytest.raises(ValueError, match="needs images"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="c_noise"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.5)


def rebuilt_equal(net: torch.nn.Module) -> None:
    name, config = net_spec(net)
    copy = build_net(name, **config)
    copy.load_state_dict(net.state_dict())
    for a, b in zip(net.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_factory() -> None:
    torch.manual_seed(0)
    assert isinstance(net_for_data((2,)), MLP)
    img = net_for_data((1, 8, 8), num_classes=10)
    assert isinstance(img, UNet) and img.null_label == 10
    assert isinstance(net_for_data((1, 8, 8), "mlp"), MLP)
    rebuilt_equal(img)
    rebuilt_equal(net_for_data((2,), hidden=16))
    with pytest.raises(ValueError, match="image"):
        net_for_data((2,), "unet")
    with pytest.raises(ValueError, match="Did you mean 'unet'"):
        net_for_data((1, 8, 8), "unte")
    with pytest.raises(TypeError, match="not a scoresde network"):
        net_spec(torch.nn.Linear(2, 2))


def test_attention_placed_at_the_same_sizes_down_and_up() -> None:
    with torch.device("meta"):
        net = UNet(
            1,
            channels=8,
            channel_mult=(1, 1, 1),
            num_res_blocks=1,
            attn_resolutions=(7,),
            resolution=13,
        )  # 13 -> 7 -> 4
    down = [m.attn is not None for m in net.down if hasattr(m, "attn")]
    up = [m.attn is not None for m in net.up if hasattr(m, "attn")]
    assert down == [False, True, False]
    assert up == [False, False, True, True, False, False]  # 4, 4, 7, 7, 13, 13
    x = torch.randn(2, 1, 13, 13)
    assert (
        UNet(
            1,
            channels=8,
            channel_mult=(1, 1, 1),
            num_res_blocks=1,
            attn_resolutions=(7,),
            resolution=13,
        )(x, torch.zeros(2)).shape
        == x.shape
    )


def test_small_unet_fits_a_few_digits() -> None:
    """Wiring check: 40 Adam steps on 16 digits at fixed noise halve the EDM loss (~0.26x)."""
    from scoresde.data import load_dataset

    torch.manual_seed(0)
    x0 = load_dataset("digits", n=16).tensors()
    g = torch.Generator().manual_seed(0)
    t = torch.exp(torch.linspace(-2.0, 1.0, 16))  # EDM noise levels 0.14 .. 2.7
    z = torch.randn(x0.shape, generator=g)
    model = ScoreModel(UNet.small(1, 8, channels=16), S.EDMSDE(), "edm")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.loss(x0, t=t, noise=z).detach())
    for _ in range(40):
        loss = model.loss(x0, t=t, noise=z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.loss(x0, t=t, noise=z).detach()) < 0.5 * first


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_float64_networks_run_in_float64(embedding: str) -> None:
    """``.double()`` networks (float64 likelihoods, precise tests) embed the noise level in
    float64; the float32 embedding used to reach float64 layers and fail."""
    torch.manual_seed(0)
    nets = [
        UNet.small(1, 8, embedding=embedding),
        MLP(3, hidden=16, depth=1, embed_dim=8, embedding=embedding),
    ]
    for net, x in zip(nets, (torch.randn(2, 1, 8, 8), torch.randn(2, 3)), strict=True):
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.2)  # no zero-initialised output layer
        c = torch.tensor([-0.3, 0.4])
        ref = net(x, c)
        out = net.double()(x.double(), c.double())
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-4)
