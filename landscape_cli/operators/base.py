"""The base of every matrix-free operator, and its compositions."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..errors import NumericalError
from ..problem.objective import Objective


class CurvatureOperator:
    """Base of the matrix-free curvature operators of an :class:`Objective` (the Hessian here; the
    generalised Gauss-Newton matrix and the empirical Fisher in :mod:`landscape_cli.operators.curvature`).

    ``A @ v`` for ``v`` of shape ``(n,)`` or ``(n, k)``; each column is counted in
    :attr:`matvecs`, and a non-finite product is a :class:`NumericalError`. Subclasses implement
    ``_block(V)`` for an ``(n, k)`` block. Any estimator that accepts a dense symmetric tensor
    accepts these.
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        n = objective.num_parameters
        self.shape = (n, n)
        self.dtype = objective.dtype
        self.device = objective.device
        self.matvecs = 0

    def _block(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fresh(self) -> CurvatureOperator:
        """The same operator with its own matvec counter, sharing whatever it keeps between
        products (the GGN's per-batch graphs, the empirical Fisher's per-sample gradients), so
        per-layer blocks neither rebuild nor duplicate them."""
        twin = copy.copy(self)
        twin.matvecs = 0
        return twin

    def release(self) -> None:
        """Drop what this operator keeps between products (its next product rebuilds it); the
        Hessian's gradient graph belongs to the objective and stays."""

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        v = v.to(device=self.device, dtype=self.dtype)
        if v.ndim == 1 and v.shape[0] == self.shape[0]:
            out = self._block(v.reshape(-1, 1)).reshape(-1)
            self.matvecs += 1
        elif v.ndim == 2 and v.shape[0] == self.shape[0]:
            out = self._block(v)
            self.matvecs += v.shape[1]
        else:
            raise ValueError(
                f"expected a vector of length {self.shape[0]} or an (n, k) block, "
                f"got {tuple(v.shape)}"
            )
        if not bool(torch.isfinite(out).all()):
            raise NumericalError(
                f"a {type(self).__name__} product is not finite",
                hint="the outputs or the loss overflow here; try --dtype float64",
            )
        return out


class ScaledOperator:
    """``T A T`` for a diagonal ``T = diag(t)``: e.g. the Hessian in ASAM's coordinates, or the
    preconditioned Hessian ``P^{-1/2} H P^{-1/2}`` (same eigenvalues as ``P⁻¹H``)."""

    def __init__(self, operator: Any, t: torch.Tensor) -> None:
        self.operator = operator
        self.t = t.to(device=operator.device, dtype=operator.dtype)
        self.shape = operator.shape
        self.dtype = operator.dtype
        self.device = operator.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        v = v.to(device=self.device, dtype=self.dtype)
        t = self.t if v.ndim == 1 else self.t[:, None]
        return t * (self.operator @ (t * v))
