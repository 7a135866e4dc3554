"""Stochastic trace estimation from matrix-vector products: Hutchinson and Hutch++.

Both estimators accept any square operator ``A`` with ``A.shape == (n, n)``, ``A.dtype``,
``A.device`` and ``A @ V`` for a block ``V`` of shape ``(n, b)`` (a dense tensor or a Hessian
operator, which may batch the ``b`` products). Each column of a block counts as one matvec.

* Hutchinson (1989): for probes ``z`` with ``E[z z^T] = I`` (Rademacher: independent +-1 entries),
  ``E[z^T A z] = tr(A)``. The average of ``m`` quadratic forms is unbiased; its standard error is
  estimated by the sample standard deviation over ``sqrt(m)``. For Rademacher probes
  ``Var[z^T A z] = 2 (||A||_F^2 - sum_i A_ii^2)``, so ``m = O(1/eps^2)`` probes are needed for
  relative error ``eps``.
* Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace Estimation",
  SOSA 2021): spend ``k = m // 3`` matvecs on a sketch ``A S``, take ``Q = orth(A S)`` (which
  captures the dominant eigenspace), compute ``tr(Q^T A Q)`` exactly with ``k`` more matvecs and
  estimate the remainder ``tr((I - QQ^T) A (I - QQ^T))`` by Hutchinson with the ``m - 2k`` probes
  left. Both parts are unbiased given ``Q``; the variance comes only from the deflated remainder,
  whose Frobenius norm is small when the spectrum decays (``m = O(1/eps)`` suffices for PSD ``A``).
  This suits Hessians, whose trace is dominated by a few outlying eigenvalues.

When ``num_matvecs >= n`` both functions return the exact trace ``sum_i e_i^T A e_i`` with ``n``
matvecs (``method="exact"``, ``stderr=0``): no estimator can beat that.

Random probes are drawn on the CPU in float64 from ``torch.Generator().manual_seed(seed)``, one
probe vector at a time (so the numbers do not depend on ``block_size`` or on the device), and then
moved to ``A``'s device and dtype.

Example:
    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 201.0, dtype=torch.float64))  # trace 20100
    >>> est = hutchpp_trace(A, 60, seed=0)
    >>> est.method, est.matvecs, abs(est.estimate - 20100.0) < 4 * est.stderr
    ('hutch++', 60, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..linear_operator import DeflatedOperator, OperatorLike
from .lanczos import checked_product

__all__ = [
    "EXACT_METHOD",
    "PER_SAMPLE",
    "TRACE_METHODS",
    "DeflatedOperator",
    "TraceEstimate",
    "choose_method",
    "deflated_trace",
    "estimate_trace",
    "hutchinson_trace",
    "hutchpp_trace",
]

ProgressFn = Callable[[int, int], None]

#: the exact trace from per-sample gradient norms (:mod:`landscape_cli.operators.exact_trace`), where it applies
PER_SAMPLE = "per-sample"
#: ``TraceEstimate.method`` of that exact trace
EXACT_METHOD = "per-sample exact"
#: Names accepted by ``--trace-method``; ``"auto"`` is resolved by
#: :func:`landscape_cli.analyses.curvature_trace.curvature_trace` and :func:`choose_method`.
TRACE_METHODS = ("auto", "hutch++", "hutchinson", PER_SAMPLE)


def choose_method(method: str, deflated: bool) -> str:
    """The estimator ``"auto"`` stands for: Hutchinson on a remainder already deflated by a
    Lanczos basis, Hutch++ on an operator that is not; other names are returned unchanged.

    Why. Hutch++ spends two thirds of its budget on finding and removing a dominant subspace;
    it pays when that subspace holds most of ``||A||_F^2`` (Meyer et al. 2021: Hutchinson's
    variance is ``2 (||A||_F^2 - sum_i A_ii^2)`` per probe). After the deflation by the extremes'
    Lanczos basis, which already removed the outlying eigenvectors, the remainder of a Hessian is
    its bulk, where a second sketch finds little: on ``cnn3-cifar`` (94 538 parameters, at
    initialisation) the 32-vector Lanczos basis leaves ``||PHP||_F^2 ~ 0.61 ||H||_F^2`` (12
    probes) and Hutch++'s 16-vector sketch keeps ~0.7 of that (from the standard error of one
    run), so at 50 products Hutch++ on the remainder has ~1.4x the standard error of Hutchinson
    on it. This is the Krylov-aware split of
    Chen & Hallman (SIAM J. Matrix Anal. Appl. 2023): Krylov deflation, then Hutchinson.
    On the bundled (trained, 1.5k-parameter) samples Hutch++ on the remainder is up to 2x more
    accurate; both are more accurate there than 100 plain Hutchinson probes
    (``benchmarks/shared_budget.py --scan``).
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {', '.join(TRACE_METHODS)}, got {method!r}")
    if method in ("auto", PER_SAMPLE):  # the stochastic part of auto (per-sample: see ggn_trace)
        return "hutchinson" if deflated else "hutch++"
    return method


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate with its standard error.

    Attributes:
        estimate: the estimate of ``tr(A)``.
        stderr: standard error of ``estimate`` (0.0 when computed exactly).
        method: ``"hutchinson"``, ``"hutch++"`` or ``"exact"``.
        matvecs: matrix-vector products spent.
        samples: per-probe quadratic forms of the stochastic part (Hutchinson: ``z_i^T A z_i``;
            Hutch++: ``g_i^T (I-QQ^T) A (I-QQ^T) g_i``); empty when exact.
    """

    estimate: float
    stderr: float
    method: str
    matvecs: int
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deflation_rank: int = 0
    deflation_trace: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """``{"estimate", "stderr", "method", "matvecs"}`` as plain JSON-able Python values, plus
        ``deflation_rank`` and ``deflation_trace`` for a :func:`deflated_trace`."""
        out: dict[str, Any] = {
            "estimate": float(self.estimate),
            "stderr": float(self.stderr),
            "method": self.method,
            "matvecs": int(self.matvecs),
        }
        if self.deflation_rank:
            out["deflation_rank"] = int(self.deflation_rank)
            out["deflation_trace"] = float(self.deflation_trace)
        return out


def _operator_size(A: OperatorLike) -> int:
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"the operator must have a square shape (n, n) with n >= 1, got {shape}")
    return int(shape[0])


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _draw(gen: torch.Generator, n: int, count: int, distribution: str) -> torch.Tensor:
    """``count`` probe vectors as the columns of an ``(n, count)`` float64 CPU tensor."""
    cols = []
    for _ in range(count):
        if distribution == "rademacher":
            v = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0
        else:
            v = torch.randn(n, generator=gen, dtype=torch.float64)
        cols.append(v)
    return torch.stack(cols, dim=1)


def _apply(A: OperatorLike, V: torch.Tensor) -> torch.Tensor:
    """``A @ V`` for a block ``V`` of shape ``(n, b)``, checked for shape and finiteness."""
    return checked_product(A, V, f"for a block of {V.shape[1]} probe vectors")


def _blocks(total: int, block_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, block_size):
        yield start, min(start + block_size, total)


class _Counter:
    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.done = 0
        self.total = total
        self.progress = progress

    def add(self, k: int) -> None:
        self.done += k
        if self.progress is not None:
            self.progress(self.done, self.total)


def _exact_trace(
    A: OperatorLike, n: int, block_size: int, progress: ProgressFn | None
) -> TraceEstimate:
    """``tr(A) = sum_i e_i^T A e_i`` with ``n`` matvecs applied in blocks of unit vectors."""
    dtype, device = A.dtype, A.device
    counter = _Counter(n, progress)
    total = 0.0
    for lo, hi in _blocks(n, block_size):
        E = torch.zeros((n, hi - lo), dtype=dtype, device=device)
        idx = torch.arange(lo, hi, device=device)
        E[idx, idx - lo] = 1.0
        AE = _apply(A, E)
        total += float(AE[idx, idx - lo].sum(dtype=torch.float64))
        counter.add(hi - lo)
    return TraceEstimate(estimate=total, stderr=0.0, method="exact", matvecs=n)


def _quadratic_forms(
    A: OperatorLike,
    gen: torch.Generator,
    n: int,
    count: int,
    block_size: int,
    distribution: str,
    counter: _Counter,
    Q: torch.Tensor | None = None,
) -> np.ndarray:
    """``z_i^T P A P z_i`` for ``count`` fresh probes, ``P = I - QQ^T`` (``P = I`` if no ``Q``)."""
    dtype, device = A.dtype, A.device
    out = []
    for lo, hi in _blocks(count, block_size):
        Z = _draw(gen, n, hi - lo, distribution).to(device=device, dtype=dtype)
        if Q is not None:
            Z = Z - Q @ (Q.mT @ Z)
        AZ = _apply(A, Z)
        out.append((Z * AZ).sum(dim=0, dtype=torch.float64).cpu().numpy())
        counter.add(hi - lo)
    return np.concatenate(out) if out else np.zeros(0)


def _mean_and_stderr(samples: np.ndarray) -> tuple[float, float]:
    m = samples.shape[0]
    mean = float(np.mean(samples))
    stderr = float(np.std(samples, ddof=1) / math.sqrt(m))
    return mean, stderr


def hutchinson_trace(
    A: OperatorLike,
    num_matvecs: int,
    *,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int = 16,
    progress: ProgressFn | None = None,
) -> TraceEstimate:
    """Hutchinson's estimator ``tr(A) ~ (1/m) sum_i z_i^T A z_i`` (Hutchinson 1989).

    Args:
        A: square operator (``.shape``, ``.dtype``, ``.device``, ``A @ V`` for ``V`` of shape
            ``(n, b)``).
        num_matvecs: number of probes ``m >= 2`` (two are needed for a standard error). If
            ``m >= n`` the trace is computed exactly with ``n`` matvecs.
        seed: seed of the probe generator; equal seeds give identical numbers.
        distribution: ``"rademacher"`` (minimum variance among i.i.d. probes) or ``"gaussian"``.
        block_size: probes per ``A @ V`` call.
        progress: ``progress(done_matvecs, total_matvecs)`` after each block.

    Returns:
        :class:`TraceEstimate` with ``stderr = std(samples, ddof=1) / sqrt(m)``.

    Example:
        >>> import torch
        >>> A = torch.eye(50, dtype=torch.float64) * 2.0
        >>> hutchinson_trace(A, 10).estimate  # Rademacher: z^T (2I) z = 2n exactly
        100.0
    """
    n = _operator_size(A)
    m = _check_int("num_matvecs", num_matvecs, 1)
    block_size = _check_int("block_size", block_size, 1)
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    if m >= n:
        return _exact_trace(A, n, block_size, progress)
    if m < 2:
        raise ValueError(
            f"num_matvecs={m} is too small: Hutchinson needs at least 2 probes for a standard "
            f"error (or num_matvecs >= n={n} for the exact trace)"
        )
    gen = torch.Generator().manual_seed(int(seed))
    counter = _Counter(m, progress)
    samples = _quadratic_forms(A, gen, n, m, block_size, distribution, counter)
    mean, stderr = _mean_and_stderr(samples)
    return TraceEstimate(
        estimate=mean, stderr=stderr, method="hutchinson", matvecs=m, samples=samples
    )


def hutchpp_trace(
    A: OperatorLike,
    num_matvecs: int,
    *,
    seed: int = 0,
    block_size: int = 16,
    progress: ProgressFn | None = None,
) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): low-rank deflation plus Hutchinson.

    With ``m = num_matvecs`` and ``k = m // 3``:

    1. ``S``: ``n x k`` Rademacher sketch; ``Q = orth(A S)`` (reduced QR; ``k`` matvecs);
    2. ``t_1 = tr(Q^T A Q)`` exactly (``k`` matvecs);
    3. ``t_2 = (1/r) sum_i g_i^T (I-QQ^T) A (I-QQ^T) g_i`` with ``r = m - 2k`` Rademacher probes;

    ``tr(A) ~ t_1 + t_2``, unbiased; ``stderr = std(residual samples, ddof=1) / sqrt(r)`` (the
    deflated part is the only random term given ``Q``). If ``A`` has rank ``<= k`` the sketch
    captures its range and the estimate is exact up to rounding (``stderr ~ 0``).

    Args:
        A: square operator (``.shape``, ``.dtype``, ``.device``, ``A @ V`` on ``(n, b)`` blocks).
        num_matvecs: total budget ``m >= 4`` (so that ``r >= 2`` residual probes give a standard
            error); if ``m >= n`` the trace is computed exactly with ``n`` matvecs.
        seed: seed of the sketch and probes; equal seeds give identical numbers.
        block_size: columns per ``A @ V`` call.
        progress: ``progress(done_matvecs, total_matvecs)`` after each block.

    Returns:
        :class:`TraceEstimate` with ``method="hutch++"`` (or ``"exact"``).
    """
    n = _operator_size(A)
    m = _check_int("num_matvecs", num_matvecs, 1)
    block_size = _check_int("block_size", block_size, 1)
    if m >= n:
        return _exact_trace(A, n, block_size, progress)
    if m < 4:
        raise ValueError(
            f"num_matvecs={m} is too small for Hutch++: it needs at least 4 (k = m // 3 = {m // 3} "
            f"sketch + {m // 3} exact + {m - 2 * (m // 3)} residual probes, and 2 residual probes "
            f"for a standard error), or num_matvecs >= n={n} for the exact trace"
        )
    k = m // 3
    r = m - 2 * k
    dtype, device = A.dtype, A.device
    gen = torch.Generator().manual_seed(int(seed))
    counter = _Counter(m, progress)

    # 1. Sketch: Y = A S, one block at a time; Q = orth(Y) (Householder QR: orthonormal even if Y
    #    is rank deficient).
    Y = torch.empty((n, k), dtype=dtype, device=device)
    for lo, hi in _blocks(k, block_size):
        S = _draw(gen, n, hi - lo, "rademacher").to(device=device, dtype=dtype)
        Y[:, lo:hi] = _apply(A, S)
        counter.add(hi - lo)
    Q, _ = torch.linalg.qr(Y, mode="reduced")

    # 2. Exact trace of the projection: tr(Q^T A Q) = sum_j q_j^T A q_j.
    t1 = 0.0
    for lo, hi in _blocks(k, block_size):
        Qb = Q[:, lo:hi]
        t1 += float((Qb * _apply(A, Qb)).sum(dtype=torch.float64))
        counter.add(hi - lo)

    # 3. Hutchinson on the deflated operator (I - QQ^T) A (I - QQ^T).
    samples = _quadratic_forms(A, gen, n, r, block_size, "rademacher", counter, Q=Q)
    t2, stderr = _mean_and_stderr(samples)
    return TraceEstimate(
        estimate=t1 + t2, stderr=stderr, method="hutch++", matvecs=m, samples=samples
    )


def deflated_trace(
    A: OperatorLike,
    Q: torch.Tensor,
    basis_trace: float,
    num_matvecs: int,
    *,
    method: str = "hutch++",
    seed: int = 0,
    block_size: int = 16,
    progress: ProgressFn | None = None,
) -> TraceEstimate:
    """``tr(A) = tr(Q^T A Q) + tr(P A P)``, ``P = I - QQ^T``, with ``tr(Q^T A Q)`` known.

    The natural ``Q`` is the orthonormal Lanczos basis of a run already made for the extreme
    eigenvalues: there ``Q^T A Q = T_m`` and ``tr(Q^T A Q) = Σ_i alpha_i`` cost nothing, and the
    Krylov space holds the converged outlying eigenvectors, which dominate a Hessian's trace and
    the variance of a stochastic estimate. The remainder ``tr(P A P)`` is estimated by Hutch++
    (or Hutchinson) on the deflated operator with the whole budget of ``num_matvecs`` products;
    the estimate is unbiased given ``Q`` (``Q`` comes from an independent start vector), with the
    standard error of the remainder. This is Hutch++ with a free head start: the Krylov-aware
    trace estimation of Chen & Hallman (SIAM J. Matrix Anal. Appl. 2023) and the deflation idea
    of Meyer et al. (2021); in the benchmarks it halves the median error of plain Hutch++ at
    the same number of products on the bundled samples.

    Args:
        A: square operator as for :func:`hutchpp_trace`.
        Q: ``(n, r)`` with orthonormal columns (to working precision).
        basis_trace: ``tr(Q^T A Q)``.
        num_matvecs, seed, block_size, progress: as for :func:`hutchpp_trace`.
        method: ``"hutch++"`` or ``"hutchinson"`` for the remainder.

    Returns:
        :class:`TraceEstimate` with ``method = "deflated " + method``, ``matvecs`` the products
        spent here (the basis is not counted), ``deflation_rank = r`` and ``deflation_trace``;
        when ``num_matvecs >= n``, the exact trace of ``A`` (``method = "exact"``).
    """
    n = _operator_size(A)
    if Q.ndim != 2 or Q.shape[0] != n:
        raise ValueError(f"Q must have shape ({n}, r), got {tuple(Q.shape)}")
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}")
    if not math.isfinite(basis_trace):
        raise ValueError(f"basis_trace must be finite, got {basis_trace!r}")
    estimator = hutchpp_trace if method == "hutch++" else hutchinson_trace
    if num_matvecs >= n:  # the exact trace (n products) needs no deflation
        return estimator(A, num_matvecs, seed=seed, block_size=block_size, progress=progress)
    rest = estimator(
        DeflatedOperator(A, Q), num_matvecs, seed=seed, block_size=block_size, progress=progress
    )
    return TraceEstimate(
        estimate=float(basis_trace) + rest.estimate,
        stderr=rest.stderr,
        method=f"deflated {rest.method}",
        matvecs=rest.matvecs,
        samples=rest.samples,
        deflation_rank=int(Q.shape[1]),
        deflation_trace=float(basis_trace),
    )


def estimate_trace(
    A: OperatorLike,
    num_matvecs: int,
    *,
    method: str = "auto",
    basis: torch.Tensor | None = None,
    basis_trace: float | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TraceEstimate:
    """The trace estimate every command uses after a Lanczos run on ``A``: deflated by that
    run's orthonormal ``basis`` when one is given (:func:`deflated_trace`, with ``basis_trace =
    Σ alpha_i``), plain otherwise; ``method`` as in :func:`choose_method` (``"auto"``:
    Hutchinson on a deflated remainder, Hutch++ without deflation). One function, so that
    ``spectrum``, its per-layer and spread rows and ``track`` spend a budget the same way."""
    if basis is not None:
        if basis_trace is None:
            raise ValueError("basis_trace (Σ alpha_i of the Lanczos run) must come with basis")
        return deflated_trace(
            A,
            basis,
            basis_trace,
            num_matvecs,
            method=choose_method(method, deflated=True),
            seed=seed,
            progress=progress,
        )
    chosen = choose_method(method, deflated=False)
    estimator = hutchpp_trace if chosen == "hutch++" else hutchinson_trace
    return estimator(A, num_matvecs, seed=seed, progress=progress)
