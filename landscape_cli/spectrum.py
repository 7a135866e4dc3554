"""The spectrum analysis: extremes by Lanczos, trace by Hutch++, density by SLQ, on one operator.

Each estimator gets its own random stream (:func:`~landscape_cli.seeding.derive_seed`), so
switching one off leaves the others' numbers unchanged, and all of them count their HVPs on the
same :class:`~landscape_cli.objective.HessianOperator`.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .config import SpectrumSettings
from .density import slq_density
from .errors import InputError, numerical_errors
from .exact import check_exact_size, exact_spectrum
from .lanczos import lanczos
from .objective import Objective
from .progress import StageProgress, stage
from .results import RunInfo, SpectrumResult
from .seeding import derive_seed
from .stability import NO_LEARNING_RATE, stability_report
from .trace import deflated_trace, hutchinson_trace, hutchpp_trace


def analyze_spectrum(
    objective: Objective,
    settings: SpectrumSettings | None = None,
    *,
    seed: int = 0,
    lr: float | None = None,
    progress: StageProgress | None = None,
) -> SpectrumResult:
    """Top-k and bottom-k eigenvalues, trace and spectral density of the Hessian at ``w``.

    * Extremes: one Lanczos run with full reorthogonalisation, stopped when the wanted Ritz values'
      error bounds fall below ``settings.tol`` relative to the spectral-norm estimate.
    * Trace: Hutch++ (Meyer et al. 2021) or Hutchinson (1989), ``settings.trace_matvecs`` HVPs,
      by default on the remainder after deflating the extremes' Lanczos basis ``Q_m``, whose
      part ``tr(T_m) = Σ alpha_i`` is known for free (:func:`~landscape_cli.trace.deflated_trace`).
    * Density: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019),
      ``slq_runs × slq_steps`` HVPs, Gaussian broadening ``sigma``.
    * Exact (``settings.exact``): the dense Hessian from ``n`` HVPs, for small models.
    * Edge of stability (:mod:`landscape_cli.stability`) when a learning rate is known (``lr`` or
      the checkpoint's optimizer state).
    """
    settings = settings or SpectrumSettings()
    start = time.perf_counter()
    H = objective.operator()
    notes: dict[str, str] = {}
    n = objective.num_parameters
    top_k = min(settings.top_k, n)
    bottom_k = min(settings.bottom_k, n)
    if settings.exact:
        check_exact_size(n)  # refuse before spending HVPs, not after
    if top_k + bottom_k > min(settings.max_iter, n) and settings.max_iter < n:
        raise InputError(
            f"--top-k {top_k} plus --bottom-k {bottom_k} exceed --max-iter {settings.max_iter}",
            hint=f"raise --max-iter to at least {top_k + bottom_k}",
        )
    with numerical_errors("the Lanczos iteration"):
        lz = lanczos(
            H,
            seed=derive_seed(seed, "lanczos"),
            max_iter=settings.max_iter,
            tol=settings.tol,
            top_k=top_k,
            bottom_k=min(bottom_k, n - top_k),  # tiny n: the wanted ends overlap
            return_vectors=settings.save_eigenvectors,
            return_basis=settings.trace and settings.deflate_trace,
            progress=stage(progress, "lanczos"),
        )
        basis, lz = lz.basis, replace(lz, basis=None)  # the basis is not kept in the result
        if not lz.converged:
            notes["lanczos"] = (
                f"stopped after {len(lz.alphas)} iterations (--max-iter) before the error bounds "
                f"reached tol={settings.tol:g}; see lanczos.*_error_bounds"
            )
        trace_estimate = None
        if settings.trace and basis is not None:
            trace_estimate = deflated_trace(
                H,
                basis,
                float(lz.alphas.sum()),
                settings.trace_matvecs,
                method=settings.trace_method,
                seed=derive_seed(seed, "trace"),
                progress=stage(progress, "trace"),
            )
            del basis
        elif settings.trace:
            estimator = hutchpp_trace if settings.trace_method == "hutch++" else hutchinson_trace
            trace_estimate = estimator(
                H,
                settings.trace_matvecs,
                seed=derive_seed(seed, "trace"),
                progress=stage(progress, "trace"),
            )
        else:
            notes["trace"] = "not requested (--no-trace)"
        slq = density = None
        if settings.density:
            slq = slq_density(
                H,
                runs=settings.slq_runs,
                steps=settings.slq_steps,
                seed=derive_seed(seed, "density"),
                progress=stage(progress, "density"),
            )
            density = slq.density(sigma=settings.sigma, grid=settings.grid)
        else:
            notes["density"] = "not requested (--no-density)"
        exact = exact_spectrum(H, progress=stage(progress, "exact")) if settings.exact else None
    if bottom_k == 0:
        notes["lambda_min"] = "not requested (--bottom-k 0)"
    stability = stability_report(objective, float(lz.top(1)[0]), lr=lr, seed=seed)
    if stability is None:
        notes["stability"] = NO_LEARNING_RATE
    hvps = H.matvecs + (stability.matvecs if stability is not None else 0)
    info = RunInfo.from_objective(objective, "spectrum", seed, hvps, time.perf_counter() - start)
    return SpectrumResult(
        info=info,
        top_eigenvalues=lz.top(top_k),
        bottom_eigenvalues=lz.bottom(bottom_k),
        lanczos=lz,
        top_k=top_k,
        bottom_k=bottom_k,
        tol=settings.tol,
        trace_estimate=trace_estimate,
        slq=slq,
        density_estimate=density,
        exact=exact,
        stability=stability,
        notes=notes,
    )
