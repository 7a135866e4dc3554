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
