"""Conjugate gradient for ``(A + shift·I) x = b`` with a matrix-free symmetric ``A``.

Hestenes & Stiefel (1952); Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 5.2. Exact in
at most ``n`` steps for a symmetric positive definite ``A + shift·I``; the residual norm
``‖b − (A + shift I) x‖`` is monitored and the iteration stops when it falls below
``tol·‖b‖``. Negative curvature (``pᵀ(A + shift I)p ≤ 0``) means the shifted operator is not
positive definite; CG then stops and says so rather than returning a meaningless solve.

Example
-------
>>> import torch
>>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
>>> res = conjugate_gradient(A, torch.tensor([1.0, 2.0], dtype=torch.float64))
>>> [round(float(v), 6) for v in res.x], res.converged
([0.090909, 0.636364], True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..linear_operator import OperatorLike


@dataclass(frozen=True)
class CGResult:
    """Solution estimate, its relative residual, and how the iteration ended."""

    x: torch.Tensor
    relative_residual: float
    iterations: int
    matvecs: int
    converged: bool
    negative_curvature: bool  # p^T (A + shift I) p <= 0 was met: not positive definite


def conjugate_gradient(
    A: OperatorLike,
    b: torch.Tensor,
    *,
    shift: float = 0.0,
    tol: float = 1e-6,
    max_iter: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> CGResult:
    """Solve ``(A + shift·I) x = b`` by conjugate gradient from ``x0 = 0``.

    ``A`` is anything with ``A @ v`` (a dense symmetric tensor or a Hessian operator); each
    iteration costs one matvec. Raises ``ValueError`` for a non-positive ``tol`` or ``max_iter``.
    """
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0.0:
        return CGResult(x, 0.0, 0, 0, True, False)
    rr = float(r @ r)
    matvecs = 0
    negative = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        Ap = A @ p + shift * p
        matvecs += 1
        curvature = float(p @ Ap)
        if curvature <= 0.0:
            negative = True
            break
        step = rr / curvature
        x = x + step * p
        r = r - step * Ap
        rr_new = float(r @ r)
        if progress is not None:
            progress(iterations, max_iter)
        if rr_new**0.5 <= tol * b_norm:
            rr = rr_new
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    relative = rr**0.5 / b_norm
    return CGResult(x, relative, iterations, matvecs, relative <= tol and not negative, negative)
