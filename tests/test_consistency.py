"""Consistency models: boundary condition, sampler, objectives and bad input (fast, exact)."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde
from scoresde.consistency import (
    ECT,
    ConsistencyModel,
    ConsistencyTraining,
    Distillation,
    distill,
    ict_discretisation,
    karras_sigmas,
    pseudo_huber,
)
from scoresde.nets.mlp import MLP
from scoresde.parameterize import ScoreModel
from scoresde.sde import EDMSDE, SDE, VESDE, VPSDE, RectifiedFlow, ScoreWithDenoiser
from scoresde.targets import GaussianMixture

SDES = [VPSDE(), VESDE(), EDMSDE(), RectifiedFlow()]


def _student(sde: SDE, seed: int = 0, dtype: torch.dtype = torch.float32) -> ConsistencyModel:
    torch.manual_seed(seed)
    net = MLP(2, hidden=32, depth=2)
    # zero_init would make the output independent of the weights; perturb the last layers
    for p in net.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    model = ConsistencyModel(ScoreModel(net, sde, "edm", sigma_data=1.0), sde, sigma_data=1.0)
    return model.to(dtype)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_is_exact(sde: SDE, dtype: torch.dtype) -> None:
    model = _student(sde, dtype=dtype)
    x = torch.randn(64, 2, dtype=dtype) * 3
    lo = torch.full((64,), model.sigma_min, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(model(x, lo), x)  # f(x, sigma_min) = x bit for bit
        above = model(x, lo * 1.5)  # the network does act just above sigma_min
    assert not torch.equal(above, x) and torch.isfinite(above).all()
    assert (above - x).abs().max() < 1e-3  # and f is continuous there


def _gaussian_consistency(mu: float, var: float, sigma_min: float) -> ScoreWithDenoiser:
    """The exact consistency function of N(mu, var I) data: the PF ODE map sigma -> sigma_min."""

    def f(x_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        ratio = torch.sqrt((var + sigma_min**2) / (var + sigma**2)).reshape(-1, 1)
        return mu + ratio * (x_hat - mu)

    fn = GaussianMixture([[mu, mu]], variances=[var]).score_fn(EDMSDE())
    fn.consistency = f  # type: ignore[attr-defined]
    fn.sigma_min, fn.sigma_max = sigma_min, 80.0  # type: ignore[attr-defined]
    return fn


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sampler_with_the_exact_consistency_function(steps: int) -> None:
    sde, n = EDMSDE(), 40_000
    fn = _gaussian_consistency(0.7, 0.25, 0.002)
    res = scoresde.sample(fn, sde, (n, 2), sampler="consistency", steps=steps, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0), return_info=True)  # fmt: skip
    assert res.nfe == steps
    x = res.samples
    # mean and variance of N(0.7, 0.25 + sigma_min^2): 5 standard errors
    assert (x.mean(0) - 0.7).abs().max() < 5 * math.sqrt(0.25 / n)
    assert (x.var(0) - 0.25).abs().max() < 5 * 0.25 * math.sqrt(2 / n)


@pytest.mark.parametrize("sde", [VPSDE(), RectifiedFlow()], ids=["vp", "rf"])
def test_sampler_on_a_plain_score_denoises_and_renoises(sde: SDE) -> None:
    """Without ``consistency`` the sampler uses Tweedie's denoiser: one step from the prior
    gives ``E[x0 | x_T]``, about the data mean (exact mixture, 1 NFE)."""
    target = GaussianMixture([[1.0, -1.0]], variances=[0.2])
    res = scoresde.sample(target.score_fn(sde), sde, (512, 2), sampler="consistency", steps=1,
                          dtype=torch.float64, return_info=True)  # fmt: skip
    assert res.nfe == 1
    scale = float(sde.scale(torch.tensor(sde.T, dtype=torch.float64)))
    assert (res.samples - torch.tensor([1.0, -1.0])).abs().max() < 0.05 + 2 * scale


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_sampler_runs_on_every_sde(sde: SDE) -> None:
    fn = _student(sde).score_fn()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        res = scoresde.sample(
            fn, sde, (16, 2), sampler="consistency", steps=3, generator=gen, return_info=True
        )
    assert res.nfe == 3 and torch.isfinite(res.samples).all()
    # as a plain score function it drives the other samplers too
    with torch.no_grad():
        x = scoresde.sample(fn, sde, (16, 2), sampler="euler", steps=4)
    assert torch.isfinite(x).all()


def test_teacher_heun_step_converges_to_the_exact_map() -> None:
    """Heun steps of the exact Gaussian teacher reach the closed-form ODE map at order 2."""
    sde, mu, var = VPSDE(), 0.3, 0.5
    teacher = GaussianMixture([[mu, mu]], variances=[var]).score_fn(sde)
    cd = Distillation(teacher, sde, _student(sde).double(), loss="squared")
    x = torch.randn(8, 2, dtype=torch.float64) * 3
    hi, lo = 5.0, 0.5
    exact = mu + math.sqrt((var + lo**2) / (var + hi**2)) * (x - mu)
    errs = []
    for k in (4, 8):
        grid = torch.linspace(hi, lo, k + 1, dtype=torch.float64)
        y = x
        for a, b in zip(grid[:-1], grid[1:], strict=True):
            y = cd.ode_step(y, a.expand(8), b.expand(8))
        errs.append(float((y - exact).abs().max()))
    assert errs[1] < errs[0] / 3  # order 2: a factor of about 4 per halving


def test_student_outside_the_teacher_sde_range_is_refused() -> None:
    student = _student(EDMSDE())  # needs sigma up to 80
    teacher_sde = VESDE(sigma_max=50.0)
    score = GaussianMixture([[0.0, 0.0]], variances=[1.0]).score_fn(teacher_sde)
    with pytest.raises(ValueError, match="the student needs") as err:
        Distillation(score, teacher_sde, student)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="ConsistencyModel"):
        Distillation(score, teacher_sde, ScoreModel(MLP(2), teacher_sde))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not inside"):
        ConsistencyModel(ScoreModel(MLP(2), teacher_sde), teacher_sde, sigma_max=80.0)


def test_ict_pieces() -> None:
    assert ict_discretisation(0, 1000) == 11
    # K' = floor(1000 / (log2(128) + 1)) = 125 steps a stage; stage 6 has 10 * 2^6 + 1 levels
    assert ict_discretisation(874, 1000) == 641
    assert ict_discretisation(875, 1000) == 1281
    assert ict_discretisation(10**6, 1000) == 1281
    sig = karras_sigmas(18, 0.002, 80.0)
    assert sig[0] == pytest.approx(0.002) and sig[-1] == pytest.approx(80.0)
    assert bool((sig.diff() > 0).all())
    a, b = torch.zeros(3, 4), torch.ones(3, 4)
    c = 0.00054 * 2
    assert torch.allclose(pseudo_huber(a, b), torch.full((3,), math.sqrt(4 + c * c) - c))


@pytest.mark.parametrize("kind", ["cd", "ct", "ect"])
def test_objectives_reduce_their_loss(kind: str) -> None:
    sde = EDMSDE()
    target = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])
    data = target.sample(2048, generator=torch.Generator().manual_seed(0))
    student = _student(sde, seed=1)
    gen = torch.Generator().manual_seed(2)
    obj: Distillation | ConsistencyTraining
    if kind == "cd":
        obj = Distillation(target.score_fn(sde), sde, student, target_decay=0.9)
    elif kind == "ct":
        obj = ConsistencyTraining(student, 150)
    else:
        obj = ECT(student, 150)
    res = scoresde.consistency.fit(obj, data, steps=150, batch_size=128, lr=2e-3, generator=gen)
    assert all(math.isfinite(v) for v in res.losses)
    with torch.no_grad():
        x = scoresde.sample(student.score_fn(), sde, (256, 2), sampler="consistency", steps=1)
    assert torch.isfinite(x).all()
    if kind == "cd":  # CD's loss does not move with a curriculum: it must fall
        assert res.losses[-1] < res.losses[0]


def test_distill_keeps_the_boundary_and_is_seeded() -> None:
    sde = VPSDE()
    target = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])
    data = target.sample(512, generator=torch.Generator().manual_seed(0))
    outs = []
    for _ in range(2):
        student = _student(sde, seed=3)
        distill(target.score_fn(sde), sde, student, data, steps=20, batch_size=64,
                generator=torch.Generator().manual_seed(4))  # fmt: skip
        x = torch.randn(8, 2)
        with torch.no_grad():
            assert torch.equal(student(x, torch.full((8,), student.sigma_min)), x)
            outs.append(student(x, torch.full((8,), 10.0)))
    assert torch.equal(outs[0], outs[1])


def test_ect_finetune_starts_from_a_copy_of_the_score_model() -> None:
    sde = RectifiedFlow()  # ECT on a flow model: sigma_max = 80 below sigma(T) = inf
    target = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], variances=[0.3, 0.5])
    data = target.sample(512, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    score_model = ScoreModel(MLP(2, hidden=32, depth=2), sde, "flow")
    before = [p.detach().clone() for p in score_model.parameters()]
    x = torch.randn(16, 2)
    sig = torch.full((16,), 80.0)
    # at gap 0 the student is the score model's denoiser, up to c_skip(80) ~ 1e-4
    student0 = ConsistencyModel(score_model, sde, sigma_data=0.5)
    with torch.no_grad():
        assert torch.allclose(student0(x, sig), student0.denoiser(x, sig), atol=1e-3)
    res = scoresde.consistency.ect_finetune(score_model, sde, data, steps=20, batch_size=64,
                                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    for p, q in zip(score_model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # the score model itself is untouched
    moved = [not torch.equal(p, q) for p, q in zip(res.model.parameters(), before, strict=True)]
    assert any(moved) and len(res.losses) == 1 and math.isfinite(res.losses[0])
