"""Lanczos tridiagonalisation with full reorthogonalisation, Ritz pairs and extreme eigenvalues.

For a symmetric operator ``A`` (anything with ``A.shape == (n, n)``, ``A.dtype``, ``A.device`` and
``A @ v``) and a start vector ``q_1``, ``m`` steps of the Lanczos process (Lanczos 1950; Paige 1972;
Golub & Van Loan, *Matrix Computations*, 4th ed., ch. 10; Parlett, *The Symmetric Eigenvalue
Problem*, ch. 13) build an orthonormal basis ``Q_m = [q_1, ..., q_m]`` of the Krylov space
``K_m(A, q_1) = span{q_1, A q_1, ..., A^{m-1} q_1}`` and a tridiagonal ``T_m = Q_m^T A Q_m``:

    A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T,      T_m = tridiag(beta_{1:m-1}, alpha_{1:m}, beta_{1:m-1}).

If ``T_m = S diag(theta) S^T`` then the Ritz pairs ``(theta_i, y_i = Q_m s_i)`` satisfy
``||A y_i - theta_i y_i|| = |beta_m s_{m,i}|`` (the *Ritz residual*), so every Ritz value lies
within its residual of an eigenvalue of ``A`` (Parlett, Thm. 11.5.1). The extreme Ritz values
converge first and fast (Kaniel-Paige-Saad theory), which is why a few dozen matrix-vector products
(Hessian-vector products here) give ``lambda_max`` and ``lambda_min`` of a huge operator. The top
and bottom of the spectrum come from the *same* Krylov space.

Every new Lanczos vector is reorthogonalised against all previous ones with two passes of classical
Gram-Schmidt in matrix-vector form (CGS2; Giraud, Langou & Rozloznik 2005: "twice is enough"), so
``Q_m`` stays orthonormal to working precision and no spurious "ghost" copies of converged Ritz
values appear (the loss of orthogonality analysed by Paige 1972). The cost is ``O(n m)`` memory for
``Q_m`` on the operator's device and ``O(n m^2)`` flops, negligible next to ``m`` Hessian-vector
products for the ``m <= a few hundred`` used here.

Example:
    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> res = lanczos(A, top_k=2, bottom_k=1, max_iter=100)
    >>> res.converged, [round(float(x), 2) for x in res.top(2)], round(float(res.bottom(1)[0]), 2)
    (True, [100.0, 99.0], 1.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..linear_operator import OperatorLike

__all__ = ["LanczosProcess", "LanczosResult", "checked_product", "lanczos", "tridiagonal_eigh"]

#: Offset of the seed of the restart vectors' generator from the start vector's seed
#: (:func:`lanczos`, "Restarts"): a stream of its own (the CPU generator's Gaussian stream
#: depends on the seed modulo 2^32), so a given ``start`` and its ``seed`` reproduce a run.
RESTART_STREAM = 0x9E3779B9

#: Default number of Lanczos steps taken before the stopping test is allowed to fire. Measured
#: (see :func:`lanczos`, "Why ``min_iter``"): the smallest value at which the residual test made no
#: premature stop that ``min_iter=10`` does not also make, on planted spectra up to ``n = 10^5``.
DEFAULT_MIN_ITER = 8


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


def _error_bounds(
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

#: How many times the measured asymmetry of the products (:attr:`LanczosResult.asymmetry`) the
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
    the products' errors ``e`` (:attr:`LanczosResult.asymmetry` is the largest such norm over the
    run). A product computed in lower precision than the dtype says (TF32 matrix products and
    convolutions on a GPU, autocast) shows up there and widens the floor.
    """
    eps = float(torch.finfo(dtype).eps)
    return max(ROUNDING_UNITS * eps * scale, ASYMMETRY_FACTOR * asymmetry)


def _wanted_indices(m: int, top_k: int, bottom_k: int) -> np.ndarray:
    """Indices (into ascending Ritz values) of the ``top_k`` largest and ``bottom_k`` smallest."""
    idx = set(range(max(m - top_k, 0), m)) | set(range(min(bottom_k, m)))
    return np.array(sorted(idx), dtype=np.int64)


@dataclass(frozen=True)
class LanczosResult:
    """Outcome of :func:`lanczos`: the tridiagonal ``T_m``, its Ritz values and their accuracy.

    Attributes:
        alphas: ``(m,)`` diagonal of ``T_m`` (float64).
        betas: ``(m,)``; ``betas[j]`` is the norm of the residual that couples ``q_{j+1}`` to
            ``q_{j+2}`` (0-based: ``betas[:-1]`` is the off-diagonal of ``T_m``) and ``betas[-1]``
            is the final residual norm ``beta_m``.
        ritz_values: ``(m,)`` eigenvalues of ``T_m``, ascending.
        ritz_residuals: ``(m,)`` ``|beta_m s_{m,i}|`` = ``||A y_i - theta_i y_i||`` (exact
            arithmetic; with full reorthogonalisation it holds to ``O(eps ||A||)``).
        error_bounds: ``(m,)`` error estimates ``min(r_i, r_i^2 / gap_i)``, see :func:`lanczos`.
        first_components: ``(m,)`` first components ``s_{1,i}`` of the eigenvectors of ``T_m``;
            their squares are the Gauss quadrature weights used by stochastic Lanczos quadrature.
        converged: the stopping test was met (every wanted extreme Ritz value within ``tol``), or
            the process broke down (Ritz values exact). With ``tol=None`` it is ``breakdown``.
        breakdown: an invariant subspace was found (``beta ~ 0``, or ``m == n``). This is a
            success: the Ritz values are exact eigenvalues of ``A`` (of the part of ``A`` reachable
            from the start vector; multiplicities are not resolved by single-vector Lanczos).
        matvecs: number of products ``A @ v`` spent (one per step).
        start_vector_norm: ``||q||`` of the start vector before normalisation.
        top_vectors: ``(n, top_k)`` unit Ritz vectors of the ``top_k`` largest Ritz values in
            descending order, on the operator's device, if ``return_vectors=True``.
        bottom_vectors: ``(n, bottom_k)`` unit Ritz vectors of the smallest Ritz values in
            ascending order, if ``return_vectors=True`` and ``bottom_k > 0``.
        basis: ``(n, m)`` the orthonormal Lanczos vectors ``Q_m`` (``Q_m^T A Q_m = T_m``), if
            ``return_basis=True``: e.g. to deflate a trace estimate
            (:func:`landscape_cli.estimators.trace.deflated_trace`).
        block_starts: the step at which each Krylov block began: ``(0,)`` for one run; a restart
            (:func:`lanczos`, "Restarts") begins a block from a random vector orthogonal to the
            basis so far. ``alphas`` and ``betas`` run over all blocks; ``betas`` at a block's last
            step is that block's final residual norm.
        couplings: ``(blocks, m)``: row ``b`` holds ``q_e^T A q_j`` for the last vector ``q_e`` of
            block ``b`` and every later basis vector ``q_j`` (zero elsewhere); with the blocks'
            tridiagonals they make the projected matrix ``Q_m^T A Q_m``
            (:meth:`projected_matrix`). ``None`` for one block.
        rounding_floor: the smallest error the arithmetic allows a Ritz value
            (:func:`rounding_floor`); every entry of ``error_bounds`` is at least this.
        asymmetry: the largest norm over the run of the coefficients that are zero for an exactly
            symmetric product (:func:`rounding_floor`): evidence of the products' rounding.
        multiplicity_checked: a restart found no further eigenvalue among the wanted ones, so
            repeated or clustered eigenvalues are counted (:func:`lanczos`, "Restarts").
        resolved: ``(m,)`` per Ritz value: its bound is evidence for the eigenvalue of the same
            rank (its interval is disjoint from its neighbours'; a restart, if any ran, moved it
            by no more than its bound). An unresolved value is within its bound of *some*
            eigenvalue; the ``i``-th largest Ritz value is a lower bound of the ``i``-th largest
            eigenvalue whatever it says (:func:`lanczos`, "Error bounds").
    """

    alphas: np.ndarray
    betas: np.ndarray
    ritz_values: np.ndarray
    ritz_residuals: np.ndarray
    error_bounds: np.ndarray
    first_components: np.ndarray
    converged: bool
    breakdown: bool
    matvecs: int
    start_vector_norm: float
    top_vectors: torch.Tensor | None = None
    bottom_vectors: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    block_starts: tuple[int, ...] = (0,)
    couplings: np.ndarray | None = None
    rounding_floor: float = 0.0
    asymmetry: float = 0.0
    multiplicity_checked: bool = False
    resolved: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.resolved is None:
            object.__setattr__(self, "resolved", np.ones(self.ritz_values.shape[0], dtype=bool))

    @property
    def steps(self) -> int:
        """Number of Lanczos steps ``m`` (the size of ``T_m``)."""
        return int(self.alphas.shape[0])

    def top(self, k: int) -> np.ndarray:
        """The ``k`` largest Ritz values, descending (at most ``m`` of them)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if k == 0:
            return self.ritz_values[:0].copy()
        return self.ritz_values[::-1][:k].copy()

    def bottom(self, k: int) -> np.ndarray:
        """The ``k`` smallest Ritz values, ascending (at most ``m`` of them)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return self.ritz_values[:k].copy()

    @property
    def restarts(self) -> int:
        """Number of restarts (blocks after the first)."""
        return len(self.block_starts) - 1

    def first_block(self) -> tuple[np.ndarray, np.ndarray]:
        """``(alphas, betas)`` of the first Krylov block: the run from the (isotropic) start
        vector alone, which is a stochastic Lanczos quadrature node set."""
        end = self.block_starts[1] if len(self.block_starts) > 1 else self.steps
        return self.alphas[:end].copy(), self.betas[:end].copy()

    def projected_matrix(self) -> np.ndarray:
        """``Q_m^T A Q_m`` (float64, ``m x m``): the blocks' tridiagonals and their couplings."""
        return projected_matrix(self.alphas, self.betas, self.block_starts, self.couplings)

    def summary(self) -> dict[str, int | bool | float]:
        """The run's size and outcome for JSON: iterations, matvecs, converged, breakdown,
        restarts, whether multiplicities were checked, and the rounding floor."""
        return {
            "iterations": self.steps,
            "matvecs": int(self.matvecs),
            "converged": bool(self.converged),
            "breakdown": bool(self.breakdown),
            "restarts": self.restarts,
            "multiplicity_checked": bool(self.multiplicity_checked),
            "rounding_floor": float(self.rounding_floor),
        }

    def top_indices(self, k: int) -> np.ndarray:
        """Indices into the ascending :attr:`ritz_values` of the ``k`` largest, largest first
        (also index :attr:`ritz_residuals` and :attr:`error_bounds`)."""
        m = self.steps
        return np.arange(m - 1, max(m - 1 - k, -1), -1)

    def bottom_indices(self, k: int) -> np.ndarray:
        """Indices of the ``k`` smallest Ritz values, smallest first."""
        return np.arange(min(k, self.steps))

    def top_index(self) -> int:
        """Index of the largest Ritz value."""
        return self.steps - 1

    def bottom_index(self) -> int:
        """Index of the smallest Ritz value."""
        return 0

    def ritz_values_at(self, j: int) -> np.ndarray:
        """Ritz values after ``j`` steps: eigenvalues of the leading ``j x j`` block of ``T_m``.

        Used for convergence plots; ``ritz_values_at(m)`` equals ``ritz_values``.
        """
        m = self.steps
        if not 1 <= j <= m:
            raise ValueError(f"j must be in [1, {m}] (the number of Lanczos steps), got {j}")
        if len(self.block_starts) == 1:
            theta, _ = tridiagonal_eigh(self.alphas[:j], self.betas[: j - 1])
            return theta
        return np.linalg.eigvalsh(self.projected_matrix()[:j, :j])


def projected_matrix(
    alphas: np.ndarray,
    betas: np.ndarray,
    block_starts: tuple[int, ...] | list[int] = (0,),
    couplings: np.ndarray | None = None,
) -> np.ndarray:
    """The projected matrix ``Q_m^T A Q_m`` of a (restarted) Lanczos run: a tridiagonal
    ``tridiag(betas, alphas, betas)`` per block, no coupling inside the basis between consecutive
    blocks except through ``couplings`` (see :class:`LanczosResult`)."""
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


def _ritz(
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


def _as_operator_shape(A: OperatorLike) -> int:
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"the operator must have a square shape (n, n), got shape {shape}")
    n = int(shape[0])
    if n < 1:
        raise ValueError(f"the operator must have n >= 1, got shape {shape}")
    return n


def lanczos(
    A: OperatorLike,
    *,
    start: torch.Tensor | None = None,
    seed: int = 0,
    max_iter: int = 100,
    min_iter: int = DEFAULT_MIN_ITER,
    tol: float | None = 1e-4,
    top_k: int = 1,
    bottom_k: int = 0,
    return_vectors: bool = False,
    return_basis: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LanczosResult:
    """Lanczos with full (CGS2) reorthogonalisation; extreme Ritz values with error estimates.

    Args:
        A: symmetric operator with ``A.shape == (n, n)``, ``A.dtype``, ``A.device`` and
            ``A @ v`` for ``v`` of shape ``(n,)`` (a dense tensor or a Hessian operator).
        start: start vector of shape ``(n,)``; by default a Gaussian vector drawn on the CPU in
            float64 from ``torch.Generator().manual_seed(seed)`` and moved to ``A``'s
            device/dtype (so results do not depend on the device).
        seed: seed of the default start vector.
        max_iter: maximum number of steps (= matrix-vector products); clamped to ``n``.
        min_iter: the stopping test is not applied before this many steps (clamped to
            ``max_iter``); guards against a premature stop while the Krylov space is tiny.
        tol: relative tolerance of the stopping test, or ``None`` to run exactly ``max_iter``
            steps (stochastic Lanczos quadrature needs a fixed number of nodes).
        top_k, bottom_k: how many of the largest / smallest Ritz values must meet ``tol``.
        return_vectors: also return unit Ritz vectors of those Ritz values.
        return_basis: also return the Lanczos basis ``Q_m`` (``n x m``).
        progress: ``progress(done_steps, max_iter)`` called after each step.

    Returns:
        A :class:`LanczosResult`.

    Raises:
        ValueError: bad arguments (the offending value is named).
        FloatingPointError: ``A @ v`` returned a non-finite value (the step is named).

    **Stopping test** (evaluated every step from ``min_iter`` on; ``T_m`` is tiny, so this is
    cheap). With ``T_m = S diag(theta) S^T``, the residual of Ritz value ``theta_i`` is
    ``r_i = |beta_m s_{m,i}|``; its *gap* is the distance to the nearest other Ritz value minus that
    neighbour's residual; the error estimate is ``r_i^2 / gap_i`` when ``gap_i > r_i`` (Parlett's gap
    theorem / the Kato-Temple inequality: a Ritz value isolated by ``gap`` from the rest of the
    spectrum is within ``r^2 / gap`` of an eigenvalue) and ``r_i`` otherwise (always valid: a Ritz
    value is within its residual of *some* eigenvalue). The run stops when every wanted Ritz value
    (the ``top_k`` largest and ``bottom_k`` smallest) has *residual* ``r_i <= tol * scale``, where
    ``scale = max(|theta_max|, |theta_min|)`` estimates ``||A||_2`` (the ARPACK criterion); the
    reported :attr:`LanczosResult.error_bounds` are the sharper ``min(r, r^2/gap)``.

    Why the residual and not the quadratic estimate: the gap in ``r^2/gap`` is measured to the
    other *Ritz* values, not to the unknown eigenvalues, so an eigenvalue that the Krylov space has
    not yet detected can sit inside it. On spectra with a close top pair, such as
    (1, 1 - 1e-5, 0.9984), stopping on ``r^2/gap <= tol`` claims convergence with an error
    16 times ``tol`` (38 of 300 random spectra with a close pair exceed ``tol``; 2 of 300 with the
    residual test, which costs 1-3 more HVPs on the bundled samples). The residual bound is
    rigorous for "within ``r`` of an eigenvalue" (Parlett, Thm. 11.5.1); that the eigenvalue is the
    *largest* one still rests on the random start: every eigenvector has a component of size
    ``~ 1/sqrt(n)`` in it, and the Chebyshev amplification of Lanczos makes an eigenvalue beyond the
    current extreme Ritz value show up in ``T_m`` within a few steps.

    Precisely, for the top Ritz pair ``(theta_m, y)`` and any eigenpair ``(lambda, u)`` of ``A``
    with ``lambda >= theta_m``: ``y = pi(A) q_1 / (pi(theta_m) s_{1,m})`` with
    ``pi(t) = prod_{i<m} (t - theta_i)``, so ``|u^T y| >= |u^T q_1| pi(lambda) / pi(theta_m)
    >= |u^T q_1|``, and ``u^T (A y - theta_m y) = (lambda - theta_m) u^T y`` gives
    ``lambda - theta_m <= r_m / |u^T q_1|``: an eigenvalue above the top Ritz value is excluded
    only up to the residual divided by the start vector's component along it (``~ 1/sqrt(n)`` for
    a random start) and the growth of ``pi`` beyond ``theta_m`` (exact arithmetic). Nothing
    computed from ``T_m`` alone excludes such an eigenvalue without an assumption on
    ``|u^T q_1|``, which is also why ``r^2/gap`` cannot be made safe: its gap needs an upper bound
    on the second eigenvalue that the Krylov space does not give. Measured on a few outliers
    above a bulk (the shape of a network Hessian; ``n = 10^5``, 80 problems, ``min_iter=8``),
    stopping on ``min(r, r^2/gap)`` erred by up to 52 / 520 times ``tol = 1e-3`` / ``1e-4``
    (2 / 2 problems), the residual test by at most 6 times (1 / 0 problems), for 1-2 steps
    more.

    **Why ``min_iter``** (default :data:`DEFAULT_MIN_ITER` = 8). Before a few steps the Krylov
    space can be nearly invariant on the dominant part of the spectrum, so the residual test
    fires while an eigenvalue that is small against ``||A||`` is still unseen: on power-law
    spectra with random signs, where ``lambda_max`` is 0.1-7% of ``|lambda_min|`` (a saddle),
    ``n = 10^5``, 150 random problems each, ``tol = 1e-3`` / ``1e-4``, the residual test stopped
    with an error above ``tol * scale`` (up to 170 times) in 13 / 3 problems at ``min_iter=4``,
    3 / 1 at 5, 1 / 1 at 6 and 7, and none at 8 or 10. On the benchmark networks of BENCHMARKS.md
    the residual test fires after 12-13 steps, so ``min_iter`` does not set their cost.

    **Breakdown.** If ``beta_m <= eps(dtype) * ||T_m||`` (``||T_m||`` estimated by its largest
    Gershgorin row sum, which needs no eigen-decomposition) the next vector would be rounding noise
    alone: the Krylov space is invariant under ``A`` to working precision and its Ritz values are
    eigenvalues; the block ends with ``breakdown=True`` (a success, not an error), as it does after
    ``n`` steps, when the basis is the whole space. A zero operator breaks down at step 1. The test
    is at one unit of rounding because continuing past a breakdown is harmless (the normalised
    noise is a new direction orthogonal to the basis, and its coupling ``beta_m`` stays in the
    projected matrix), while stopping early is not: a threshold of ``10 eps sqrt(n) ||A||`` ended
    runs on a spectrum ``(1e4, 1e2, 1, bulk 1e-4..1e-2)`` in float32 after three steps, before the
    eigenvalue 1 was seen.

    **Restarts.** One Krylov space holds one copy of a repeated eigenvalue, and a tight cluster
    looks like one eigenvalue, so ``lambda_2 .. lambda_k`` can be a later, smaller eigenvalue with
    a tiny residual. When more than one value is wanted at an end (``top_k >= 2`` or
    ``bottom_k >= 2``, with ``tol`` set), a converged (or broken-down) block is followed by a new
    block from a Gaussian vector orthogonal to the basis so far (from its own generator, seed
    ``seed + RESTART_STREAM``); the Ritz values are those of the whole projected matrix
    ``Q^T A Q`` (:func:`projected_matrix`), so earlier blocks' values are kept and a second copy
    of an eigenvalue appears as a second Ritz value. Such a *confirming* block is a Lanczos run
    on ``A`` with the basis so far projected out; it runs at least ``min_iter`` steps and until
    its own extreme Ritz value has converged (residual within ``tol * scale``) or lies more than
    its residual and ``tol * scale`` inside the smallest wanted value (it cannot enter the wanted
    ones). If it then changes no wanted value of the whole projected matrix by more than
    ``tol * scale``, nothing was missed (``multiplicity_checked``) and the result is the one
    before it (its products are counted in ``matvecs``); otherwise the run converges the wanted
    values anew and confirms again. A block is also started whenever the basis holds fewer Ritz
    values than are wanted.

    **Error bounds** (:attr:`LanczosResult.error_bounds`, :func:`_error_bounds`): the residual,
    or ``r^2/gap`` where the neighbouring Ritz intervals are disjoint, never below the rounding
    floor :func:`rounding_floor`. What they bound: some eigenvalue lies within the residual of
    each Ritz value (rigorous, up to the floor). That it is the ``i``-th eigenvalue needs every
    larger eigenvalue to have been seen; :attr:`LanczosResult.resolved` says where the run has
    evidence of that: the value's interval is disjoint from its neighbours', and the last block
    (when restarts ran) moved it by no more than its bound. The ``i``-th largest Ritz value never
    exceeds the ``i``-th largest eigenvalue (Cauchy interlacing), so an unresolved top value is a
    lower bound, an unresolved bottom value an upper bound.
    """
    n = _as_operator_shape(A)
    for name, value in (("max_iter", max_iter), ("min_iter", min_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("top_k", top_k), ("bottom_k", bottom_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if value > n:
            raise ValueError(f"{name}={value} exceeds the operator size n={n}")
    if tol is not None and not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number or None, got {tol!r}")
    max_iter = min(max_iter, n)
    min_iter = min(min_iter, max_iter)
    wanted_count = min(top_k + bottom_k, n)
    if tol is not None and max_iter < wanted_count:
        raise ValueError(
            f"max_iter={max_iter} (clamped to n={n}) is smaller than top_k + bottom_k = "
            f"{top_k + bottom_k}: that many Ritz values cannot converge; raise max_iter"
        )

    if not A.dtype.is_floating_point:
        raise ValueError(f"the operator must have a floating-point dtype, got {A.dtype}")
    process = LanczosProcess(_start_vector(n, start, seed), A.dtype, A.device, max_iter)
    restarts = torch.Generator().manual_seed(int(seed) + RESTART_STREAM)
    check_multiplicity = tol is not None and (top_k >= 2 or bottom_k >= 2)
    confirming = False  # the current block only looks for eigenvalues the earlier ones missed
    kept: int | None = None  # steps of the result a confirming block tests
    kept_values = np.empty(0)
    multiplicity_checked = False
    while not process.finished:
        step = process.steps + 1
        where = f"at Lanczos iteration {step} (matrix-vector product {step})"
        process.advance(checked_product(A, process.vector, where))
        if progress is not None:
            progress(process.steps, max_iter)
        if tol is None or process.steps >= max_iter:
            continue  # a fixed-length run (SLQ) stops at max_iter or a breakdown
        # The stopping tests need eigen-decompositions of the projected matrix; they are skipped
        # before min_iter steps of the block, which keeps the steps cheap.
        m = process.steps
        block_steps = m - process.block_starts[-1]
        if not process.breakdown:
            if block_steps < min_iter:
                continue
            if confirming:
                top = kept_values[top_k - 1] if top_k >= 2 else None
                bottom = kept_values[-1] if bottom_k >= 2 else None
                if not process.block_settled(tol, top, bottom):
                    continue
            elif m < wanted_count or not process.wanted_within(tol, top_k, bottom_k):
                continue
        values = process.wanted_values(top_k, bottom_k)
        if confirming:
            if not _wanted_changed(kept_values, values, process, tol):
                multiplicity_checked = True
                break
            confirming = False  # it found an eigenvalue: converge the wanted values anew
            if not process.breakdown:
                continue
        if m >= n:
            multiplicity_checked = check_multiplicity  # the basis spans the whole space
            kept = None
            break
        if m < wanted_count or check_multiplicity:
            if check_multiplicity and m >= wanted_count:
                confirming, kept, kept_values = True, m, values
            process.restart(torch.randn(n, generator=restarts, dtype=torch.float64))
            continue
        break
    upto = kept if confirming or multiplicity_checked else None
    met_tol = (
        tol is not None
        and (upto or process.steps) >= wanted_count
        and (
            process.breakdown
            or upto is not None  # the kept result passed the stopping test
            or process.wanted_within(tol, top_k, bottom_k)
        )
    )
    result = process.result(
        converged=met_tol,
        return_vectors=return_vectors,
        top_k=top_k,
        bottom_k=bottom_k,
        multiplicity_checked=multiplicity_checked,
        upto=upto,
    )
    result = replace(result, matvecs=process.steps)
    if check_multiplicity:
        result = _mark_moved(result, process, top_k, bottom_k, confirmed=multiplicity_checked)
    if tol is not None:
        result = _anchor_to_extremes(result, top_k, bottom_k, tol)
    if return_basis:
        result = replace(result, basis=process.basis()[: result.steps].mT)
    return result


def _anchor_to_extremes(
    result: LanczosResult, top_k: int, bottom_k: int, tol: float
) -> LanczosResult:
    """``result`` with the bounds that interlacing gives from the extremes where they are within
    the requested accuracy and tighter, or the value was unresolved.

    The ``i``-th largest Ritz value satisfies ``theta_i <= lambda_i <= lambda_max <= theta_max +
    b_max`` (Cauchy interlacing; ``b_max`` the bound of ``lambda_max``), so
    ``|lambda_i - theta_i| <= max(theta_max + b_max - theta_i, floor)`` whatever its own residual
    says: inside a tight cluster at the top this is the cluster's width. Symmetrically at the
    bottom. Used where it is at most ``max(tol * scale, b_i)``: a wider one says nothing useful,
    and the value keeps its residual bound and stays unresolved."""
    theta, bounds, resolved = result.ritz_values, result.error_bounds.copy(), result.resolved.copy()
    floor = result.rounding_floor
    scale = float(max(abs(theta[0]), abs(theta[-1])))
    top, bottom = result.top_index(), result.bottom_index()
    ranks = [
        (result.top_indices(top_k), theta[top] + bounds[top] - theta),
        (result.bottom_indices(bottom_k), theta - (theta[bottom] - bounds[bottom])),
    ]
    for indices, anchored in ranks:
        for i in indices:
            width = max(float(anchored[i]), floor)
            if width <= max(tol * scale, bounds[i]) and (width < bounds[i] or not resolved[i]):
                bounds[i], resolved[i] = width, True
    return replace(result, error_bounds=bounds, resolved=resolved)


def _mark_moved(
    result: LanczosResult, process: LanczosProcess, top_k: int, bottom_k: int, *, confirmed: bool
) -> LanczosResult:
    """``result`` with the wanted values marked unresolved that the confirming block, with all
    the basis, moved by more than their bound; without a confirming block (``max_iter``) all
    but the largest and the smallest value (:func:`lanczos`, "Restarts")."""
    top, bottom = result.top_indices(top_k), result.bottom_indices(bottom_k)
    wanted = np.concatenate([top, bottom])
    resolved = result.resolved.copy()
    if confirmed and process.steps > result.steps:
        values = process.wanted_values(top_k, bottom_k)
        moved = np.abs(values - result.ritz_values[wanted]) > result.error_bounds[wanted]
    elif confirmed:  # the kept run spans the whole space
        moved = np.zeros(wanted.shape, dtype=bool)
    else:
        moved = ~np.isin(wanted, [result.top_index(), result.bottom_index()])
    resolved[wanted[moved]] = False
    return replace(result, resolved=resolved)


def _wanted_changed(
    before: np.ndarray, values: np.ndarray, process: LanczosProcess, tol: float
) -> bool:
    """Whether a block changed the wanted Ritz values by more than ``tol`` times the spectral-norm
    estimate (an eigenvalue the earlier blocks had not seen)."""
    if before.shape != values.shape:
        return True
    theta, _, _ = process.ritz()
    scale = float(max(abs(theta[0]), abs(theta[-1])))
    return bool(np.any(np.abs(values - before) > tol * scale))


def _start_vector(n: int, start: torch.Tensor | None, seed: int) -> torch.Tensor:
    """The start vector: ``start`` checked, or a Gaussian drawn on the CPU in float64 from
    ``seed`` (so results do not depend on the device)."""
    if start is None:
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, generator=gen, dtype=torch.float64)
    if not isinstance(start, torch.Tensor):
        raise ValueError(f"start must be a torch.Tensor, got {type(start).__name__}")
    if tuple(start.shape) != (n,):
        raise ValueError(f"start must have shape ({n},), got {tuple(start.shape)}")
    return start.detach()


def checked_product(A: OperatorLike, V: torch.Tensor, where: str) -> torch.Tensor:
    """``A @ V`` for a vector ``(n,)`` or a block ``(n, k)``, checked for shape (``ValueError``)
    and finiteness (``FloatingPointError`` saying ``where`` it happened); the one check every
    estimator applies to the operator it is given."""
    W = A @ V
    if not isinstance(W, torch.Tensor) or tuple(W.shape) != tuple(V.shape):
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        name = "v" if V.ndim == 1 else "V"
        raise ValueError(f"A @ {name} must return a tensor of shape {tuple(V.shape)}, got {shape}")
    if not bool(torch.isfinite(W).all()):
        raise FloatingPointError(f"the operator returned a non-finite value {where}")
    return W


class LanczosProcess:
    """One Lanczos recurrence whose matrix-vector products the caller supplies.

    ``vector`` is the next Lanczos vector ``q_{m+1}``; after computing ``w = A q_{m+1}`` (alone,
    or as one column of a block product shared with other processes, as
    :func:`landscape_cli.estimators.density.slq_density` does), ``advance(w)`` reorthogonalises it (CGS2),
    appends ``alpha`` and ``beta`` and detects breakdown. :func:`lanczos` is this loop plus the
    stopping test; see it for the numerics.

    Args:
        start: start vector ``(n,)`` (any dtype/device; normalised here).
        dtype, device: those of the operator; the basis is stored in them.
        max_iter: the basis capacity (clamped to ``n``): the process is finished after it.
    """

    def __init__(
        self, start: torch.Tensor, dtype: torch.dtype, device: torch.device, max_iter: int
    ) -> None:
        n = int(start.shape[0])
        self.n = n
        self.dtype = dtype
        self.device = device
        self.max_iter = min(int(max_iter), n)
        q = start.to(device=device, dtype=dtype)
        self.start_norm = float(torch.linalg.vector_norm(q.to(torch.float64)))
        if not math.isfinite(self.start_norm) or self.start_norm == 0.0:
            raise ValueError(
                f"start vector must be finite and non-zero, its norm is {self.start_norm}"
            )
        self._q: torch.Tensor | None = q / torch.linalg.vector_norm(q)
        eps = torch.finfo(dtype).eps
        self._breakdown_factor = eps  # see lanczos(), "Breakdown"
        # Basis stored row-wise (Q[i] = q_{i+1}) so that writes and the block products are
        # contiguous; storage grows by doubling up to max_iter rows so a run that stops early
        # does not pay for more.
        self._capacity = min(self.max_iter, 32)
        self._Q = torch.empty((self._capacity, n), dtype=dtype, device=device)
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.breakdown = False
        self.block_starts = [0]
        # one row per finished block b: q_e^T A q_j for its last vector q_e and each later q_j
        self._coupling_rows: list[list[float]] = []
        self.asymmetry = 0.0

    @property
    def steps(self) -> int:
        """Steps taken so far (= products consumed)."""
        return len(self.alphas)

    @property
    def finished(self) -> bool:
        """Broke down (an invariant subspace; includes ``m == n``) or reached ``max_iter``."""
        return self.breakdown or self.steps >= self.max_iter

    @property
    def vector(self) -> torch.Tensor:
        """The unit vector ``q_{m+1}`` whose product ``A q_{m+1}`` :meth:`advance` expects."""
        if self._q is None or self.finished:
            raise RuntimeError("the Lanczos process is finished: no further vector")
        return self._q

    def basis(self) -> torch.Tensor:
        """``Q_m^T`` as an ``(m, n)`` view: the orthonormal Lanczos vectors as rows."""
        return self._Q[: self.steps]

    def restart(self, start: torch.Tensor) -> None:
        """Begin a new Krylov block from ``start`` made orthogonal to the basis (CGS2).

        The block so far ends where it stands (converged or broken down); its pending vector is
        not lost: the coupling of its last vector to every later one is recorded by
        :meth:`advance`, so the projected matrix stays ``Q^T A Q`` exactly
        (:func:`projected_matrix`)."""
        m = self.steps
        if m == 0 or m >= self.max_iter:
            raise RuntimeError("a restart needs at least one step taken and room for another")
        Q = self._Q[:m]
        z = start.to(device=self.device, dtype=self.dtype)
        for _ in range(2):
            z = z - Q.mT @ (Q @ z)
        norm = float(torch.linalg.vector_norm(z))
        if not math.isfinite(norm) or norm <= 1e3 * torch.finfo(self.dtype).eps * float(
            torch.linalg.vector_norm(start.to(torch.float64))
        ):
            raise RuntimeError("the restart vector lies in the Krylov space")
        self._q = z / norm
        self.breakdown = False
        self.block_starts.append(m)
        self._coupling_rows.append([])

    def advance(self, w: torch.Tensor) -> None:
        """Take one step with ``w = A @ vector``."""
        j = self.steps
        q = self.vector
        if j == self._capacity:
            self._capacity = min(2 * self._capacity, self.max_iter)
            grown = torch.empty((self._capacity, self.n), dtype=self.dtype, device=self.device)
            grown[:j] = self._Q[:j]
            self._Q = grown
        self._Q[j] = q
        w = w.to(self.dtype)
        # CGS2: two passes of classical Gram-Schmidt against all basis vectors, including q_j.
        # The coefficient on q_j accumulates alpha_j; those on q_{j-1} (~beta_{j-1}) and on older
        # vectors (~0 in exact arithmetic) remove the three-term recurrence and rounding drift.
        Qj = self._Q[: j + 1]
        h = Qj @ w
        w = w - Qj.mT @ h
        h2 = Qj @ w
        w = w - Qj.mT @ h2
        coefficients = (h + h2).to(torch.float64).cpu().numpy()
        alpha = float(coefficients[j])
        self._record_couplings(coefficients, j)
        beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            raise FloatingPointError(
                f"non-finite Lanczos coefficient at iteration {j + 1} (alpha={alpha}, beta={beta})"
            )
        self.alphas.append(alpha)
        self.betas.append(beta)
        m = j + 1
        # Breakdown test against a cheap bound on ||T_m||_2: the largest Gershgorin row sum
        # |alpha_i| + beta_{i-1} + beta_i of T_m (within a factor 3 of ||T_m||_2 <= ||A||_2).
        a_abs = np.abs(np.asarray(self.alphas))
        off = np.asarray(self.betas[:-1])
        rows = a_abs.copy()
        rows[1:] += off
        rows[:-1] += off
        norm_est = float(rows.max())
        if beta <= self._breakdown_factor * norm_est or m == self.n:
            self.breakdown = True
        self._q = None if self.finished else w / beta

    def _record_couplings(self, coefficients: np.ndarray, j: int) -> None:
        """From the step-``j`` projection coefficients ``Q^T (A q_j)``: record the couplings to
        the earlier blocks' last vectors, and the asymmetry (the coefficients that vanish for an
        exactly symmetric product, :func:`rounding_floor`)."""
        start = self.block_starts[-1]
        ends = [b - 1 for b in self.block_starts[1:]]
        for row, e in zip(self._coupling_rows, ends, strict=True):
            row.append(float(coefficients[e]))
        expected_zero = np.ones(j, dtype=bool)
        expected_zero[ends] = False
        skew = 0.0
        if j - 1 >= start:
            expected_zero[j - 1] = False
            skew = (float(coefficients[j - 1]) - self.betas[j - 1]) ** 2
        skew += float(np.sum(coefficients[:j][expected_zero] ** 2))
        self.asymmetry = max(self.asymmetry, math.sqrt(skew))

    def _couplings(self) -> np.ndarray | None:
        if len(self.block_starts) == 1:
            return None
        m = self.steps
        out = np.zeros((len(self._coupling_rows), m))
        for b, row in enumerate(self._coupling_rows):
            out[b, m - len(row) :] = row
        return out

    def _view(
        self, upto: int | None
    ) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray | None]:
        """``(alphas, betas, block_starts, couplings)`` of the first ``upto`` steps (a block
        boundary, or all steps with ``None``)."""
        m = self.steps if upto is None else upto
        starts = [b for b in self.block_starts if b < m]
        couplings = self._couplings()
        if couplings is not None:
            couplings = couplings[: len(starts) - 1, :m] if len(starts) > 1 else None
        return (
            np.asarray(self.alphas[:m], dtype=np.float64),
            np.asarray(self.betas[:m], dtype=np.float64),
            starts,
            couplings,
        )

    def ritz(self, upto: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors ``S`` of the projected matrix, residual bounds
        (of the first ``upto`` steps, a block boundary; all by default)."""
        return _ritz(*self._view(upto))

    def block_settled(self, tol: float, top: float | None, bottom: float | None) -> bool:
        """Whether the current block has settled what it looks for: its own largest Ritz value
        (the block is a Lanczos run on ``A`` with the earlier blocks projected out) has a residual
        within ``tol`` times the spectral-norm estimate, or lies more than its residual plus that
        below ``top`` (the smallest wanted top value kept: it cannot enter the wanted ones);
        likewise its smallest against ``bottom``. ``None`` skips an end."""
        lo = self.block_starts[-1]
        theta, S = tridiagonal_eigh(
            np.asarray(self.alphas[lo:], dtype=np.float64),
            np.asarray(self.betas[lo:-1], dtype=np.float64),
        )
        residuals = np.abs(self.betas[-1] * S[-1, :])
        all_theta, _, _ = self.ritz()
        margin = tol * float(max(abs(all_theta[0]), abs(all_theta[-1])))
        ok = True
        if top is not None:
            ok &= bool(residuals[-1] <= margin or theta[-1] + residuals[-1] + margin < top)
        if bottom is not None:
            ok &= bool(residuals[0] <= margin or theta[0] - residuals[0] - margin > bottom)
        return ok

    def wanted_values(self, top_k: int, bottom_k: int) -> np.ndarray:
        """The ``top_k`` largest then the ``bottom_k`` smallest Ritz values (as many as exist)."""
        theta, _, _ = self.ritz()
        return np.concatenate([theta[::-1][:top_k], theta[:bottom_k]])

    def wanted_within(self, tol: float, top_k: int, bottom_k: int) -> bool:
        """The stopping test: every wanted extreme Ritz value's residual is within ``tol`` times
        the spectral-norm estimate ``max(|theta_1|, |theta_m|)`` (see :func:`lanczos`)."""
        theta, _, residuals = self.ritz()
        scale = float(max(abs(theta[0]), abs(theta[-1])))
        wanted = _wanted_indices(self.steps, top_k, bottom_k)
        return bool(np.all(residuals[wanted] <= tol * scale))

    def result(
        self,
        *,
        converged: bool = False,
        return_vectors: bool = False,
        top_k: int = 1,
        bottom_k: int = 0,
        multiplicity_checked: bool = False,
        upto: int | None = None,
    ) -> LanczosResult:
        """The :class:`LanczosResult` of the steps so far, or of the first ``upto`` (a block
        boundary); ``converged`` also when broken down."""
        m = self.steps if upto is None else upto
        if m == 0:
            raise RuntimeError("no Lanczos step taken yet")
        dtype, device = self.dtype, self.device
        alphas_np, betas_np, starts, couplings = self._view(upto)
        theta, S, residuals = _ritz(alphas_np, betas_np, starts, couplings)
        scale = float(max(abs(theta[0]), abs(theta[-1])))
        floor = rounding_floor(dtype, scale, self.asymmetry)
        bounds, certified = _error_bounds(
            theta, residuals, floor, refine=bool(converged or self.breakdown)
        )

        top_vectors = None
        bottom_vectors = None
        if return_vectors:
            Qm = self._Q[:m].mT

            def ritz_vectors(cols: np.ndarray) -> torch.Tensor:
                s = torch.as_tensor(np.ascontiguousarray(S[:, cols]), dtype=dtype, device=device)
                Y = Qm @ s
                return Y / torch.linalg.vector_norm(Y, dim=0, keepdim=True)

            top_vectors = ritz_vectors(np.arange(m - 1, m - 1 - min(top_k, m), -1))
            if bottom_k > 0:
                bottom_vectors = ritz_vectors(np.arange(min(bottom_k, m)))

        return LanczosResult(
            alphas=alphas_np,
            betas=betas_np,
            ritz_values=theta,
            ritz_residuals=residuals,
            error_bounds=bounds,
            first_components=S[0, :].copy(),  # the quadrature weights of a single block
            converged=bool(converged or self.breakdown),
            breakdown=self.breakdown,
            matvecs=m,
            start_vector_norm=self.start_norm,
            top_vectors=top_vectors,
            bottom_vectors=bottom_vectors,
            block_starts=tuple(starts),
            couplings=couplings,
            rounding_floor=floor,
            asymmetry=self.asymmetry,
            multiplicity_checked=multiplicity_checked,
            resolved=certified,
        )
