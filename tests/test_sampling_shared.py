"""What the samplers share: the registry (options from signatures, the generated table), the
reverse-SDE steps of :meth:`SDE.reverse` and the predictor-corrector loop with its projection."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator

import pytest
import torch

import scoresde as S
from scoresde.sampling import CounterNoise, available_samplers, get_sampler, register
from scoresde.sampling import base as sampling_base
from scoresde.sampling.base import Context, SamplerSpec, sampler_table
from scoresde.sampling.pc import pc_loop, pc_steps
from scoresde.targets import Gaussian

BUILTIN_SDES = (("VE", S.VESDE), ("VP", S.VPSDE), ("sub-VP", S.SubVPSDE), ("EDM", S.EDMSDE))


def test_options_are_the_keyword_only_parameters() -> None:
    for name in available_samplers():
        spec = get_sampler(name)
        params = list(inspect.signature(spec.fn).parameters.values())
        assert [p.name for p in params if p.kind is not p.KEYWORD_ONLY] == ["ctx", "x", "times"]
        assert spec.options == {p.name for p in params if p.kind is p.KEYWORD_ONLY}, name
    assert get_sampler("edm").options == {"s_churn", "s_tmin", "s_tmax", "s_noise"}
    assert get_sampler("heun").options == frozenset()


def _parse_table(table: str) -> tuple[list[str], list[list[str]]]:
    """Cells of a simple reStructuredText table, cut at the columns of its ``===`` rule."""
    lines = table.strip("\n").splitlines()
    starts = [m.start() for m in re.finditer("=+", lines[0])]
    assert lines[0] == lines[2] == lines[-1]

    def cells(line: str) -> list[str]:
        ends = starts[1:] + [len(line)]
        return [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]

    return cells(lines[1]), [cells(line) for line in lines[3:-1]]


def _orders(text: str) -> tuple[int, ...]:
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return tuple(range(lo, hi + 1))
    return tuple(int(v) for v in text.split(", "))


def test_the_sampler_table_is_the_registry() -> None:
    head, rows = _parse_table(sampler_table())
    assert head == ["name", "order", "stochastic", "SDEs", "description"]
    assert [r[0] for r in rows] == available_samplers()
    for name, orders, stochastic, sdes, description in rows:
        spec = get_sampler(name)
        assert _orders(orders) == spec.orders and spec.order == max(spec.orders), name
        assert stochastic == ("yes" if spec.stochastic else "no"), name
        assert description == spec.description, name
        for label, make in BUILTIN_SDES:
            assert (sdes == "any" or label in sdes.split(", ")) == spec.supports(make()), name
    by_name = {r[0]: r for r in rows}
    assert by_name["dpm_solver_sde"][1] == "1-3" and by_name["dpm_solver"][1] == "1-3"
    assert by_name["ancestral"][3] == "VE, VP, EDM"
    assert sampler_table() in (S.sampling.__doc__ or "")


@pytest.mark.parametrize(
    "name", [n for n in available_samplers() if len(get_sampler(n).orders) > 1]
)
def test_declared_orders_are_the_order_option_s_values(name: str) -> None:
    spec, sde = get_sampler(name), S.VPSDE()
    assert "order" in spec.options
    for k in spec.orders:
        x = S.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=4, order=k)
        assert bool(torch.isfinite(x).all())
    with pytest.raises(ValueError, match="order"):
        S.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=4, order=max(spec.orders) + 1)


@pytest.fixture
def scratch_sampler() -> Iterator[SamplerSpec]:
    """A sampler registered for one test (and removed again)."""

    @register("test_scratch", order=(1, 2), stochastic=False)
    def scratch(ctx: Context, x: torch.Tensor, times: torch.Tensor, *, gain: float = 1.0,
                order: int = 1) -> torch.Tensor:  # fmt: skip
        """Scale the state by ``gain`` after one score evaluation.

        Registered by the tests only.
        """
        ctx.score(x, times[0])
        return gain * x

    try:
        yield get_sampler("test_scratch")
    finally:
        sampling_base._REGISTRY.pop("test_scratch")


def test_a_sampler_s_contract_comes_from_its_function(scratch_sampler: SamplerSpec) -> None:
    spec = scratch_sampler
    assert spec.options == {"gain", "order"} and spec.orders == (1, 2) and spec.order == 2
    assert spec.description == "Scale the state by ``gain`` after one score evaluation"
    assert "test_scratch" in sampler_table()
    sde, x0 = S.VPSDE(), torch.ones(3, 2)
    res = S.sample(lambda x, t: -x, sde, (3, 2), sampler="test_scratch", steps=2, x_init=x0,
                   gain=2.0, return_info=True)  # fmt: skip
    torch.testing.assert_close(res.samples, 2.0 * x0)
    assert res.nfe == 1
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['eta'\]; it accepts: \['gain'"):
        S.sample(lambda x, t: -x, sde, (3, 2), sampler="test_scratch", steps=2, eta=1.0)


def test_register_wants_options_as_keyword_only_parameters() -> None:
    def bad(ctx: Context, x: torch.Tensor, times: torch.Tensor, **options: float) -> torch.Tensor:
        return x

    with pytest.raises(TypeError, match="keyword-only"):
        register("test_bad", order=1, stochastic=False)(bad)
    assert "test_bad" not in available_samplers()


def test_one_step_samplers_take_the_reverse_sde_step() -> None:
    """One Euler-Maruyama step (noise-free, the last) is ``SDE.reverse(...).euler_step``'s mean;
    one ``ode_heun`` step is Heun's method on the probability-flow drift of ``SDE.reverse``."""
    sde = S.SubVPSDE()
    score = Gaussian([0.5, -1.0], 0.3).score_fn(sde)
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"steps": 1, "x_init": x0, "dtype": torch.float64}
    t, t_next = sde.T, sde.eps
    em = S.sample(score, sde, x0.shape, sampler="euler_maruyama", **kw)
    torch.testing.assert_close(em, sde.reverse(score).euler_step(x0, t, t_next).mean)
    pf = sde.reverse(score, probability_flow=True)
    d = pf.drift(x0, t)
    heun = x0 + 0.5 * (t_next - t) * (d + pf.drift(x0 + (t_next - t) * d, t_next))
    torch.testing.assert_close(S.sample(score, sde, x0.shape, sampler="ode_heun", **kw), heun)


def test_the_pc_sampler_is_the_pc_loop() -> None:
    sde = S.VESDE()
    score = Gaussian([0.5, -1.0], 0.3).score_fn(sde)
    times = S.get_times(sde, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    got = S.sample(score, sde, (5, 2), sampler="pc", steps=6, dtype=torch.float64, generator=gen,
                   corrector="ald", snr=0.2)  # fmt: skip
    noise = CounterNoise.from_generator(torch.Generator().manual_seed(3))
    x = noise.randn((5, 2), torch.device("cpu"), torch.float64) * sde.prior_std
    steps = pc_steps(sde, "reverse_diffusion", "ald", 0.2, 1)
    torch.testing.assert_close(pc_loop(Context(score, sde, noise=noise), x, times, steps), got)


def test_pc_loop_projects_before_and_after_every_corrector_step() -> None:
    sde = S.VPSDE()
    times = S.get_times(sde, 4, dtype=torch.float64)
    known = torch.tensor([True, False])
    seen: list[float] = []

    def project(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert bool((x[:, 0] != 0.5).all())  # every corrector step moved the known part
        seen.append(float(t))
        return torch.where(known, torch.full_like(x, 0.5), x)

    ctx = Context(lambda x, t: -x, sde, torch.Generator().manual_seed(0))
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pc_loop(ctx, x0, times, pc_steps(sde, "euler_maruyama", "ald", 0.1, 2), project=project)
    assert seen == [t for t in times[:-1].tolist() for _ in range(3)]
    assert ctx.nfe == 4 * 3  # per time: two corrector steps and one predictor step
    with pytest.raises(ValueError, match="both are None"):
        pc_steps(sde, None, None, 0.1, 1)
    with pytest.raises(ValueError, match="does not support SubVPSDE"):
        pc_steps(S.SubVPSDE(), "ancestral", None, 0.1, 1)
