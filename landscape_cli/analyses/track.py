"""``landscape track``: curvature along a series of checkpoints (a training run).

For each checkpoint, in step order: λ_max (Lanczos), the trace (Hutch++), loss, gradient norm and
η·λ_max. Consecutive checkpoints of a run have nearby top eigenvectors, so each Lanczos run is
**warm-started** from the previous top Ritz vector mixed with a fresh random vector,

    q₁ ∝ v_prev / ‖v_prev‖ + τ · r / ‖r‖,   τ = 0.3 (``warm_mix``),

which keeps every eigen-direction in the Krylov space (a pure ``v_prev`` could be an exact
eigenvector of a *smaller* eigenvalue after the top two cross, and Lanczos would stop on it),
while the large component along the old top direction lets the extreme Ritz value converge in
fewer steps than from a random start.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError, numerical_errors
from ..estimators.lanczos import DEFAULT_MIN_ITER, lanczos
from ..hdf5 import read_arrays, read_attrs, write_group
from ..problem.seeding import derive_seed
from .curvature_trace import curvature_trace, planned_exact_trace
from .run_info import RunInfo, json_number
from .settings import RunConfig
from .stability import stability_report

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
STEP_KEYS = ("global_step", "step", "iteration", "epoch")
#: The numbers of each point stored as ``/track`` columns (NaN for ``None``), ``step`` first: the
#: dimension scale of the others.
TRACK_COLUMNS = (
    "step",
    "lambda_max",
    "lambda_max_error_bound",
    "trace",
    "trace_stderr",
    "loss",
    "grad_norm",
    "lr",
    "lr_times_lambda_max",
    "stability_threshold",
    "preconditioned_sharpness",
    "preconditioned_threshold",
    "lanczos_matvecs",
    "hvp_count",
)


@dataclass(frozen=True)
class TrackPoint:
    """The curvature numbers of one checkpoint of the series. A point read back from a report
    has ``None`` for what the report does not keep: ``step_source``, ``warm_started``,
    ``seconds`` and ``run``."""

    checkpoint: str
    step: int
    step_source: str | None  # "checkpoint:<key>", "file name" or "order"
    lambda_max: float
    lambda_max_error_bound: float
    trace: float | None
    trace_stderr: float | None
    loss: float
    grad_norm: float
    lr: float | None
    lr_times_lambda_max: float | None
    lanczos_matvecs: int
    hvp_count: int
    warm_started: bool | None
    seconds: float | None
    curvature: str = "hessian"  # the matrix λ_max and trace are of (--curvature)
    params: tuple[str, ...] = ()  # --params patterns of the diagonal block (empty: all)
    #: the optimizer's bound on η·λ_max (SGD's momentum bound; 2 for plain GD or an unknown one)
    stability_threshold: float | None = None
    #: Adam: λ_max(P⁻¹H) and its threshold (2+2β₁)/((1−β₁)η) (:mod:`landscape_cli.analyses.stability`)
    preconditioned_sharpness: float | None = None
    preconditioned_threshold: float | None = None
    stability_note: str = ""  # e.g. the optimizer is neither SGD nor Adam (stability.py)
    #: how the checkpoint was analysed (parameters, samples, device, ...); not kept in a report
    run: RunInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        """One line of ``--jsonl``: the run info of this checkpoint, then its numbers."""
        return {
            **(self.run.to_dict() if self.run is not None else {}),
            "checkpoint": self.checkpoint,
            "step": self.step,
            "step_source": self.step_source,
            "lambda_max": json_number(self.lambda_max),
            "lambda_max_error_bound": json_number(self.lambda_max_error_bound),
            "trace": json_number(self.trace),
            "trace_stderr": json_number(self.trace_stderr),
            "loss": json_number(self.loss),
            "grad_norm": json_number(self.grad_norm),
            "lr": json_number(self.lr),
            "lr_times_lambda_max": json_number(self.lr_times_lambda_max),
            "stability_threshold": json_number(self.stability_threshold),
            "preconditioned_sharpness": json_number(self.preconditioned_sharpness),
            "preconditioned_threshold": json_number(self.preconditioned_threshold),
            **({"stability_note": self.stability_note} if self.stability_note else {}),
            "lanczos_matvecs": self.lanczos_matvecs,
            "hvp_count": self.hvp_count,
            "warm_started": self.warm_started,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "curvature": self.curvature,
            "params": list(self.params) or None,
        }


@dataclass(frozen=True)
class TrackResult:
    """The points of a series of checkpoints, in step order, and how they were analysed."""

    points: list[TrackPoint]
    seed: int
    warm_start: bool
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        note = next((p.stability_note for p in self.points if p.stability_note), "")
        if note and "stability" not in self.notes:
            self.notes["stability"] = note

    @property
    def curvature(self) -> str:
        """The matrix of the series (every point is analysed with the same settings)."""
        return self.points[0].curvature if self.points else "hessian"

    @property
    def params(self) -> tuple[str, ...]:
        return self.points[0].params if self.points else ()

    def arrays(self) -> dict[str, np.ndarray]:
        def column(name: str) -> np.ndarray:
            return np.array(
                [np.nan if getattr(p, name) is None else getattr(p, name) for p in self.points],
                dtype=np.float64,
            )

        return {name: column(name) for name in TRACK_COLUMNS}

    def run_info(self) -> RunInfo | None:
        """The run info of the series: the last checkpoint's (in step order: loss, gradient norm,
        samples, device), with the HVPs and seconds summed over every checkpoint."""
        runs = [p.run for p in self.points if p.run is not None]
        if not runs:
            return None
        return dataclasses.replace(
            runs[-1],
            hvp_count=int(sum(p.hvp_count for p in self.points)),
            seconds=float(sum(p.seconds or 0.0 for p in self.points)),
        )

    def to_dict(self) -> dict[str, Any]:
        run = self.run_info()
        return {
            **(run.to_dict() if run is not None else {}),
            "command": "track",
            "seed": self.seed,
            "warm_start": self.warm_start,
            "curvature": self.curvature,
            "params": list(self.params) or None,
            "num_checkpoints": len(self.points),
            "hvp_count": int(sum(p.hvp_count for p in self.points)),
            "points": [p.to_dict() for p in self.points],
            **({"notes": dict(self.notes)} if self.notes else {}),
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/track``: one column per number of :data:`TRACK_COLUMNS` over the scale ``step``;
        the checkpoints (one path a line), the warm start, curvature, parameter block and seed
        as attributes."""
        arrays = self.arrays()
        write_group(
            group,
            arrays,
            {
                "checkpoints": "\n".join(p.checkpoint for p in self.points),
                "warm_start": self.warm_start,
                "curvature": self.curvature,
                "params": list(self.params),
                "seed": self.seed,
            },
            dims={k: ("step",) for k in arrays if k != "step"},
        )

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> TrackResult:
        """The series of a group written by :meth:`to_hdf5` (columns an older report lacks are
        ``None``; see :class:`TrackPoint` for what a report does not keep)."""
        a = read_attrs(group)
        columns = read_arrays(
            group, dict.fromkeys(TRACK_COLUMNS, ("step",)), optional=TRACK_COLUMNS
        )
        checkpoints = str(a["checkpoints"]).split("\n")

        def number(name: str, i: int) -> float | None:
            value = float(columns[name][i]) if name in columns else math.nan
            return None if math.isnan(value) else value

        points = [
            TrackPoint(
                checkpoint=checkpoints[i],
                step=int(columns["step"][i]),
                step_source=None,
                lambda_max=float(columns["lambda_max"][i]),
                lambda_max_error_bound=float(columns["lambda_max_error_bound"][i]),
                trace=number("trace", i),
                trace_stderr=number("trace_stderr", i),
                loss=float(columns["loss"][i]),
                grad_norm=float(columns["grad_norm"][i]),
                lr=number("lr", i),
                lr_times_lambda_max=number("lr_times_lambda_max", i),
                lanczos_matvecs=int(columns["lanczos_matvecs"][i]),
                hvp_count=int(columns["hvp_count"][i]),
                warm_started=None,
                seconds=None,
                curvature=str(a.get("curvature", "hessian")),
                params=tuple(a.get("params") or ()),
                stability_threshold=number("stability_threshold", i),
                preconditioned_sharpness=number("preconditioned_sharpness", i),
                preconditioned_threshold=number("preconditioned_threshold", i),
            )
            for i in range(len(columns["step"]))
        ]
        return cls(points, int(a["seed"]), bool(a["warm_start"]))


def expand_checkpoints(patterns: Sequence[str], from_dir: str | None = None) -> list[str]:
    """Paths from arguments and ``from_dir``. An argument naming an existing file is that file,
    whatever characters its name holds; any other argument with ``*``, ``?`` or ``[`` is a glob
    pattern, expanded here for shells that did not."""
    paths: list[str] = []
    for pattern in patterns:
        is_pattern = any(c in pattern for c in "*?[") and not os.path.lexists(pattern)
        matches = sorted(glob.glob(pattern)) if is_pattern else [pattern]
        if not matches:
            raise InputError(f"checkpoint pattern '{pattern}' matches no file")
        paths.extend(matches)
    if from_dir is not None:
        directory = Path(from_dir)
        if not directory.is_dir():
            raise InputError(f"`from_dir={directory}`: not a directory")
        found = sorted(str(p) for p in directory.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        if not found:
            raise InputError(f"`from_dir={directory}`: no {', '.join(CHECKPOINT_SUFFIXES)} files")
        paths.extend(found)
    if not paths:
        raise InputError("no checkpoints given", hint="list them, use a glob, or `from_dir=DIR`")
    return paths


def step_from_name(path: str) -> int | None:
    """The last integer in the file name (``ckpt_step_1200.pt`` → 1200), if any."""
    numbers = re.findall(r"\d+", Path(path).stem)
    return int(numbers[-1]) if numbers else None


def _step(checkpoint: Any, path: str, index: int) -> tuple[int, str]:
    extra = getattr(checkpoint, "extra", {}) or {}
    for key in STEP_KEYS:
        value = extra.get(key)
        if isinstance(value, (int, np.integer)) or (
            isinstance(value, torch.Tensor) and value.numel() == 1
        ):
            if isinstance(value, torch.Tensor) and not (
                (value.layout == torch.strided and not value.is_meta and value.dtype.is_signed)
                or value.dtype in (torch.uint8, torch.bool)
            ):
                raise InputError(f"checkpoint {path}: '{key}' is not a plain number")
            number = value.item() if isinstance(value, torch.Tensor) else int(value)
            if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
                raise InputError(
                    f"checkpoint {path}: '{key}' is {number:g}, not a whole number of steps",
                    hint="re-save the checkpoint with an integer step",
                )
            return int(number), f"checkpoint:{key}"
    from_name = step_from_name(path)
    if from_name is not None:
        return from_name, "file name"
    return index, "order"


def track_series(
    paths: Sequence[str],
    config: RunConfig,
    *,
    warm_start: bool = True,
    warm_mix: float = 0.3,
    trace: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[TrackPoint]:
    """Yield one :class:`TrackPoint` per checkpoint, in step order, as each finishes.

    Each checkpoint's objective is ``config``'s with that checkpoint
    (:func:`~landscape_cli.problem.loading.build_objective`). The curvature, parameter block and
    determinism check are ``config.spectrum``'s (:func:`~landscape_cli.operators.curvature.analysis_operator`);
    the edge-of-stability numbers are computed for the full Hessian only.
    """
    import dataclasses

    from ..operators.curvature import analysis_operator
    from ..problem.determinism import check_determinism
    from ..problem.loading import build_objective, load_checkpoint

    settings = config.spectrum

    loaded = []
    for index, path in enumerate(paths):  # read the steps first: the files alone, no objective
        step, source = _step(load_checkpoint(path, trust=config.trust_checkpoint), path, index)
        loaded.append((step, index, path, source))
    loaded.sort()
    previous: torch.Tensor | None = None
    for position, (step, _index, path, source) in enumerate(loaded):
        start = time.perf_counter()
        objective = build_objective(
            dataclasses.replace(config, checkpoint=path),
            determinism_check=settings.determinism_check,
        )
        H = analysis_operator(objective, settings.curvature, settings.params)
        n = H.shape[0]
        if settings.determinism_check:
            check_determinism(objective, H, seed=derive_seed(config.seed, "determinism"))
        determinism_matvecs = H.matvecs
        start_vector = None
        warmed = warm_start and previous is not None and previous.shape[0] == n
        if warmed:
            gen = torch.Generator().manual_seed(derive_seed(config.seed, f"track/{position}"))
            noise = torch.randn(n, generator=gen, dtype=torch.float64)
            mixed = previous.double().cpu() / previous.norm() + warm_mix * noise / noise.norm()
            start_vector = mixed.to(device=objective.device, dtype=objective.dtype)
        planned = planned_exact_trace(objective, settings, H) if trace else (None, None)
        with numerical_errors(f"the Lanczos iteration on {path}"):
            lz = lanczos(
                H,
                start=start_vector,
                seed=derive_seed(config.seed, "lanczos"),
                max_iter=config.spectrum.max_iter,
                tol=config.spectrum.tol,
                top_k=1,
                min_iter=4 if warmed else DEFAULT_MIN_ITER,
                return_vectors=True,
                return_basis=trace and settings.deflate_trace and planned[0] is None,
                progress=None if progress is None else (lambda d, t: progress("lanczos", d, t)),
            )
        lanczos_matvecs = H.matvecs - determinism_matvecs
        previous = lz.top_vectors[:, 0].detach()
        lambda_max = float(lz.top(1)[0])
        estimate = None
        if trace:
            estimate, _, _ = curvature_trace(  # the method and deflation, as in spectrum
                objective, H, settings, lz, seed=derive_seed(config.seed, "trace"), planned=planned
            )
        stability = None
        if settings.curvature == "hessian" and not settings.params:  # EoS: the full Hessian's λ_max
            stability = stability_report(objective, lambda_max, lr=config.lr, seed=config.seed)
        yield TrackPoint(
            checkpoint=path,
            step=step,
            step_source=source,
            lambda_max=lambda_max,
            lambda_max_error_bound=float(lz.error_bounds[lz.top_index()]),
            trace=None if estimate is None else estimate.estimate,
            trace_stderr=None if estimate is None else estimate.stderr,
            loss=objective.loss_value,
            grad_norm=objective.grad_norm,
            lr=None if stability is None else stability.lr,
            lr_times_lambda_max=None if stability is None else stability.lr_times_lambda_max,
            stability_threshold=(
                None
                if stability is None or stability.optimizer == "adam"
                else stability.momentum_threshold
            ),
            preconditioned_sharpness=None
            if stability is None
            else stability.preconditioned_sharpness,
            preconditioned_threshold=None
            if stability is None
            else stability.preconditioned_threshold,
            stability_note="" if stability is None else stability.note,
            lanczos_matvecs=lanczos_matvecs,
            hvp_count=H.matvecs + (0 if stability is None else stability.matvecs),
            warm_started=warmed,
            seconds=time.perf_counter() - start,
            curvature=settings.curvature,
            params=tuple(settings.params),
            run=RunInfo.from_objective(
                objective,
                "track",
                config.seed,
                H.matvecs + (0 if stability is None else stability.matvecs),
                time.perf_counter() - start,
            ),
        )
        if progress is not None:
            progress("track", position + 1, len(loaded))


def analyze_track(
    paths: Sequence[str],
    config: RunConfig,
    *,
    warm_start: bool = True,
    trace: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    on_point: Callable[[TrackPoint], None] | None = None,
) -> TrackResult:
    """The :class:`TrackResult` of the checkpoints ``paths`` (see :func:`track_series`);
    ``on_point`` is called with each :class:`TrackPoint` as it finishes, in step order."""
    points = []
    for point in track_series(paths, config, warm_start=warm_start, trace=trace, progress=progress):
        points.append(point)
        if on_point is not None:
            on_point(point)
    return TrackResult(points, config.seed, warm_start)
