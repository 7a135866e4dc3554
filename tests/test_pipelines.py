"""Shell use: every --json command pipes into json.load; progress shows only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

FAST = ["--quiet"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "r.h5"
    subprocess.run(
        [sys.executable, "-m", "landscape_cli", "spectrum", "--out", str(path), "--no-density", "--trace-matvecs", "8", "--quiet"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return path


def commands(report):
    return {
        "inspect": ["inspect"],
        "spectrum": ["spectrum", "--no-density", "--trace-matvecs", "8"],
        "classify": ["classify", "sample:saddle"],
        "sharpness": ["sharpness", "--rho", "0.01", "--samples", "2"],
        "surface": ["surface", "--points", "3"],
        "check": ["check", str(report), "--max", "lambda_max=1000"],
        "plot": ["plot", str(report), "--out-dir", str(report.parent)],
    }


@pytest.mark.parametrize(
    "name", ["inspect", "spectrum", "classify", "sharpness", "surface", "check", "plot"]
)
def test_json_pipes_into_json_load(report, name):
    args = commands(report)[name]
    pipeline = (
        f"{sys.executable} -m landscape_cli {' '.join(args)} --json | "
        f"{sys.executable} -c 'import json,sys; d = json.load(sys.stdin); print(d[\"command\"])'"
    )
    proc = subprocess.run(pipeline, shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == name


def test_progress_on_a_terminal_stderr_only():
    """With stderr a terminal, the progress bars draw there; stdout (a pipe) stays pure JSON."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape_cli", "spectrum", "--json", "--trace-matvecs", "60"],
        stdout=subprocess.PIPE, stderr=terminal, env=env,
    )  # fmt: skip
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    stdout, _ = proc.communicate(timeout=300)
    os.close(controller)
    assert proc.returncode == 0
    json.loads(stdout)
    assert b"Lanczos" in drawn or b"trace" in drawn  # a progress bar label was drawn on stderr
    # the bar of all the planned products, with its time remaining, drawn from the first
    # Lanczos step to the end of the run, and the plan line above the bars
    assert b"HVPs planned" in drawn and b"landscape: plan: 1,476 parameters" in drawn


def _envelope_keys():
    from landscape_cli.analyses.run_info import RunInfo

    info = RunInfo("x", 1, 0.0, 0.0, 0, 0.0, 0, 1, "cached", "cpu", "float32")
    return set(info.to_dict())


def every_command(tmp_path, report):
    """Each command with --json, on the bundled samples (fast settings)."""
    import shutil

    from landscape_cli import sample_models

    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    for target in (first, second):
        shutil.copy(sample_models.get_sample("mlp").checkpoint, target)
    series = [str(first), str(second), "--model", "landscape_cli.sample_models.mlp:build"]
    fast_report = tmp_path / "fast.yaml"
    fast_report.write_text(
        "spectrum: {trace_matvecs: 8, slq_runs: 1, slq_steps: 10, grid: 50}\n"
        "sharpness: {rho: [0.01], samples: 2, steps: 2}\nsurface: {points: 3}\n"
    )
    return {
        **commands(report),
        "check": ["check", "--max", "lambda_max=1000"],
        "check-report": ["check", str(report), "--max", "lambda_max=1000"],
        "jacobian": ["jacobian", "--max-iter", "10"],
        "report": ["report", "--out", str(tmp_path / "r.h5"), "--config", str(fast_report),
                   "--no-plots", "--no-html"],
        "track": ["track", *series, "--data", "sample:blobs", "--no-trace"],
    }  # fmt: skip


ALL_COMMANDS = (
    "inspect", "spectrum", "classify", "sharpness", "surface", "check", "check-report",
    "plot", "jacobian", "report", "track",
)  # fmt: skip


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_every_command_json_begins_with_the_common_envelope(tmp_path, report, name):
    from typer.testing import CliRunner

    from landscape_cli.cli import app

    result = CliRunner().invoke(app, [*every_command(tmp_path, report)[name], "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert _envelope_keys() <= set(payload), _envelope_keys() - set(payload)
    assert payload["command"] == name.split("-")[0]
    assert isinstance(payload["num_parameters"], int) and payload["num_parameters"] > 0
    assert isinstance(payload["hvp_count"], int) and payload["hvp_count"] >= 0
    assert isinstance(payload["seconds"], float) and payload["seconds"] >= 0
    assert isinstance(payload["seed"], int)
    assert isinstance(payload["loss"], float) and isinstance(payload["grad_norm"], float)
    if name in ("plot", "check-report"):  # a report is read, nothing is computed
        assert payload["hvp_count"] == 0


def test_every_line_of_track_jsonl_carries_the_envelope(tmp_path, report):
    from typer.testing import CliRunner

    from landscape_cli.cli import app

    args = [*every_command(tmp_path, report)["track"], "--jsonl"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert _envelope_keys() <= set(line) and line["command"] == "track"
