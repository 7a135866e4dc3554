"""--out on the analysis commands and `landscape plot` on the file alone."""

from __future__ import annotations

import json

import h5py
import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

import landscape_cli.analyses.spectrum
from landscape_cli.cli import app

runner = CliRunner()
FAST = ["--trace-matvecs", "12", "--slq-runs", "2", "--slq-steps", "15", "--grid", "200"]
ROOT_ATTRIBUTES = (
    "schema", "landscape_version", "created", "command_line", "config_yaml", "torch_version",
    "checkpoint_sha256", "num_parameters", "seed", "device", "dtype",
)  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "run.h5"
    for args in (
        ["spectrum", *FAST],
        ["classify", "sample:saddle"],
        ["sharpness", "--rho", "0.01,0.1", "--samples", "4"],
    ):
        # classify on the saddle goes into its own file: a report holds one checkpoint
        target = path if args[0] != "classify" else path.with_name("saddle.h5")
        result = runner.invoke(app, [*args, "--out", str(target), "--json"])
        assert result.exit_code == 0, result.stderr
        json.loads(result.stdout)
    return path


def test_report_has_schema_and_sections(report):
    with h5py.File(report) as handle:
        for key in ROOT_ATTRIBUTES:
            assert key in handle.attrs, key
        assert handle.attrs["schema"] == "landscape-report/1"
        assert set(handle) == {"spectrum", "sharpness"}
        assert (
            handle["spectrum/lanczos/alphas"].shape[0]
            == handle["spectrum/lanczos"].attrs["iterations"]
        )
        assert "batch_size: 256" in handle.attrs["config_yaml"]


def test_plot_redraws_every_figure_from_the_file_alone(report, tmp_path):
    result = runner.invoke(app, ["plot", str(report), "--out-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert sorted(f.rsplit("-", 1)[1] for f in files) == [
        "density.png",
        "ritz.png",
        "sharpness.png",
    ]
    for file in files:
        assert matplotlib.image.imread(file)[..., :3].std() > 0.05
    saddle = runner.invoke(
        app, ["plot", str(report.with_name("saddle.h5")), "--out-dir", str(tmp_path), "--json"]
    )
    assert [f.rsplit("-", 1)[1] for f in json.loads(saddle.stdout)["files"]] == ["escape.png"]


def test_density_rebroadened_without_hvps(report, tmp_path):
    from landscape_cli.io.report_file import read_report

    loaded = read_report(report)
    wide = loaded.spectrum.slq.density(sigma=1.0)
    narrow = loaded.spectrum.slq.density(sigma=0.05)
    assert wide.values.max() < narrow.values.max()  # wider kernel, lower peak
    result = runner.invoke(
        app, ["plot", str(report), "--sigma", "1.0", "--format", "svg", "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 0 and (tmp_path / "run-density.svg").exists()


def test_interrupted_run_leaves_no_file_and_keeps_an_existing_report(report, tmp_path, monkeypatch):
    before = report.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(landscape_cli.analyses.spectrum, "analyze_spectrum", interrupted)
    fresh = tmp_path / "fresh.h5"
    for target in (fresh, report):
        result = runner.invoke(app, ["spectrum", "--out", str(target)])
        assert result.exit_code == 130
    assert not fresh.exists()
    assert report.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == []


def test_plot_errors(tmp_path):
    missing = runner.invoke(app, ["plot", str(tmp_path / "nope.h5")])
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1
    bad = runner.invoke(app, ["plot", str(tmp_path / "nope.h5"), "--format", "gif"])
    assert bad.exit_code == 2 and "--format" in bad.stderr


def test_surfaces_go_into_the_report_and_are_plotted(tmp_path):
    path = tmp_path / "s.h5"
    for args in (
        ["--points", "5"],
        ["--dims", "1", "--kind", "eigen", "--points", "5", "--dtype", "float64"],
    ):
        result = runner.invoke(app, ["surface", *args, "--out", str(path), "--json"])
        assert result.exit_code == 0, result.stderr
    from landscape_cli.io.report_file import read_report

    loaded = read_report(path)
    assert set(loaded.surfaces) == {"random-2d", "eigen-1d"}  # the second write kept the first
    eigen = loaded.surfaces["eigen-1d"]
    assert eigen.losses.shape == (5,) and eigen.quadratic_model.shape == (5,)
    assert loaded.surfaces["random-2d"].losses.shape == (5, 5)
    with h5py.File(path) as handle:  # the grid is a dimension scale of the loss
        assert handle["surface/random-2d/loss"].dims[1][0].name.endswith("/x")
    plotted = runner.invoke(app, ["plot", str(path), "--json"])
    names = sorted(f.rsplit("/", 1)[1] for f in json.loads(plotted.stdout)["files"])
    assert names == [
        "s-surface-eigen-1d.png",
        "s-surface-random-2d.png",
        "s-surface3d-random-2d.png",
    ]


def test_figures_and_html_of_a_report_are_written_by_one_function(report, tmp_path):
    from landscape_cli.errors import InputError
    from landscape_cli.io.report_file import read_report
    from landscape_cli.render.files import write_figures_and_html

    loaded = read_report(report)
    files = write_figures_and_html(loaded, tmp_path, "x", "svg", sigma=0.5)
    assert sorted(f.name for f in files[:-1]) == ["x-density.svg", "x-ritz.svg", "x-sharpness.svg"]
    assert files[-1] == tmp_path / "x.html"  # the summary comes after the figures
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)
    (tmp_path / "sub").mkdir()
    only_html = write_figures_and_html(loaded, tmp_path / "sub", "y", plots=False)
    assert only_html == [tmp_path / "sub" / "y.html"]
    assert write_figures_and_html(loaded, tmp_path, "z", html=False, plots=False) == []
    with pytest.raises(InputError, match="`fmt=gif`"):
        write_figures_and_html(loaded, tmp_path, "x", "gif")


def test_report_command_writes_every_section_and_figure(tmp_path, monkeypatch):
    import landscape_cli.io.report_file

    reads = []
    read_report = landscape_cli.io.report_file.read_report
    monkeypatch.setattr(
        landscape_cli.io.report_file,
        "read_report",
        lambda p, **options: reads.append(p) or read_report(p, **options),
    )
    path = tmp_path / "R.h5"
    config = tmp_path.parent / "fast.yaml"  # outside tmp_path, whose listing is checked below
    config.write_text(
        "spectrum: {trace_matvecs: 12, slq_runs: 2, slq_steps: 15, grid: 200}\n"
        "sharpness: {rho: [0.01, 0.1], samples: 4}\nsurface: {points: 5}\n"
    )
    args = ["report", "--out", str(path), "--json", "--config", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["classify"]["classification"] == "minimum"
    assert reads == [path]  # the written file is read back once, for the figures and the HTML
    loaded = read_report(path)
    assert (
        loaded.spectrum is not None and loaded.classify is not None and loaded.sharpness is not None
    )
    assert set(loaded.surfaces) == {"random-2d"}
    # the shared objective gives the same numbers as the commands run alone
    alone = json.loads(runner.invoke(app, ["spectrum", "--json", *FAST]).stdout)
    assert payload["spectrum"]["top_eigenvalues"] == alone["top_eigenvalues"]
    assert payload["spectrum"]["trace"] == alone["trace"]
    # classify and sharpness reuse the spectrum's Lanczos run (and SLQ): same answers, fewer HVPs
    lone_classify = json.loads(runner.invoke(app, ["classify", "--json"]).stdout)
    assert payload["classify"]["lambda_max"] == pytest.approx(lone_classify["lambda_max"], rel=1e-4)
    assert payload["classify"]["classification"] == lone_classify["classification"]
    assert payload["classify"]["hvp_count"] < lone_classify["hvp_count"]
    lone_sharpness = json.loads(
        runner.invoke(app, ["sharpness", "--json", "--rho", "0.01,0.1", "--samples", "4"]).stdout
    )
    # only the λ_max run is shared: the trust-region start spends its own products either way
    lone_lanczos = lone_sharpness["lanczos"]["matvecs"]
    assert 0 < lone_lanczos < lone_sharpness["hvp_count"]
    assert payload["sharpness"]["hvp_count"] == lone_sharpness["hvp_count"] - lone_lanczos
    assert payload["sharpness"]["lambda_max"] == pytest.approx(
        lone_sharpness["lambda_max"], rel=1e-4
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            "R.h5",
            "R.html",
            "R-density.png",
            "R-ritz.png",
            "R-sharpness.png",
            "R-surface-random-2d.png",
            "R-surface3d-random-2d.png",
        ]
    )


def test_html_summary_beside_the_report(report, tmp_path):
    result = runner.invoke(
        app, ["plot", str(report), "--html", "--out-dir", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    html_files = [f for f in json.loads(result.stdout)["files"] if f.endswith(".html")]
    assert len(html_files) == 1
    text = open(html_files[0], encoding="utf-8").read()
    assert text.count("data:image/png;base64,") == 3 and "http" not in text


def test_saved_eigenvectors_are_eigenvectors(tmp_path):
    import torch

    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.io.report_file import read_report
    from landscape_cli.problem.loading import build_objective

    path = tmp_path / "v.h5"
    args = [
        "spectrum",
        "--save-eigenvectors",
        "--top-k",
        "3",
        "--dtype",
        "float64",
        "--out",
        str(path),
        "--json",
    ]
    result = runner.invoke(app, [*args, "--no-density", "--no-trace"])
    assert result.exit_code == 0, result.stderr
    lz = read_report(path).spectrum.lanczos
    vectors = lz.top_vectors
    assert vectors.shape == (1476, 3)
    objective = build_objective(resolve_run_config({"dtype": "float64"}))
    for j, index in enumerate(lz.top_indices(3)):
        v = vectors[:, j]
        residual = torch.linalg.vector_norm(objective.hvp(v) - lz.ritz_values[index] * v)
        assert float(residual) <= lz.ritz_residuals[index] * 1.01 + 1e-10


WIDE_MLP = """\
from torch import nn


def build():
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(),
                         nn.Linear(256, 10))
"""


def _datasets(path):
    found = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, obj: found.update({name: obj}) if isinstance(obj, h5py.Dataset) else None
        )
        return {name: (d.size, d.dtype) for name, d in found.items()}


@pytest.mark.parametrize("save_eigenvectors", [False, True])
def test_report_stores_each_vector_once_and_only_when_asked(
    tmp_path, monkeypatch, save_eigenvectors
):
    import torch

    from landscape_cli.io.report_file import read_report

    (tmp_path / "wide.py").write_text(WIDE_MLP)
    generator = torch.Generator().manual_seed(0)
    data = tmp_path / "data.pt"
    torch.save({"x": torch.randn(16, 784, generator=generator), "y": torch.arange(16) % 10}, data)
    config = tmp_path / "fast.yaml"
    config.write_text(
        "spectrum: {trace_matvecs: 8, slq_runs: 1, slq_steps: 10, grid: 50, top_k: 3, "
        f"save_eigenvectors: {str(save_eigenvectors).lower()}}}\n"
        "sharpness: {rho: [0.01], samples: 2, steps: 2}\nsurface: {points: 3}\n"
    )
    path = tmp_path / "R.h5"
    args = ["report", "--model", str(tmp_path / "wide.py") + ":build", "--data", str(data)]
    args += ["--config", str(config), "--out", str(path), "--no-plots", "--no-html", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    n = json.loads(result.stdout)["spectrum"]["num_parameters"]
    assert n > 1_000_000
    big = {name: v for name, v in _datasets(path).items() if v[0] >= n}
    size = path.stat().st_size
    if save_eigenvectors:  # one copy, in the dtype of the analysis
        assert big == {"spectrum/lanczos/top_vectors": (3 * n, np.dtype("float32"))}
        assert size < 3 * n * 4 + 1_000_000  # (gzip takes ~10 % off)
        vectors = read_report(path).spectrum.lanczos.top_vectors
        assert tuple(vectors.shape) == (n, 3)
        assert read_report(path, vectors=False).spectrum.lanczos.top_vectors is None
        # plot draws without reading them
        import landscape_cli.io.report_file

        loaded = []

        def recording(*args, **kwargs):
            loaded.append(read_report(*args, **kwargs))
            return loaded[-1]

        monkeypatch.setattr(landscape_cli.io.report_file, "read_report", recording)
        drawn = runner.invoke(app, ["plot", str(path), "--json"])
        assert drawn.exit_code == 0, drawn.stderr
        assert [r.spectrum.lanczos.top_vectors for r in loaded] == [None]
    else:  # no n-sized array at all: the report's size does not grow with the model
        assert big == {}
        assert size < 1_000_000
