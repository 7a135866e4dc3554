"""Hostile and faulty inputs through the real command line (a subprocess each): the outcome is
one line on stderr and a documented exit code, never a traceback or exit 70, and nothing is
lost or run."""

from __future__ import annotations

import io
import json
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


# ------------------------------------------------------------------ sizes declared, not stored
def limited_memory() -> None:
    """In the child: at most 3 GiB of address space, so a run that allocates what a file
    declares fails instead of taking the machine's memory."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def landscape_in_3_gib(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limited_memory,
    )  # fmt: skip


FAST = ["--no-density", "--no-trace", "--max-iter", "20", "--json"]


def test_max_samples_bounds_what_is_read_of_a_huge_h5_data_file(tmp_path):
    """A few KB on disk declaring 5·10⁸ samples (15 GiB): only the 512 rows used are read."""
    import h5py

    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("x", shape=(500_000_000, 8), dtype="f4", chunks=(4096, 8),
                         compression="gzip", fillvalue=0.5)  # fmt: skip
        f.create_dataset("y", shape=(500_000_000,), dtype="i8", chunks=(4096,),
                         compression="gzip", fillvalue=1)  # fmt: skip
    assert (tmp_path / "huge.h5").stat().st_size < 20_000
    args = ["spectrum", "sample:mlp", "--data", "huge.h5", "--max-samples", "512", *FAST]
    proc = landscape_in_3_gib(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_parameters"] == 1476


def test_a_data_file_declaring_more_samples_than_memory_holds_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("x", shape=(10**12, 8), dtype="f8", chunks=(4096, 8), compression="gzip")
        f.create_dataset("y", shape=(10**12,), dtype="i8", chunks=(4096,), compression="gzip")
    proc = landscape_in_3_gib("spectrum", "sample:mlp", "--data", "huge.h5", *FAST, cwd=tmp_path)
    one_line_error(proc, 2, "huge.h5: 1000000000000 samples of x and y take", "--max-samples")


def test_max_samples_bounds_what_is_read_of_an_npz_whose_header_lies(tmp_path):
    """An ``.npz`` whose ``x`` declares 5·10⁸ × 8 values but holds a few bytes: the declared
    shape is read first, and only the rows used are decompressed."""
    import zipfile

    import numpy as np

    def member(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
        buffer = io.BytesIO()
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype))
        header["shape"] = shape
        np.lib.format.write_array_header_1_0(buffer, header)
        return buffer.getvalue() + payload

    with zipfile.ZipFile(tmp_path / "lies.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", member((500_000_000, 8), "<f4", bytes(4 * 8 * 600)))
        archive.writestr("y.npy", member((500_000_000,), "<i8", bytes(8 * 600)))
    args = ["spectrum", "sample:mlp", "--data", "lies.npz", "--max-samples", "512", *FAST]
    proc = landscape_in_3_gib(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = landscape_in_3_gib(*args[:4], "--max-samples", "1000", *FAST, cwd=tmp_path)
    one_line_error(proc, 2, "lies.npz: cannot be read as .npz ('x' is truncated)")


# ------------------------------------------------------------------ files that are not files
FIFO_ARGS = {
    "checkpoint": ["spectrum", "pipe", "--model", "landscape_cli.sample_models.mlp:build"],
    "data": ["spectrum", "sample:mlp", "--data", "pipe.npz"],
    "config": ["spectrum", "--config", "pipe"],
    "checks": ["check", "--checks", "pipe"],
    "report": ["plot", "pipe.h5"],
    "out": ["spectrum", "sample:saddle", "--out", "pipe.h5"],
}


@pytest.mark.parametrize("kind", list(FIFO_ARGS))
def test_a_fifo_given_as_an_input_file_is_refused_without_waiting(tmp_path, kind):
    args = FIFO_ARGS[kind]
    name = next(a for a in args if a.startswith("pipe"))
    os.mkfifo(tmp_path / name)
    proc = landscape(*args, cwd=tmp_path, timeout=60)
    one_line_error(proc, 2, f"{name}: not a regular file (a FIFO, socket or device)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# ------------------------------------------------------------------ names with glob characters
def test_track_takes_existing_files_whose_names_hold_glob_characters(tmp_path):
    import torch

    from landscape_cli import sample_models

    weights = torch.load(sample_models.get_sample("mlp").checkpoint, weights_only=True)
    for step in (5, 9):
        torch.save(weights, tmp_path / f"run[1]_step_{step}.pt")
    proc = landscape(
        "track", "run[1]_step_5.pt", "run[1]_step_9.pt",
        "--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs",
        "--max-samples", "64", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "run[1]_step_9.pt" in proc.stdout
