"""GradClip against torch's clip_grad_norm_ and the fused optimizer factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scoresde.train.optim import GradClip, make_optimizer


def _net_with_grads(seed: int, scale: float) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 7), nn.SiLU(), nn.Linear(7, 3, bias=False))
    for p in net.parameters():
        p.grad = torch.randn_like(p) * scale
    return net


@pytest.mark.parametrize("scale", [1e-3, 10.0])
def test_grad_clip_matches_torch_bit_for_bit(scale: float) -> None:
    ours, ref = _net_with_grads(0, scale), _net_with_grads(0, scale)
    n_ours = GradClip(list(ours.parameters()), 0.5)()
    n_ref = nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5, foreach=True)
    assert torch.equal(n_ours, n_ref)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in ours.parameters()))
    assert float(total) <= 0.5 + 1e-6  # clipped (or already below) after the call


def test_grad_clip_mixed_dtypes_and_missing_grads() -> None:
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(4, requires_grad=True)  # no gradient: skipped
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((2,), 4.0, dtype=torch.float64)
    norm = GradClip([a, b, c], 1.0)()
    assert float(norm) == pytest.approx((27 + 32) ** 0.5)
    assert float(torch.cat([a.grad.double(), b.grad]).norm()) == pytest.approx(1.0, rel=1e-5)
    assert float(GradClip([c], 1.0)()) == 0.0


def test_grad_clip_rejects_nonpositive_norm() -> None:
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        GradClip([torch.zeros(1)], 0.0)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_make_optimizer_is_fused_on_cpu(name: str, cls: type) -> None:
    p = [nn.Parameter(torch.randn(4))]
    opt = make_optimizer(p, name, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0,
                         device=torch.device("cpu"))  # fmt: skip
    assert isinstance(opt, cls) and opt.defaults["fused"] is True
