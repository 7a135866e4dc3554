"""The trace of a curvature operator: exact where per-sample gradient norms give it, else a stochastic estimate."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..estimators.trace import EXACT_METHOD, PER_SAMPLE, TraceEstimate, estimate_trace
from ..linear_operator import BlockOperator
from ..operators.curvature_names import KRONECKER_CURVATURES
from ..operators.exact_trace import MAX_OUTPUTS, ExactTrace, Unsupported, exact_trace


def planned_exact_trace(
    objective: Any, settings: Any, operator: Any = None
) -> tuple[ExactTrace | None, str | None]:
    """The exact half of :func:`curvature_trace`, for callers to run *before* their Lanczos
    iteration: that iteration then keeps its basis (``m x n`` floats, 256 MB for ``m = 32`` and
    a million float64 parameters) only when the stochastic estimate will deflate it, and a
    ``--trace-method per-sample`` that does not apply fails before any HVP is spent.

    Returns ``(exact, None)`` when :func:`exact_trace` applies (``trace_method`` ``auto`` within
    its budget, or ``per-sample``), ``(None, why)`` when ``auto`` falls back to the stochastic
    estimate, ``(None, None)`` for ``hutch++``/``hutchinson``. Raises :class:`InputError` for
    ``per-sample`` when it does not apply. For ``curvature=kfac`` (and ``ekfac``) the exact
    trace is the factors' (``operator.exact_trace()``, no product; for a ``params`` block, the
    sum of their diagonal over its coordinates), for ``auto`` and ``per-sample`` alike.
    """
    method = settings.trace_method
    if method not in ("auto", PER_SAMPLE):
        return None, None
    kronecker = settings.curvature in KRONECKER_CURVATURES
    if kronecker and operator is not None:
        if not settings.params:
            return operator.exact_trace(), None
        if isinstance(operator, BlockOperator):  # the block's diagonal, from the factors
            return operator.operator.exact_trace(operator.indices), None
    try:
        if settings.params:
            raise Unsupported(
                "it is computed for the full matrix, not a block of selected parameters"
            )
        cap = MAX_OUTPUTS if method == PER_SAMPLE else int(settings.trace_matvecs)
        return exact_trace(objective, settings.curvature, max_outputs=cap), None
    except Unsupported as exc:
        if method == PER_SAMPLE:
            raise InputError(
                f"`trace_method=per-sample` does not apply: {exc}",
                hint="use `trace_method=auto` (a stochastic estimate where it does not apply)",
            ) from None
        return None, str(exc)


def curvature_trace(
    objective: Any,
    A: Any,
    settings: Any,
    lanczos_run: Any = None,
    *,
    basis: torch.Tensor | None = None,
    seed: int = 0,
    progress: Any = None,
    planned: tuple[ExactTrace | None, str | None] | None = None,
) -> tuple[TraceEstimate, ExactTrace | None, str | None]:
    """The trace of ``A`` the way ``spectrum``, ``track`` and ``--spread`` compute it, from
    ``settings`` (a :class:`~landscape_cli.analyses.spectrum.SpectrumSettings`: ``curvature`` and
    ``params`` say what ``A`` is on ``objective``, ``trace_method`` and ``trace_matvecs`` how).

    ``trace_method="per-sample"``: :func:`exact_trace`, or an :class:`InputError` saying why it
    does not apply. ``"auto"``: the exact trace when it applies and needs no more backward passes
    per batch than ``trace_matvecs`` (each costs at most about one HVP), else the stochastic
    estimate of :func:`~landscape_cli.estimators.trace.estimate_trace`, deflated by the Lanczos basis
    (``basis``, default ``lanczos_run.basis``, with ``tr(T_m) = Σ lanczos_run.alphas``) when
    there is one; ``"hutch++"``/``"hutchinson"``: that estimate. ``planned`` is the result of
    :func:`planned_exact_trace` when the caller ran it first (it is run here otherwise). Returns
    the estimate, the exact result (its per-module split) when used, and why ``auto`` fell back
    to the stochastic estimate (``None`` when it did not).
    """
    exact, fallback = planned_exact_trace(objective, settings, A) if planned is None else planned
    if exact is not None:
        return TraceEstimate(exact.trace, 0.0, exact.method or EXACT_METHOD, 0), exact, None
    if basis is None and lanczos_run is not None:
        basis = lanczos_run.basis
    estimate = estimate_trace(
        A,
        settings.trace_matvecs,
        method=settings.trace_method,  # not per-sample: that has returned or raised above
        basis=basis,
        basis_trace=None if basis is None else float(lanczos_run.alphas.sum()),
        seed=seed,
        progress=progress,
    )
    return estimate, None, fallback
