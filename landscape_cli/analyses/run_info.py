"""Frozen result dataclasses with ``to_dict()`` giving the JSON of the interface guide.

Numbers in ``to_dict()`` are plain Python floats and ints; a value that could not be computed is
``None`` and its reason is in ``"notes"``. The raw material (Lanczos coefficients, trace samples,
SLQ nodes and weights) stays on the dataclass for reports and plots. Each result writes its report
group with ``to_hdf5(group)`` and reads it back with ``from_hdf5(group)``; every group carries the
:class:`RunInfo` as attributes and its notes in the subgroup ``notes``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import h5py
import numpy as np

from ..hdf5 import field_attrs, from_field_attrs, read_attrs, set_attrs

T = TypeVar("T")


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
    #: what was done to the model or its checkpoint so it could be analysed, by topic (attention
    #: backend, weight dtype, key prefix): merged into every result's ``"notes"``
    problem_notes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_objective(
        cls, objective: Any, command: str, seed: int, hvp_count: int, seconds: float
    ) -> RunInfo:
        """The :class:`RunInfo` of ``command`` run on an :class:`~landscape_cli.problem.objective.Objective`."""
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
            problem_notes=dict(getattr(objective, "notes", {})),
        )

    @classmethod
    def from_report(cls, report: Any, command: str, seconds: float) -> RunInfo:
        """The :class:`RunInfo` of ``command`` run on a report file (a
        :class:`~landscape_cli.io.report_file.Report`): its root attributes, and the loss, gradient
        norm and samples of the first section that stores them; ``hvp_count`` 0, since a report is
        read and nothing is computed."""
        sections = (report.spectrum, report.classify, report.sharpness, report.jacobian)
        stored = next((r.info for r in sections if r is not None), None)
        attrs = report.attrs
        return cls(
            command=command,
            num_parameters=int(attrs.get("num_parameters", 0)),
            loss=None if stored is None else stored.loss,  # type: ignore[arg-type]
            grad_norm=None if stored is None else stored.grad_norm,  # type: ignore[arg-type]
            hvp_count=0,
            seconds=seconds,
            seed=int(attrs.get("seed", 0)),
            num_samples=None if stored is None else stored.num_samples,  # type: ignore[arg-type]
            hvp_mode=None if stored is None else stored.hvp_mode,  # type: ignore[arg-type]
            device=str(attrs.get("device", "")),
            dtype=str(attrs.get("dtype", "")),
            checkpoint=None if stored is None else stored.checkpoint,
            checkpoint_sha256=str(attrs.get("checkpoint_sha256", "")) or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The keys every command's JSON object begins with (docs/json.md)."""
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
            **({"notes": dict(self.problem_notes)} if self.problem_notes else {}),
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """Every field as an attribute of ``group`` (the result's own group); the problem notes
        in the subgroup ``problem_notes``."""
        attrs = field_attrs(self)
        notes = attrs.pop("problem_notes")
        set_attrs(group, attrs)
        if notes:
            set_attrs(group.create_group("problem_notes"), dict(notes))

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> RunInfo:
        """The run info among the attributes of ``group`` (a field added after the report was
        written takes its default)."""
        attrs = {k: v for k, v in read_attrs(group).items() if k != "problem_notes"}
        info = from_field_attrs(cls, attrs)
        if "problem_notes" not in group:
            return info
        notes = {k: str(v) for k, v in read_attrs(group["problem_notes"]).items()}
        return dataclasses.replace(info, problem_notes=notes)


def merge_notes(out: dict[str, Any], notes: Mapping[str, str]) -> dict[str, Any]:
    """``out`` (a result's JSON, begun with :meth:`RunInfo.to_dict`) with ``notes`` added to
    the problem notes already under ``"notes"``; no ``"notes"`` key when both are empty."""
    merged = {**out.get("notes", {}), **notes}
    if merged:
        out["notes"] = merged
    return out


def settings_to_hdf5(group: h5py.Group, settings: Any) -> None:
    """The subgroup ``settings`` of a result's group: every field of the settings dataclass."""
    set_attrs(group.create_group("settings"), field_attrs(settings))


def settings_from_hdf5(group: h5py.Group, cls: type[T]) -> T:
    """The settings ``cls`` of a result's group (a field added after the report was written
    takes its default)."""
    return from_field_attrs(cls, read_attrs(group["settings"]))


def notes_to_hdf5(group: h5py.Group, notes: Mapping[str, str]) -> None:
    """The subgroup ``notes`` of a result's group: one attribute per note."""
    set_attrs(group.create_group("notes"), dict(notes))


def notes_from_hdf5(group: h5py.Group) -> dict[str, str]:
    """The notes of a result's group (none when it has no ``notes`` subgroup)."""
    return {k: str(v) for k, v in read_attrs(group["notes"]).items()} if "notes" in group else {}
