"""Frozen result dataclasses with ``to_dict()`` giving the JSON of the interface guide.

Numbers in ``to_dict()`` are plain Python floats and ints; a value that could not be computed is
``None`` and its reason is in ``"notes"``. The raw material (Lanczos coefficients, trace samples,
SLQ nodes and weights) stays on the dataclass for reports and plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def json_number(value: Any) -> float | int | None:
    """A finite plain number, or ``None`` for NaN/Inf/None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def json_numbers(values: Sequence[Any] | np.ndarray) -> list[float | int | None]:
    return [json_number(v) for v in values]


@dataclass(frozen=True)
class RunInfo:
    """What every result carries: the objective at ``w`` and how the run was made."""

    command: str
    num_parameters: int
    loss: float
    grad_norm: float
    hvp_count: int
    seconds: float
    seed: int
    num_samples: int
    hvp_mode: str
    device: str
    dtype: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    hvp_block: str = "loop"
    processes: int = 1
    compile: str = "off"

    @classmethod
    def from_objective(
        cls, objective: Any, command: str, seed: int, hvp_count: int, seconds: float
    ) -> RunInfo:
        """The :class:`RunInfo` of ``command`` run on an :class:`~landscape_cli.objective.Objective`."""
        checkpoint = objective.checkpoint
        return cls(
            command=command,
            num_parameters=objective.num_parameters,
            loss=objective.loss_value,
            grad_norm=objective.grad_norm,
            hvp_count=hvp_count,
            seconds=seconds,
            seed=seed,
            num_samples=objective.num_samples,
            hvp_mode=objective.hvp_mode,
            device=str(objective.device),
            dtype=str(objective.dtype).replace("torch.", ""),
            checkpoint=None if checkpoint is None else checkpoint.path,
            checkpoint_sha256=None if checkpoint is None else checkpoint.sha256,
            hvp_block=getattr(objective, "hvp_block_mode", "loop"),
            processes=objective.ranks.world_size if hasattr(objective, "ranks") else 1,
            compile=getattr(objective, "compile_mode", "off"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "num_parameters": self.num_parameters,
            "loss": json_number(self.loss),
            "grad_norm": json_number(self.grad_norm),
            "hvp_count": self.hvp_count,
            "seconds": round(self.seconds, 6),
            "seed": self.seed,
            "num_samples": self.num_samples,
            "hvp_mode": self.hvp_mode,
            "device": self.device,
            "dtype": self.dtype,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "hvp_block": self.hvp_block,
            "processes": self.processes,
            "compile": self.compile,
        }


@dataclass(frozen=True)
class SpectrumResult:
    """Top/bottom eigenvalues (Lanczos), trace (Hutch++/Hutchinson), density (SLQ) of the Hessian.

    ``lanczos``, ``trace_estimate``, ``slq`` and ``density_estimate`` are the estimator results
    (:class:`~landscape_cli.lanczos.LanczosResult`, :class:`~landscape_cli.trace.TraceEstimate`,
    :class:`~landscape_cli.density.SLQResult`, :class:`~landscape_cli.density.SpectralDensity`).
    """

    info: RunInfo
    top_eigenvalues: np.ndarray  # descending
    bottom_eigenvalues: np.ndarray  # ascending
    lanczos: Any
    top_k: int
    bottom_k: int
    tol: float
    trace_estimate: Any = None
    slq: Any = None
    density_estimate: Any = None
    exact: Any = None  # ExactSpectrum
    stability: Any = None  # StabilityReport
    notes: Mapping[str, str] = field(default_factory=dict)
    curvature: str = "hessian"  # hessian, ggn or ef
    params: tuple[str, ...] = ()  # --params patterns (empty: all parameters)
    block_parameters: list[str] | None = None  # the parameters they matched
    block_size: int | None = None  # coordinates in that block
    per_layer: Any = None  # list[BlockSpectrum], largest λ_max first
    spread: Any = None  # SpreadResult
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
            out["exact"] = self.exact.to_dict(self.top_k, max(self.bottom_k, 1))
        if self.notes:
            out["notes"] = dict(self.notes)
        return out


def _trace_dict(estimate: Any) -> dict[str, Any]:
    return {
        "estimate": json_number(estimate.estimate),
        "stderr": json_number(estimate.stderr),
        "method": estimate.method,
        "matvecs": int(estimate.matvecs),
    }
