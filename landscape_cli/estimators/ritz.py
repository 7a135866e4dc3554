"""Ritz values of a projected matrix and how far each can be from an eigenvalue.

A Lanczos run (:mod:`landscape_cli.estimators.lanczos`) projects a symmetric operator ``A`` onto
an orthonormal basis ``Q``: ``M = Q^T A Q``, one tridiagonal per Krylov block plus the couplings
between blocks. The eigenpairs ``(theta_i, s_i)`` of ``M`` give Ritz pairs ``(theta_i, Q s_i)``;
this module computes them, their residual bounds, the error bound of each Ritz value
(residual, gap and cluster theorems; Parlett, *The Symmetric Eigenvalue Problem*, ch. 11) and the
floor below which the arithmetic allows no bound.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

__all__ = [
    "ASYMMETRY_FACTOR",
    "ROUNDING_UNITS",
    "error_bounds",
    "projected_matrix",
    "ritz_pairs",
    "rounding_floor",
    "tridiagonal_eigh",
]


def tridiagonal_eigh(
    alphas: np.ndarray, betas_offdiag: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the symmetric tridiagonal ``T = tridiag(b, a, b)`` in float64.

    Args:
        alphas: diagonal, shape ``(m,)``.
        betas_offdiag: off-diagonal, shape ``(m - 1,)``.

    Returns:
        ``(theta, S)``: eigenvalues in ascending order and the orthonormal eigenvectors as the
        columns of the ``(m, m)`` matrix ``S`` (``T = S diag(theta) S^T``).

    ``T`` is assembled densely and passed to LAPACK ``syevd`` through :func:`numpy.linalg.eigh`
    (backward stable; ``m`` is at most a few hundred, so the ``O(m^3)`` cost is microseconds to
    milliseconds). numpy is used rather than ``scipy.linalg.eigh_tridiagonal`` because scipy is not
    a dependency of the package.

    Example:
        >>> theta, S = tridiagonal_eigh(np.array([2.0, 2.0]), np.array([1.0]))
        >>> theta.round(12).tolist()
        [1.0, 3.0]
    """
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    b = np.asarray(betas_offdiag, dtype=np.float64).reshape(-1)
    m = a.shape[0]
    if m == 0:
        raise ValueError(
            "tridiagonal_eigh needs at least one diagonal entry, got alphas of length 0"
        )
    if b.shape[0] != m - 1:
        raise ValueError(
            f"betas_offdiag must have length len(alphas) - 1 = {m - 1}, got {b.shape[0]}"
        )
    T = np.diag(a)
    if m > 1:
        idx = np.arange(m - 1)
        T[idx, idx + 1] = b
        T[idx + 1, idx] = b
    theta, S = np.linalg.eigh(T)
    return theta, S


def projected_matrix(
    alphas: np.ndarray,
    betas: np.ndarray,
    block_starts: tuple[int, ...] | list[int] = (0,),
    couplings: np.ndarray | None = None,
) -> np.ndarray:
    """The projected matrix ``Q_m^T A Q_m`` of a (restarted) Lanczos run: a tridiagonal
    ``tridiag(betas, alphas, betas)`` per block, no coupling inside the basis between consecutive
    blocks except through ``couplings`` (see :class:`~landscape_cli.estimators.lanczos_process.LanczosResult`)."""
    a = np.asarray(alphas, dtype=np.float64)
    b = np.asarray(betas, dtype=np.float64)
    m = a.shape[0]
    M = np.diag(a)
    starts = [*block_starts, m]
    for lo, hi in itertools.pairwise(starts):
        idx = np.arange(lo, hi - 1)
        M[idx, idx + 1] = b[lo : hi - 1]
        M[idx + 1, idx] = b[lo : hi - 1]
    if couplings is not None:
        for row, end in zip(couplings, starts[1:-1], strict=False):
            e = end - 1
            M[e, end:] = row[end:m]
            M[end:, e] = row[end:m]
    return M


def ritz_pairs(
    alphas: np.ndarray,
    betas: np.ndarray,
    block_starts: list[int],
    couplings: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values (ascending), the eigenvectors ``S`` of the projected matrix and each Ritz
    value's residual bound ``||A y - theta y||``.

    For one block this is ``|beta_m s_{m,i}|`` (Parlett, Thm. 11.5.1). With restarts, the last
    vector ``q_e`` of an earlier block ``b`` has ``A q_e = sum_i M_{ie} q_i + beta_e u^perp``,
    where ``u`` is the unit vector the block would have continued with and ``u^perp`` its part
    orthogonal to the whole basis, ``||u^perp||^2 = 1 - sum_j (M_{ej} / beta_e)^2`` over the later
    vectors; the residual is bounded by the triangle inequality,
    ``sum_b beta_{e_b} ||u_b^perp|| |s_{e_b,i}| + beta_m |s_{m,i}|``.
    """
    m = alphas.shape[0]
    if len(block_starts) == 1:
        theta, S = tridiagonal_eigh(alphas, betas[:-1])
        return theta, S, np.abs(betas[-1] * S[-1, :])
    theta, S = np.linalg.eigh(projected_matrix(alphas, betas, block_starts, couplings))
    residuals = np.abs(betas[-1] * S[-1, :])
    for row, end in zip(couplings, block_starts[1:], strict=False):
        e = end - 1
        beta = betas[e]
        if beta > 0:
            outside = math.sqrt(max(0.0, 1.0 - float(np.sum((row[end:m] / beta) ** 2))))
            residuals = residuals + beta * outside * np.abs(S[e, :])
    return theta, S, residuals


def error_bounds(
    theta: np.ndarray, residuals: np.ndarray, floor: float = 0.0, refine: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-Ritz-value error bounds, never below ``floor``, and where the gap is certified.

    With ``r_i = residual_i + floor``: the residual bound is rigorous, some eigenvalue of ``A``
    lies within ``r_i`` of ``theta_i`` (Parlett, *The Symmetric Eigenvalue Problem*,
    Thm. 11.5.1). Ritz values whose intervals ``[theta_i - r_i, theta_i + r_i]`` overlap in a
    chain form a *cluster*; for a cluster ``C`` of ``k`` values Kahan's theorem (Parlett,
    Thm. 11.5.2) matches them with ``k`` eigenvalues within ``||R_C||_2 <= sqrt(sum_C r_i^2)``,
    which is each member's bound (a repeated eigenvalue is ``k`` Ritz values, one per copy). An
    isolated value (a cluster of one) gets the gap theorem's ``r_i^2 / gap_i`` (Parlett,
    Thm. 11.7.1; Kato-Temple) when that is smaller, ``gap_i`` the distance to the nearest other
    Ritz value less that value's ``r``: the gap is *certified* in the one sense the Ritz values
    allow, the neighbouring intervals being disjoint from its own. A cluster is certified when
    its hull widened by its bound is disjoint from the neighbouring intervals. Uncertified
    values keep ``r_i`` (or the cluster bound). ``refine=False`` (a run that did not meet its
    stopping test, whose Krylov space may not yet have seen an eigenvalue inside a gap) keeps
    ``r_i`` for isolated values too. Returns the bounds and the certified mask.
    """
    r = residuals + floor
    m = theta.shape[0]
    bounds = r.copy()
    certified = np.zeros(m, dtype=bool)
    lo = 0
    while lo < m:  # one cluster [lo, hi) per pass
        hi = lo + 1
        while hi < m and theta[hi] - theta[hi - 1] <= r[hi] + r[hi - 1]:
            hi += 1
        radius = float(np.sqrt(np.sum(r[lo:hi] ** 2)))
        below = theta[lo - 1] + r[lo - 1] if lo > 0 else -np.inf
        above = theta[hi] - r[hi] if hi < m else np.inf
        if hi - lo == 1:
            gap = min(theta[lo] - below, above - theta[lo])
            if refine and gap > r[lo]:
                bounds[lo] = min(r[lo], r[lo] ** 2 / gap)
            certified[lo] = True  # the neighbouring intervals are disjoint from its own
        else:
            bounds[lo:hi] = np.maximum(r[lo:hi], radius)
            certified[lo:hi] = theta[lo] - radius > below and theta[hi - 1] + radius < above
        lo = hi
    return np.maximum(bounds, floor), certified


#: The rounding floor of a Lanczos run, in units of the analysis dtype's machine epsilon times
#: the spectral-norm estimate ``max |theta|`` (:func:`rounding_floor`).
ROUNDING_UNITS = 100.0

#: How many times the measured asymmetry of the products (:attr:`~landscape_cli.estimators.lanczos_process.LanczosResult.asymmetry`) the
#: rounding floor is at least.
ASYMMETRY_FACTOR = 10.0


def rounding_floor(dtype: torch.dtype, scale: float, asymmetry: float) -> float:
    """The smallest error a Ritz value computed in ``dtype`` can be claimed to have.

    ``max(ROUNDING_UNITS * eps(dtype) * scale, ASYMMETRY_FACTOR * asymmetry)`` with
    ``scale = max |theta|`` estimating ``||A||_2``. With full reorthogonalisation the computed
    Ritz values are exact for ``A + E`` with ``||E|| = O(eps ||A||)`` plus the error of the
    products themselves (Paige 1976; Parlett, ch. 13): measured on planted spectra up to
    ``n = 2000`` (dense products), the Ritz values of converged eigenvalues differ from the exact
    ones by at most 8 ``eps * scale``, hence the margin of ``ROUNDING_UNITS``. The products'
    own error is observed through their asymmetry: in exact arithmetic
    ``q_i^T (A q_j) = (A q_i)^T q_j``, so the coefficients that the reorthogonalisation removes
    beyond the three-term recurrence are zero; what it removes is ``q_i^T e_j - q_j^T e_i`` for
    the products' errors ``e`` (:attr:`~landscape_cli.estimators.lanczos_process.LanczosResult.asymmetry` is the largest such norm over the
    run). A product computed in lower precision than the dtype says (TF32 matrix products and
    convolutions on a GPU, autocast) shows up there and widens the floor.
    """
    eps = float(torch.finfo(dtype).eps)
    return max(ROUNDING_UNITS * eps * scale, ASYMMETRY_FACTOR * asymmetry)
