"""The analyses whose results a report stores, by name: :data:`ANALYSES`.

Each result class writes and reads its own group (``to_hdf5`` / ``from_hdf5``); an
:class:`Analysis` says where that group lives in the file and what else the file keeps of it, so
that :mod:`landscape_cli.io.report_file` dispatches over :data:`ANALYSES` and names no analysis.
The later layers key their tables by the same names (the HTML sections of
:mod:`landscape_cli.render.html_sections`, the figures of :mod:`landscape_cli.render.plots`, the
metrics of :mod:`landscape_cli.analyses.check`); the tests check those keys against this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import h5py

from ..hdf5 import field_attrs, replace_group, set_attrs
from .classify import ClassifyResult
from .jacobian import JacobianResult
from .kfac import KFACResult
from .sharpness import SharpnessResult
from .spectrum import SpectrumResult
from .surface import SurfaceResult
from .track import TrackResult

if TYPE_CHECKING:
    from .settings import RunConfig


class Result(Protocol):
    """What a registered result class provides: its JSON and its report group."""

    def to_dict(self) -> dict[str, Any]: ...

    def to_hdf5(self, group: h5py.Group) -> None: ...

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> Any: ...


@dataclass(frozen=True)
class Analysis:
    """Where a report keeps the results of one analysis.

    Attributes:
        name: the analysis, as a key of ``write_report``'s sections and of the keyed tables.
        result: the result class.
        group: the HDF5 group at the root of the file.
        report_field: the attribute of ``Report`` that holds what :meth:`read` gives back.
        keyed: several results per report, each in the subgroup ``group/<result.name>``
            (``/surface/<name>``); a result of that name replaces the old one, others stay.
        per_checkpoint: the result is of one checkpoint (it carries a ``RunInfo``), so
            ``write_report`` takes it; a result over several checkpoints (``track``) is written
            with ``write_track``, which leaves the root's checkpoint attributes alone.
        config_settings: the attribute of the run configuration whose settings are stored in
            ``group/settings`` (with ``source = "config"``) because the result does not carry
            its own.
        not_stored: the result's fields that its group does not keep, as dotted paths (``*``
            for every item of a list); :meth:`read` gives everything else back equal.
        vectors: the group may hold ``n``-sized vectors, read only when :meth:`read` is asked
            for them (its result's ``from_hdf5`` takes ``vectors``).
    """

    name: str
    result: type[Result]
    group: str
    report_field: str
    keyed: bool = False
    per_checkpoint: bool = True
    config_settings: str | None = None
    not_stored: tuple[str, ...] = ()
    vectors: bool = False

    def write(
        self, root: h5py.Group, result: Result, config: RunConfig | None = None
    ) -> h5py.Group:
        """Write ``result`` into its group under ``root`` (replacing a group of the same name)
        and return that group; ``config`` is the run configuration, if any."""
        if self.keyed:
            group = replace_group(root.require_group(self.group), result.name)  # type: ignore[attr-defined]
        else:
            group = replace_group(root, self.group)
        result.to_hdf5(group)
        if self.config_settings is not None and config is not None:
            settings = field_attrs(getattr(config, self.config_settings))
            set_attrs(group.create_group("settings"), {**settings, "source": "config"})
        return group

    def read(self, root: h5py.Group, *, vectors: bool = True) -> Any:
        """The stored result (``None`` when absent); for a keyed analysis, the results by name
        (``{}`` when absent). Stored ``n``-sized vectors are read only with ``vectors``."""
        if self.group not in root:
            return {} if self.keyed else None
        group = root[self.group]
        if self.keyed:
            return {name: self.result.from_hdf5(sub) for name, sub in group.items()}
        if self.vectors:
            return self.result.from_hdf5(group, vectors=vectors)  # type: ignore[call-arg]
        return self.result.from_hdf5(group)


#: The registered analyses by name (a report's groups are read in this order).
ANALYSES: dict[str, Analysis] = {
    entry.name: entry
    for entry in (
        Analysis(
            "spectrum",
            SpectrumResult,
            "spectrum",
            "spectrum",
            config_settings="spectrum",
            not_stored=("lanczos.bottom_vectors",),
            vectors=True,
        ),
        Analysis(
            "classify",
            ClassifyResult,
            "classify",
            "classify",
            not_stored=("lanczos.top_vectors", "lanczos.bottom_vectors"),
        ),
        Analysis("sharpness", SharpnessResult, "sharpness", "sharpness"),
        Analysis(
            "surface",
            SurfaceResult,
            "surface",
            "surfaces",
            keyed=True,
            not_stored=("lanczos", "settings"),
        ),
        Analysis("jacobian", JacobianResult, "jacobian", "jacobian"),
        Analysis("kfac", KFACResult, "kfac", "kfac"),
        Analysis(
            "track",
            TrackResult,
            "track",
            "track",
            per_checkpoint=False,
            not_stored=(
                "points.*.step_source",
                "points.*.warm_started",
                "points.*.seconds",
                "points.*.stability_note",
                "points.*.run",
                "notes",
            ),
        ),
    )
}


def analysis_of(result: object) -> Analysis:
    """The registered analysis whose result class ``result`` is an instance of.

    Raises:
        TypeError: no registered analysis has that result class.
    """
    for entry in ANALYSES.values():
        if isinstance(result, entry.result):
            return entry
    raise TypeError(f"{type(result).__name__} is not the result of a registered analysis")
