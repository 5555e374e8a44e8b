"""The time-conditioned MLP: shapes, conditioning, autocast, and that it can learn a score."""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from scoresde.nets import MLP
from scoresde.parameterize import ScoreModel


def test_shapes_and_flattening() -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, embed_dim=16)
    x = torch.randn(5, 2)
    c = torch.randn(5)
    assert net(x, c).shape == (5, 2)
    img = MLP.for_shape((1, 3, 3), hidden=16, depth=1)
    assert img(torch.randn(4, 1, 3, 3), torch.zeros(4)).shape == (4, 1, 3, 3)
    with pytest.raises(ValueError, match="values per sample"):
        net(torch.randn(5, 3), c)
    with pytest.raises(ValueError, match="c_noise"):
        net(x, torch.randn(4))
    with pytest.raises(ValueError, match="num_classes"):
        net(x, c, torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_depends_on_noise_input(embedding: str) -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, embed_dim=16, embedding=embedding)
    for p in net.parameters():  # move off the zero init of the residual branches
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 2)
    a = net(x, torch.full((3,), -1.0))
    b = net(x, torch.full((3,), 1.0))
    assert (a - b).abs().max() > 1e-3


def test_class_conditioning_and_null_label() -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1, num_classes=3, class_dropout=0.5)
    assert net.null_label == 3
    net.eval()
    x, c = torch.randn(4, 2), torch.zeros(4)
    null = net(x, c)
    torch.testing.assert_close(null, net(x, c, torch.full((4,), 3)))
    with pytest.raises(ValueError, match="labels must lie"):
        net(x, c, torch.full((4,), 4))
    with pytest.raises(TypeError, match="integer"):
        net(x, c, torch.zeros(4))
    # in training mode, about half the labels become null
    net.train()
    torch.manual_seed(1)
    y = torch.zeros(2000, dtype=torch.long)
    emb = net.label_embed(y, 2000, torch.device("cpu"))  # type: ignore[misc]
    null_row = net.label_embed.embed.weight[3]  # type: ignore[union-attr]
    frac = float((emb - null_row).abs().sum(1).eq(0).double().mean())
    assert abs(frac - 0.5) < 5 * 0.5 / 2000**0.5


def test_bf16_autocast_runs_and_stays_close() -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2)
    model = ScoreModel(net, S.VPSDE(), "eps")
    x, t = torch.randn(8, 2), torch.rand(8) * 0.9 + 0.05
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05 * float(ref.detach().abs().max()))


def test_mlp_learns_a_gaussian_score() -> None:
    """600 Adam steps on N(mu, 0.25 I) give a score within a few % of the exact one."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    sde = S.VPSDE()
    mu = torch.tensor([1.0, -0.5])
    model = ScoreModel(MLP(2, hidden=32, depth=2), sde, "eps")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, 600)
    for _ in range(600):
        x0 = mu + 0.5 * torch.randn(128, 2, generator=g)
        loss = model.loss(x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    gauss = S.targets.Gaussian(mu, 0.25)
    t = torch.full((512,), 0.3)
    x = sde.perturb(gauss.sample(512, g), t, torch.randn(512, 2, generator=g))
    with torch.no_grad():
        err = (model(x, t) - gauss.marginal_score(x, t, sde)).pow(2).sum(1).mean()
    scale = gauss.marginal_score(x, t, sde).pow(2).sum(1).mean()
    assert float(err / scale) < 0.03  # 0.003-0.009 over seeds 0-2
