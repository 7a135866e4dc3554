"""The spectrum analysis: extremes by Lanczos, trace by Hutch++, density by SLQ, on one operator.

Each estimator gets its own random stream (:func:`~landscape_cli.seeding.derive_seed`), so
switching one off leaves the others' numbers unchanged, and all of them count their HVPs on the
same :class:`~landscape_cli.objective.HessianOperator`.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .config import SpectrumSettings
from .curvature import CURVATURE_NAMES, analysis_operator
from .density import slq_density
from .errors import InputError, numerical_errors
from .exact import check_exact_size, exact_spectrum
from .ggn_trace import curvature_trace, planned_exact_trace
from .lanczos import lanczos
from .objective import Objective
from .progress import StageProgress, stage
from .results import RunInfo, SpectrumResult
from .seeding import derive_seed
from .stability import NO_LEARNING_RATE, stability_report


def analyze_spectrum(
    objective: Objective,
    settings: SpectrumSettings | None = None,
    *,
    seed: int = 0,
    lr: float | None = None,
    progress: StageProgress | None = None,
) -> SpectrumResult:
    """Top-k and bottom-k eigenvalues, trace and spectral density of the curvature at ``w``.

    The curvature is ``settings.curvature`` (the Hessian, the generalised Gauss-Newton matrix or
    the empirical Fisher, :mod:`landscape_cli.curvature`), restricted to the diagonal block of
    ``settings.params`` when given (:mod:`landscape_cli.blocks`).

    * Extremes: one Lanczos run with full reorthogonalisation, stopped when the wanted Ritz values'
      residuals fall below ``settings.tol`` relative to the spectral-norm estimate.
    * Trace: Hutch++ (Meyer et al. 2021) or Hutchinson (1989), ``settings.trace_matvecs`` HVPs,
      by default on the remainder after deflating the extremes' Lanczos basis ``Q_m``, whose
      part ``tr(T_m) = Σ alpha_i`` is known for free (:func:`~landscape_cli.trace.deflated_trace`);
      ``trace_method="auto"`` is Hutchinson on that remainder, Hutch++ without deflation
      (:func:`~landscape_cli.trace.choose_method`).
    * Density: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019),
      ``slq_runs × slq_steps`` HVPs, Gaussian broadening ``sigma``; with
      ``settings.share_lanczos`` the extremes' Lanczos run (Gaussian start, so an unbiased SLQ
      node set of its own length) is one more run, for no further HVP.
    * Exact (``settings.exact``): the dense Hessian from ``n`` HVPs, for small models.
    * Edge of stability (:mod:`landscape_cli.stability`) when a learning rate is known (``lr`` or
      the checkpoint's optimizer state); only for the full Hessian.
    * Per layer (``settings.per_layer``): λ_max and trace of each module's diagonal block.
    * Spread (``settings.spread = K``): λ_max and trace on K disjoint subsets of the data
      (:mod:`landscape_cli.spread`), with warnings when the sample is too small.
    * Determinism check (``settings.determinism_check``): 1 loss evaluation and 2 products
      first (:mod:`landscape_cli.determinism`), counted in ``hvp_count``.
    """
    settings = settings or SpectrumSettings()
    start = time.perf_counter()
    H = analysis_operator(objective, settings.curvature, settings.params)
    full_hessian = settings.curvature == "hessian" and not settings.params
    notes: dict[str, str] = {}
    warnings: list[str] = []
    n = H.shape[0]
    top_k = min(settings.top_k, n)
    bottom_k = min(settings.bottom_k, n)
    if settings.exact:
        check_exact_size(n)  # refuse before spending HVPs, not after
    if settings.density and settings.slq_runs == 0 and not settings.share_lanczos:
        raise InputError(
            "--slq-runs 0 with --no-share-lanczos leaves the density without a single run",
            hint="use --slq-runs 1 or more, --share-lanczos, or --no-density",
        )
    if top_k + bottom_k > min(settings.max_iter, n) and settings.max_iter < n:
        raise InputError(
            f"--top-k {top_k} plus --bottom-k {bottom_k} exceed --max-iter {settings.max_iter}",
            hint=f"raise --max-iter to at least {top_k + bottom_k}",
        )
    determinism_matvecs = None
    if settings.determinism_check:
        from .determinism import check_determinism

        determinism_matvecs = check_determinism(objective, H, seed=derive_seed(seed, "determinism"))
    # the exact trace first: the Lanczos run keeps its basis only for a stochastic estimate, and
    # --trace-method per-sample fails before the Lanczos HVPs when it does not apply
    planned = planned_exact_trace(objective, settings) if settings.trace else (None, None)
    with numerical_errors("the Lanczos iteration"):
        lz = lanczos(
            H,
            seed=derive_seed(seed, "lanczos"),
            max_iter=settings.max_iter,
            tol=settings.tol,
            top_k=top_k,
            bottom_k=min(bottom_k, n - top_k),  # tiny n: the wanted ends overlap
            return_vectors=settings.save_eigenvectors,
            return_basis=settings.trace and settings.deflate_trace and planned[0] is None,
            progress=stage(progress, "lanczos"),
        )
        basis, lz = lz.basis, replace(lz, basis=None)  # the basis is not kept in the result
        if not lz.converged:
            notes["lanczos"] = (
                f"stopped after {len(lz.alphas)} iterations (--max-iter) before the residuals "
                f"reached tol={settings.tol:g}; see lanczos.*_residuals"
            )
        trace_estimate = None
        exact_traces = None
        if settings.trace:
            trace_estimate, exact_traces, fallback = curvature_trace(
                objective,
                H,
                settings,
                lz,
                basis=basis,
                seed=derive_seed(seed, "trace"),
                progress=stage(progress, "trace"),
                planned=planned,
            )
            if fallback is not None:
                notes["trace"] = (
                    f"stochastic: the exact per-sample trace does not apply ({fallback})"
                )
            del basis
        else:
            notes["trace"] = "not requested (--no-trace)"
        slq = density = None
        if settings.density:
            # The extremes' run started from an isotropic (Gaussian) vector: its quadrature is
            # one more unbiased SLQ node set, already paid for (issue 6: share HVPs).
            slq = slq_density(
                H,
                runs=settings.slq_runs,
                steps=settings.slq_steps,
                seed=derive_seed(seed, "density"),
                progress=stage(progress, "density"),
                lanczos_runs=[lz] if settings.share_lanczos else (),
            )
            density = slq.density(sigma=settings.sigma, grid=settings.grid)
        else:
            notes["density"] = "not requested (--no-density)"
        exact = exact_spectrum(H, progress=stage(progress, "exact")) if settings.exact else None
    if bottom_k == 0:
        notes["lambda_min"] = "not requested (--bottom-k 0)"
    per_layer = None
    extra_hvps = 0
    if settings.per_layer:
        from .blocks import per_layer_spectrum

        full = getattr(H, "operator", H)  # a --params block's full operator
        per_layer = per_layer_spectrum(
            objective,
            full.fresh,
            names=getattr(H, "names", None),
            tol=settings.tol,
            max_iter=settings.max_iter,
            trace=settings.trace,
            trace_matvecs=settings.trace_matvecs,
            trace_method=settings.trace_method,
            deflate_trace=settings.deflate_trace,
            exact_traces=None if exact_traces is None else exact_traces.per_module,
            seed=seed,
            progress=stage(progress, "per_layer"),
        )
        extra_hvps += sum(row.matvecs for row in per_layer)
    spread = None
    if settings.spread is not None:
        from .spread import analyze_spread

        # the subsets' operators keep their own graphs / per-sample gradients: drop the full
        # data's first (nothing after this point multiplies by H)
        getattr(H, "operator", H).release()
        spread = analyze_spread(
            objective,
            settings,
            k=settings.spread,
            full_lambda_max=float(lz.top(1)[0]),
            full_trace=None if trace_estimate is None else trace_estimate.estimate,
            seed=seed,
            progress=stage(progress, "spread"),
        )
        extra_hvps += spread.matvecs
        warnings.extend(spread.warnings)
    stability = None
    if full_hessian:
        stability = stability_report(objective, float(lz.top(1)[0]), lr=lr, seed=seed)
        if stability is None:
            notes["stability"] = NO_LEARNING_RATE
    else:
        notes["stability"] = (
            "the edge-of-stability numbers need λ_max of the full Hessian; not computed for "
            f"the {CURVATURE_NAMES[settings.curvature]}" + (" block" if settings.params else "")
        )
    hvps = H.matvecs + extra_hvps + (stability.matvecs if stability is not None else 0)
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
        curvature=settings.curvature,
        params=tuple(settings.params),
        block_parameters=getattr(H, "names", None),
        block_size=n if settings.params else None,
        per_layer=per_layer,
        spread=spread,
        warnings=warnings,
        determinism_matvecs=determinism_matvecs,
    )
