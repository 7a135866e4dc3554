"""Every registered analysis is complete: JSON, an HDF5 round trip, an HTML section, figures and
check metrics.

:func:`missing_parts` walks :data:`~landscape_cli.analyses.registry.ANALYSES` and names what an
analysis lacks; it is shown to report a planted incomplete analysis. The round trip writes an
example result of each analysis (small real runs on the bundled sample, classify at an analytic
saddle, a synthetic track) into
its group, reads it back and compares every field but those the entry declares not stored:
arrays and floats exactly (NaN equal to NaN), sequences item by item. The comparison is shown
to catch a changed field.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from test_report import saddle_objective

from landscape_cli.analyses import check
from landscape_cli.analyses.registry import ANALYSES, Analysis, analysis_of
from landscape_cli.analyses.settings import (
    ClassifySettings,
    JacobianSettings,
    KFACSettings,
    SharpnessSettings,
    SpectrumSettings,
    SurfaceSettings,
)
from landscape_cli.analyses.track import TrackPoint, TrackResult
from landscape_cli.io.config import resolve_run_config
from landscape_cli.io.report_file import Report
from landscape_cli.problem.loading import build_objective
from landscape_cli.render import html_sections, plots


def spectrum_example(objective: Any) -> Any:
    from landscape_cli.analyses.spectrum import analyze_spectrum

    settings = SpectrumSettings(
        top_k=3,
        bottom_k=2,
        max_iter=30,
        trace_matvecs=12,
        slq_runs=2,
        slq_steps=10,
        grid=300,
        save_eigenvectors=True,  # the top Ritz vectors are stored, the bottom ones are not
    )
    return analyze_spectrum(objective, settings, lr=0.05)


def classify_example(objective: Any) -> Any:
    """At a saddle (an analytic one), so that the escape probe is made and drawn."""
    from landscape_cli.analyses.classify import classify_point

    return classify_point(saddle_objective(), ClassifySettings(max_iter=40, cg_max_iter=20))


def sharpness_example(objective: Any) -> Any:
    from landscape_cli.analyses.sharpness import measure_sharpness

    return measure_sharpness(objective, SharpnessSettings(rho=(0.01, 0.1), samples=4, steps=4))


def surface_example(objective: Any) -> Any:
    from landscape_cli.analyses.surface import analyze_surface

    return analyze_surface(objective, SurfaceSettings(dims=1, kind="eigen", points=5))


def jacobian_example(objective: Any) -> Any:
    from landscape_cli.analyses.jacobian import analyze_jacobian

    return analyze_jacobian(objective, JacobianSettings(samples=4))


def kfac_example(objective: Any) -> Any:
    from landscape_cli.analyses.kfac import analyze_kfac

    return analyze_kfac(objective, KFACSettings(probes=3, max_iter=20, slq_steps=8, grid=40))


def track_example(objective: Any) -> TrackResult:
    """Two checkpoints; the second without a trace or a learning rate (``None`` in the file)."""

    def point(step: int, trace: float | None, lr: float | None) -> TrackPoint:
        return TrackPoint(
            checkpoint=f"run/ckpt_{step}.pt",
            step=step,
            step_source="file name",
            lambda_max=3.5 + step,
            lambda_max_error_bound=1e-6,
            trace=trace,
            trace_stderr=None if trace is None else 0.25,
            loss=0.5 / (1 + step),
            grad_norm=0.125,
            lr=lr,
            lr_times_lambda_max=None if lr is None else lr * (3.5 + step),
            lanczos_matvecs=20,
            hvp_count=80,
            warm_started=step > 0,
            seconds=0.5,
            stability_threshold=None if lr is None else 2.0,
        )

    return TrackResult([point(0, 12.0, 0.1), point(100, None, None)], seed=3, warm_start=True)


#: An example result of each registered analysis, made from the bundled sample's objective.
EXAMPLES: dict[str, Callable[[Any], Any]] = {
    "spectrum": spectrum_example,
    "classify": classify_example,
    "sharpness": sharpness_example,
    "surface": surface_example,
    "jacobian": jacobian_example,
    "kfac": kfac_example,
    "track": track_example,
}


def missing_parts(analyses: Mapping[str, Analysis]) -> list[str]:
    """``"<name>: lacks <part>"`` for every part a registered analysis lacks."""
    report_fields = {f.name for f in dataclasses.fields(Report)}
    tables = {
        "an HTML section (render/html_sections.py SECTIONS)": html_sections.SECTIONS,
        "figures (render/plots.py FIGURES)": plots.FIGURES,
        "check metrics (analyses/check.py RESULT_METRICS)": check.RESULT_METRICS,
        "an example for the HDF5 round trip (tests/test_registry.py EXAMPLES)": EXAMPLES,
    }
    found = []
    for name, entry in analyses.items():
        for method in ("to_dict", "to_hdf5", "from_hdf5"):
            if not callable(getattr(entry.result, method, None)):
                found.append(f"{name}: lacks {method}")
        if entry.report_field not in report_fields:
            found.append(f"{name}: lacks a Report field ({entry.report_field})")
        found.extend(f"{name}: lacks {part}" for part, table in tables.items() if name not in table)
    return found


def differences(a: Any, b: Any, skip: tuple[str, ...] = (), path: str = "") -> list[str]:
    """Where ``b`` differs from ``a`` (dotted paths, list items by index), leaving out the paths
    matching a pattern of ``skip`` (``*`` for any item)."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in skip):
        return []
    where = path or "(result)"
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(b):
            return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
        return [
            line
            for f in dataclasses.fields(a)
            for line in differences(
                getattr(a, f.name), getattr(b, f.name), skip, f"{path}.{f.name}".lstrip(".")
            )
        ]
    if isinstance(a, (np.ndarray, torch.Tensor)) or isinstance(b, (np.ndarray, torch.Tensor)):
        if a is None or b is None:
            return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
        x, y = (np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for v in (a, b))
        nan = x.dtype.kind in "fc" and y.dtype.kind in "fc"
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=nan):
            return [f"{where}: arrays differ"]
        return []
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [line for k in a for line in differences(a[k], b[k], skip, f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)}"]
        return [
            line
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for line in differences(x, y, skip, f"{path}.{i}".lstrip("."))
        ]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def objective():
    return build_objective(resolve_run_config({}))


@pytest.fixture(scope="module")
def round_trips(objective, tmp_path_factory):
    """name -> (example result, the result read back from its group in a file)."""
    path = tmp_path_factory.mktemp("registry") / "r.h5"
    out = {}
    for name, entry in ANALYSES.items():
        result = EXAMPLES[name](objective)
        with h5py.File(path, "a") as f:
            entry.write(f, result)
        with h5py.File(path, "r") as f:
            back = entry.read(f)
        out[name] = (result, back[result.name] if entry.keyed else back)
    return out


def test_every_registered_analysis_is_complete():
    assert missing_parts(ANALYSES) == []


def test_a_planted_incomplete_analysis_is_reported(monkeypatch):
    class FlowResult:
        def to_dict(self) -> dict[str, Any]:
            return {}

    monkeypatch.setitem(ANALYSES, "flow", Analysis("flow", FlowResult, "flow", "flow"))  # type: ignore[arg-type]
    assert missing_parts(ANALYSES) == [
        "flow: lacks to_hdf5",
        "flow: lacks from_hdf5",
        "flow: lacks a Report field (flow)",
        "flow: lacks an HTML section (render/html_sections.py SECTIONS)",
        "flow: lacks figures (render/plots.py FIGURES)",
        "flow: lacks check metrics (analyses/check.py RESULT_METRICS)",
        "flow: lacks an example for the HDF5 round trip (tests/test_registry.py EXAMPLES)",
    ]


def test_each_keyed_table_names_only_registered_analyses():
    for table in (html_sections.SECTIONS, plots.FIGURES, check.RESULT_METRICS, EXAMPLES):
        assert set(table) <= set(ANALYSES)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_round_trip_gives_the_result_back(round_trips, name):
    result, back = round_trips[name]
    assert analysis_of(result) is ANALYSES[name]
    assert type(back) is type(result)
    assert differences(result, back, ANALYSES[name].not_stored) == []


def test_a_changed_field_is_a_difference(round_trips):
    result, back = round_trips["spectrum"]
    lz = dataclasses.replace(back.lanczos, alphas=back.lanczos.alphas + 1e-15)
    changed = dataclasses.replace(back, lanczos=lz, warnings=["extra"])
    assert differences(result, changed, ANALYSES["spectrum"].not_stored) == [
        "lanczos.alphas: arrays differ",
        "warnings: 0 items != 1",
    ]


@pytest.mark.parametrize("name", list(ANALYSES))
def test_the_read_result_renders_and_checks(round_trips, name):
    """The result read back gives its JSON, its HTML section, at least one figure and, where the
    analysis has them, its check metrics."""
    result, back = round_trips[name]
    assert back.to_dict()["command" if name != "surface" else "name"]
    stored = {result.name: back} if ANALYSES[name].keyed else back
    title, render = html_sections.SECTIONS[name]
    assert f'<section id="{name}"><h2>{title}</h2>' in render(stored)
    assert plots.FIGURES[name](stored, None)
    add = check.RESULT_METRICS[name]
    if add is not None:
        metrics: dict[str, Any] = {}
        add(back, metrics)
        assert metrics and all(len(value) == 3 for value in metrics.values())
