"""`landscape track` over a short generated training run (sample_models.run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from landscape_cli.sample_models.run import training_run
from typer.testing import CliRunner

from landscape_cli.analyses.track import step_from_name
from landscape_cli.cli import app

runner = CliRunner()
MLP = ["--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    training_run(directory, checkpoints=5)
    return directory


def test_jsonl_streams_one_line_per_checkpoint_in_step_order(run_dir, tmp_path):
    out = tmp_path / "track.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "landscape_cli", "track", str(run_dir / "*.pt"), *MLP, "--jsonl", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [p["step"] for p in lines] == [40, 80, 120, 160, 200]
    assert all(p["step_source"] == "checkpoint:step" for p in lines)
    assert all(p["lr"] == 0.05 for p in lines)  # read from each checkpoint's optimizer state
    with h5py.File(out) as handle:
        assert list(handle["track/step"][()]) == [40, 80, 120, 160, 200]
        assert handle["track/lambda_max"].dims[0][0].name.endswith("/step")
    plotted = runner.invoke(app, ["plot", str(out), "--out-dir", str(tmp_path), "--json"])
    assert [f.rsplit("-", 1)[1] for f in json.loads(plotted.stdout)["files"]] == ["track.png"]


def test_warm_start_costs_fewer_hvps_for_the_same_numbers(run_dir):
    def series(mode):
        result = runner.invoke(
            app, ["track", "--from-dir", str(run_dir), *MLP, mode, "--no-trace", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["points"]

    warm, cold = series("--warm-start"), series("--cold-start")
    for w, c in zip(warm, cold, strict=True):
        assert w["lambda_max"] == pytest.approx(c["lambda_max"], rel=1e-4)
    assert [p["warm_started"] for p in warm] == [False, True, True, True, True]
    assert sum(p["lanczos_matvecs"] for p in warm) < sum(p["lanczos_matvecs"] for p in cold)


def test_cold_start_point_is_the_spectrum_lambda_max_of_that_checkpoint():
    """A cold-started track point runs the same Lanczos (seed, tol, min_iter) as
    ``spectrum --top-k 1``, so both give the same λ_max and Lanczos HVPs (on the CNN sample the
    residual test is met at step 8: a track with a min_iter of its own, 10, would spend 10)."""
    from landscape_cli import sample_models

    cnn = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml")]
    ckpt = str(sample_models.CHECKPOINT_DIR / "cnn.pt")
    tracked = runner.invoke(app, ["track", ckpt, *cnn, "--cold-start", "--json"])
    assert tracked.exit_code == 0, tracked.stderr
    point = json.loads(tracked.stdout)["points"][0]
    alone = runner.invoke(
        app,
        ["spectrum", ckpt, *cnn, "--top-k", "1", "--bottom-k", "0", "--no-density", "--json"],
    )  # fmt: skip
    assert alone.exit_code == 0, alone.stderr
    spectrum = json.loads(alone.stdout)
    assert point["lanczos_matvecs"] == spectrum["lanczos"]["matvecs"]
    assert point["lambda_max"] == spectrum["lambda_max"]
    # and the trace is computed as spectrum's is, by spectrum.trace_method; the sample CNN is
    # piecewise linear: the exact trace
    assert spectrum["trace"]["method"] == "per-sample exact"
    assert point["trace"] == spectrum["trace"]["estimate"]


def test_steps_from_file_names(tmp_path):
    assert step_from_name("runs/ckpt_epoch3_step_1200.pt") == 1200
    assert step_from_name("final.pt") is None
    from landscape_cli import sample_models

    for step in (30, 10, 20):
        torch.save(sample_models.mlp.build().state_dict(), tmp_path / f"w_{step}.pt")
    result = runner.invoke(
        app, ["track", "--from-dir", str(tmp_path), *MLP, "--no-trace", "--json"]
    )
    points = json.loads(result.stdout)["points"]
    assert [p["step"] for p in points] == [10, 20, 30]
    assert all(p["step_source"] == "file name" for p in points)


def test_from_dir_takes_lightning_checkpoints(tmp_path):
    from landscape_cli import sample_models

    for step in (20, 10):
        state = {f"model.{k}": v for k, v in sample_models.mlp.build().state_dict().items()}
        torch.save(
            {"state_dict": state, "global_step": step, "epoch": 0}, tmp_path / f"e{step}.ckpt"
        )
    result = runner.invoke(
        app, ["track", "--from-dir", str(tmp_path), *MLP, "--no-trace", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert [p["step"] for p in json.loads(result.stdout)["points"]] == [10, 20]


@pytest.mark.parametrize(
    "args, text",
    [
        ([], "no checkpoints given"),
        (["/nonexistent/*.pt"], "matches no file"),
        (["--from-dir", "/nonexistent"], "not a directory"),
    ],
)
def test_track_input_errors(args, text):
    result = runner.invoke(app, ["track", *args, *MLP])
    assert result.exit_code == 2 and text in result.stderr


def test_adam_checkpoints_keep_the_preconditioned_sharpness(tmp_path):
    """track reports Adam's λ_max(P⁻¹H) and its threshold (as spectrum does), not only the plain
    gradient-descent η·λ_max that does not apply to Adam."""
    from landscape_cli import sample_models
    from landscape_cli.analyses.stability import stability_report
    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.problem.loading import build_objective

    torch.manual_seed(0)
    model = sample_models.mlp.build()
    x, y = sample_models.load_dataset("blobs")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    paths = []
    for k in (1, 2):
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        path = tmp_path / f"adam_step{5 * k}.pt"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
        paths.append(str(path))
    flags = ["--model", "landscape_cli.sample_models.mlp:build"]
    flags += ["--data", "sample:blobs", "--dtype", "float64", "--no-trace", "--json"]
    result = runner.invoke(app, ["track", *paths, *flags])
    assert result.exit_code == 0, result.stderr
    points = json.loads(result.stdout)["points"]
    for point, path in zip(points, paths, strict=True):
        config = resolve_run_config(
            {
                "checkpoint": path,
                "model": "landscape_cli.sample_models.mlp:build",
                "data": "sample:blobs",
                "dtype": "float64",
            }
        )
        report = stability_report(build_objective(config), point["lambda_max"])
        assert report.optimizer == "adam"
        assert point["preconditioned_sharpness"] == pytest.approx(
            report.preconditioned_sharpness, rel=1e-4
        )
        assert point["preconditioned_threshold"] == pytest.approx(report.preconditioned_threshold)
        assert point["stability_threshold"] is None


def test_an_unknown_optimizer_s_note_reaches_the_series(tmp_path):
    """RMSprop is neither SGD nor Adam: track compares η·λ_max with plain GD's 2 and says so in
    notes.stability, as spectrum does (it dropped the note)."""
    from landscape_cli import sample_models

    torch.manual_seed(0)
    model = sample_models.mlp.build()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    path = tmp_path / "rms_step1.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    result = runner.invoke(app, ["track", str(path), *MLP, "--no-trace", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert "not its stability threshold" in payload["notes"]["stability"]
    assert payload["points"][0]["stability_threshold"] == 2.0


def test_analyze_track_hands_each_point_over_in_step_order(run_dir):
    from landscape_cli.analyses.track import analyze_track
    from landscape_cli.io.config import resolve_run_config

    config = resolve_run_config(
        {"model": "landscape_cli.sample_models.mlp:build", "data": "sample:blobs"}
    )
    paths = sorted(str(p) for p in run_dir.glob("*.pt"))[:3][::-1]  # given out of order
    seen, stages = [], set()
    result = analyze_track(
        paths,
        config,
        warm_start=True,
        trace=False,
        progress=lambda stage, done, total: stages.add(stage),
        on_point=seen.append,
    )
    steps = [p.step for p in seen]
    assert result.points == seen and steps == sorted(steps) and len(set(steps)) == 3
    assert [p.warm_started for p in seen] == [False, True, True]
    assert all(p.trace is None for p in seen) and {"lanczos", "track"} <= stages
    assert result.seed == config.seed and result.warm_start
