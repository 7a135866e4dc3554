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

This module is the driver: when to stop, restart and trust a value. The recurrence with its full
(CGS2) reorthogonalisation is :mod:`landscape_cli.estimators.lanczos_process`, the Ritz values and
their bounds :mod:`landscape_cli.estimators.ritz`. The cost is ``O(n m)`` memory for ``Q_m`` on the
operator's device and ``O(n m^2)`` flops, negligible next to ``m`` Hessian-vector products for the
``m <= a few hundred`` used here.

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
from dataclasses import replace

import numpy as np
import torch

from ..linear_operator import OperatorLike
from .lanczos_process import LanczosProcess, LanczosResult, checked_product

__all__ = ["DEFAULT_MIN_ITER", "LanczosResult", "lanczos"]

#: Offset of the seed of the restart vectors' generator from the start vector's seed
#: (:func:`lanczos`, "Restarts"): a stream of its own (the CPU generator's Gaussian stream
#: depends on the seed modulo 2^32), so a given ``start`` and its ``seed`` reproduce a run.
RESTART_STREAM = 0x9E3779B9

#: Default number of Lanczos steps taken before the stopping test is allowed to fire. Measured
#: (see :func:`lanczos`, "Why ``min_iter``"): the smallest value at which the residual test made no
#: premature stop that ``min_iter=10`` does not also make, on planted spectra up to ``n = 10^5``.
DEFAULT_MIN_ITER = 8


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
    ``Q^T A Q`` (:func:`~landscape_cli.estimators.ritz.projected_matrix`), so earlier blocks' values are kept and a second copy
    of an eigenvalue appears as a second Ritz value. Such a *confirming* block is a Lanczos run
    on ``A`` with the basis so far projected out; it runs at least ``min_iter`` steps and until
    its own extreme Ritz value has converged (residual within ``tol * scale``) or lies more than
    its residual and ``tol * scale`` inside the smallest wanted value (it cannot enter the wanted
    ones). If it then changes no wanted value of the whole projected matrix by more than
    ``tol * scale``, nothing was missed (``multiplicity_checked``) and the result is the one
    before it (its products are counted in ``matvecs``); otherwise the run converges the wanted
    values anew and confirms again. A block is also started whenever the basis holds fewer Ritz
    values than are wanted.

    **Error bounds** (:attr:`LanczosResult.error_bounds`, :func:`~landscape_cli.estimators.ritz.error_bounds`): the residual,
    or ``r^2/gap`` where the neighbouring Ritz intervals are disjoint, never below the rounding
    floor :func:`~landscape_cli.estimators.ritz.rounding_floor`. What they bound: some eigenvalue lies within the residual of
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
