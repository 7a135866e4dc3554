"""Symmetric linear operators: the protocol every estimator accepts, the base class of every
operator in the package, and the compositions scale, sum, principal block and deflation."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

import torch

from .errors import NumericalError

__all__ = [
    "BlockOperator",
    "DeflatedOperator",
    "OperatorLike",
    "ScaledOperator",
    "SumOperator",
    "SymmetricOperator",
]


_Operator = TypeVar("_Operator", bound="SymmetricOperator")


@runtime_checkable
class OperatorLike(Protocol):
    """What an estimator multiplies by: a square ``shape``, a ``dtype``, a ``device`` and
    ``A @ V`` for ``V`` of shape ``(n,)`` or ``(n, k)``. A dense symmetric :class:`torch.Tensor`
    is one, and so is every :class:`SymmetricOperator`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def __matmul__(self, other: torch.Tensor, /) -> torch.Tensor: ...


class SymmetricOperator:
    """A symmetric ``n × n`` matrix ``A`` known through its products ``A @ V`` only.

    The contract of a subclass:

    * **Shape, dtype, device.** ``__init__`` calls ``super().__init__(n, dtype, device)``:
      :attr:`shape` is ``(n, n)``, :attr:`dtype` a floating-point dtype and :attr:`device` where
      every product lives. ``A`` is symmetric (``Aᵀ = A`` up to rounding): Lanczos, SLQ and
      conjugate gradient rely on it.
    * **``_matmat(V)``**, the one method a subclass implements, receives an ``(n, k)`` tensor
      (``k ≥ 1``) already in :attr:`dtype` on :attr:`device` and returns ``A V`` as an ``(n, k)``
      tensor in the same dtype and device. It neither counts nor checks: ``A @ V`` does.
    * **``A @ v``** converts ``v`` to :attr:`dtype` and :attr:`device`, accepts ``(n,)`` (handed
      to ``_matmat`` as the ``(n, 1)`` view and returned as ``(n,)``) or ``(n, k)`` (any other
      shape is a ``ValueError``), and adds its number of columns to :attr:`matvecs`.
    * **Finiteness.** When :attr:`check_finite` is true (the default) a product with a NaN or an
      infinity raises :class:`~landscape_cli.errors.NumericalError` naming the class, with
      :attr:`non_finite_hint`. Compositions leave the check to their operands and to the
      estimator multiplying by them (which raises ``FloatingPointError`` saying at which step);
      so do operators whose caller names the failing computation itself.
    * **``fresh()``** is the same operator with its own :attr:`matvecs` (0), sharing whatever it
      keeps between products (an objective's cached graphs, per-sample gradients); a composition
      refreshes its operands. **``release()``** drops what is kept between products, which the
      next product rebuilds; nothing by default, forwarded to the operands by compositions.

    Compositions, each again a :class:`SymmetricOperator`: :meth:`scale` (``T A T``),
    ``A + B`` (:class:`SumOperator`), :meth:`block` (a principal submatrix) and :meth:`deflate`
    (``(I − QQᵀ) A (I − QQᵀ)``).

    Example
    -------
    >>> class Diagonal(SymmetricOperator):
    ...     def __init__(self, d):
    ...         super().__init__(d.shape[0], d.dtype, d.device)
    ...         self.d = d
    ...     def _matmat(self, V):
    ...         return self.d[:, None] * V
    >>> D = Diagonal(torch.tensor([1.0, 2.0, 3.0]))
    >>> (D @ torch.ones(3)).tolist(), (D @ torch.ones(3, 2)).shape, D.matvecs
    ([1.0, 2.0, 3.0], torch.Size([3, 2]), 3)
    """

    #: whether ``A @ V`` raises :class:`NumericalError` for a non-finite product
    check_finite: bool = True
    #: the hint of that error (what to try)
    non_finite_hint: str | None = None

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.shape: tuple[int, int] = (int(n), int(n))
        self.dtype: torch.dtype = dtype
        self.device: torch.device = torch.device(device)
        self.matvecs = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        n = self.shape[0]
        v = v.to(device=self.device, dtype=self.dtype)
        if v.ndim == 1 and v.shape[0] == n:
            out = self._matmat(v.reshape(-1, 1)).reshape(-1)
            self.matvecs += 1
        elif v.ndim == 2 and v.shape[0] == n:
            out = self._matmat(v)
            self.matvecs += v.shape[1]
        else:
            raise ValueError(
                f"expected a vector of length {n} or an ({n}, k) block, got {tuple(v.shape)}"
            )
        if self.check_finite and not bool(torch.isfinite(out).all()):
            raise NumericalError(
                f"a {type(self).__name__} product is not finite", hint=self.non_finite_hint
            )
        return out

    def fresh(self: _Operator) -> _Operator:
        """The same operator with its own matvec counter (contract in the class docstring)."""
        twin = copy.copy(self)
        twin.matvecs = 0
        return twin

    def release(self) -> None:
        """Drop what this operator keeps between products (contract in the class docstring)."""

    def scale(self, t: torch.Tensor) -> ScaledOperator:
        """``T A T`` with ``T = diag(t)`` (:class:`ScaledOperator`)."""
        return ScaledOperator(self, t)

    def block(self, indices: torch.Tensor, names: Sequence[str] = ()) -> BlockOperator:
        """The principal submatrix ``A_BB`` on the coordinates ``indices`` (:class:`BlockOperator`)."""
        return BlockOperator(self, indices, names)

    def deflate(self, Q: torch.Tensor) -> DeflatedOperator:
        """``(I − QQᵀ) A (I − QQᵀ)`` for orthonormal columns ``Q`` (:class:`DeflatedOperator`)."""
        return DeflatedOperator(self, Q)

    def __add__(self, other: OperatorLike) -> SumOperator:
        return SumOperator(self, other)


def _square_size(operator: OperatorLike) -> int:
    shape = tuple(operator.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"an operator must be square (n, n), got shape {shape}")
    return int(shape[0])


_Composed = TypeVar("_Composed", bound="_Composition")


class _Composition(SymmetricOperator):
    """An operator built from others (its :attr:`operands`, operators or dense tensors): no
    finiteness check of its own, and ``fresh``/``release`` passed on to the operands."""

    check_finite = False

    def __init__(self, operands: Sequence[OperatorLike], n: int) -> None:
        first = operands[0]
        super().__init__(n, first.dtype, first.device)
        self.operands: tuple[OperatorLike, ...] = tuple(operands)

    def fresh(self: _Composed) -> _Composed:
        twin = super().fresh()
        twin.operands = tuple(
            op.fresh() if isinstance(op, SymmetricOperator) else op for op in self.operands
        )
        return twin

    def release(self) -> None:
        for op in self.operands:
            if isinstance(op, SymmetricOperator):
                op.release()


class ScaledOperator(_Composition):
    """``T A T`` for a diagonal ``T = diag(t)``: e.g. the Hessian in ASAM's coordinates
    (Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization", ICML 2021), or the
    preconditioned Hessian ``P^{-1/2} H P^{-1/2}``, which has the eigenvalues of ``P⁻¹H``."""

    def __init__(self, operator: OperatorLike, t: torch.Tensor) -> None:
        super().__init__((operator,), _square_size(operator))
        self.t = t.to(device=operator.device, dtype=operator.dtype)
        if tuple(self.t.shape) != (self.shape[0],):
            raise ValueError(f"t must have shape ({self.shape[0]},), got {tuple(self.t.shape)}")

    @property
    def operator(self) -> OperatorLike:
        return self.operands[0]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t = self.t[:, None]
        return t * (self.operator @ (t * V))


class SumOperator(_Composition):
    """``A + B`` for two operators of the same shape, dtype and device: ``(A + B) V = A V + B V``
    (one product of each per column)."""

    def __init__(self, first: OperatorLike, second: OperatorLike) -> None:
        n = _square_size(first)
        for name, a, b in (
            ("shape", tuple(first.shape), tuple(second.shape)),
            ("dtype", first.dtype, second.dtype),
            ("device", torch.device(first.device), torch.device(second.device)),
        ):
            if a != b:
                raise ValueError(f"the terms of a sum must have one {name}, got {a} and {b}")
        super().__init__((first, second), n)

    @property
    def terms(self) -> tuple[OperatorLike, ...]:
        return self.operands

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        first, second = self.operands
        return first @ V + second @ V


class BlockOperator(_Composition):
    """The principal submatrix ``A_BB = P_B A P_Bᵀ`` of an operator ``A`` on the coordinates
    ``B = indices`` (``P_B``: those rows of the identity): ``A_BB v_B = P_B (A (P_Bᵀ v_B))``
    embeds ``v_B`` in a zero vector of full length, applies ``A`` and keeps the ``B`` rows, one
    product of ``A`` per column. By Cauchy's interlacing theorem
    ``λ_min(A) ≤ λ_min(A_BB) ≤ λ_max(A_BB) ≤ λ_max(A)``, and the traces of the blocks of a
    partition add up to ``tr(A)``. ``names`` labels the block (e.g. its parameters).

    Example
    -------
    >>> A = torch.arange(16.0).reshape(4, 4)
    >>> A = A + A.T
    >>> B = BlockOperator(A, torch.tensor([1, 3]))
    >>> torch.equal(B @ torch.eye(2), A[[1, 3]][:, [1, 3]])
    True
    """

    def __init__(
        self, operator: OperatorLike, indices: torch.Tensor, names: Sequence[str] = ()
    ) -> None:
        _square_size(operator)
        self.indices = indices.to(device=operator.device)
        self.names = list(names)
        super().__init__((operator,), int(self.indices.numel()))

    @property
    def operator(self) -> OperatorLike:
        return self.operands[0]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(
            (self.operator.shape[0], V.shape[1]), device=self.device, dtype=self.dtype
        )
        full[self.indices] = V
        return (self.operator @ full)[self.indices]


class DeflatedOperator(_Composition):
    """``P A P`` with ``P = I − Q Qᵀ`` for an ``(n, r)`` matrix ``Q`` with orthonormal columns:
    ``A`` with the subspace ``range(Q)`` removed, one product of ``A`` per column. Its trace is
    ``tr(A) − tr(Qᵀ A Q)`` (Meyer, Musco, Musco & Woodruff, "Hutch++", SOSA 2021)."""

    def __init__(self, operator: OperatorLike, Q: torch.Tensor) -> None:
        n = _square_size(operator)
        if Q.ndim != 2 or Q.shape[0] != n:
            raise ValueError(f"Q must have shape ({n}, r), got {tuple(Q.shape)}")
        super().__init__((operator,), n)
        self.Q = Q.to(device=operator.device, dtype=operator.dtype)

    @property
    def operator(self) -> OperatorLike:
        return self.operands[0]

    def _project(self, V: torch.Tensor) -> torch.Tensor:
        return V - self.Q @ (self.Q.mT @ V)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._project(self.operator @ self._project(V))
