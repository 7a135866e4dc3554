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

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..linear_operator import OperatorLike

__all__ = ["LanczosProcess", "LanczosResult", "checked_product", "lanczos", "tridiagonal_eigh"]

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


def _error_bounds(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Per-Ritz-value error estimates ``min(r, r^2 / gap)`` (Parlett's gap theorem / Kato-Temple).

    ``gap_i`` is, over the Ritz neighbours ``k = i-1, i+1`` of ``theta_i`` (ascending order), the
    smallest ``|theta_i - theta_k| - r_k``: the distance to the nearest other Ritz value, reduced by
    that neighbour's residual because the neighbour is only known to lie within ``r_k`` of an
    eigenvalue. The quadratic bound ``r_i^2 / gap_i`` is used only when ``gap_i > r_i``; otherwise
    (and when there is no neighbour at all) the always-valid residual bound ``r_i`` is used.
    """
    m = theta.shape[0]
    gaps = np.full(m, np.inf)
    if m > 1:
        left = (theta[1:] - theta[:-1]) - residuals[:-1]  # gap of i = 1..m-1 to its left neighbour
        right = (theta[1:] - theta[:-1]) - residuals[1:]  # gap of i = 0..m-2 to its right neighbour
        gaps[1:] = np.minimum(gaps[1:], left)
        gaps[:-1] = np.minimum(gaps[:-1], right)
    bounds = residuals.copy()
    quad = np.isfinite(gaps) & (gaps > residuals)
    bounds[quad] = residuals[quad] ** 2 / gaps[quad]
    return np.minimum(bounds, residuals)


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

    def summary(self) -> dict[str, int | bool]:
        """The run's size and outcome for JSON: iterations, matvecs, converged, breakdown."""
        return {
            "iterations": self.steps,
            "matvecs": int(self.matvecs),
            "converged": bool(self.converged),
            "breakdown": bool(self.breakdown),
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
        theta, _ = tridiagonal_eigh(self.alphas[:j], self.betas[: j - 1])
        return theta


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

    **Breakdown.** If ``beta_m <= 10 * eps(dtype) * min(sqrt(n), 100) * ||T_m||`` (``||T_m||``
    estimated by its largest Gershgorin row sum, which needs no eigen-decomposition) the Krylov space
    is invariant under ``A`` to working precision and the Ritz values are exact eigenvalues; the run
    stops with ``breakdown=True`` (a success, not an error). After an exact breakdown the computed
    ``beta_m`` is rounding noise of size ``~ eps * sqrt(n) * ||A||`` for a dense product (measured:
    up to 1.6 times that at ``n = 300``), hence the factor 10; the ``sqrt(n)`` growth is capped at
    100 because the rounding of a Hessian-vector product does not grow with the parameter count
    like a length-``n`` dot product, and an uncapped threshold would reach ``~4e-3 ||A||`` in float32
    for ``n = 10^7`` -- the scale of a Hessian's bulk -- and stop a healthy run. (A missed
    breakdown is benign: the normalised noise vector acts as a restart orthogonal to ``Q_m``.) The same holds after ``n`` steps, when the Krylov
    space is the whole space. A zero operator breaks down at step 1 with all values 0. Single-vector
    Lanczos sees one copy of a repeated eigenvalue: multiplicities are not resolved.
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
    met_tol = False
    while not process.finished:
        step = process.steps + 1
        where = f"at Lanczos iteration {step} (matrix-vector product {step})"
        process.advance(checked_product(A, process.vector, where))
        if progress is not None:
            progress(process.steps, max_iter)
        if process.finished:
            break
        # The stopping test needs the eigen-decomposition of T_m; it is skipped when it cannot
        # fire (tol=None, before min_iter), which keeps fixed-length runs (SLQ) cheap.
        m = process.steps
        if tol is not None and m >= min_iter and m >= wanted_count:
            if process.wanted_within(tol, top_k, bottom_k):
                met_tol = True
                break
    result = process.result(
        converged=met_tol, return_vectors=return_vectors, top_k=top_k, bottom_k=bottom_k
    )
    if return_basis:
        result = replace(result, basis=process.basis().mT)
    return result


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
        self._breakdown_factor = 10.0 * eps * min(math.sqrt(n), 100.0)  # see lanczos()
        # Basis stored row-wise (Q[i] = q_{i+1}) so that writes and the block products are
        # contiguous; storage grows by doubling up to max_iter rows so a run that stops early
        # does not pay for more.
        self._capacity = min(self.max_iter, 32)
        self._Q = torch.empty((self._capacity, n), dtype=dtype, device=device)
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.breakdown = False

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
        alpha = float(h[j] + h2[j])
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

    def wanted_within(self, tol: float, top_k: int, bottom_k: int) -> bool:
        """The stopping test: every wanted extreme Ritz value's residual is within ``tol`` times
        the spectral-norm estimate ``max(|theta_1|, |theta_m|)`` (see :func:`lanczos`)."""
        theta, S = tridiagonal_eigh(np.asarray(self.alphas), np.asarray(self.betas[:-1]))
        scale = float(max(abs(theta[0]), abs(theta[-1])))
        residuals = np.abs(self.betas[-1] * S[-1, :])
        wanted = _wanted_indices(self.steps, top_k, bottom_k)
        return bool(np.all(residuals[wanted] <= tol * scale))

    def result(
        self,
        *,
        converged: bool = False,
        return_vectors: bool = False,
        top_k: int = 1,
        bottom_k: int = 0,
    ) -> LanczosResult:
        """The :class:`LanczosResult` of the steps so far (``converged`` also when broken down)."""
        m = self.steps
        if m == 0:
            raise RuntimeError("no Lanczos step taken yet")
        dtype, device = self.dtype, self.device
        alphas_np = np.asarray(self.alphas, dtype=np.float64)
        betas_np = np.asarray(self.betas, dtype=np.float64)
        theta, S = tridiagonal_eigh(alphas_np, betas_np[:-1])
        residuals = np.abs(betas_np[-1] * S[-1, :])
        bounds = _error_bounds(theta, residuals)

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
            first_components=S[0, :].copy(),
            converged=bool(converged or self.breakdown),
            breakdown=self.breakdown,
            matvecs=m,
            start_vector_norm=self.start_norm,
            top_vectors=top_vectors,
            bottom_vectors=bottom_vectors,
        )
