"""landscape: loss-landscape analysis of trained PyTorch checkpoints from Hessian-vector products.

The library is usable without the CLI, e.g. in a notebook::

    from landscape_cli import Objective, analyze_spectrum, hutchpp_trace, slq_density
    from landscape_cli.estimators.lanczos import lanczos  # the module and the function share the name

Names are imported lazily so ``import landscape_cli`` (and ``landscape --help``) does not import
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # configuration and loading
    "RunConfig": "analyses.settings",
    "SpectrumSettings": "analyses.settings",
    "resolve_config": "io.config",
    "read_config_file": "io.config",
    "load_checkpoint": "problem.loading",
    "build_model": "problem.loading",
    "load_data": "problem.loading",
    "load_loss": "problem.losses",
    "build_objective": "problem.loading",
    "resolve_run_config": "io.config",
    # the operators
    "SymmetricOperator": "linear_operator",
    "OperatorLike": "linear_operator",
    "Objective": "problem.objective",
    "HessianOperator": "operators.hessian",
    "SplitLoss": "problem.losses",
    "GGNOperator": "operators.ggn",
    "EmpiricalFisherOperator": "operators.empirical_fisher",
    "curvature_operator": "operators.curvature",
    "analysis_operator": "operators.curvature",
    "BlockOperator": "operators.blocks",
    "per_layer_spectrum": "analyses.per_layer",
    "analyze_spread": "analyses.spread",
    "check_determinism": "problem.determinism",
    # estimators
    "LanczosResult": "estimators.lanczos",
    "hutchinson_trace": "estimators.trace",
    "hutchpp_trace": "estimators.trace",
    "TraceEstimate": "estimators.trace",
    "slq_density": "estimators.density",
    "SLQResult": "estimators.density",
    "SpectralDensity": "estimators.density",
    "exact_spectrum": "estimators.exact",
    # analyses and results
    "analyze_spectrum": "analyses.spectrum",
    "classify_point": "analyses.classify",
    "ClassifyResult": "analyses.classify",
    "ClassifySettings": "analyses.settings",
    "SpectrumResult": "analyses.spectrum",
    "inspect_objective": "analyses.inspection",
    "analyze_jacobian": "analyses.jacobian",
    "JacobianResult": "analyses.jacobian",
    "JacobianSettings": "analyses.settings",
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
