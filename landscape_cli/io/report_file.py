"""HDF5 reports: every analysis of one checkpoint in one self-describing file (guide, section 5).

Layout (``SCHEMA = "landscape-report/1"``; the full table is in docs/report.md):

* root attributes: ``schema``, ``landscape_version``, ``created`` (ISO 8601, UTC),
  ``command_line``, ``config_yaml``, ``torch_version``, ``checkpoint_sha256`` (``""`` when the
  objective has no checkpoint file), ``num_parameters``, ``seed``, ``device``, ``dtype``;
* one group per analysis (``/spectrum``, ``/classify``, ``/sharpness``, ``/jacobian``;
  ``/surface/<name>`` and ``/track`` through :func:`write_arrays`): parameters and scalar results as attributes, raw
  material (Lanczos coefficients, Ritz values, trace samples, SLQ nodes and weights, curves) as
  datasets, so a plot can be redrawn and a density re-broadened (:func:`rebroaden`) without a
  single Hessian-vector product.

Conventions (as in h5py's documentation and anndata's on-disk specification): small metadata are
attributes, arrays are datasets, datasets of more than :data:`COMPRESS_MIN_SIZE` elements are
stored gzip-compressed with the shuffle filter, a grid is an HDF5 dimension scale of the values
sampled on it. HDF5 has no ``None``: a ``None`` attribute is left out and its name listed in the
group's ``none_attributes``; a ``None`` inside an array is stored as NaN and its positions listed
in the dataset's ``none_indices`` (and the dataset's name in the group's ``none_datasets``).

Writing is atomic: the report is built in ``.{name}.tmp-{pid}`` next to the target and moved into
place with :func:`os.replace`; on any exception (``KeyboardInterrupt`` included) the temporary
file is removed and an existing report is left as it was. Writing sections into an existing report
keeps its other groups.

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d) / "r.h5"
    ...     _ = write_report(path, {}, config=None, command_line="landscape report",
    ...                  objective_info={"num_parameters": 3, "seed": 0, "device": "cpu",
    ...                                  "dtype": "float64"})
    ...     read_report(path).attrs["schema"]
    'landscape-report/1'
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .. import __version__
from ..analyses.classify import (
    ClassifyResult,
    ClassifySettings,
    Decision,
    EscapeProbe,
    NewtonDecrement,
)
from ..analyses.jacobian import JacobianResult, JacobianSettings, LayerJacobian, NTKSpectrum
from ..analyses.per_layer import BlockSpectrum
from ..analyses.run_info import RunInfo
from ..analyses.settings import RunConfig
from ..analyses.sharpness import SharpnessResult, SharpnessSettings
from ..analyses.spectrum import SpectrumResult
from ..analyses.spread import SpreadResult, SubsetResult
from ..analyses.stability import StabilityReport
from ..analyses.surface import SurfaceResult
from ..errors import InputError
from ..estimators.density import SLQResult, SpectralDensity
from ..estimators.exact import ExactSpectrum
from ..estimators.lanczos import LanczosResult
from ..estimators.trace import TraceEstimate
from .hdf5 import (
    NONE_DATASETS,
    plain,
    read_array,
    read_attrs,
    read_list,
    set_attrs,
    write_arrays,
    write_datasets,
)

__all__ = [
    "ROOT_ATTRIBUTES",
    "SCHEMA",
    "SECTIONS",
    "Report",
    "check_report_target",
    "objective_info",
    "read_attrs",
    "read_list",
    "read_report",
    "rebroaden",
    "write_arrays",
    "write_report",
]

SCHEMA = "landscape-report/1"
#: Root attributes, in the order of the guide.
ROOT_ATTRIBUTES = (
    "schema",
    "landscape_version",
    "created",
    "command_line",
    "config_yaml",
    "torch_version",
    "checkpoint_sha256",
    "num_parameters",
    "seed",
    "device",
    "dtype",
)
#: Keys :func:`write_report` accepts in ``objective_info``.
OBJECTIVE_KEYS = ("num_parameters", "seed", "device", "dtype", "checkpoint_sha256")

INFO_FIELDS = tuple(f.name for f in dataclasses.fields(RunInfo))
LANCZOS_ARRAYS = (
    "alphas",
    "betas",
    "ritz_values",
    "ritz_residuals",
    "error_bounds",
    "first_components",
)
SHARPNESS_CURVES = (
    "worst_case",
    "one_step",
    "average_case",
    "average_case_stderr",
    "second_order",
)


# ---------------------------------------------------------------------------- generic encoding


# ---------------------------------------------------------------------------- section writers


def _info_attrs(info: RunInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in INFO_FIELDS}


def _settings_attrs(settings: Any) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _write_lanczos(group: h5py.Group, lz: LanczosResult, extra: Mapping[str, Any]) -> None:
    arrays = {name: getattr(lz, name) for name in LANCZOS_ARRAYS}
    if lz.top_vectors is not None:  # --save-eigenvectors: (n, k) columns, largest first
        arrays["top_vectors"] = lz.top_vectors.detach().to("cpu", torch.float64).numpy()
    write_arrays(
        group,
        "lanczos",
        arrays,
        {
            "iterations": lz.steps,
            "matvecs": lz.matvecs,
            "converged": bool(lz.converged),
            "breakdown": bool(lz.breakdown),
            "start_vector_norm": lz.start_vector_norm,
            "ritz_vectors_stored": lz.top_vectors is not None,
            **extra,
        },
    )


def _write_slq(group: h5py.Group, slq: SLQResult) -> None:
    write_arrays(
        group,
        "slq",
        {"nodes": slq.nodes, "weights": slq.weights, "run_steps": slq.run_steps},
        {
            "runs": int(slq.nodes.shape[0]),
            "steps": int(slq.nodes.shape[1]),
            "shared_runs": int(slq.shared_runs),
            "matvecs": slq.matvecs,
            "padding": "nodes NaN, weights 0 after a run's last step (run_steps)",
        },
    )


def _write_stability(group: h5py.Group, stability: StabilityReport) -> None:
    fields = _settings_attrs(stability)
    derived = {k: v for k, v in stability.to_dict().items() if k not in fields}
    derived.pop("lr_source", None)
    write_arrays(group, "stability", {}, {**fields, **derived})


def _write_notes(group: h5py.Group, notes: Mapping[str, str]) -> None:
    write_arrays(group, "notes", {}, dict(notes))


def _write_spectrum(group: h5py.Group, res: SpectrumResult, config: RunConfig | None) -> None:
    write_datasets(
        group,
        {
            "top_eigenvalues": np.asarray(res.top_eigenvalues, dtype=np.float64),
            "bottom_eigenvalues": np.asarray(res.bottom_eigenvalues, dtype=np.float64),
        },
    )
    set_attrs(
        group,
        {
            **_info_attrs(res.info),
            "lambda_max": res.lambda_max,
            "lambda_min": res.lambda_min,
            "top_k": res.top_k,
            "bottom_k": res.bottom_k,
            "tol": res.tol,
            "curvature": res.curvature,
            "params": list(res.params),
            "block_parameters": res.block_parameters,
            "block_size": res.block_size,
            "warnings": list(res.warnings),
            "determinism_check_matvecs": res.determinism_matvecs,
        },
    )
    _write_lanczos(group, res.lanczos, {"tol": res.tol})
    if res.per_layer is not None:
        _write_per_layer(group, res.per_layer)
    if res.spread is not None:
        _write_spread(group, res.spread)
    if res.trace_estimate is not None:
        t = res.trace_estimate
        write_arrays(
            group,
            "trace",
            {"samples": np.asarray(t.samples, dtype=np.float64)},
            {
                "estimate": t.estimate,
                "stderr": t.stderr,
                "method": t.method,
                "matvecs": t.matvecs,
                "deflation_rank": t.deflation_rank,
                "deflation_trace": t.deflation_trace,
            },
        )
    if res.slq is not None:
        _write_slq(group, res.slq)
    if res.density_estimate is not None:
        d = res.density_estimate
        write_arrays(
            group,
            "density",
            {"grid": d.grid, "values": d.values},
            {"sigma": d.sigma},
            dims={"values": ("grid",)},
        )
    if res.exact is not None:
        e = res.exact
        write_arrays(
            group,
            "exact",
            {"eigenvalues": e.eigenvalues},
            {"asymmetry": e.asymmetry, "matvecs": e.matvecs},
        )
    if res.stability is not None:
        _write_stability(group, res.stability)
    if config is not None:
        # SpectrumResult does not carry its settings: these are the run configuration's
        write_arrays(
            group, "settings", {}, {**_settings_attrs(config.spectrum), "source": "config"}
        )
    _write_notes(group, res.notes)


PER_LAYER_ARRAYS = (
    "size",
    "lambda_max",
    "lambda_max_error_bound",
    "converged",
    "trace",
    "trace_stderr",
    "matvecs",
)
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


def _write_per_layer(group: h5py.Group, rows: Sequence[BlockSpectrum]) -> None:
    """``/spectrum/per_layer``: one entry per module, largest λ_max first."""
    arrays = {name: [getattr(r, name) for r in rows] for name in PER_LAYER_ARRAYS}
    arrays["converged"] = np.array([bool(r.converged) for r in rows])
    write_arrays(
        group,
        "per_layer",
        arrays,
        {
            "names": [r.name for r in rows],
            "parameters": [",".join(r.parameters) for r in rows],
            "trace_method": next((r.trace_method for r in rows if r.trace_method), None),
        },
    )


def _write_spread(group: h5py.Group, spread: SpreadResult) -> None:
    """``/spectrum/spread``: the K subsets' estimates with the summary statistics as attributes."""
    from ..analyses.spread import MAX_CV, MIN_SUBSET_SAMPLES

    mean, std = spread.lambda_max_mean_std
    trace = spread.trace_mean_std
    write_arrays(
        group,
        "spread",
        {name: [getattr(s, name) for s in spread.subsets] for name in SPREAD_ARRAYS},
        {
            "k": spread.k,
            "full_lambda_max": spread.full_lambda_max,
            "full_trace": spread.full_trace,
            "lambda_max_mean": mean,
            "lambda_max_std": std,
            "lambda_max_cv": spread.lambda_max_cv,
            "trace_mean": None if trace is None else trace[0],
            "trace_std": None if trace is None else trace[1],
            "warnings": list(spread.warnings),
            "min_subset_samples": MIN_SUBSET_SAMPLES,
            "max_cv": MAX_CV,
        },
    )


def _read_per_layer(group: h5py.Group) -> list[BlockSpectrum]:
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


def _read_spread(group: h5py.Group) -> SpreadResult:
    a = read_attrs(group)
    columns = {name: read_list(group, name) for name in SPREAD_ARRAYS}
    ints = ("first_batch", "stop_batch", "num_samples", "matvecs")
    subsets = [
        SubsetResult(
            **{
                name: (int(columns[name][i]) if name in ints else columns[name][i])
                for name in SPREAD_ARRAYS
            }
        )
        for i in range(len(columns["lambda_max"]))
    ]
    return SpreadResult(
        a["k"], subsets, a["full_lambda_max"], a.get("full_trace"), list(a.get("warnings") or [])
    )


def _write_classify(group: h5py.Group, res: ClassifyResult, config: RunConfig | None) -> None:
    d = res.decision
    set_attrs(
        group,
        {
            **_info_attrs(res.info),
            "classification": d.classification,
            "evidence": res.evidence,
            "lambda_max": res.lambda_max,
            "lambda_min": res.lambda_min,
            "lambda_max_error_bound": res.error_max,
            "lambda_min_error_bound": res.error_min,
            "negative_fraction": res.negative_fraction,
            "stationary": d.stationary,
            "relative_gradient": d.relative_gradient,
            "relative_step": d.relative_step,
            "curvature_scale": d.curvature_scale,
            "negative_curvature": d.negative_significant,
            "positive_curvature": d.positive_significant,
            "degenerate_directions": d.degenerate_directions,
        },
    )
    write_arrays(group, "settings", {}, _settings_attrs(res.settings))
    if res.newton is not None:
        write_arrays(group, "newton", {}, _settings_attrs(res.newton))
    if res.escape is not None:
        e = res.escape
        curves = ("loss_plus", "loss_minus", "model_plus", "model_minus")
        write_arrays(
            group,
            "escape",
            {"t": e.steps, **{name: getattr(e, name) for name in curves}},
            {"eigenvalue": e.eigenvalue, "best_decrease": e.best_decrease},
            dims={name: ("t",) for name in curves},
        )
    if res.lanczos is not None:
        _write_lanczos(group, res.lanczos, {"tol": res.settings.tol})
    if res.slq is not None:
        _write_slq(group, res.slq)
    if res.stability is not None:
        _write_stability(group, res.stability)
    _write_notes(group, res.notes)


def _write_sharpness(group: h5py.Group, res: SharpnessResult, config: RunConfig | None) -> None:
    s = res.settings
    arrays: dict[str, Any] = {"rho": np.asarray(res.rho, dtype=np.float64)}
    arrays.update({name: list(getattr(res, name)) for name in SHARPNESS_CURVES})
    arrays["average_samples"] = np.asarray(res.average_samples, dtype=np.float64)
    none_datasets = write_datasets(group, arrays, dims={n: ("rho",) for n in SHARPNESS_CURVES})
    set_attrs(
        group,
        {
            **_info_attrs(res.info),
            "lambda_max": res.lambda_max,
            "adaptive": res.adaptive,
            "m": res.m,
            "eta": s.eta if res.adaptive else None,
            "worst_case_bound": "lower",
            "samples": s.samples,
            "gradient_evaluations": res.gradient_evaluations,
            "loss_evaluations": res.loss_evaluations,
            NONE_DATASETS: none_datasets,  # always present for sharpness (may be empty)
        },
    )
    write_arrays(group, "settings", {}, _settings_attrs(s))
    if res.lanczos is not None:
        _write_lanczos(group, res.lanczos, {"tol": s.tol})
    _write_notes(group, res.notes)


def _write_surface(parent: h5py.Group, res: SurfaceResult, config: RunConfig | None) -> None:
    """``/surface/<name>``: coordinates as dimension scales of the loss (and accuracy) grid."""
    arrays, attrs, dims = res.report_arrays()
    group = write_arrays(parent, res.name, arrays, attrs, dims=dims)
    set_attrs(group, _info_attrs(res.info))


def _write_jacobian(group: h5py.Group, res: JacobianResult, config: RunConfig | None) -> None:
    """``/jacobian``: per-sample arrays (length N), per-layer arrays (layers × N), ``/ntk``."""
    n = res.samples
    arrays: dict[str, Any] = {
        "sigma_max": np.asarray(res.sigma_max, dtype=np.float64),
        "lanczos_iterations": np.asarray(res.lanczos_iterations, dtype=np.int64),
        "lanczos_converged": np.asarray(res.lanczos_converged, dtype=bool),
    }
    if res.sigma_min is not None:
        arrays["sigma_min"] = np.asarray(res.sigma_min, dtype=np.float64)
        arrays["condition"] = np.asarray(res.condition, dtype=np.float64)  # NaN: σ_min = 0
        arrays["rank"] = np.asarray(res.rank, dtype=np.int64)
        arrays["singular_values"] = np.asarray(res.singular_values, dtype=np.float64)
    layers = res.layers
    arrays["layer_sigma_max"] = (
        np.stack([np.asarray(x.sigma_max, dtype=np.float64) for x in layers])
        if layers
        else np.zeros((0, n))
    )
    arrays["layer_iterations"] = (
        np.stack([np.asarray(x.iterations, dtype=np.int64) for x in layers])
        if layers
        else np.zeros((0, n), dtype=np.int64)
    )
    arrays["layer_converged"] = (
        np.stack([np.asarray(x.converged, dtype=bool) for x in layers])
        if layers
        else np.zeros((0, n), dtype=bool)
    )
    write_datasets(group, arrays)
    set_attrs(
        group,
        {
            **_info_attrs(res.info),
            "samples": n,
            "input_dim": res.input_dim,
            "output_dim": res.output_dim,
            "jvp_count": res.jvp_count,
            "vjp_count": res.vjp_count,
            "sigma_max_median": res.sigma_max_median,
            "condition_median": res.condition_median,
            "layer_names": [x.name for x in layers],
            "layer_types": [x.type for x in layers],
            "layer_input_dims": np.asarray([x.input_dim for x in layers], dtype=np.int64),
            "layer_output_dims": np.asarray([x.output_dim for x in layers], dtype=np.int64),
        },
    )
    if res.ntk is not None:
        k = res.ntk
        sub = write_arrays(
            group,
            "ntk",
            {"top_eigenvalues": np.asarray(k.top_eigenvalues, dtype=np.float64)},
            {"samples": k.samples, "outputs": k.outputs, "trace": k.trace, "tol": k.tol},
        )
        _write_lanczos(sub, k.lanczos, {"tol": k.tol})
    write_arrays(group, "settings", {}, _settings_attrs(res.settings))
    _write_notes(group, res.notes)


_WRITERS = {
    "spectrum": (SpectrumResult, _write_spectrum),
    "classify": (ClassifyResult, _write_classify),
    "sharpness": (SharpnessResult, _write_sharpness),
    "surface": (SurfaceResult, _write_surface),  # one of possibly many: /surface/<result.name>
    "jacobian": (JacobianResult, _write_jacobian),
}
#: The sections :func:`write_report` writes and :func:`read_report` rebuilds.
SECTIONS = tuple(_WRITERS)


# ---------------------------------------------------------------------------- writing


def objective_info(objective: Any, seed: int) -> dict[str, Any]:
    """The ``objective_info`` of :func:`write_report` for an
    :class:`~landscape_cli.problem.objective.Objective` analysed with ``seed``."""
    checkpoint = getattr(objective, "checkpoint", None)
    return {
        "num_parameters": int(objective.num_parameters),
        "seed": int(seed),
        "device": str(objective.device),
        "dtype": str(objective.dtype).replace("torch.", ""),
        "checkpoint_sha256": (checkpoint.sha256 if checkpoint is not None else None) or "",
    }


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _open_error(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{path}: cannot be read as HDF5 ({exc})", hint="is it a landscape report?")


def _check_schema(path: Path, f: h5py.File, action: str) -> None:
    schema = plain(f.attrs.get("schema"))
    if schema != SCHEMA:
        found = "no 'schema' attribute" if schema is None else f"schema {schema!r}"
        raise InputError(
            f"{path}: not a landscape report ({found}, expected {SCHEMA!r})",
            hint=action,
        )


def _root_attrs(
    existing: Mapping[str, Any],
    sections: Mapping[str, Any],
    config: RunConfig | None,
    command_line: str,
    info: Mapping[str, Any],
    path: Path,
) -> dict[str, Any]:
    import torch

    unknown = sorted(set(info) - set(OBJECTIVE_KEYS))
    if unknown:
        raise ValueError(
            f"objective_info has unknown keys {unknown}; allowed: {', '.join(OBJECTIVE_KEYS)}"
        )
    values: dict[str, Any] = {}
    run_infos = [result.info for result in sections.values()]
    for key in OBJECTIVE_KEYS:
        value = info.get(key)
        if value is None:
            value = next((getattr(r, key) for r in run_infos if getattr(r, key) is not None), None)
        if value is None and key == "seed" and config is not None:
            value = config.seed
        if value is None and key in existing:
            value = existing[key]
        if value is None and key == "checkpoint_sha256":
            value = ""
        if value is None:
            raise ValueError(f"objective_info needs {key!r} (no section carries it)")
        values[key] = value
    for key in ("checkpoint_sha256", "num_parameters"):
        old, new = existing.get(key), values[key]
        if old not in (None, "") and new not in (None, "") and old != new:
            raise InputError(
                f"{path}: the report holds results for {key} = {old}, this run has {new}",
                hint="write to another --out file",
            )
    return {
        "schema": SCHEMA,
        "landscape_version": __version__,
        "created": _utc_now(),
        "command_line": command_line,
        "config_yaml": config.to_yaml() if config is not None else "",
        "torch_version": str(torch.__version__),
        "checkpoint_sha256": str(values["checkpoint_sha256"]),
        "num_parameters": int(values["num_parameters"]),
        "seed": int(values["seed"]),
        "device": str(values["device"]),
        "dtype": str(values["dtype"]),
    }


def _existing_report_attrs(path: Path) -> dict[str, Any] | None:
    """Check that ``path`` may be written (its directory exists; if it exists, it is a landscape
    report); return the existing root attributes, or ``None`` for a new file."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory", hint="give a file name ending in .h5")
    if not path.exists():
        return None
    if not h5py.is_hdf5(path):
        raise InputError(
            f"{path}: exists and is not an HDF5 file; refusing to overwrite it",
            hint="choose another --out file",
        )
    try:
        with h5py.File(path, "r") as f:
            _check_schema(path, f, "refusing to overwrite it; choose another --out file")
            return read_attrs(f)
    except OSError as exc:
        raise _open_error(path, exc) from None


def check_report_target(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless ``path`` may be written as a report: its directory exists
    and it is absent or already a landscape report (the checks :func:`write_report` makes, done
    early so that a bad ``--out`` fails before the analysis). Creates nothing."""
    _existing_report_attrs(Path(path))


@contextlib.contextmanager
def _atomic_update(path: Path, exists: bool) -> Iterator[h5py.File]:
    """An open copy of the report (or a new file) at a temporary name, renamed over ``path`` when
    the block succeeds and removed on any exception, ``KeyboardInterrupt`` included."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if exists:
            shutil.copy2(path, tmp)
            f = h5py.File(tmp, "a")
        else:
            # a persistent free-space manager lets later rewrites of a section reuse its space
            f = h5py.File(tmp, "w", fs_strategy="fsm", fs_persist=True)
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    path: str | os.PathLike[str],
    sections: Mapping[str, Any],
    *,
    config: RunConfig | None,
    command_line: str,
    objective_info: Mapping[str, Any],
) -> Path:
    """Write ``sections`` (``{"spectrum": SpectrumResult, ...}``) into the report at ``path``.

    A new file gets the root attributes and the given groups. An existing report keeps every group
    not in ``sections``; the groups in ``sections`` are replaced and the root attributes updated
    (``created``, ``command_line``, ``config_yaml`` ... describe the latest write; every section
    group also carries its own ``created`` and ``command_line``).

    Atomic: the file is built as ``.{name}.tmp-{pid}`` in the target's directory (starting from a
    copy of the existing report) and renamed over ``path`` with :func:`os.replace`. On any
    exception, ``KeyboardInterrupt`` included, the temporary file is removed and the exception
    re-raised; ``path`` is then as it was (absent, or the old report byte for byte).

    Args:
        path: the ``.h5`` file.
        sections: section name (one of :data:`SECTIONS`) -> the analysis result.
        config: the resolved configuration, stored as ``config_yaml`` (``""`` when ``None``).
        command_line: the command that produced the results.
        objective_info: any of ``num_parameters``, ``seed``, ``device``, ``dtype``,
            ``checkpoint_sha256`` (see :func:`objective_info`); missing ones are taken from the
            results' :class:`~landscape_cli.analyses.run_info.RunInfo` or the existing report.

    Raises:
        InputError: ``path`` exists but is not a landscape report, its directory does not exist,
            or it holds results of another checkpoint.
        ValueError, TypeError: an unknown section name or a result of the wrong type.
    """
    path = Path(path)
    for name, result in sections.items():
        if name not in _WRITERS:
            raise ValueError(f"unknown report section {name!r}; known: {', '.join(SECTIONS)}")
        kind = _WRITERS[name][0]
        if not isinstance(result, kind):
            raise TypeError(
                f"section {name!r} needs a {kind.__name__}, got {type(result).__name__}"
            )
    existing = _existing_report_attrs(path)
    root = _root_attrs(existing or {}, sections, config, command_line, objective_info, path)
    with _atomic_update(path, existing is not None) as f:
        for name, result in sections.items():
            if name == "surface":  # keeps the other surfaces; replaces one of the same name
                _write_surface(f.require_group("surface"), result, config)
                group = f["surface"][result.name]
            else:
                if name in f:
                    del f[name]
                group = f.create_group(name)
                _WRITERS[name][1](group, result, config)
            set_attrs(group, {"created": root["created"], "command_line": command_line})
        for key in ROOT_ATTRIBUTES:
            set_attrs(f, {key: root[key]})
    return path


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SurfaceData:
    """A stored loss surface: enough to redraw it (``losses[j, i]`` at ``(xs[i], ys[j])``)."""

    name: str
    kind: str
    dims: int
    xs: np.ndarray
    ys: np.ndarray | None
    losses: np.ndarray
    accuracies: np.ndarray | None
    quadratic_model: np.ndarray | None
    eigenvalues: np.ndarray | None
    attrs: dict[str, Any]


def _read_surfaces(group: h5py.Group) -> dict[str, SurfaceData]:
    surfaces = {}
    for name, sub in group.items():

        def get(key: str, sub: h5py.Group = sub) -> np.ndarray | None:
            return read_array(sub, key) if key in sub else None

        attrs = read_attrs(sub)
        surfaces[name] = SurfaceData(
            name=name,
            kind=str(attrs["kind"]),
            dims=int(attrs["dims"]),
            xs=read_array(sub, "x"),
            ys=get("y"),
            losses=read_array(sub, "loss"),
            accuracies=get("accuracy"),
            quadratic_model=get("quadratic_model"),
            eigenvalues=get("eigenvalues"),
            attrs=attrs,
        )
    return surfaces


@dataclass(frozen=True)
class Report:
    """A report read back: root attributes and the results rebuilt as the analyses' dataclasses.

    ``groups`` lists every top-level group (including ``surface`` and ``track``, which are read
    with :func:`read_attrs` and h5py directly).
    """

    path: Path
    attrs: dict[str, Any]
    spectrum: SpectrumResult | None = None
    classify: ClassifyResult | None = None
    sharpness: SharpnessResult | None = None
    jacobian: JacobianResult | None = None
    surfaces: dict[str, SurfaceData] = field(default_factory=dict)
    track: dict[str, np.ndarray] | None = None  # /track arrays by name (step, lambda_max, ...)
    groups: tuple[str, ...] = ()
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # each group's attributes


def _run_info(attrs: Mapping[str, Any]) -> RunInfo:
    defaults = {  # fields added later have defaults; older files lack them
        f.name: None if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(RunInfo)
    }
    return RunInfo(**{name: attrs.get(name, defaults[name]) for name in INFO_FIELDS})


def _settings(cls: type, attrs: Mapping[str, Any]) -> Any:
    default = cls()
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in attrs:
            continue
        value = attrs[f.name]
        if isinstance(getattr(default, f.name), tuple) and value is not None:
            value = tuple(float(v) for v in np.atleast_1d(value))
        kwargs[f.name] = value
    return cls(**kwargs)


def _read_lanczos(group: h5py.Group) -> LanczosResult:
    a = read_attrs(group)
    return LanczosResult(
        **{name: read_array(group, name) for name in LANCZOS_ARRAYS},
        converged=a["converged"],
        breakdown=a["breakdown"],
        matvecs=a["matvecs"],
        start_vector_norm=a["start_vector_norm"],
        top_vectors=torch.from_numpy(read_array(group, "top_vectors"))
        if "top_vectors" in group
        else None,
    )


def _read_slq(group: h5py.Group) -> SLQResult:
    return SLQResult(
        nodes=read_array(group, "nodes"),
        weights=read_array(group, "weights"),
        matvecs=read_attrs(group)["matvecs"],
        shared_runs=int(read_attrs(group).get("shared_runs", 0)),  # reports without it read as 0
    )


def _read_stability(group: h5py.Group) -> StabilityReport:
    attrs = read_attrs(group)
    # a field missing from an older report takes its default (nesterov, dampening, note)
    return StabilityReport(
        **{
            f.name: attrs.get(f.name, None if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(StabilityReport)
        }
    )


def _read_notes(group: h5py.Group) -> dict[str, str]:
    return {k: str(v) for k, v in read_attrs(group["notes"]).items()} if "notes" in group else {}


def _optional(group: h5py.Group, name: str, reader: Any) -> Any:
    return reader(group[name]) if name in group else None


def _read_spectrum(group: h5py.Group) -> SpectrumResult:
    a = read_attrs(group)
    density = None
    if "density" in group:
        d = group["density"]
        density = SpectralDensity(
            grid=read_array(d, "grid"),
            values=read_array(d, "values"),
            sigma=float(d.attrs["sigma"]),
        )
    trace = None
    if "trace" in group:
        t = read_attrs(group["trace"])
        trace = TraceEstimate(
            estimate=t["estimate"],
            stderr=t["stderr"],
            method=t["method"],
            matvecs=t["matvecs"],
            samples=read_array(group["trace"], "samples"),
            deflation_rank=int(t.get("deflation_rank", 0)),
            deflation_trace=float(t.get("deflation_trace", 0.0)),
        )
    exact = None
    if "exact" in group:
        e = read_attrs(group["exact"])
        exact = ExactSpectrum(
            read_array(group["exact"], "eigenvalues"), e["asymmetry"], e["matvecs"]
        )
    return SpectrumResult(
        info=_run_info(a),
        top_eigenvalues=read_array(group, "top_eigenvalues"),
        bottom_eigenvalues=read_array(group, "bottom_eigenvalues"),
        lanczos=_read_lanczos(group["lanczos"]),
        top_k=a["top_k"],
        bottom_k=a["bottom_k"],
        tol=a["tol"],
        trace_estimate=trace,
        slq=_optional(group, "slq", _read_slq),
        density_estimate=density,
        exact=exact,
        stability=_optional(group, "stability", _read_stability),
        notes=_read_notes(group),
        curvature=a.get("curvature", "hessian"),  # reports written before curvature existed
        params=tuple(a.get("params") or ()),
        block_parameters=a.get("block_parameters"),
        block_size=a.get("block_size"),
        per_layer=_optional(group, "per_layer", _read_per_layer),
        spread=_optional(group, "spread", _read_spread),
        warnings=list(a.get("warnings") or []),
        determinism_matvecs=a.get("determinism_check_matvecs"),
    )


def _read_classify(group: h5py.Group) -> ClassifyResult:
    a = read_attrs(group)
    decision = Decision(
        classification=a["classification"],
        stationary=a["stationary"],
        relative_gradient=a["relative_gradient"],
        negative_significant=a["negative_curvature"],
        positive_significant=a["positive_curvature"],
        degenerate_directions=a["degenerate_directions"],
        curvature_scale=a["curvature_scale"],
        relative_step=a.get("relative_step"),
    )
    newton = None
    if "newton" in group:
        n = read_attrs(group["newton"])
        newton = NewtonDecrement(**{f.name: n[f.name] for f in dataclasses.fields(NewtonDecrement)})
    escape = None
    if "escape" in group:
        e = group["escape"]
        ea = read_attrs(e)
        escape = EscapeProbe(
            eigenvalue=ea["eigenvalue"],
            steps=read_array(e, "t"),
            loss_plus=read_array(e, "loss_plus"),
            loss_minus=read_array(e, "loss_minus"),
            model_plus=read_array(e, "model_plus"),
            model_minus=read_array(e, "model_minus"),
            best_decrease=ea["best_decrease"],
        )
    return ClassifyResult(
        info=_run_info(a),
        decision=decision,
        lambda_max=a["lambda_max"],
        lambda_min=a["lambda_min"],
        error_max=a["lambda_max_error_bound"],
        error_min=a["lambda_min_error_bound"],
        negative_fraction=a["negative_fraction"],
        newton=newton,
        escape=escape,
        evidence=a["evidence"],
        settings=_settings(ClassifySettings, read_attrs(group["settings"])),
        lanczos=_optional(group, "lanczos", _read_lanczos),
        slq=_optional(group, "slq", _read_slq),
        stability=_optional(group, "stability", _read_stability),
        notes=_read_notes(group),
    )


def _read_sharpness(group: h5py.Group) -> SharpnessResult:
    a = read_attrs(group)
    return SharpnessResult(
        info=_run_info(a),
        rho=[float(r) for r in read_array(group, "rho")],
        **{name: read_list(group, name) for name in SHARPNESS_CURVES},
        lambda_max=a["lambda_max"],
        adaptive=a["adaptive"],
        m=a["m"],
        settings=_settings(SharpnessSettings, read_attrs(group["settings"])),
        gradient_evaluations=a["gradient_evaluations"],
        loss_evaluations=a["loss_evaluations"],
        average_samples=read_array(group, "average_samples"),
        lanczos=_optional(group, "lanczos", _read_lanczos),
        notes=_read_notes(group),
    )


def _read_jacobian(group: h5py.Group) -> JacobianResult:
    a = read_attrs(group)

    def optional(name: str) -> np.ndarray | None:
        return read_array(group, name) if name in group else None

    sigma = read_array(group, "layer_sigma_max")
    steps = read_array(group, "layer_iterations")
    converged = read_array(group, "layer_converged")
    names = list(a["layer_names"])
    inputs = np.atleast_1d(a["layer_input_dims"])
    outputs = np.atleast_1d(a["layer_output_dims"])
    layers = tuple(
        LayerJacobian(
            name=str(name),
            type=str(kind),
            input_dim=int(inputs[k]),
            output_dim=int(outputs[k]),
            sigma_max=sigma[k],
            iterations=steps[k],
            converged=converged[k],
        )
        for k, (name, kind) in enumerate(zip(names, list(a["layer_types"]), strict=True))
    )
    ntk = None
    if "ntk" in group:
        g = group["ntk"]
        na = read_attrs(g)
        ntk = NTKSpectrum(
            samples=na["samples"],
            outputs=na["outputs"],
            top_eigenvalues=read_array(g, "top_eigenvalues"),
            trace=na["trace"],
            lanczos=_read_lanczos(g["lanczos"]),
            tol=na["tol"],
        )
    return JacobianResult(
        info=_run_info(a),
        settings=_settings(JacobianSettings, read_attrs(group["settings"])),
        samples=a["samples"],
        input_dim=a["input_dim"],
        output_dim=a["output_dim"],
        sigma_max=read_array(group, "sigma_max"),
        lanczos_iterations=read_array(group, "lanczos_iterations"),
        lanczos_converged=read_array(group, "lanczos_converged"),
        sigma_min=optional("sigma_min"),
        rank=optional("rank"),
        singular_values=optional("singular_values"),
        layers=layers,
        ntk=ntk,
        jvp_count=a["jvp_count"],
        vjp_count=a["vjp_count"],
        notes=_read_notes(group),
    )


_READERS = {
    "spectrum": _read_spectrum,
    "classify": _read_classify,
    "sharpness": _read_sharpness,
    "jacobian": _read_jacobian,
}


def read_report(path: str | os.PathLike[str]) -> Report:
    """Read a report written by :func:`write_report`.

    Raises:
        InputError: the file is missing, not HDF5, not a landscape report (schema), or a section
            lacks an item its schema requires (the message names the section and the item).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such report file", hint="write one with --out FILE.h5")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path}: not an HDF5 file", hint="give a report written with --out")
    try:
        with h5py.File(path, "r") as f:
            _check_schema(path, f, "give a report written with --out")
            results: dict[str, Any] = {}
            for name, reader in _READERS.items():
                if name in f:
                    try:
                        results[name] = reader(f[name])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise InputError(
                            f"{path}: section /{name} is incomplete or malformed ({exc})",
                            hint="rewrite it with the command that made it and --out",
                        ) from None
            if "track" in f:
                results["track"] = {
                    name: read_array(f["track"], name)
                    for name in f["track"]
                    if isinstance(f["track"][name], h5py.Dataset)
                }
            if "surface" in f:
                try:
                    results["surfaces"] = _read_surfaces(f["surface"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(
                        f"{path}: section /surface is incomplete or malformed ({exc})"
                    ) from None
            return Report(
                path=path,
                attrs=read_attrs(f),
                groups=tuple(f.keys()),
                sections={
                    name: read_attrs(f[name]) for name in f if isinstance(f[name], h5py.Group)
                },
                **results,
            )
    except OSError as exc:
        raise _open_error(path, exc) from None


def rebroaden(
    report_or_spectrum: Report | SpectrumResult | SLQResult,
    sigma: float | None = None,
    grid_points: int = 1000,
) -> SpectralDensity:
    """The SLQ density with another Gaussian width ``sigma`` (default:
    :func:`~landscape_cli.estimators.density.default_sigma`) on ``grid_points`` points, from the stored
    nodes and weights (no Hessian-vector product):
    ``φ(t) ≈ (1/R) Σ_r Σ_i τ²_{r,i} N(t; θ_{r,i}, σ²)`` (Lin, Saad & Yang 2016).

    Raises:
        InputError: the report or result has no SLQ nodes (the density was switched off).
        ValueError: ``sigma <= 0`` or ``grid_points < 2``.
    """
    slq = report_or_spectrum
    if isinstance(slq, Report):
        if slq.spectrum is None:
            raise InputError(f"{slq.path}: the report has no /spectrum section to re-broaden")
        slq = slq.spectrum
    if isinstance(slq, SpectrumResult):
        slq = slq.slq
    if slq is None:
        raise InputError(
            "no SLQ nodes and weights to re-broaden (the density was switched off)",
            hint="run spectrum with the density on",
        )
    return slq.density(sigma=sigma, grid=int(grid_points))


def write_track(
    path: str | os.PathLike[str], result: Any, *, config: RunConfig | None, command_line: str
) -> Path:
    """Write ``/track`` (one array per quantity, ``step`` as their dimension scale) into a report
    of its own or an existing one, atomically like :func:`write_report`. A series spans several
    checkpoints, so the root's ``checkpoint_sha256`` is left as it is (empty for a new file)."""
    path = Path(path)
    existing = _existing_report_attrs(path)
    with _atomic_update(path, existing is not None) as f:
        arrays = result.arrays()
        dims = {k: ("step",) for k in arrays if k != "step"}
        write_arrays(
            f,
            "track",
            arrays,
            {
                "checkpoints": "\n".join(p.checkpoint for p in result.points),
                "warm_start": result.warm_start,
                "curvature": getattr(result, "curvature", "hessian"),
                "params": list(getattr(result, "params", ())),
                "seed": result.seed,
                "created": _utc_now(),
                "command_line": command_line,
            },
            dims=dims,
        )
        if existing is None:
            set_attrs(
                f,
                {
                    "schema": SCHEMA,
                    "landscape_version": __version__,
                    "created": _utc_now(),
                    "command_line": command_line,
                    "config_yaml": "" if config is None else config.to_yaml(),
                    "torch_version": torch.__version__,
                    "checkpoint_sha256": "",
                    "num_parameters": 0,
                    "seed": result.seed,
                    "device": config.device if config is not None else "",
                    "dtype": config.dtype if config is not None else "",
                },
            )
    return path


def read_track(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The ``/track`` arrays of a report, or ``None`` when it has none."""
    with h5py.File(path, "r") as f:
        if "track" not in f:
            return None
        return {name: read_array(f["track"], name) for name in f["track"]}
