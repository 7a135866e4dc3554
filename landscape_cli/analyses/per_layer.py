"""Per-layer curvature: λ_max and trace of each module's diagonal block."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..errors import numerical_errors
from ..estimators.lanczos import lanczos
from ..estimators.trace import EXACT_METHOD, TraceEstimate, estimate_trace
from ..hdf5 import read_array, read_attrs, read_list, write_group
from ..operators.blocks import TOP_LEVEL, BlockOperator, block_indices, layer_groups
from ..operators.exact_trace import ExactTrace
from ..problem.seeding import derive_seed
from .run_info import json_number

#: The columns of ``/spectrum/per_layer``, one entry per block.
PER_LAYER_ARRAYS = (
    "size",
    "lambda_max",
    "lambda_max_error_bound",
    "converged",
    "trace",
    "trace_stderr",
    "matvecs",
)


@dataclass(frozen=True)
class BlockSpectrum:
    """λ_max and trace of one diagonal block (one layer)."""

    name: str
    parameters: list[str]
    size: int
    lambda_max: float
    lambda_max_error_bound: float
    converged: bool
    trace: float | None
    trace_stderr: float | None
    trace_method: str | None
    matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": list(self.parameters),
            "size": self.size,
            "lambda_max": json_number(self.lambda_max),
            "lambda_max_error_bound": json_number(self.lambda_max_error_bound),
            "converged": bool(self.converged),
            "trace": json_number(self.trace),
            "trace_stderr": json_number(self.trace_stderr),
            "trace_method": self.trace_method,
            "matvecs": self.matvecs,
        }


def per_layer_to_hdf5(group: h5py.Group, rows: Sequence[BlockSpectrum]) -> None:
    """``/spectrum/per_layer``: one column entry per block, largest λ_max first; the names and
    parameters as attributes (a block's parameter names joined by commas)."""
    arrays: dict[str, Any] = {name: [getattr(r, name) for r in rows] for name in PER_LAYER_ARRAYS}
    arrays["converged"] = np.array([bool(r.converged) for r in rows])
    write_group(
        group,
        arrays,
        {
            "names": [r.name for r in rows],
            "parameters": [",".join(r.parameters) for r in rows],
            "trace_method": next((r.trace_method for r in rows if r.trace_method), None),
        },
    )


def per_layer_from_hdf5(group: h5py.Group) -> list[BlockSpectrum]:
    """The rows of a group written by :func:`per_layer_to_hdf5`."""
    a = read_attrs(group)
    columns = {name: read_list(group, name) for name in PER_LAYER_ARRAYS if name != "converged"}
    converged = read_array(group, "converged")
    return [
        BlockSpectrum(
            name=name,
            parameters=params.split(",") if params else [],
            size=int(columns["size"][i]),
            lambda_max=columns["lambda_max"][i],
            lambda_max_error_bound=columns["lambda_max_error_bound"][i],
            converged=bool(converged[i]),
            trace=columns["trace"][i],
            trace_stderr=columns["trace_stderr"][i],
            trace_method=a.get("trace_method"),
            matvecs=int(columns["matvecs"][i]),
        )
        for i, (name, params) in enumerate(zip(a["names"], a["parameters"], strict=True))
    ]


def per_layer_spectrum(
    objective: Any,
    make_operator: Callable[[], Any],
    *,
    names: Sequence[str] | None = None,
    tol: float = 1e-4,
    max_iter: int = 200,
    trace: bool = True,
    trace_matvecs: int = 150,
    trace_method: str = "auto",
    deflate_trace: bool = True,
    exact_traces: ExactTrace | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[BlockSpectrum]:
    """λ_max (Lanczos to relative tolerance ``tol``) and trace of the diagonal block of each
    module owning parameters among ``names`` (default: all). The trace spends ``trace_matvecs``
    products as ``spectrum`` does (:func:`~landscape_cli.estimators.trace.estimate_trace`): deflated by the
    block's Lanczos basis unless ``deflate_trace`` is off, ``trace_method`` as in
    :func:`~landscape_cli.estimators.trace.choose_method`; exact when the block has at most that many
    coordinates. ``exact_traces`` (its
    :attr:`~landscape_cli.operators.exact_trace.ExactTrace.per_module`) replaces the estimate of the
    modules it names with their exact block trace, at no cost. ``make_operator()`` returns a fresh full
    operator (e.g. ``H.fresh``). Sorted by λ_max, largest first."""
    groups = layer_groups(list(names) if names is not None else objective.parameter_names)
    per_module = exact_traces.per_module if exact_traces is not None else {}
    exact = {(m or TOP_LEVEL): v for m, v in per_module.items()}
    exact_method = (exact_traces.method if exact_traces is not None else None) or EXACT_METHOD
    rows: list[BlockSpectrum] = []
    for position, (module, members) in enumerate(groups.items()):
        block = BlockOperator(make_operator(), block_indices(objective, members), members)
        with numerical_errors(f"the Lanczos iteration on the block '{module}'"):
            lz = lanczos(
                block,
                seed=derive_seed(seed, f"per_layer/lanczos/{module}"),
                max_iter=max_iter,
                tol=tol,
                top_k=1,
                return_basis=trace and deflate_trace and module not in exact,
            )
            estimate = None
            if trace and module in exact:
                estimate = TraceEstimate(exact[module], 0.0, exact_method, 0)
            elif trace:
                estimate = estimate_trace(
                    block,
                    trace_matvecs,
                    method=trace_method,
                    basis=lz.basis,
                    basis_trace=float(lz.alphas.sum()),
                    seed=derive_seed(seed, f"per_layer/trace/{module}"),
                )
        rows.append(
            BlockSpectrum(
                name=module,
                parameters=list(members),
                size=block.shape[0],
                lambda_max=float(lz.top(1)[0]),
                lambda_max_error_bound=float(lz.error_bounds[lz.top_index()]),
                converged=bool(lz.converged),
                trace=None if estimate is None else float(estimate.estimate),
                trace_stderr=None if estimate is None else float(estimate.stderr),
                trace_method=None if estimate is None else estimate.method,
                matvecs=block.matvecs,
            )
        )
        if progress is not None:
            progress(position + 1, len(groups))
    return sorted(rows, key=lambda r: -r.lambda_max)
