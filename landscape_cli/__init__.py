"""landscape: loss-landscape analysis of trained PyTorch checkpoints from Hessian-vector products.

The library is usable without the CLI, e.g. in a notebook::

    from landscape_cli import Objective, analyze_spectrum, hutchpp_trace, slq_density
    from landscape_cli.lanczos import lanczos  # the module and the function share the name

Names are imported lazily so ``import landscape_cli`` (and ``landscape --help``) does not import
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # configuration and loading
    "RunConfig": "config",
    "SpectrumSettings": "config",
    "resolve_config": "config",
    "read_config_file": "config",
    "load_checkpoint": "loading",
    "build_model": "loading",
    "load_data": "loading",
    "load_loss": "loading",
    "build_objective": "loading",
    "resolve_run_config": "loading",
    # the operator
    "Objective": "objective",
    "HessianOperator": "objective",
    "SplitLoss": "loading",
    "GGNOperator": "curvature",
    "EmpiricalFisherOperator": "curvature",
    "curvature_operator": "curvature",
    "analysis_operator": "curvature",
    "BlockOperator": "blocks",
    "per_layer_spectrum": "blocks",
    "analyze_spread": "spread",
    "check_determinism": "determinism",
    # estimators
    "LanczosResult": "lanczos",
    "hutchinson_trace": "trace",
    "hutchpp_trace": "trace",
    "TraceEstimate": "trace",
    "slq_density": "density",
    "SLQResult": "density",
    "SpectralDensity": "density",
    "exact_spectrum": "exact",
    # analyses and results
    "analyze_spectrum": "spectrum",
    "classify_point": "critical",
    "ClassifyResult": "critical",
    "ClassifySettings": "config",
    "SpectrumResult": "results",
    "inspect_objective": "inspection",
    "analyze_jacobian": "jacobian",
    "JacobianResult": "jacobian",
    "JacobianSettings": "config",
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
