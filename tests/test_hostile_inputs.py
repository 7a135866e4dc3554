"""Hostile and faulty inputs through the real command line (a subprocess each): the outcome is
one line on stderr and a documented exit code, never a traceback or exit 70, and nothing is
lost or run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def landscape(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 300):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, input=stdin, timeout=timeout,
    )  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ YAML
def test_a_threshold_given_twice_is_refused_not_last_wins(tmp_path):
    """A stricter limit followed by a looser one for the same metric would let the gate pass."""
    checks = tmp_path / "checks.yaml"
    checks.write_text("max:\n  lambda_max: 10\n  lambda_max: 1000\n")
    proc = landscape("check", "--checks", str(checks), cwd=tmp_path)
    one_line_error(proc, 2, "key 'lambda_max' is given twice (lines 2 and 3)")


def test_a_config_key_given_twice_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("spectrum:\n  top_k: 2\nspectrum:\n  top_k: 9\n")
    proc = landscape("spectrum", "--config", str(config), cwd=tmp_path)
    one_line_error(proc, 2, "key 'spectrum' is given twice (lines 1 and 3)")


@pytest.mark.parametrize("kind", ["config", "checks"])
def test_yaml_nested_thousands_of_levels_deep_is_an_input_error(tmp_path, kind):
    deep = tmp_path / "deep.yaml"
    deep.write_text("max: " + "[" * 5000 + "]" * 5000 + "\n")
    args = (
        ["spectrum", "--config", str(deep)]
        if kind == "config"
        else ["check", "--checks", str(deep)]
    )
    one_line_error(landscape(*args, cwd=tmp_path), 2, "nested too deeply")
