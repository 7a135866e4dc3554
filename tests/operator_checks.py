"""The one comparison of a matrix-free operator with a dense float64 reference matrix, which
every operator of the package goes through (Hessian, GGN, empirical Fisher, blocks, scaled, sum,
deflated, the Jacobian Gram and NTK operators).

"Close" is entrywise ``|difference| <= tol * max|reference|``: an operator's products are sums
of rounded terms, so a tolerance relative to the matrix's scale (not to each entry, which may be
0) is what rounding allows, while a wrong weight, column or sign is an O(1) difference.
"""

from __future__ import annotations

import torch

from landscape_cli.linear_operator import OperatorLike, SymmetricOperator

F64 = torch.float64


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    error = float((actual.to(F64) - expected).abs().max())
    assert error <= atol, f"{what}: max |difference| {error:.3g} > {atol:.3g}"


def _count(operator: SymmetricOperator, product: torch.Tensor, columns: int) -> torch.Tensor:
    """``operator @ product``, checking that the product adds ``columns`` to ``matvecs``."""
    before = operator.matvecs
    out = operator @ product
    assert operator.matvecs - before == columns, (
        f"{type(operator).__name__}.matvecs grew by {operator.matvecs - before}, not {columns}"
    )
    return out


def assert_matches_dense(
    operator: SymmetricOperator,
    dense: torch.Tensor,
    *,
    tol: float = 1e-10,
    dtype: torch.dtype = F64,
    columns: int = 3,
    seed: int = 0,
) -> None:
    """Check ``operator`` against the float64 ``n × n`` reference ``dense``:

    * it is a :class:`SymmetricOperator` and an :class:`OperatorLike`, of shape ``(n, n)``, of
      ``dtype`` and on the CPU; ``dense`` is symmetric;
    * ``A @ v`` on ``(n,)`` is an ``(n,)`` tensor of its dtype and device, close to ``dense @ v``,
      and counts one matvec; an input in another dtype is converted first;
    * ``A @ V`` on ``(n, columns)`` is ``(n, columns)``, close to ``dense @ V`` and column by
      column to the matvecs, and counts ``columns``;
    * ``A @ I`` (``n`` matvecs, counted) is close to ``dense`` and to its own transpose;
    * a vector of the wrong length is a ``ValueError`` and counts nothing;
    * ``fresh()`` starts its own count at 0, gives the same products to the bit and leaves the
      original's count alone; after ``release()`` a product is still close.
    """
    n = dense.shape[0]
    assert dense.dtype == F64 and tuple(dense.shape) == (n, n), "the reference is n × n float64"
    atol = tol * float(dense.abs().max())
    _close(dense.T, dense, atol, "the reference is not symmetric")
    assert isinstance(operator, SymmetricOperator) and isinstance(operator, OperatorLike)
    name = type(operator).__name__
    assert tuple(operator.shape) == (n, n), f"{name}.shape {operator.shape} != {(n, n)}"
    assert operator.dtype == dtype, f"{name}.dtype {operator.dtype} != {dtype}"
    assert operator.device == torch.device("cpu"), f"{name}.device {operator.device}"

    gen = torch.Generator().manual_seed(seed)
    V = torch.randn(n, columns, generator=gen, dtype=F64)
    v = V[:, 0]
    Av = _count(operator, v.to(dtype), 1)
    assert Av.shape == (n,) and Av.dtype == dtype and Av.device == operator.device, name
    _close(Av, dense @ v.to(dtype).to(F64), atol, f"{name} @ v")

    other = torch.float32 if dtype == F64 else F64
    converted = _count(operator, v.to(other), 1)
    assert converted.dtype == dtype, f"{name} @ v does not convert a {other} input"
    _close(converted, dense @ v.to(other).to(dtype).to(F64), atol, f"{name} @ v in {other}")

    AV = _count(operator, V.to(dtype), columns)
    assert AV.shape == (n, columns) and AV.dtype == dtype, name
    _close(AV, dense @ V.to(dtype).to(F64), atol, f"{name} @ V")
    _close(AV[:, :1], Av[:, None].to(F64), atol, f"{name}: a block's column against the matvec")

    M = _count(operator, torch.eye(n, dtype=dtype), n).to(F64)
    _close(M, dense, atol, f"{name} @ I")
    _close(M.T, M, atol, f"{name} is not symmetric")

    for wrong in (torch.zeros(n + 1, dtype=dtype), torch.zeros(n, 2, 1, dtype=dtype)):
        before = operator.matvecs
        try:
            operator @ wrong
        except ValueError:
            pass
        else:
            raise AssertionError(f"{name} accepted a tensor of shape {tuple(wrong.shape)}")
        assert operator.matvecs == before, f"{name} counted a refused product"

    twin = operator.fresh()
    assert type(twin) is type(operator) and twin.matvecs == 0, f"{name}.fresh()"
    before = operator.matvecs
    ours = operator @ v.to(dtype)
    theirs = twin @ v.to(dtype)
    assert torch.equal(ours, theirs), f"{name}.fresh() gives other products"
    assert twin.matvecs == 1 and operator.matvecs == before + 1, f"{name}.fresh() shares a count"

    operator.release()
    _close(operator @ v.to(dtype), dense @ v.to(dtype).to(F64), atol, f"{name} after release()")
