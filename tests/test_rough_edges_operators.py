"""Issue 19, item 1: a plain ``(m, d)`` matrix is the operator of any event shape of ``d`` values.

``solve_linear``/``smc_linear`` with a matrix on image-shaped data used to stop in autograd
(the adjoint came back flat); now the matrix adapts to the batch's event shape, the result is
the one of the flat problem, and a matrix of the wrong width gets one error naming the shapes.
"""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from scoresde import inverse
from scoresde.inverse import LinearOperator, MatrixOperator, as_operator
from scoresde.targets import GaussianMixture

SHAPE = (4, 1, 8, 8)


def _problem() -> tuple[GaussianMixture, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    prior = GaussianMixture(
        torch.randn(2, 64, generator=g, dtype=torch.float64),
        variances=[0.3, 0.5],
        event_shape=(1, 8, 8),
    )
    a = torch.randn(5, 64, generator=g, dtype=torch.float64) / 8
    y = torch.randn(1, 5, generator=g, dtype=torch.float64)
    return prior, a, y


@pytest.mark.parametrize("solver", ["solve_linear", "smc_linear"])
def test_matrix_on_images_matches_the_flat_problem(solver: str) -> None:
    prior, a, y = _problem()
    sde = S.VPSDE()
    score = prior.score_fn(sde)

    def run(op: object, shape: tuple[int, ...]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        kw = {"noise_std": 0.1, "steps": 4, "generator": gen}
        if solver == "solve_linear":
            return inverse.solve_linear(score, sde, y, op, shape, **kw)  # type: ignore[arg-type]
        return inverse.smc_linear(score, sde, y, op, shape, **kw).samples  # type: ignore[arg-type]

    images = run(a, SHAPE)  # used to raise "Mismatch in shape: grad_output[0] ..."
    assert images.shape == SHAPE and bool(torch.isfinite(images).all())
    assert torch.equal(images, run(MatrixOperator(a, (1, 8, 8)), SHAPE))
    flat = run(a, (4, 64))
    torch.testing.assert_close(images.reshape(4, 64), flat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["solve_linear", "smc_linear"])
def test_matrix_of_the_wrong_width_is_one_clear_error(solver: str) -> None:
    prior, _, y = _problem()
    sde = S.VPSDE()
    a63 = torch.ones(5, 63, dtype=torch.float64)
    fn = getattr(inverse, solver)
    with pytest.raises(ValueError) as err:
        fn(prior.score_fn(sde), sde, y, a63, SHAPE, noise_std=0.1, steps=2)
    text = str(err.value)
    assert "(5, 63)" in text and "(1, 8, 8)" in text and "\n" not in text


def test_as_operator_fits_operators_to_the_event_shape() -> None:
    a = torch.arange(12.0).reshape(2, 6)
    op = as_operator(a, (2, 3))
    assert isinstance(op, MatrixOperator) and op.x_shape == (2, 3)
    assert op.adjoint(torch.ones(1, 2)).shape == (1, 2, 3)
    flat = MatrixOperator(a)
    assert as_operator(flat) is flat and as_operator(flat, (6,)) is flat
    shaped = as_operator(flat, (3, 2))
    assert shaped.x_shape == (3, 2)
    assert torch.equal(
        shaped.adjoint(torch.ones(1, 2)).reshape(1, 6), flat.adjoint(torch.ones(1, 2))
    )
    with pytest.raises(ValueError, match=r"\(2, 6\).*\(2, 2\)"):
        as_operator(flat, (2, 2))
    custom = LinearOperator(lambda x: x.cumsum(-1)[..., ::2], x_shape=(6,))
    assert as_operator(custom, (6,)) is custom
    with pytest.raises(ValueError, match=r"shape \(6,\).*event shape \(2, 3\)"):
        as_operator(custom, (2, 3))
