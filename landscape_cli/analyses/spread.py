"""How much λ_max and the trace depend on the sample: the same analysis on K disjoint subsets.

The curvature of the mean loss over ``N`` samples is itself an estimate of the population
curvature. ``--spread K`` cuts the objective's batches into ``K`` contiguous groups (as equal in
batch count as possible), builds an :class:`~landscape_cli.problem.objective.Objective` on each group's
samples (the same model, loss, device, dtype, mode and HVP mechanism), and runs the same
estimators on each: λ_max by Lanczos (same seed and tolerance as the full run) and the trace by
Hutch++ (same budget). It reports the mean and the sample standard deviation (``ddof=1``) over the
subsets next to the full-data values.

Each subset holds ``N/K`` samples, so the subset values scatter more than the full-data value
would across independent samples of size ``N`` (for the trace, a mean over samples, by about
``√K``); the spread is an upper bound on the sampling uncertainty of the full-data numbers, not
a confidence interval.

Warnings (returned, printed on stderr and listed under ``"warnings"`` in JSON):

* a subset with fewer than :data:`MIN_SUBSET_SAMPLES` samples (128): curvature estimates from
  that few samples are dominated by the particular samples;
* a coefficient of variation ``std/|mean|`` of λ_max above :data:`MAX_CV` (10 %): the analysed
  sample is too small for λ_max to be a stable property of the model; use more data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ..errors import InputError, numerical_errors
from ..estimators.lanczos import lanczos
from ..hdf5 import read_attrs, read_list, write_group
from ..problem.data import Batches
from ..problem.seeding import derive_seed
from .curvature_trace import curvature_trace, planned_exact_trace
from .run_info import json_number, json_numbers

MIN_SUBSET_SAMPLES = 128
MAX_CV = 0.10
#: The columns of ``/spectrum/spread``, one entry per subset (the fields of :class:`SubsetResult`).
SPREAD_ARRAYS = (
    "first_batch",
    "stop_batch",
    "num_samples",
    "lambda_max",
    "lambda_max_error_bound",
    "trace",
    "trace_stderr",
    "matvecs",
)
SPREAD_INTEGERS = ("first_batch", "stop_batch", "num_samples", "matvecs")


@dataclass(frozen=True)
class SubsetResult:
    """The estimates on one subset: batches ``first_batch .. stop_batch - 1``."""

    first_batch: int
    stop_batch: int
    num_samples: int
    lambda_max: float
    lambda_max_error_bound: float
    trace: float | None
    trace_stderr: float | None
    matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_batch": self.first_batch,
            "stop_batch": self.stop_batch,
            "num_samples": self.num_samples,
            "lambda_max": json_number(self.lambda_max),
            "lambda_max_error_bound": json_number(self.lambda_max_error_bound),
            "trace": json_number(self.trace),
            "trace_stderr": json_number(self.trace_stderr),
            "matvecs": self.matvecs,
        }


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


@dataclass(frozen=True)
class SpreadResult:
    """λ_max and trace on ``k`` disjoint subsets, their mean and standard deviation."""

    k: int
    subsets: list[SubsetResult]
    full_lambda_max: float
    full_trace: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def matvecs(self) -> int:
        return int(sum(s.matvecs for s in self.subsets))

    @property
    def lambda_max_mean_std(self) -> tuple[float, float]:
        return _mean_std([s.lambda_max for s in self.subsets])

    @property
    def trace_mean_std(self) -> tuple[float, float] | None:
        traces = [s.trace for s in self.subsets]
        if any(t is None for t in traces):
            return None
        return _mean_std([float(t) for t in traces if t is not None])

    @property
    def lambda_max_cv(self) -> float:
        mean, std = self.lambda_max_mean_std
        return std / abs(mean) if mean != 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        mean, std = self.lambda_max_mean_std
        trace = self.trace_mean_std
        return {
            "k": self.k,
            "lambda_max": {
                "full": json_number(self.full_lambda_max),
                "mean": json_number(mean),
                "std": json_number(std),
                "cv": json_number(self.lambda_max_cv),
                "values": json_numbers([s.lambda_max for s in self.subsets]),
            },
            "trace": None
            if trace is None
            else {
                "full": json_number(self.full_trace),
                "mean": json_number(trace[0]),
                "std": json_number(trace[1]),
                "values": json_numbers([s.trace for s in self.subsets]),
            },
            "subsets": [s.to_dict() for s in self.subsets],
            "matvecs": self.matvecs,
            "warnings": list(self.warnings),
            "thresholds": {"min_subset_samples": MIN_SUBSET_SAMPLES, "max_cv": MAX_CV},
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/spectrum/spread``: the subsets' estimates as columns, the summary statistics and
        the warning thresholds as attributes."""
        mean, std = self.lambda_max_mean_std
        trace = self.trace_mean_std
        write_group(
            group,
            {name: [getattr(s, name) for s in self.subsets] for name in SPREAD_ARRAYS},
            {
                "k": self.k,
                "full_lambda_max": self.full_lambda_max,
                "full_trace": self.full_trace,
                "lambda_max_mean": mean,
                "lambda_max_std": std,
                "lambda_max_cv": self.lambda_max_cv,
                "trace_mean": None if trace is None else trace[0],
                "trace_std": None if trace is None else trace[1],
                "warnings": list(self.warnings),
                "min_subset_samples": MIN_SUBSET_SAMPLES,
                "max_cv": MAX_CV,
            },
        )

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> SpreadResult:
        """The spread of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        columns = {name: read_list(group, name) for name in SPREAD_ARRAYS}
        subsets = [
            SubsetResult(
                **{
                    name: (int(columns[name][i]) if name in SPREAD_INTEGERS else columns[name][i])
                    for name in SPREAD_ARRAYS
                }
            )
            for i in range(len(columns["lambda_max"]))
        ]
        return cls(
            a["k"],
            subsets,
            a["full_lambda_max"],
            a.get("full_trace"),
            list(a.get("warnings") or []),
        )


def subset_batches(batches: Batches, first_batch: int, stop_batch: int) -> Batches:
    """The samples of batches ``first_batch .. stop_batch - 1`` as their own :class:`Batches`
    (the same batches, so the subset's batches are exactly those batches)."""
    return batches.subset(first_batch, stop_batch)


def subset_objective(objective: Any, batches: Batches) -> Any:
    """An objective on ``batches`` with everything else as ``objective``'s (model, loss,
    device, dtype, mode, resolved HVP mechanism, memory budget, seed)."""
    from ..problem.objective import Objective

    return Objective(
        objective.model,
        objective._module.loss_fn,
        batches,
        device=objective.device,
        dtype=objective.dtype,
        mode=objective.mode,
        hvp_mode=objective.hvp_mode,
        checkpoint=objective.checkpoint,
        memory_budget=objective.memory_budget,
        seed=objective.seed,
    )


def analyze_spread(
    objective: Any,
    settings: Any,
    *,
    k: int,
    full_lambda_max: float,
    full_trace: float | None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SpreadResult:
    """λ_max and trace of ``settings``' operator (curvature and parameter block, see
    :func:`~landscape_cli.operators.curvature.analysis_operator`) on ``k`` disjoint contiguous groups of
    the objective's batches, with the seeds of the full run (so subset ``i`` gives what a
    separate run on its samples gives)."""
    from ..operators.curvature import analysis_operator

    num_batches = len(objective.batches)
    if objective.batches.source is None:
        raise InputError("`spread` needs data; give `data`")
    if k < 2 or k > num_batches:
        raise InputError(
            f"`spread={k}`: needs 2 <= K <= the number of batches ({num_batches})",
            hint="lower `batch_size` to get more batches, or choose a smaller K",
        )
    groups = np.array_split(np.arange(num_batches), k)
    subsets: list[SubsetResult] = []
    for position, group in enumerate(groups):
        first, stop = int(group[0]), int(group[-1]) + 1
        sub = subset_objective(objective, subset_batches(objective.batches, first, stop))
        A = analysis_operator(sub, settings.curvature, settings.params)
        planned = planned_exact_trace(sub, settings, A) if settings.trace else (None, None)
        with numerical_errors(f"the Lanczos iteration on spread subset {position}"):
            lz = lanczos(
                A,
                seed=derive_seed(seed, "lanczos"),
                max_iter=settings.max_iter,
                tol=settings.tol,
                top_k=1,
                return_basis=settings.trace and settings.deflate_trace and planned[0] is None,
            )
            estimate = None
            if settings.trace:  # the budget spent as the full run's (spectrum.py)
                estimate, _, _ = curvature_trace(
                    sub, A, settings, lz, seed=derive_seed(seed, "trace"), planned=planned
                )
        subsets.append(
            SubsetResult(
                first_batch=first,
                stop_batch=stop,
                num_samples=sub.num_samples,
                lambda_max=float(lz.top(1)[0]),
                lambda_max_error_bound=float(lz.error_bounds[lz.top_index()]),
                trace=None if estimate is None else float(estimate.estimate),
                trace_stderr=None if estimate is None else float(estimate.stderr),
                matvecs=A.matvecs,
            )
        )
        if progress is not None:
            progress(position + 1, k)
    result = SpreadResult(k, subsets, full_lambda_max, full_trace)
    warnings = []
    smallest = min(s.num_samples for s in subsets)
    if smallest < MIN_SUBSET_SAMPLES:
        warnings.append(
            f"--spread {k}: a subset holds only {smallest} samples (< {MIN_SUBSET_SAMPLES}); "
            "per-subset curvature is dominated by its particular samples, use more data "
            "(--max-samples) or a smaller K"
        )
    cv = result.lambda_max_cv
    if cv > MAX_CV:
        mean, std = result.lambda_max_mean_std
        warnings.append(
            f"λ_max varies across {k} data subsets by {cv:.0%} (mean {mean:.4g}, std {std:.4g}; "
            f"threshold {MAX_CV:.0%}): the analysed sample is too small for a stable estimate; "
            "use more data (--max-samples) before comparing values"
        )
    return SpreadResult(k, subsets, full_lambda_max, full_trace, warnings)
