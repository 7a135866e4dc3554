"""The base operator's contract and its compositions, on dense matrices with known products.

Every composition is compared with its dense matrix through :func:`assert_matches_dense`
(``T A T``, ``A + B``, ``A_BB``, ``P A P`` formed densely in float64: products agree to float64
rounding of sums over 30 terms, so 1e-12 relative to the largest entry is ample while any wrong
index, scaling or projection is an O(1) error).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from operator_checks import assert_matches_dense
from spectra import CountingOperator, planted, random_orthogonal

from landscape_cli.errors import NumericalError
from landscape_cli.estimators.cg import conjugate_gradient
from landscape_cli.estimators.density import slq_density
from landscape_cli.estimators.exact import exact_spectrum
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.trace import deflated_trace, hutchpp_trace
from landscape_cli.linear_operator import (
    BlockOperator,
    DeflatedOperator,
    OperatorLike,
    ScaledOperator,
    SumOperator,
    SymmetricOperator,
)

F64 = torch.float64
N = 30


def matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """Two symmetric 30 × 30 matrices with planted spectra (one indefinite, one PSD)."""
    A = planted(np.linspace(-2.0, 5.0, N), seed=1)
    B = planted(np.geomspace(1e-3, 3.0, N), seed=2)
    return A, B


def projector(Q: torch.Tensor) -> torch.Tensor:
    return torch.eye(Q.shape[0], dtype=F64) - Q @ Q.mT


class Poisoned(SymmetricOperator):
    """``A V`` with the first entry replaced by NaN."""

    non_finite_hint = "try something else"

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.A @ V
        out[0] = float("nan")
        return out


class Keeping(CountingOperator):
    """A dense operator that says when it is released."""

    def __init__(self, A: torch.Tensor, released: list[str], name: str) -> None:
        super().__init__(A)
        self.released, self.name = released, name

    def release(self) -> None:
        self.released.append(self.name)


def test_a_dense_tensor_and_every_operator_satisfy_the_protocol():
    A, _ = matrices()
    assert isinstance(A, OperatorLike)
    assert isinstance(CountingOperator(A), OperatorLike)
    assert isinstance(DeflatedOperator(A, random_orthogonal(N, 3)[:, :2]), OperatorLike)

    class OnlyShape:
        shape = (3, 3)

    assert not isinstance(OnlyShape(), OperatorLike)


def test_the_dense_wrapper_matches_its_matrix():
    A, _ = matrices()
    assert_matches_dense(CountingOperator(A), A, tol=1e-14)
    assert_matches_dense(
        CountingOperator(A.float()), A.float().double(), tol=1e-6, dtype=torch.float32
    )


def test_the_comparison_fails_for_a_wrong_product_dtype_or_asymmetry():
    A, _ = matrices()
    wrong = A.clone()
    wrong[0, 1] += 1e-6
    wrong[1, 0] += 1e-6
    with pytest.raises(AssertionError, match=r"@ v"):
        assert_matches_dense(CountingOperator(A), wrong, tol=1e-12)
    with pytest.raises(AssertionError, match="dtype"):
        assert_matches_dense(CountingOperator(A), A, dtype=torch.float32)
    skew = A.clone()
    skew[0, 1] += 1.0
    with pytest.raises(AssertionError, match="not symmetric"):
        assert_matches_dense(CountingOperator(skew), skew)


@pytest.mark.parametrize("composition", ["scale", "sum", "block", "deflate"])
def test_compositions_match_their_dense_matrices(composition):
    A, B = matrices()
    t = torch.linspace(0.5, 2.0, N, dtype=F64)
    idx = torch.tensor([0, 3, 4, 9, 17, 29])
    Q = random_orthogonal(N, 5)[:, :4]
    op = CountingOperator(A)
    built, dense = {
        "scale": (op.scale(t), torch.diag(t) @ A @ torch.diag(t)),
        "sum": (op + CountingOperator(B), A + B),
        "block": (op.block(idx), A[idx][:, idx]),
        "deflate": (op.deflate(Q), projector(Q) @ A @ projector(Q)),
    }[composition]
    assert_matches_dense(built, dense, tol=1e-12)


def test_compositions_take_dense_tensors_as_operands():
    A, B = matrices()
    Q = random_orthogonal(N, 6)[:, :3]
    idx = torch.tensor([1, 2, 8])
    t = torch.linspace(1.0, 3.0, N, dtype=F64)
    assert_matches_dense(ScaledOperator(A, t), torch.diag(t) @ A @ torch.diag(t), tol=1e-12)
    assert_matches_dense(SumOperator(A, B), A + B, tol=1e-12)
    assert_matches_dense(BlockOperator(A, idx), A[idx][:, idx], tol=1e-12)
    assert_matches_dense(DeflatedOperator(A, Q), projector(Q) @ A @ projector(Q), tol=1e-12)


def test_a_composition_counts_its_products_and_each_operand_its_own():
    A, B = matrices()
    V = torch.ones(N, 3, dtype=F64)
    first, second = CountingOperator(A), CountingOperator(B)
    total = first + second
    total @ V
    assert total.matvecs == first.matvecs == second.matvecs == 3
    block = first.block(torch.tensor([0, 1]))
    block @ torch.ones(2, dtype=F64)
    assert block.matvecs == 1 and first.matvecs == 4


def test_fresh_refreshes_the_operands_and_release_reaches_them():
    A, B = matrices()
    released: list[str] = []
    first, second = Keeping(A, released, "first"), Keeping(B, released, "second")
    scaled_sum = (first + second).scale(torch.ones(N, dtype=F64))
    scaled_sum @ torch.ones(N, dtype=F64)
    twin = scaled_sum.fresh()
    twin @ torch.ones(N, 2, dtype=F64)
    (twin_sum,) = twin.operands
    assert isinstance(twin_sum, SumOperator)
    assert [t.matvecs for t in twin_sum.terms] == [2, 2] and twin.matvecs == 2
    assert first.matvecs == second.matvecs == scaled_sum.matvecs == 1
    scaled_sum.release()
    assert released == ["first", "second"]


def test_a_non_finite_product_is_a_numerical_error_naming_the_operator():
    A, _ = matrices()
    with pytest.raises(NumericalError, match=r"a Poisoned product is not finite \(try something"):
        Poisoned(A) @ torch.ones(N, dtype=F64)
    # a composition leaves the check to the estimator, which names the step
    nan = A.clone()
    nan[0, 0] = float("nan")
    scaled = ScaledOperator(nan, torch.ones(N, dtype=F64))
    assert not bool(torch.isfinite(scaled @ torch.ones(N, dtype=F64)).all())
    with pytest.raises(FloatingPointError, match="iteration 1"):
        lanczos(scaled)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda A, B: SumOperator(A, B[:5, :5]), "one shape"),
        (lambda A, B: SumOperator(A, B.float()), "one dtype"),
        (lambda A, B: DeflatedOperator(A, torch.zeros(N + 1, 2, dtype=F64)), r"\(30, r\)"),
        (lambda A, B: ScaledOperator(A, torch.ones(3, dtype=F64)), r"\(30,\)"),
        (lambda A, B: BlockOperator(A[:, :5], torch.tensor([0])), "square"),
    ],
)
def test_compositions_refuse_operands_that_do_not_fit(build, match):
    A, B = matrices()
    with pytest.raises(ValueError, match=match):
        build(A, B)


def test_estimators_give_the_same_numbers_on_a_dense_tensor_and_an_operator():
    A, B = matrices()
    op = CountingOperator(A)
    dense_run, op_run = lanczos(A, top_k=2, max_iter=30), lanczos(op, top_k=2, max_iter=30)
    np.testing.assert_allclose(op_run.ritz_values, dense_run.ritz_values, rtol=0, atol=1e-12)
    assert hutchpp_trace(op, 12).estimate == pytest.approx(hutchpp_trace(A, 12).estimate)
    Q = random_orthogonal(N, 7)[:, :3]
    deflated = deflated_trace(op, Q, 0.0, 9).estimate
    assert deflated == pytest.approx(deflated_trace(A, Q, 0.0, 9).estimate)
    np.testing.assert_allclose(
        slq_density(op, runs=2, steps=10).nodes, slq_density(A, runs=2, steps=10).nodes, atol=1e-12
    )
    b = torch.ones(N, dtype=F64)
    spd = CountingOperator(B)
    np.testing.assert_allclose(conjugate_gradient(spd, b).x, conjugate_gradient(B, b).x, atol=1e-9)
    np.testing.assert_allclose(
        exact_spectrum(op).eigenvalues, exact_spectrum(A).eigenvalues, atol=1e-12
    )
