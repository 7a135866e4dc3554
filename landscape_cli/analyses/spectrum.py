"""The spectrum analysis: extremes by Lanczos, trace by Hutch++, density by SLQ, on one operator.

Each estimator gets its own random stream (:func:`~landscape_cli.problem.seeding.derive_seed`), so
switching one off leaves the others' numbers unchanged, and all of them count their HVPs on the
same :class:`~landscape_cli.operators.hessian.HessianOperator`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import h5py
import numpy as np

from ..errors import InputError, numerical_errors
from ..estimators.density import (
    SLQResult,
    SpectralDensity,
    probe_error_bound,
    runs_for_probe_error,
    slq_density,
)
from ..estimators.exact import ExactSpectrum, check_exact_size, exact_spectrum
from ..estimators.lanczos import LanczosResult, lanczos
from ..estimators.trace import TraceEstimate
from ..hdf5 import optional_group, read_arrays, read_attrs, set_attrs, write_datasets
from ..operators.curvature import analysis_operator
from ..operators.curvature_names import KRONECKER_CURVATURES, curvature_name
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from ..progress import PlanCallback, StageProgress, stage
from .curvature_trace import curvature_trace, planned_exact_trace
from .estimator_groups import (
    density_from_hdf5,
    density_to_hdf5,
    exact_from_hdf5,
    exact_to_hdf5,
    lanczos_from_hdf5,
    lanczos_to_hdf5,
    slq_from_hdf5,
    slq_to_hdf5,
    trace_from_hdf5,
    trace_to_hdf5,
)
from .per_layer import (
    BlockSpectrum,
    per_layer_from_hdf5,
    per_layer_spectrum,
    per_layer_to_hdf5,
)
from .planning import ProductPlan
from .run_info import (
    RunInfo,
    json_number,
    json_numbers,
    merge_notes,
    notes_from_hdf5,
    notes_to_hdf5,
)
from .settings import ClassifySettings, SpectrumSettings
from .spread import SpreadResult, analyze_spread
from .stability import NO_LEARNING_RATE, StabilityReport, optimizer_state, stability_report


def analyze_spectrum(
    objective: Objective,
    settings: SpectrumSettings | None = None,
    *,
    seed: int = 0,
    lr: float | None = None,
    progress: StageProgress | None = None,
    plan: PlanCallback | None = None,
) -> SpectrumResult:
    """Top-k and bottom-k eigenvalues, trace and spectral density of the curvature at ``w``.

    The curvature is ``settings.curvature`` (the Hessian, the generalised Gauss-Newton matrix or
    the empirical Fisher, :mod:`landscape_cli.operators.curvature`), restricted to the diagonal block of
    ``settings.params`` when given (:mod:`landscape_cli.operators.blocks`).

    * Extremes: one Lanczos run with full reorthogonalisation, stopped when the wanted Ritz values'
      residuals fall below ``settings.tol`` relative to the spectral-norm estimate. With
      ``settings.lambda_max`` only the top one is wanted, and neither trace nor density is
      estimated (:meth:`SpectrumSettings.resolved`).
    * Trace: Hutch++ (Meyer et al. 2021) or Hutchinson (1989), ``settings.trace_matvecs`` HVPs,
      by default on the remainder after deflating the extremes' Lanczos basis ``Q_m``, whose
      part ``tr(T_m) = Σ alpha_i`` is known for free (:func:`~landscape_cli.estimators.trace.deflated_trace`);
      ``trace_method="auto"`` is Hutchinson or Hutch++ on that remainder (or on ``H`` without
      deflation), whichever its first products predict to be more accurate
      (:func:`~landscape_cli.estimators.trace.auto_trace`).
    * Density: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019),
      ``slq_runs × slq_steps`` HVPs, Gaussian broadening ``sigma``; with
      ``settings.share_lanczos`` the extremes' Lanczos run (Gaussian start, so an unbiased SLQ
      node set of its own length) is one more run, for no further HVP.
    * Exact (``settings.exact``): the dense Hessian from ``n`` HVPs, for small models.
    * Edge of stability (:mod:`landscape_cli.analyses.stability`) when a learning rate is known (``lr`` or
      the checkpoint's optimizer state); only for the full Hessian.
    * Per layer (``settings.per_layer``): λ_max and trace of each module's diagonal block.
    * Spread (``settings.spread = K``): λ_max and trace on K disjoint subsets of the data
      (:mod:`landscape_cli.analyses.spread`), with warnings when the sample is too small.
    * Determinism check (``settings.determinism_check``): 1 loss evaluation and 2 products
      first (:mod:`landscape_cli.problem.determinism`), counted in ``hvp_count``.

    ``plan`` is called once, after the first timed products and before the Lanczos run's, with
    the products planned on the operator and the measured time per product
    (:mod:`landscape_cli.analyses.planning`); ``progress`` also gets the stage ``"hvps"``.
    """
    settings = (settings or SpectrumSettings()).resolved()
    start = time.perf_counter()
    H = analysis_operator(objective, settings.curvature, settings.params)
    full_hessian = settings.curvature == "hessian" and not settings.params
    if full_hessian:
        optimizer_state(objective, lr)  # a malformed state is refused before any product
    notes: dict[str, str] = {}
    unrequested = "--lambda-max" if settings.lambda_max else ""  # why a quantity is missing
    warnings: list[str] = []
    n = H.shape[0]
    top_k = min(settings.top_k, n)
    bottom_k = min(settings.bottom_k, n)
    # K-FAC's eigenvalues are products of its factors': exact at any size, for no product
    kronecker = settings.curvature in KRONECKER_CURVATURES and not settings.params
    if settings.exact and not kronecker:
        check_exact_size(n)  # refuse before spending HVPs, not after
    if settings.density and settings.slq_runs == 0 and not settings.share_lanczos:
        raise InputError(
            "`slq_runs=0` with `share_lanczos=False` leaves the density without a single run",
            hint="use `slq_runs=1` or more, `share_lanczos=True`, or `density=False`",
        )
    if top_k + bottom_k > min(settings.max_iter, n) and settings.max_iter < n:
        size = (
            f"; the operator has {n} eigenvalues, so at most {n} can be found"
            if settings.top_k + settings.bottom_k > n
            else ""
        )
        raise InputError(
            f"`top_k={settings.top_k}` plus `bottom_k={settings.bottom_k}` exceed "
            f"`max_iter={settings.max_iter}`{size}",
            hint=f"raise `max_iter` to at least {min(top_k + bottom_k, n)}",
        )
    products = ProductPlan(objective, H, 0, upper_bound=True, progress=progress, plan=plan)
    progress = products.progress  # every stage also reports the products spent of those planned
    determinism_matvecs = None
    if settings.determinism_check:
        from ..problem.determinism import check_determinism

        products.start()
        determinism_matvecs = check_determinism(objective, H, seed=derive_seed(seed, "determinism"))
        products.lap()
    # the exact trace first: the Lanczos run keeps its basis only for a stochastic estimate, and
    # --trace-method per-sample fails before the Lanczos HVPs when it does not apply
    planned = planned_exact_trace(objective, settings, H) if settings.trace else (None, None)
    later = _products_after_extremes(settings, n, exact_trace=planned[0] is not None)
    products.revise(H.matvecs + min(settings.max_iter, n) + later, upper_bound=True)
    products.start()
    products.announce()
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
        products.revise(H.matvecs + later, upper_bound=False)
        if not lz.converged:
            notes["lanczos"] = (
                f"stopped after {len(lz.alphas)} iterations (--max-iter) before the residuals "
                f"reached tol={settings.tol:g}; see lanczos.*_residuals"
            )
        elif (top_k >= 2 or bottom_k >= 2) and not lz.multiplicity_checked:
            notes["lanczos"] = (
                f"--max-iter {settings.max_iter} ended the restart that counts repeated "
                "eigenvalues: λ_2 … may miss copies of a larger one (marked unresolved)"
            )
        unresolved = int((~lz.resolved[lz.top_indices(top_k)]).sum()) + int(
            (~lz.resolved[lz.bottom_indices(bottom_k)]).sum()
        )
        if unresolved:
            notes["error_bounds"] = (
                f"{unresolved} eigenvalue(s) unresolved: each is within its bound of some "
                "eigenvalue, not necessarily of its rank (a cluster or the bulk); a top value is "
                "a lower bound and a bottom value an upper bound of the eigenvalue of its rank"
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
            notes["trace"] = f"not requested ({unrequested or '--no-trace'})"
        slq = density = None
        if settings.density:
            own_runs = own_slq_runs(settings, n)
            if own_runs < settings.slq_runs:
                shared = 1 if settings.share_lanczos else 0
                notes["density"] = (
                    f"{own_runs} SLQ run(s) besides the extremes' Lanczos run, of at most "
                    f"{settings.slq_runs}: with {n:,} eigenvalues the probes' standard error of "
                    "any interval's mass is already at most "
                    f"{probe_error_bound(n, own_runs + shared):.2g} "
                    f"(slq_probe_error={settings.slq_probe_error:g})"
                )
            # The extremes' run started from an isotropic (Gaussian) vector: its quadrature is
            # one more unbiased SLQ node set, already paid for.
            slq = slq_density(
                H,
                runs=own_runs,
                steps=settings.slq_steps,
                seed=derive_seed(seed, "density"),
                progress=stage(progress, "density"),
                lanczos_runs=[lz] if settings.share_lanczos else (),
            )
            density = slq.density(sigma=settings.sigma, grid=settings.grid)
        else:
            notes["density"] = f"not requested ({unrequested or '--no-density'})"
        exact = None
        if settings.exact and kronecker:
            exact = ExactSpectrum(H.eigenvalues()[::-1].copy(), 0.0, 0)
        elif settings.exact:
            exact = exact_spectrum(H, progress=stage(progress, "exact"))
    if bottom_k == 0:
        notes["lambda_min"] = f"not requested ({unrequested or '--bottom-k 0'})"
    per_layer = None
    extra_hvps = 0
    if settings.per_layer:
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
            exact_traces=exact_traces,
            seed=seed,
            progress=stage(progress, "per_layer"),
        )
        extra_hvps += sum(row.matvecs for row in per_layer)
    spread = None
    if settings.spread is not None:
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
            f"the {curvature_name(settings.curvature).prose}"
            + (" block" if settings.params else "")
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


@dataclass(frozen=True)
class SpectrumResult:
    """Top/bottom eigenvalues (Lanczos), trace (Hutch++/Hutchinson), density (SLQ) of the Hessian.

    ``lanczos``, ``trace_estimate``, ``slq``, ``density_estimate`` and ``exact`` are the
    estimator results.
    """

    info: RunInfo
    top_eigenvalues: np.ndarray  # descending
    bottom_eigenvalues: np.ndarray  # ascending
    lanczos: LanczosResult
    top_k: int
    bottom_k: int
    tol: float
    trace_estimate: TraceEstimate | None = None
    slq: SLQResult | None = None
    density_estimate: SpectralDensity | None = None
    exact: ExactSpectrum | None = None
    stability: StabilityReport | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    curvature: str = "hessian"  # hessian, ggn or ef
    params: tuple[str, ...] = ()  # --params patterns (empty: all parameters)
    block_parameters: list[str] | None = None  # the parameters they matched
    block_size: int | None = None  # coordinates in that block
    per_layer: list[BlockSpectrum] | None = None  # largest λ_max first
    spread: SpreadResult | None = None
    warnings: Sequence[str] = ()
    determinism_matvecs: int | None = None  # products spent by the determinism check (None: off)

    @property
    def lambda_max(self) -> float:
        return float(self.top_eigenvalues[0])

    @property
    def lambda_min(self) -> float | None:
        return float(self.bottom_eigenvalues[0]) if len(self.bottom_eigenvalues) else None

    def to_dict(self) -> dict[str, Any]:
        out = self.info.to_dict()
        lz = self.lanczos
        top_idx = lz.top_indices(self.top_k)
        bottom_idx = lz.bottom_indices(self.bottom_k)
        out.update(
            {
                "lambda_max": json_number(self.lambda_max),
                "lambda_min": json_number(self.lambda_min),
                "top_eigenvalues": json_numbers(self.top_eigenvalues),
                "bottom_eigenvalues": json_numbers(self.bottom_eigenvalues),
                "lanczos": {
                    **lz.summary(),
                    "tol": self.tol,
                    "top_error_bounds": json_numbers(lz.error_bounds[top_idx]),
                    "bottom_error_bounds": json_numbers(lz.error_bounds[bottom_idx]),
                    "top_residuals": json_numbers(lz.ritz_residuals[top_idx]),
                    "bottom_residuals": json_numbers(lz.ritz_residuals[bottom_idx]),
                    "top_resolved": [bool(x) for x in lz.resolved[top_idx]],
                    "bottom_resolved": [bool(x) for x in lz.resolved[bottom_idx]],
                },
                "trace": None if self.trace_estimate is None else _trace_dict(self.trace_estimate),
                "density": None
                if self.density_estimate is None
                else {
                    "grid": json_numbers(self.density_estimate.grid),
                    "values": json_numbers(self.density_estimate.values),
                    "sigma": json_number(self.density_estimate.sigma),
                    "runs": int(self.slq.nodes.shape[0]),
                    "steps": int(self.slq.nodes.shape[1]),
                    "run_steps": [int(k) for k in self.slq.run_steps],
                    "shared_runs": int(self.slq.shared_runs),
                    "matvecs": int(self.slq.matvecs),
                },
            }
        )
        out["stability"] = None if self.stability is None else self.stability.to_dict()
        out["curvature"] = self.curvature
        out["params"] = None if not self.params else list(self.params)
        out["block"] = (
            None
            if self.block_parameters is None
            else {
                "parameters": list(self.block_parameters),
                "size": self.block_size,
            }
        )
        if self.per_layer is not None:
            out["per_layer"] = [row.to_dict() for row in self.per_layer]
        if self.spread is not None:
            out["spread"] = self.spread.to_dict()
        out["warnings"] = list(self.warnings)
        out["determinism_check"] = (
            None
            if self.determinism_matvecs is None
            else {"passed": True, "matvecs": self.determinism_matvecs, "loss_evaluations": 1}
        )
        if self.exact is not None:
            # the threshold of classify's negative fraction, so the two fractions agree
            neg_tol = ClassifySettings().neg_tol
            out["exact"] = self.exact.to_dict(self.top_k, max(self.bottom_k, 1), neg_tol=neg_tol)
        merge_notes(out, self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/spectrum``: the extremes as datasets, the run and the scalars as attributes, and a
        subgroup for each estimator's raw material (``lanczos``, ``trace``, ``slq``,
        ``density``, ``exact``), ``per_layer``, ``spread``, ``stability`` and ``notes``."""
        write_datasets(
            group,
            {
                "top_eigenvalues": np.asarray(self.top_eigenvalues, dtype=np.float64),
                "bottom_eigenvalues": np.asarray(self.bottom_eigenvalues, dtype=np.float64),
            },
        )
        self.info.to_hdf5(group)
        set_attrs(
            group,
            {
                "lambda_max": self.lambda_max,
                "lambda_min": self.lambda_min,
                "top_k": self.top_k,
                "bottom_k": self.bottom_k,
                "tol": self.tol,
                "curvature": self.curvature,
                "params": list(self.params),
                "block_parameters": self.block_parameters,
                "block_size": self.block_size,
                "warnings": list(self.warnings),
                "determinism_check_matvecs": self.determinism_matvecs,
            },
        )
        lanczos_to_hdf5(group.create_group("lanczos"), self.lanczos, tol=self.tol, vectors=True)
        if self.per_layer is not None:
            per_layer_to_hdf5(group.create_group("per_layer"), self.per_layer)
        if self.spread is not None:
            self.spread.to_hdf5(group.create_group("spread"))
        if self.trace_estimate is not None:
            trace_to_hdf5(group.create_group("trace"), self.trace_estimate)
        if self.slq is not None:
            slq_to_hdf5(group.create_group("slq"), self.slq)
        if self.density_estimate is not None:
            density_to_hdf5(group.create_group("density"), self.density_estimate)
        if self.exact is not None:
            exact_to_hdf5(group.create_group("exact"), self.exact)
        if self.stability is not None:
            self.stability.to_hdf5(group.create_group("stability"))
        notes_to_hdf5(group, self.notes)

    @classmethod
    def from_hdf5(cls, group: h5py.Group, *, vectors: bool = True) -> SpectrumResult:
        """The result of a group written by :meth:`to_hdf5` (``curvature`` is the Hessian in a
        report written before the curvature could be chosen); the stored Ritz vectors only with
        ``vectors``."""
        a = read_attrs(group)
        arrays = read_arrays(
            group, {"top_eigenvalues": ("top",), "bottom_eigenvalues": ("bottom",)}
        )
        return cls(
            info=RunInfo.from_hdf5(group),
            top_eigenvalues=arrays["top_eigenvalues"],
            bottom_eigenvalues=arrays["bottom_eigenvalues"],
            lanczos=lanczos_from_hdf5(group["lanczos"], vectors=vectors),
            top_k=a["top_k"],
            bottom_k=a["bottom_k"],
            tol=a["tol"],
            trace_estimate=optional_group(group, "trace", trace_from_hdf5),
            slq=optional_group(group, "slq", slq_from_hdf5),
            density_estimate=optional_group(group, "density", density_from_hdf5),
            exact=optional_group(group, "exact", exact_from_hdf5),
            stability=optional_group(group, "stability", StabilityReport.from_hdf5),
            notes=notes_from_hdf5(group),
            curvature=a.get("curvature", "hessian"),
            params=tuple(a.get("params") or ()),
            block_parameters=a.get("block_parameters"),
            block_size=a.get("block_size"),
            per_layer=optional_group(group, "per_layer", per_layer_from_hdf5),
            spread=optional_group(group, "spread", SpreadResult.from_hdf5),
            warnings=list(a.get("warnings") or []),
            determinism_matvecs=a.get("determinism_check_matvecs"),
        )


def _trace_dict(estimate: TraceEstimate) -> dict[str, Any]:
    return {
        "estimate": json_number(estimate.estimate),
        "stderr": json_number(estimate.stderr),
        "method": estimate.method,
        "matvecs": int(estimate.matvecs),
        **estimate.choice_dict(),
    }


def _products_after_extremes(settings: SpectrumSettings, n: int, *, exact_trace: bool) -> int:
    """The products the trace, the density and the exact spectrum spend on an ``n × n``
    operator after the extremes' Lanczos run (the per-sample exact trace spends none)."""
    trace = min(settings.trace_matvecs, n) if settings.trace and not exact_trace else 0
    density = own_slq_runs(settings, n) * min(settings.slq_steps, n) if settings.density else 0
    return trace + density + (n if settings.exact else 0)


def own_slq_runs(settings: SpectrumSettings, n: int) -> int:
    """The SLQ runs the density makes besides the shared Lanczos run on an ``n × n`` operator:
    ``slq_runs``, or fewer when fewer runs in all already bring the probes' standard error of
    every interval's mass below ``slq_probe_error``
    (:func:`~landscape_cli.estimators.density.probe_error_bound`: at most ``sqrt(1/(2 n R))``
    for ``R`` runs: at the default 0.01 the shared run alone from 5,000 parameters on, all
    three runs below 1,667)."""
    if settings.slq_runs == 0:
        return 0
    shared = 1 if settings.share_lanczos else 0
    total = runs_for_probe_error(n, settings.slq_probe_error, settings.slq_runs + shared)
    return max(total - shared, 1 - shared)
