"""Stochastic trace estimation from matrix-vector products: Hutchinson, Hutch++, and the choice
between them.

Kept as one module: the estimators share one probe stream, the quadratic forms and their two
variance estimates, and the choice between them compares those from the same first products.

The estimators accept any square operator ``A`` with ``A.shape == (n, n)``, ``A.dtype``,
``A.device`` and ``A @ V`` for a block ``V`` of shape ``(n, b)`` (a dense tensor or a Hessian
operator, which may batch the ``b`` products). Each column of a block counts as one matvec.

* Hutchinson (1989): for probes ``z`` with ``E[z z^T] = I`` (Rademacher: independent +-1 entries),
  ``E[z^T A z] = tr(A)``. The average of ``m`` quadratic forms is unbiased; its standard error is
  estimated from the spread of the forms (below). For Rademacher probes
  ``Var[z^T A z] = 2 (||A||_F^2 - sum_i A_ii^2)``, so ``m = O(1/eps^2)`` probes are needed for
  relative error ``eps``.
* Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace Estimation",
  SOSA 2021): spend ``k = m // 3`` matvecs on a sketch ``A S``, take ``Q = orth(A S)`` (which
  captures the dominant eigenspace), compute ``tr(Q^T A Q)`` exactly with ``k`` more matvecs and
  estimate the remainder ``tr((I - QQ^T) A (I - QQ^T))`` by Hutchinson with the ``m - 2k`` probes
  left. Both parts are unbiased given ``Q``; the variance comes only from the deflated remainder,
  whose Frobenius norm is small when the spectrum decays (``m = O(1/eps)`` suffices for PSD ``A``).
  This suits Hessians, whose trace is dominated by a few outlying eigenvalues.
* :func:`auto_trace`: Hutchinson or Hutch++, whichever the first ``m // 3`` products (the
  sketch of one, the first probes of the other) predict to have the smaller standard error.

Standard errors: ``sqrt(v / r)`` for ``r`` probes of an operator ``B`` (``A`` or Hutch++'s
remainder), times :func:`student_t_multiple` ``(r - 1)``, where ``v`` is the larger of two unbiased
estimates of the per-probe variance ``2 (||B||_F^2 - sum_i B_ii^2)``: the sample variance of the
forms, and one from ``||B z_i||^2`` and the diagonal estimates ``z_i * B z_i`` of the same
products (:meth:`_Forms.moment_variance`). +-3 of them is a 99.73 % interval for normal
estimates with few probes, and stays above 99 % for the skewed forms of an operator with a few
dominant eigenvalues, where the sample variance alone is small exactly when the estimate is too.

When ``num_matvecs >= n`` the functions return the exact trace ``sum_i e_i^T A e_i`` with ``n``
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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..linear_operator import DeflatedOperator, OperatorLike
from .lanczos_process import checked_product

__all__ = [
    "EXACT_METHOD",
    "PER_SAMPLE",
    "TRACE_METHODS",
    "DeflatedOperator",
    "TraceEstimate",
    "auto_trace",
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


def choose_method(method: str) -> str:
    """The estimator a ``--trace-method`` runs: ``"auto"`` (and the stochastic part of
    ``"per-sample"``, see :func:`~landscape_cli.analyses.curvature_trace.curvature_trace`) is
    :func:`auto_trace`, which picks Hutchinson or Hutch++ from its first products; other names
    are returned unchanged.

    Why not a fixed choice. Hutch++ spends two thirds of its products on finding and removing a
    dominant subspace; it pays when that subspace holds most of ``||A||_F^2`` (Hutchinson's
    per-probe variance is ``2 (||A||_F^2 - sum_i A_ii^2)``; Meyer et al. 2021). Whether it does
    depends on the operator and on the budget: after deflation by the extremes' Lanczos basis
    (Chen & Hallman, SIAM J. Matrix Anal. Appl. 2023) the remainder of a Hessian whose
    Frobenius mass lies in a broad bulk has no dominant subspace and Hutchinson wins; when a
    few dozen eigenvalues beyond the Lanczos basis still hold most of it, Hutch++'s sketch of
    ``m // 3`` vectors removes them and Hutch++ wins, more clearly the larger the budget
    (docs/algorithms.md, "Trace", for the measurements).
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {', '.join(TRACE_METHODS)}, got {method!r}")
    return "auto" if method == PER_SAMPLE else method


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
        deflation_rank, deflation_trace: the columns of a :func:`deflated_trace`'s basis and the
            trace of the operator on them (0 when not deflated).
        predicted_stderrs: ``(Hutchinson, Hutch++)`` standard errors :func:`auto_trace` predicted
            from its sketch when it chose ``method``; ``None`` otherwise.
    """

    estimate: float
    stderr: float
    method: str
    matvecs: int
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deflation_rank: int = 0
    deflation_trace: float = 0.0
    predicted_stderrs: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"estimate", "stderr", "method", "matvecs"}`` as plain JSON-able Python values, plus
        ``deflation_rank`` and ``deflation_trace`` for a :func:`deflated_trace` and
        ``predicted_stderr`` (:meth:`choice_dict`) for an :func:`auto_trace`."""
        out: dict[str, Any] = {
            "estimate": float(self.estimate),
            "stderr": float(self.stderr),
            "method": self.method,
            "matvecs": int(self.matvecs),
        }
        if self.deflation_rank:
            out["deflation_rank"] = int(self.deflation_rank)
            out["deflation_trace"] = float(self.deflation_trace)
        return {**out, **self.choice_dict()}

    def choice_dict(self) -> dict[str, Any]:
        """``{"predicted_stderr": {"hutchinson": s_H, "hutch++": s_++}}`` when :func:`auto_trace`
        chose the method, else ``{}``."""
        if self.predicted_stderrs is None:
            return {}
        hutchinson, hutchpp = self.predicted_stderrs
        return {"predicted_stderr": {"hutchinson": float(hutchinson), "hutch++": float(hutchpp)}}


def _operator_size(A: OperatorLike) -> int:
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"the operator must have a square shape (n, n) with n >= 1, got {shape}")
    return int(shape[0])


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _draw(
    gen: torch.Generator,
    n: int,
    count: int,
    distribution: str,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``count`` probe vectors, drawn on the CPU in float64, as the columns of an ``(n, count)``
    tensor of ``dtype`` on ``device``: each column is converted as it is drawn, so a block never
    exists in float64 (16 probes of 10M parameters would be 1.3 GB)."""
    block = torch.empty((n, count), dtype=dtype, device=device)
    for j in range(count):
        if distribution == "rademacher":
            v = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0
        else:
            v = torch.randn(n, generator=gen, dtype=torch.float64)
        block[:, j] = v.to(device=device, dtype=dtype)
    return block


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


class _Forms:
    """Quadratic forms ``z_i^T B z_i`` of probes ``z_i`` and the moments of ``B z_i`` that give
    a second estimate of their variance (:meth:`mean_and_stderr`)."""

    def __init__(self, rademacher: bool) -> None:
        self.rademacher = rademacher
        self.values: list[np.ndarray] = []
        self.diagonal_sum: torch.Tensor | float = 0.0  # sum_i z_i * (B z_i)
        self.diagonal_squares = 0.0  # sum_i ||z_i * (B z_i)||^2
        self.norm_squares = 0.0  # sum_i ||B z_i||^2

    def add(self, Z: torch.Tensor, BZ: torch.Tensor) -> np.ndarray:
        products = (Z * BZ).to(torch.float64)
        forms = products.sum(dim=0).cpu().numpy()
        self.values.append(forms)
        self.diagonal_sum = self.diagonal_sum + products.sum(dim=1)
        self.diagonal_squares += float((products**2).sum())
        self.norm_squares += float((BZ.to(torch.float64) ** 2).sum())
        return forms

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.values) if self.values else np.zeros(0)

    def moment_variance(self) -> float:
        """``2 (||B||_F^2 - sum_i B_ii^2)``, the variance of ``z^T B z`` for Rademacher ``z``
        (``2 ||B||_F^2`` for Gaussian ``z``), from ``E ||B z||^2 = ||B||_F^2`` and, for
        Rademacher probes, ``E[(z_i * B z_i) . (z_j * B z_j)] = sum_k B_kk^2`` (``i != j``;
        ``z * B z`` is the diagonal estimator of Bekas, Kokiopoulou & Saad 2007). Unbiased; a
        difference below rounding counts as 0."""
        m = self.samples.shape[0]
        frobenius = self.norm_squares / m
        if not self.rademacher:
            return 2.0 * frobenius
        total = float((torch.as_tensor(self.diagonal_sum) ** 2).sum())
        diagonal = (total - self.diagonal_squares) / (m * (m - 1))
        rest = frobenius - diagonal
        return 2.0 * rest if rest > 8 * m * np.finfo(np.float64).eps * frobenius else 0.0

    def mean_and_stderr(self) -> tuple[float, float]:
        """The mean of the ``m`` forms and its standard error ``sqrt(v / m)`` times
        :func:`student_t_multiple` ``(m - 1)``, with ``v`` the larger of the sample variance
        and :meth:`moment_variance`. Both estimate the same variance; the sample variance is a
        fourth moment of the probes and, for a skewed distribution of forms (an operator with a
        few dominant eigenvalues), small exactly when the mean is far below the trace; the
        moment estimate is a second moment, and the larger of the two keeps the +-3 standard
        error interval at 99 % or more there."""
        samples = self.samples
        m = samples.shape[0]
        variance = max(float(np.var(samples, ddof=1)), self.moment_variance())
        stderr = math.sqrt(variance / m) * student_t_multiple(m - 1)
        return float(np.mean(samples)), stderr


def _quadratic_forms(
    A: OperatorLike,
    gen: torch.Generator,
    n: int,
    count: int,
    block_size: int,
    forms: _Forms,
    counter: _Counter,
    Q: torch.Tensor | None = None,
) -> _Forms:
    """``z_i^T P A P z_i`` for ``count`` fresh probes, ``P = I - QQ^T`` (``P = I`` if no ``Q``),
    added to ``forms``."""
    dtype, device = A.dtype, A.device
    distribution = "rademacher" if forms.rademacher else "gaussian"
    for lo, hi in _blocks(count, block_size):
        Z = _draw(gen, n, hi - lo, distribution, dtype, device)
        if Q is None:
            forms.add(Z, _apply(A, Z))
        else:
            AZ = _apply(A, Z - Q @ (Q.mT @ Z))
            forms.add(Z, AZ - Q @ (Q.mT @ AZ))
        counter.add(hi - lo)
    return forms


#: two-sided coverage of +-3 standard errors of a normal estimate, erf(3 / sqrt(2))
THREE_SIGMA_COVERAGE = math.erf(3.0 / math.sqrt(2.0))


@lru_cache(maxsize=64)
def student_t_multiple(dof: int) -> float:
    """``t_dof / 3``, ``t_dof`` the Student-t quantile with ``P(|T| <= t_dof) = erf(3/sqrt 2)``.

    The mean of ``m`` normal samples minus its expectation, divided by ``s / sqrt(m)`` (``s``
    the sample standard deviation), has Student's t distribution with ``m - 1`` degrees of
    freedom (Student 1908). Scaling ``s / sqrt(m)`` by this multiple makes ``+-3`` of it the
    exact 99.73 % interval of a normal estimate, and ``+-2`` of it at least 95.4 %: 1.044 for
    ``dof = 59``, 1.149 for 19, 1.37 for 9, 3.0 for 3. With ``T = sqrt(dof) tan(theta)`` the
    density of ``theta`` on ``(-pi/2, pi/2)`` is proportional to ``cos(theta)^(dof-1)``, whose
    cumulative integral (trapezoidal, 2^15 intervals) is inverted at the wanted coverage.
    """
    theta = np.linspace(0.0, math.pi / 2, 2**15 + 1)
    density = np.cos(theta) ** (dof - 1)
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    angle = float(np.interp(THREE_SIGMA_COVERAGE * cumulative[-1], cumulative, theta))
    return math.sqrt(dof) * math.tan(angle) / 3.0


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
        :class:`TraceEstimate` with the standard error of the module docstring (``r = m``).

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
    forms = _quadratic_forms(
        A, gen, n, m, block_size, _Forms(distribution == "rademacher"), counter
    )
    mean, stderr = forms.mean_and_stderr()
    return TraceEstimate(
        estimate=mean, stderr=stderr, method="hutchinson", matvecs=m, samples=forms.samples
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

    ``tr(A) ~ t_1 + t_2``, unbiased, with the standard error of the ``r`` residual forms (module
    docstring; the deflated part is the only random term given ``Q``). If ``A`` has rank ``<= k`` the sketch
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
    gen = torch.Generator().manual_seed(int(seed))
    counter = _Counter(m, progress)
    _, Y = _sketch(A, gen, n, m // 3, block_size, counter)
    return _finish_hutchpp(A, gen, n, m, Y, block_size, counter)


def _sketch(
    A: OperatorLike, gen: torch.Generator, n: int, k: int, block_size: int, counter: _Counter
) -> tuple[_Forms, torch.Tensor]:
    """``Y = A S`` for ``k`` Rademacher vectors ``S`` (the next ``k`` draws of ``gen``), and
    their quadratic forms ``s_j^T y_j``: Hutchinson's first ``k`` probes."""
    dtype, device = A.dtype, A.device
    Y = torch.empty((n, k), dtype=dtype, device=device)
    forms = _Forms(rademacher=True)
    for lo, hi in _blocks(k, block_size):
        S = _draw(gen, n, hi - lo, "rademacher", dtype, device)
        Y[:, lo:hi] = _apply(A, S)
        forms.add(S, Y[:, lo:hi])
        counter.add(hi - lo)
    return forms, Y


def _finish_hutchpp(
    A: OperatorLike,
    gen: torch.Generator,
    n: int,
    m: int,
    Y: torch.Tensor,
    block_size: int,
    counter: _Counter,
) -> TraceEstimate:
    """Steps 2 and 3 of :func:`hutchpp_trace` after the sketch ``Y = A S``."""
    k = Y.shape[1]
    Q, _ = torch.linalg.qr(Y, mode="reduced")  # Householder: orthonormal even if Y is deficient
    t1 = 0.0  # tr(Q^T A Q) = sum_j q_j^T A q_j
    for lo, hi in _blocks(k, block_size):
        Qb = Q[:, lo:hi]
        t1 += float((Qb * _apply(A, Qb)).sum(dtype=torch.float64))
        counter.add(hi - lo)
    forms = _quadratic_forms(A, gen, n, m - 2 * k, block_size, _Forms(True), counter, Q=Q)
    t2, stderr = forms.mean_and_stderr()
    return TraceEstimate(
        estimate=t1 + t2, stderr=stderr, method="hutch++", matvecs=m, samples=forms.samples
    )


def sketch_variances(Y: torch.Tensor) -> tuple[float, float]:
    """Per-probe variances of Hutchinson and of Hutch++'s remainder, predicted from a sketch.

    ``Y = A S`` for ``k`` Rademacher (or Gaussian) vectors ``S``. For a probe ``z`` with
    ``E[z z^T] = I``, ``Var[z^T B z] <= 2 ||B||_F^2`` (equality for Gaussian probes; Rademacher
    probes subtract ``2 sum_i B_ii^2``). Hutchinson's bound ``2 ||A||_F^2`` is estimated by
    ``2 mean_j ||y_j||^2`` (``E ||A s||^2 = ||A||_F^2``). Hutch++ probes ``P A P``,
    ``P = I - QQ^T`` with ``Q`` the range of the sketch (Meyer, Musco, Musco & Woodruff 2021),
    and ``||P A P||_F <= ||(I - QQ^T) A||_F``. That one-sided tail is estimated by leave-one-out:
    for ``s_j`` independent of the other columns, ``E ||(I - Q_{-j} Q_{-j}^T) y_j||^2 =
    ||(I - Q_{-j} Q_{-j}^T) A||_F^2``, and the squared distance of ``y_j`` to the span of the
    others is ``1 / (G^{-1})_{jj}`` with ``G = Y^T Y``. A rank-``(k-1)`` sketch and the
    one-sided norm make the Hutch++ figure an overestimate. No product of ``A`` is spent.

    Returns:
        ``(hutchinson, hutchpp)``; both equal the Hutchinson figure when ``k < 2`` (nothing is
        learnt about the tail) and are 0 when ``A S = 0``.
    """
    k = Y.shape[1]
    G = (Y.mT @ Y).to(torch.float64).cpu()
    G = 0.5 * (G + G.mT)
    hutchinson = 2.0 * float(torch.diagonal(G).mean()) if k else 0.0
    if k < 2 or hutchinson == 0.0:
        return hutchinson, hutchinson
    w, V = torch.linalg.eigh(G)
    floor = float(w.max()) * k * torch.finfo(Y.dtype).eps
    inverse_diagonal = (V**2 / w.clamp_min(floor)).sum(dim=1)
    return hutchinson, 2.0 * float((1.0 / inverse_diagonal).mean())


def auto_trace(
    A: OperatorLike,
    num_matvecs: int,
    *,
    seed: int = 0,
    block_size: int = 16,
    progress: ProgressFn | None = None,
) -> TraceEstimate:
    """Hutchinson or Hutch++, whichever a sketch predicts to have the smaller standard error.

    Both estimators start the same way: ``k = m // 3`` Rademacher vectors ``S`` and ``A S`` are
    Hutch++'s sketch and also Hutchinson's first ``k`` probes (the same draws of the seeded
    generator as :func:`hutchinson_trace` and :func:`hutchpp_trace`). From them
    :func:`sketch_variances` predicts the per-probe variances ``v_H ~ 2 ||A||_F^2`` of
    Hutchinson and ``v_++ ~ 2 ||(I - QQ^T) A||_F^2`` of Hutch++'s remainder; with ``m``
    products the estimates have variances ``v_H / m`` and ``v_++ / (m - 2k)``. Hutch++ is
    chosen when ``v_++ / (m - 2k) < v_H / m``, i.e. when a rank-``k`` sketch removes more than
    about two thirds of ``||A||_F^2`` (Meyer, Musco, Musco & Woodruff 2021: Hutch++ trades
    two thirds of the probes for that removal). Otherwise Hutchinson goes on with ``m - k`` more
    probes, keeping the ``k`` it has. Either way no product is spent on the choice, and the
    result is identical to :func:`hutchinson_trace` or :func:`hutchpp_trace` with the same seed.

    Returns:
        :class:`TraceEstimate` of the chosen method, ``predicted_stderrs`` the two predicted
        standard errors ``(sqrt(v_H / m), sqrt(v_++ / (m - 2k)))``.
    """
    n = _operator_size(A)
    m = _check_int("num_matvecs", num_matvecs, 1)
    block_size = _check_int("block_size", block_size, 1)
    if m >= n or m < 4:  # exact, or too few products for Hutch++
        return hutchinson_trace(A, m, seed=seed, block_size=block_size, progress=progress)
    gen = torch.Generator().manual_seed(int(seed))
    counter = _Counter(m, progress)
    k = m // 3
    forms, Y = _sketch(A, gen, n, k, block_size, counter)
    v_hutchinson, v_hutchpp = sketch_variances(Y)
    predicted = (math.sqrt(v_hutchinson / m), math.sqrt(v_hutchpp / (m - 2 * k)))
    if predicted[1] < predicted[0]:
        chosen = _finish_hutchpp(A, gen, n, m, Y, block_size, counter)
    else:
        forms = _quadratic_forms(A, gen, n, m - k, block_size, forms, counter)
        mean, stderr = forms.mean_and_stderr()
        chosen = TraceEstimate(mean, stderr, "hutchinson", m, forms.samples)
    return replace(chosen, predicted_stderrs=predicted)


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
    the variance of a stochastic estimate. The remainder ``tr(P A P)`` is estimated by Hutch++,
    Hutchinson or :func:`auto_trace` on the deflated operator with the whole budget of
    ``num_matvecs`` products;
    the estimate is unbiased given ``Q`` (``Q`` comes from an independent start vector), with the
    standard error of the remainder. This is the Krylov-aware trace estimation of Chen &
    Hallman (SIAM J. Matrix Anal. Appl. 2023) and the deflation idea of Meyer et al. (2021).

    Args:
        A: square operator as for :func:`hutchpp_trace`.
        Q: ``(n, r)`` with orthonormal columns (to working precision).
        basis_trace: ``tr(Q^T A Q)``.
        num_matvecs, seed, block_size, progress: as for :func:`hutchpp_trace`.
        method: ``"hutch++"``, ``"hutchinson"`` or ``"auto"`` (:func:`auto_trace`) for the
            remainder.

    Returns:
        :class:`TraceEstimate` with ``method = "deflated " + method``, ``matvecs`` the products
        spent here (the basis is not counted), ``deflation_rank = r`` and ``deflation_trace``;
        when ``num_matvecs >= n``, the exact trace of ``A`` (``method = "exact"``).
    """
    n = _operator_size(A)
    if Q.ndim != 2 or Q.shape[0] != n:
        raise ValueError(f"Q must have shape ({n}, r), got {tuple(Q.shape)}")
    if method not in _ESTIMATORS:
        raise ValueError(f"method must be one of {', '.join(_ESTIMATORS)}, got {method!r}")
    if not math.isfinite(basis_trace):
        raise ValueError(f"basis_trace must be finite, got {basis_trace!r}")
    estimator = _ESTIMATORS[method]
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
        predicted_stderrs=rest.predicted_stderrs,
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
    :func:`auto_trace` on the remainder or on ``A``). One function, so that
    ``spectrum``, its per-layer and spread rows and ``track`` spend a budget the same way."""
    if basis is not None:
        if basis_trace is None:
            raise ValueError("basis_trace (Σ alpha_i of the Lanczos run) must come with basis")
        return deflated_trace(
            A,
            basis,
            basis_trace,
            num_matvecs,
            method=choose_method(method),
            seed=seed,
            progress=progress,
        )
    return _ESTIMATORS[choose_method(method)](A, num_matvecs, seed=seed, progress=progress)


_ESTIMATORS: dict[str, Callable[..., TraceEstimate]] = {
    "auto": auto_trace,
    "hutch++": hutchpp_trace,
    "hutchinson": hutchinson_trace,
}
