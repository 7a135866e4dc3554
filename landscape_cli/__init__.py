"""landscape: loss-landscape analysis of trained PyTorch checkpoints from Hessian-vector products.

The public API, importable from ``landscape_cli`` itself (e.g. in a notebook), in groups:

* **building the problem**: :func:`make_objective` (a model, tensors or a ``DataLoader``, and a
  loss, in one call), :func:`build_objective` and its parts (checkpoint, model, data, loss), the
  :class:`Objective`, the configuration (:class:`RunConfig`, every ``*Settings`` class,
  :func:`resolve_run_config`);
* **operators**: the Hessian, GGN, empirical Fisher and K-FAC as operators (``A @ v``), parameter blocks,
  and the protocol every estimator accepts;
* **estimators**: Lanczos, Hutchinson and Hutch++ traces, SLQ densities, exact spectra, with
  their result classes;
* **analyses**: every analysis entry point (``analyze_*``, ``classify_point``,
  ``measure_sharpness``, ``check_*`` ...) and its result class;
* **reports**: HDF5 reports written and read back, and their figures and HTML summary;
* **errors**: :class:`LandscapeError` and its subclasses, which carry the CLI's exit codes.

Names are imported lazily, so ``import landscape_cli`` (and ``landscape --help``) does not import
torch. ``lanczos`` is the function (its module is ``landscape_cli.estimators.lanczos``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # building the problem
    "make_objective": "problem.loading",
    "build_objective": "problem.loading",
    "load_checkpoint": "problem.loading",
    "build_model": "problem.model_sources",
    "load_data": "problem.loading",
    "load_loss": "problem.losses",
    "SplitLoss": "problem.losses",
    "Objective": "problem.objective",
    "check_determinism": "problem.determinism",
    "ProblemSettings": "problem.settings",
    "RunConfig": "analyses.settings",
    "SpectrumSettings": "analyses.settings",
    "ClassifySettings": "analyses.settings",
    "SharpnessSettings": "analyses.settings",
    "SurfaceSettings": "analyses.settings",
    "JacobianSettings": "analyses.settings",
    "KFACSettings": "analyses.settings",
    "resolve_run_config": "io.config",
    "resolve_config": "io.config",
    "read_config_file": "io.config",
    # operators
    "OperatorLike": "linear_operator",
    "SymmetricOperator": "linear_operator",
    "HessianOperator": "operators.hessian",
    "GGNOperator": "operators.ggn",
    "EmpiricalFisherOperator": "operators.empirical_fisher",
    "KFACOperator": "operators.kfac",
    "BlockOperator": "operators.blocks",
    "curvature_operator": "operators.curvature",
    "analysis_operator": "operators.curvature",
    # estimators
    "lanczos": "estimators.lanczos",
    "LanczosResult": "estimators.lanczos",
    "hutchinson_trace": "estimators.trace",
    "hutchpp_trace": "estimators.trace",
    "TraceEstimate": "estimators.trace",
    "slq_density": "estimators.density",
    "SLQResult": "estimators.density",
    "SpectralDensity": "estimators.density",
    "exact_spectrum": "estimators.exact",
    "ExactSpectrum": "estimators.exact",
    # analyses and their results
    "inspect_objective": "analyses.inspection",
    "InspectionResult": "analyses.inspection",
    "analyze_spectrum": "analyses.spectrum",
    "SpectrumResult": "analyses.spectrum",
    "classify_point": "analyses.classify",
    "ClassifyResult": "analyses.classify",
    "measure_sharpness": "analyses.sharpness",
    "SharpnessResult": "analyses.sharpness",
    "analyze_surface": "analyses.surface",
    "SurfaceResult": "analyses.surface",
    "analyze_kfac": "analyses.kfac",
    "KFACResult": "analyses.kfac",
    "analyze_jacobian": "analyses.jacobian",
    "JacobianResult": "analyses.jacobian",
    "stability_report": "analyses.stability",
    "StabilityReport": "analyses.stability",
    "per_layer_spectrum": "analyses.per_layer",
    "BlockSpectrum": "analyses.per_layer",
    "analyze_spread": "analyses.spread",
    "SpreadResult": "analyses.spread",
    "analyze_track": "analyses.track",
    "track_series": "analyses.track",
    "TrackResult": "analyses.track",
    "TrackPoint": "analyses.track",
    "analyze_all": "analyses.bundle",
    "gather_checks": "analyses.check",
    "check_objective": "analyses.check",
    "check_report": "analyses.check",
    "Check": "analyses.check",
    "CheckResult": "analyses.check",
    # reports
    "write_report": "io.report_file",
    "write_track": "io.report_file",
    "read_report": "io.report_file",
    "objective_info": "io.report_file",
    "Report": "io.report_file",
    "write_figures_and_html": "render.files",
    # errors
    "LandscapeError": "errors",
    "InputError": "errors",
    "NumericalError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'landscape_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
