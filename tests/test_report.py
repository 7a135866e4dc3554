"""HDF5 reports: round trips, root attributes, adding sections, atomicity, refusals, rebroadening.

Round trips compare ``to_dict()`` of the result read back with the original's exactly: every
number is stored as float64/int64, so nothing may change (tolerance 0). The rebroadened density is
checked against the Gaussian mixture written out here in numpy (same float64 formula, summed in a
different order: ``rtol = 1e-12``) and its trapezoid integral against 1 (``1e-12``: the values are
normalised by that very integral, so only rounding remains).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from landscape_cli import __version__
from landscape_cli.analyses.classify import ClassifySettings, classify_point
from landscape_cli.analyses.estimator_groups import LANCZOS_ARRAYS
from landscape_cli.analyses.sharpness import SharpnessSettings, measure_sharpness
from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.errors import InputError
from landscape_cli.estimators.density import rebroaden
from landscape_cli.hdf5 import read_attrs, read_list, write_arrays
from landscape_cli.io import report_file as rep
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.data import no_data
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.objective import Objective

SMALL_SPECTRUM = SpectrumSettings(
    top_k=3, bottom_k=2, max_iter=30, trace_matvecs=12, slq_runs=3, slq_steps=10, grid=1500
)


class Point(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))


def saddle_objective() -> Objective:
    """``½ wᵀAw`` at ``w = 0`` with ``A = diag(3, 1, 1, −2)``: a saddle with zero gradient.

    Three distinct eigenvalues in ``n = 4``: every SLQ run breaks down after 3 steps, so its last
    column is NaN padding; the zero gradient makes the one-step sharpness ``None``.
    """
    A = torch.diag(torch.tensor([3.0, 1.0, 1.0, -2.0], dtype=torch.float64))
    return Objective(Point(4), lambda m, b: 0.5 * m.w @ A @ m.w, no_data(), dtype=torch.float64)


@pytest.fixture(scope="module")
def sample():
    config = resolve_run_config({})
    obj = build_objective(config)
    spectrum = analyze_spectrum(obj, SMALL_SPECTRUM, lr=0.05)
    classify = classify_point(obj, ClassifySettings(max_iter=40, cg_max_iter=20))
    sharpness = measure_sharpness(obj, SharpnessSettings(rho=(0.01, 0.1), samples=4, steps=4))
    info = rep.objective_info(obj, config.seed)
    return config, obj, {"spectrum": spectrum, "classify": classify, "sharpness": sharpness}, info


@pytest.fixture(scope="module")
def saddle():
    obj = saddle_objective()
    spectrum = analyze_spectrum(
        obj, SpectrumSettings(top_k=2, bottom_k=1, slq_runs=3, slq_steps=4, exact=True)
    )
    classify = classify_point(obj)
    sharpness = measure_sharpness(obj, SharpnessSettings(rho=(0.1, 0.5), samples=4, steps=3))
    return obj, {"spectrum": spectrum, "classify": classify, "sharpness": sharpness}


def write(path, sections, info, config=None, command_line="landscape report x"):
    return rep.write_report(
        path, sections, config=config, command_line=command_line, objective_info=info
    )


def snapshot(path: Path, skip_root: bool = False) -> dict:
    """Every group's and dataset's attributes and data, keyed by HDF5 path (references dropped)."""
    out: dict = {}

    def visit(name, obj):
        attrs = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in obj.attrs.items()
            if k not in ("DIMENSION_LIST", "REFERENCE_LIST")
        }
        data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
        out[name] = (repr(attrs), data)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        if not skip_root:
            out["/"] = dict(f.attrs)
    return out


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("section", ["spectrum", "classify", "sharpness"])
def test_round_trip_sample(tmp_path, sample, section):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", {section: sections[section]}, info, config)
    back = getattr(rep.read_report(path), section)
    original = sections[section]
    assert type(back) is type(original)
    assert back.to_dict() == original.to_dict()
    lz, lz_back = original.lanczos, back.lanczos
    for name in LANCZOS_ARRAYS:
        np.testing.assert_array_equal(getattr(lz_back, name), getattr(lz, name))


def test_round_trip_raw_material(tmp_path, sample):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", sections, info, config)
    report = rep.read_report(path)
    sp, back = sections["spectrum"], report.spectrum
    np.testing.assert_array_equal(back.trace_estimate.samples, sp.trace_estimate.samples)
    np.testing.assert_array_equal(back.slq.nodes, sp.slq.nodes)
    np.testing.assert_array_equal(back.slq.weights, sp.slq.weights)
    np.testing.assert_array_equal(back.density_estimate.grid, sp.density_estimate.grid)
    np.testing.assert_array_equal(back.density_estimate.values, sp.density_estimate.values)
    assert back.stability == sp.stability
    sh = sections["sharpness"]
    np.testing.assert_array_equal(report.sharpness.average_samples, sh.average_samples)
    assert report.sharpness.settings == sh.settings
    assert report.classify.settings == sections["classify"].settings
    assert report.classify.newton == sections["classify"].newton
    assert set(report.groups) == {"spectrum", "classify", "sharpness"}
    with h5py.File(path, "r") as f:  # the grid is a dimension scale of the density values
        values = f["spectrum/density/values"]
        assert values.dims[0][0].name == "/spectrum/density/grid"
        assert f["sharpness/worst_case"].dims[0][0].name == "/sharpness/rho"
        assert f["spectrum/trace"].attrs["method"] == sp.trace_estimate.method
        assert f["classify"].attrs["classification"] == sections["classify"].classification
        # the density's first run is the extremes' Lanczos run (--share-lanczos, the default):
        # the file says so and gives each run's length (the Lanczos run's is its iterations)
        slq = f["spectrum/slq"]
        assert slq.attrs["shared_runs"] == back.slq.shared_runs == 1
        assert slq.attrs["runs"] == 1 + SMALL_SPECTRUM.slq_runs and slq.attrs["matvecs"] == 30
        np.testing.assert_array_equal(
            slq["run_steps"][()],
            [sp.lanczos.steps] + [SMALL_SPECTRUM.slq_steps] * SMALL_SPECTRUM.slq_runs,
        )


def test_round_trip_saddle_with_none_nan_padding_and_escape(tmp_path, saddle):
    obj, sections = saddle
    path = write(tmp_path / "r.h5", sections, rep.objective_info(obj, 0))
    report = rep.read_report(path)
    for name, original in sections.items():
        assert getattr(report, name).to_dict() == original.to_dict(), name
    # SLQ padding: NaN nodes survive (runs break down after 3 of 4 steps)
    nodes = sections["spectrum"].slq.nodes
    assert np.isnan(nodes[:, -1]).all() and np.isfinite(nodes[:, :3]).all()
    np.testing.assert_array_equal(report.spectrum.slq.nodes, nodes)
    # exact eigenvalues against numpy
    np.testing.assert_allclose(report.spectrum.exact.eigenvalues, [-2.0, 1.0, 1.0, 3.0], atol=1e-12)
    # escape probe arrays
    escape, escape_back = sections["classify"].escape, report.classify.escape
    assert escape is not None
    for name in ("steps", "loss_plus", "loss_minus", "model_plus", "model_minus"):
        np.testing.assert_array_equal(getattr(escape_back, name), getattr(escape, name))
    # None in a sharpness curve: NaN in the dataset, listed in attributes, None when read back
    sh = sections["sharpness"]
    assert sh.one_step == [None, None]
    assert report.sharpness.one_step == [None, None]
    with h5py.File(path, "r") as f:
        g = f["sharpness"]
        assert np.isnan(g["one_step"][()]).all()
        assert list(g["one_step"].attrs["none_indices"]) == [0, 1]
        assert "one_step" in list(g.attrs["none_datasets"])
        assert "m" in list(g.attrs["none_attributes"])
        assert f.attrs["checkpoint_sha256"] == ""  # analytic objective: no checkpoint file
        assert "checkpoint" in list(f["spectrum"].attrs["none_attributes"])


def test_root_attributes(tmp_path, sample):
    config, obj, sections, info = sample
    path = write(tmp_path / "r.h5", sections, info, config, command_line="landscape report a b")
    attrs = rep.read_report(path).attrs
    assert set(attrs) == set(rep.ROOT_ATTRIBUTES)
    assert attrs["schema"] == rep.SCHEMA == "landscape-report/1"
    assert attrs["landscape_version"] == __version__
    assert attrs["torch_version"] == torch.__version__
    assert attrs["command_line"] == "landscape report a b"
    assert attrs["config_yaml"] == config.to_yaml()
    assert (
        attrs["checkpoint_sha256"] == obj.checkpoint.sha256
        and len(attrs["checkpoint_sha256"]) == 64
    )
    assert attrs["num_parameters"] == obj.num_parameters and type(attrs["num_parameters"]) is int
    assert attrs["seed"] == config.seed and type(attrs["seed"]) is int
    assert (attrs["device"], attrs["dtype"]) == ("cpu", "float32")
    from datetime import datetime

    created = datetime.fromisoformat(attrs["created"].replace("Z", "+00:00"))
    assert created.utcoffset().total_seconds() == 0
    with h5py.File(path, "r") as f:  # stored as HDF5 strings and integers, not pickles
        assert isinstance(f.attrs["num_parameters"], np.int64)
        assert isinstance(f.attrs["schema"], str)


def test_unknown_objective_info_key_and_section(tmp_path, sample):
    config, _, sections, info = sample
    with pytest.raises(ValueError, match="unknown keys"):
        write(tmp_path / "r.h5", sections, {**info, "colour": "red"}, config)
    with pytest.raises(ValueError, match="unknown report section"):
        write(tmp_path / "r.h5", {"spectra": sections["spectrum"]}, info, config)
    with pytest.raises(TypeError, match="SpectrumResult"):
        write(tmp_path / "r.h5", {"spectrum": sections["classify"]}, info, config)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- adding sections


def test_adding_a_section_keeps_the_others(tmp_path, sample):
    config, _, sections, info = sample
    path = tmp_path / "r.h5"
    write(path, {"spectrum": sections["spectrum"], "classify": sections["classify"]}, info, config)
    before = snapshot(path)
    write(path, {"sharpness": sections["sharpness"]}, info, config, command_line="second")
    after = snapshot(path)
    kept = [k for k in before if k != "/"]
    assert kept and all(after[k] == before[k] for k in kept)  # other groups unchanged
    assert {k.split("/")[0] for k in after if k != "/"} == {"spectrum", "classify", "sharpness"}
    root_before, root_after = before["/"], after["/"]
    assert root_after["command_line"] == "second"
    changed = {k for k in root_before if root_before[k] != root_after[k]}
    assert changed <= {"command_line", "created"}
    report = rep.read_report(path)
    for name, original in sections.items():
        assert getattr(report, name).to_dict() == original.to_dict()


def test_rewriting_a_section_replaces_only_it(tmp_path, sample):
    config, _, sections, info = sample
    path = tmp_path / "r.h5"
    write(path, sections, info, config)
    before = snapshot(path)
    other = analyze_spectrum(build_objective(config), SMALL_SPECTRUM, seed=7)
    write(path, {"spectrum": other}, info, config)
    after = snapshot(path)
    for key in before:
        if key.startswith(("classify", "sharpness")):
            assert after[key] == before[key], key
    assert rep.read_report(path).spectrum.to_dict() == other.to_dict()
    assert rep.read_report(path).spectrum.info.seed == 7


def test_other_checkpoint_is_refused(tmp_path, sample):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", {"spectrum": sections["spectrum"]}, info, config)
    before = path.read_bytes()
    bad = {**info, "checkpoint_sha256": "0" * 64}
    with pytest.raises(InputError, match="checkpoint_sha256"):
        write(path, {"sharpness": sections["sharpness"]}, bad, config)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------- atomicity


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def failing_after(monkeypatch, target, attr, exc, calls_before_failure=0, when=None):
    """Make ``target.attr`` raise ``exc`` after ``calls_before_failure`` calls (or when
    ``when(*args)`` is true); return the call counter."""
    original = getattr(target, attr)
    count = {"n": 0}

    def boom(*args, **kwargs):
        count["n"] += 1
        hit = when(*args) if when is not None else count["n"] > calls_before_failure
        if hit:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attr, boom)
    return count


def fail_somewhere(monkeypatch, where, exc):
    if where == "groups":  # in the middle of writing the groups
        return failing_after(monkeypatch, h5py.Group, "create_group", exc, 3)
    if where == "replace":  # the file is complete, the rename fails
        return failing_after(monkeypatch, os, "replace", exc)
    # after every group, while writing the root attributes
    return failing_after(
        monkeypatch, rep, "set_attrs", exc, when=lambda obj, attrs: "schema" in attrs
    )


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["groups", "replace", "root"])
def test_failure_on_a_new_file_leaves_nothing(tmp_path, monkeypatch, sample, exc, where):
    config, _, sections, info = sample
    path = tmp_path / "new.h5"
    count = fail_somewhere(monkeypatch, where, exc)
    with pytest.raises(type(exc)):
        write(path, sections, info, config)
    monkeypatch.undo()
    assert count["n"] > 0
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["groups", "replace", "root"])
def test_failure_leaves_an_existing_report_byte_identical(
    tmp_path, monkeypatch, sample, exc, where
):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", {"spectrum": sections["spectrum"]}, info, config)
    before = path.read_bytes()
    count = fail_somewhere(monkeypatch, where, exc)
    with pytest.raises(type(exc)):
        write(path, {"classify": sections["classify"], "spectrum": sections["spectrum"]}, info)
    monkeypatch.undo()
    assert count["n"] > 0
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert rep.read_report(path).spectrum.to_dict() == sections["spectrum"].to_dict()


# ---------------------------------------------------------------------------- refusals


def test_non_report_hdf5_is_refused_and_untouched(tmp_path, sample):
    config, _, sections, info = sample
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(10.0))
    before = path.read_bytes()
    with pytest.raises(InputError, match="not a landscape report") as err:
        write(path, {"spectrum": sections["spectrum"]}, info, config)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(InputError, match="not a landscape report"):
        rep.read_report(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema"] = "landscape-report/99"
    with pytest.raises(InputError, match="landscape-report/99"):
        rep.read_report(path)


def test_non_hdf5_file_is_refused(tmp_path, sample):
    config, _, sections, info = sample
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5\n")
    with pytest.raises(InputError, match="not an HDF5 file"):
        write(path, {"spectrum": sections["spectrum"]}, info, config)
    assert path.read_text() == "not hdf5\n"
    with pytest.raises(InputError, match="not an HDF5 file"):
        rep.read_report(path)
    with pytest.raises(InputError, match="no such report"):
        rep.read_report(tmp_path / "missing.h5")
    with pytest.raises(InputError, match="does not exist"):
        write(tmp_path / "no" / "dir.h5", {"spectrum": sections["spectrum"]}, info, config)


def test_incomplete_section_is_an_input_error(tmp_path, sample):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", {"classify": sections["classify"]}, info, config)
    with h5py.File(path, "a") as f:
        del f["classify"].attrs["lambda_max"]
    with pytest.raises(InputError, match="/classify"):
        rep.read_report(path)


# ---------------------------------------------------------------------------- storage


def test_large_datasets_are_compressed(tmp_path, sample):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", sections, info, config)
    with h5py.File(path, "r") as f:
        values = f["spectrum/density/values"]  # 1500 points > 1024
        assert values.compression == "gzip" and values.shuffle
        assert f["spectrum/lanczos/alphas"].compression is None  # small: contiguous
        group = write_arrays(
            h5py.File(tmp_path / "x.h5", "w"), "surface/line", {"loss": np.zeros(5000)}
        )
        assert group["loss"].compression == "gzip" and group["loss"].shuffle
        group.file.close()
    # zeros compress: the file is far smaller than 5000 float64
    assert (tmp_path / "x.h5").stat().st_size < 5000 * 8 / 2


def test_write_arrays_stores_scales_none_and_attributes(tmp_path):
    """The helper the sections' subgroups are written with: datasets, scales, None, attrs."""
    path = tmp_path / "s.h5"
    alpha, beta = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
    loss = np.add.outer(alpha**2, beta**2)
    with h5py.File(path, "w") as f:
        write_arrays(
            f.require_group("surface"),
            "random-2d",
            {"alpha": alpha, "beta": beta, "loss": loss, "extra": [1.0, None, 3.0]},
            {"kind": "2d", "filter_normalised": True, "seed": 3, "note": None},
            dims={"loss": ("alpha", "beta")},
        )
    with h5py.File(path, "r") as f:
        g = f["surface/random-2d"]
        np.testing.assert_array_equal(g["loss"][()], loss)
        assert g["loss"].dims[1][0].name == "/surface/random-2d/beta"
        assert read_attrs(g) == {
            "kind": "2d",
            "filter_normalised": True,
            "seed": 3,
            "note": None,
            "none_datasets": ["extra"],
        }
        assert read_list(g, "extra") == [1.0, None, 3.0]


# ---------------------------------------------------------------------------- rebroadening


def test_rebroaden_from_the_report(tmp_path, sample):
    config, _, sections, info = sample
    path = write(tmp_path / "r.h5", sections, info, config)
    report = rep.read_report(path)
    spectrum = sections["spectrum"]
    sigma = 3.0 * spectrum.density_estimate.sigma
    dens = rebroaden(report.spectrum.slq, sigma, grid_points=700)
    assert dens.sigma == sigma and dens.grid.shape == (700,)
    integral = np.sum((dens.values[1:] + dens.values[:-1]) * np.diff(dens.grid)) / 2
    assert abs(integral - 1.0) < 1e-12
    reference = spectrum.slq.density(sigma=sigma, grid=700)
    np.testing.assert_allclose(dens.grid, reference.grid, rtol=0, atol=0)
    np.testing.assert_allclose(dens.values, reference.values, rtol=1e-15, atol=0)
    # independently: the Gaussian mixture (1/R) Σ_r Σ_i τ² N(t; θ, σ²), normalised on the grid
    nodes, weights = spectrum.slq.nodes, spectrum.slq.weights
    keep = np.isfinite(nodes)
    theta, tau2 = nodes[keep], weights[keep] / nodes.shape[0]
    lo, hi = theta.min() - 5 * sigma, theta.max() + 5 * sigma
    grid = np.linspace(lo, hi, 700)
    # each grid value is the kernel averaged over the point's cell (midpoints, half cells at ends)
    edges = np.concatenate([grid[:1], (grid[1:] + grid[:-1]) / 2, grid[-1:]])
    cdf = scipy.stats.norm.cdf((edges[None, :] - theta[:, None]) / sigma)
    mix = (tau2[:, None] * np.diff(cdf, axis=1)).sum(0) / np.diff(edges)
    mix /= np.sum((mix[1:] + mix[:-1]) * np.diff(grid)) / 2
    np.testing.assert_allclose(dens.grid, grid, rtol=1e-15)
    np.testing.assert_allclose(dens.values, mix, rtol=1e-12, atol=1e-12 * mix.max())
    # the stored density itself is reproduced with the stored sigma and grid size
    same = rebroaden(report.spectrum.slq, spectrum.density_estimate.sigma, 1500)
    np.testing.assert_allclose(same.values, spectrum.density_estimate.values, rtol=1e-15)


def test_rebroaden_without_density_is_an_input_error(tmp_path, sample):
    config, obj, _, info = sample
    no_density = analyze_spectrum(
        obj, SpectrumSettings(top_k=1, bottom_k=0, max_iter=10, trace=False, density=False)
    )
    path = write(tmp_path / "r.h5", {"spectrum": no_density}, info, config)
    report = rep.read_report(path)
    assert report.spectrum.to_dict() == no_density.to_dict()
    with pytest.raises(InputError, match="SLQ"):
        rebroaden(report.spectrum.slq, 0.1)
