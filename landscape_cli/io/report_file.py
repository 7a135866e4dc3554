"""HDF5 reports: every analysis of one checkpoint in one self-describing file (guide, section 5).

Layout (``SCHEMA = "landscape-report/1"``; the full table is in docs/report.md):

* root attributes: ``schema``, ``landscape_version``, ``created`` (ISO 8601, UTC),
  ``command_line``, ``config_yaml``, ``torch_version``, ``checkpoint_sha256`` (``""`` when the
  objective has no checkpoint file), ``num_parameters``, ``seed``, ``device``, ``dtype``;
* one group per registered analysis (:data:`~landscape_cli.analyses.registry.ANALYSES`:
  ``/spectrum``, ``/classify``, ``/sharpness``, ``/jacobian``, ``/kfac``, ``/track``; one per result under
  ``/surface/<name>``), written and read by the result class itself (``to_hdf5`` /
  ``from_hdf5``): parameters and scalar results as attributes, raw material (Lanczos
  coefficients, Ritz values, trace samples, SLQ nodes and weights, curves) as datasets, so a plot
  can be redrawn and a density re-broadened without a single Hessian-vector product. Each group
  also carries the ``created`` and ``command_line`` of the write that made it.

This module holds the file: the root attributes, the schema check, atomic writing and reading;
the encoding of values (``None``, compression, dimension scales) is :mod:`landscape_cli.hdf5`.

Writing is atomic (:func:`~landscape_cli.files.atomic_file`): the report is built in a temporary
file created exclusively next to the target and moved into place; on any exception or signal the
temporary file is removed and an existing report is left as it was. Writing sections into an
existing report keeps its other groups; concurrent writers of one folder take turns
(:func:`~landscape_cli.files.directory_lock`), so none loses another's section.

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
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import torch

from .. import __version__
from ..analyses.classify import (
    ClassifyResult,
)
from ..analyses.jacobian import JacobianResult
from ..analyses.kfac import KFACResult
from ..analyses.registry import ANALYSES, analysis_of
from ..analyses.settings import RunConfig
from ..analyses.sharpness import SharpnessResult
from ..analyses.spectrum import SpectrumResult
from ..analyses.surface import SurfaceResult
from ..analyses.track import TrackResult
from ..errors import InputError
from ..files import atomic_file, check_writable, directory_lock, refuse_special_file
from ..hdf5 import plain, read_attrs, set_attrs

__all__ = [
    "ROOT_ATTRIBUTES",
    "SCHEMA",
    "SECTIONS",
    "Report",
    "check_report_target",
    "objective_info",
    "read_report",
    "write_report",
    "write_track",
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
#: The sections :func:`write_report` writes: the analyses of one checkpoint.
SECTIONS = tuple(name for name, entry in ANALYSES.items() if entry.per_checkpoint)


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


#: What a malformed report raises while it is read: a missing item, a value of the wrong type or
#: shape, bytes that are not UTF-8, a list shorter than its neighbours.
MALFORMED = (KeyError, TypeError, ValueError, IndexError)


def _malformed(path: Path, part: str, exc: BaseException) -> InputError:
    """The error of a report whose ``part`` (``section /spectrum``) cannot be read back."""
    return InputError(
        f"{path}: {part} is incomplete or malformed ({exc})",
        hint="rewrite it with the analysis that made it and `out`",
    )


def _check_schema(path: Path, f: h5py.File, action: str) -> None:
    try:
        schema = plain(f.attrs.get("schema"))
    except MALFORMED as exc:
        raise _malformed(path, "the root attribute 'schema'", exc) from None
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
    _refuse_another_checkpoint(path, existing, values)
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


def _refuse_another_checkpoint(
    path: Path, existing: Mapping[str, Any], values: Mapping[str, Any]
) -> None:
    """Raise :class:`InputError` when the report's checkpoint (hash, parameter count) is not the
    run's: one report holds one checkpoint."""
    for key in ("checkpoint_sha256", "num_parameters"):
        old, new = existing.get(key), values.get(key)
        if old not in (None, "") and new not in (None, "") and old != new:
            raise InputError(
                f"{path}: the report holds results for {key} = {old}, this run has {new}",
                hint="write to another `out` file",
            )


def check_report_fits(path: str | os.PathLike[str], info: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` when the report at ``path`` (if any) holds results of another
    checkpoint than ``info`` describes (:func:`objective_info`): checked before an analysis spends
    its products, as :func:`write_report` checks again when it writes."""
    path = Path(path)
    existing = _existing_report_attrs(path)
    if existing is not None:
        _refuse_another_checkpoint(path, existing, info)


def _existing_report_attrs(path: Path) -> dict[str, Any] | None:
    """Check that ``path`` may be written (its directory exists; if it exists, it is a landscape
    report); return the existing root attributes, or ``None`` for a new file."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory", hint="give a file name ending in .h5")
    if not path.exists():
        return None
    refuse_special_file(path, str(path))
    if not h5py.is_hdf5(path):
        raise InputError(
            f"{path}: exists and is not an HDF5 file; refusing to overwrite it",
            hint="choose another `out` file",
        )
    try:
        with h5py.File(path, "r") as f:
            _check_schema(path, f, "refusing to overwrite it; choose another `out` file")
            try:
                return read_attrs(f)
            except MALFORMED as exc:
                raise _malformed(path, "the root group", exc) from None
    except OSError as exc:
        raise _open_error(path, exc) from None


def check_report_target(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless ``path`` may be written as a report: its directory exists
    and it is absent or already a landscape report (the checks :func:`write_report` makes, done
    early so that a bad ``--out`` fails before the analysis), and the folder accepts new files
    (:func:`~landscape_cli.files.check_writable`). Leaves nothing behind."""
    _existing_report_attrs(Path(path))
    check_writable(path)


@contextlib.contextmanager
def _atomic_update(path: Path, exists: bool) -> Iterator[h5py.File]:
    """An open copy of the report (or a new file) in a temporary file that becomes ``path`` when
    the block succeeds (:func:`~landscape_cli.files.atomic_file`)."""
    with atomic_file(path) as file:
        if exists:
            with open(path, "rb") as old:
                shutil.copyfileobj(old, file)
            f = h5py.File(file, "r+")
        else:
            # a persistent free-space manager lets later rewrites of a section reuse its space
            f = h5py.File(file, "w", fs_strategy="fsm", fs_persist=True)
        with f:
            yield f


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

    Atomic: the file is built in a temporary file created exclusively in the target's directory
    (starting from a copy of the existing report) and renamed over ``path``. On any exception,
    SIGINT and SIGTERM included, the temporary file is removed and the exception re-raised;
    ``path`` is then as it was (absent, or the old report byte for byte). The read of the old
    report, the write and the rename hold :func:`~landscape_cli.files.directory_lock`.

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
        entry = ANALYSES.get(name)
        if entry is None or not entry.per_checkpoint:
            raise ValueError(f"unknown report section {name!r}; known: {', '.join(SECTIONS)}")
        if not isinstance(result, entry.result):
            raise TypeError(
                f"section {name!r} needs a {entry.result.__name__}, got {type(result).__name__}"
            )
    with directory_lock(path):
        existing = _existing_report_attrs(path)
        root = _root_attrs(existing or {}, sections, config, command_line, objective_info, path)
        with _atomic_update(path, existing is not None) as f:
            for name, result in sections.items():
                group = ANALYSES[name].write(f, result, config)
                set_attrs(group, {"created": root["created"], "command_line": command_line})
            for key in ROOT_ATTRIBUTES:
                set_attrs(f, {key: root[key]})
    return path


def write_track(
    path: str | os.PathLike[str],
    result: TrackResult,
    *,
    config: RunConfig | None,
    command_line: str,
) -> Path:
    """Write a result over several checkpoints (``/track``) into a report of its own or an
    existing one, atomically like :func:`write_report`. A series spans several checkpoints, so
    the root's ``checkpoint_sha256`` is left as it is (empty for a new file)."""
    path = Path(path)
    entry = analysis_of(result)
    if entry.per_checkpoint:
        raise TypeError(f"a {type(result).__name__} is of one checkpoint: use write_report")
    with directory_lock(path):
        existing = _existing_report_attrs(path)
        with _atomic_update(path, existing is not None) as f:
            group = entry.write(f, result, config)
            set_attrs(group, {"created": _utc_now(), "command_line": command_line})
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


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Report:
    """A report read back: root attributes and the results rebuilt as the analyses' dataclasses
    (each registered analysis fills the field its ``report_field`` names).

    ``groups`` lists every top-level group; ``sections`` holds each top-level group's
    attributes (a group's own ``created`` and ``command_line`` among them).
    """

    path: Path
    attrs: dict[str, Any]
    spectrum: SpectrumResult | None = None
    classify: ClassifyResult | None = None
    sharpness: SharpnessResult | None = None
    jacobian: JacobianResult | None = None
    kfac: KFACResult | None = None
    surfaces: dict[str, SurfaceResult] = field(default_factory=dict)  # by name
    track: TrackResult | None = None
    groups: tuple[str, ...] = ()
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_report(path: str | os.PathLike[str], *, vectors: bool = True) -> Report:
    """Read a report written by :func:`write_report`; the stored eigenvectors
    (``/spectrum/lanczos/top_vectors``, ``n × k``) only with ``vectors`` (figures and checks
    never need them).

    Raises:
        InputError: the file is missing, not HDF5, not a landscape report (schema), or a section
            lacks an item its schema requires (the message names the section and the item).
    """
    path = Path(path)
    refuse_special_file(path, str(path))
    if not path.is_file():
        raise InputError(f"{path}: no such report file", hint="write one with `out=FILE.h5`")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path}: not an HDF5 file", hint="give a report written with `out`")
    try:
        with h5py.File(path, "r") as f:
            _check_schema(path, f, "give a report written with `out`")
            results: dict[str, Any] = {}
            for entry in ANALYSES.values():
                try:
                    results[entry.report_field] = entry.read(f, vectors=vectors)
                except MALFORMED as exc:
                    raise _malformed(path, f"section /{entry.group}", exc) from None
            try:
                attrs = read_attrs(f)
            except MALFORMED as exc:
                raise _malformed(path, "the root group", exc) from None
            sections = {}
            for name in f:
                try:
                    if isinstance(f[name], h5py.Group):
                        sections[name] = read_attrs(f[name])
                except MALFORMED as exc:
                    raise _malformed(path, f"section /{name}", exc) from None
            return Report(
                path=path, attrs=attrs, groups=tuple(f.keys()), sections=sections, **results
            )
    except OSError as exc:
        raise _open_error(path, exc) from None
