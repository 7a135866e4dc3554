"""Data-parallel runs under ``torchrun`` (gloo on CPU) give the single-process numbers.

The multi-process tests launch the real thing, ``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m landscape_cli ...``, and compare with the same command in one process.
Tolerance: 1e-6 relative in float64. Each rank sums its own batches and
the all-reduce adds the per-rank sums, so only the order of additions differs from one process:
rounding of order 1e-16 per operation, amplified through a few hundred Lanczos steps stays far
below 1e-6. Any sharding mistake (a batch counted twice or dropped, a weight of n_b/N_rank
instead of n_b/N, different random probes on the two ranks) moves the numbers by far more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.distributed import Failure, Ranks, all_reduce_sum

REL = 1e-6


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args: list[str], cwd: Path, nproc: int = 1, timeout: float = 300):
    if nproc == 1:
        command = [sys.executable, "-m", "landscape_cli", *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "landscape_cli",
            *args,
        ]
    return subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _close(a, b, rel: float = REL) -> None:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(a))), 1e-300)
    assert np.max(np.abs(a - b)) <= rel * scale, (a, b)


# ------------------------------------------------------------------ sharding, in one process
@pytest.mark.parametrize(
    "num_samples, batch_size, world", [(100, 32, 2), (100, 32, 3), (50, 64, 2)]
)
def test_shards_cover_every_batch_once_with_full_data_weights(num_samples, batch_size, world):
    x = torch.arange(num_samples, dtype=torch.float64)[:, None]
    batches = tensor_batches((x, x), batch_size, None, "t")
    seen: list[float] = []
    weight_total = 0.0
    for rank in range(world):
        for index, (bx, _), weight in batches.shard(rank, world).local():
            assert index % world == rank
            seen.extend(bx[:, 0].tolist())
            weight_total += weight
            assert weight == pytest.approx(bx.shape[0] / num_samples)
    assert sorted(seen) == list(range(num_samples))  # every sample exactly once
    assert weight_total == pytest.approx(1.0)
    # an empty shard (more ranks than batches) is allowed and yields nothing
    few = tensor_batches((x[:10], x[:10]), 16, None, "t").shard(1, 2)
    assert list(few.local()) == []


def test_single_process_reduction_is_the_identity_and_raises_a_held_failure():
    t = torch.arange(3.0)
    assert all_reduce_sum(t, Ranks()) is t
    from landscape_cli.errors import NumericalError

    with pytest.raises(NumericalError, match="batch 3"):
        all_reduce_sum(t, Ranks(), Failure(NumericalError("the loss is nan on batch 3")))


# ------------------------------------------------------------------ torchrun, 2 processes on CPU
COMMON = ["--dtype", "float64", "--batch-size", "100", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def report_pair(tmp_path_factory):
    """``landscape report`` on the sample MLP (512 samples in 6 batches, the last short) with
    m-sharpness on, once in one process and once on 2 ranks; returns the two report paths."""
    tmp = tmp_path_factory.mktemp("dist")
    config = tmp / "run.yaml"
    config.write_text(
        "sharpness:\n  rho: [0.05, 0.2]\n  m: 64\n  steps: 4\n  restarts: 1\n  samples: 4\n"
        "surface:\n  points: 5\n  dims: 2\n"
        "spectrum:\n  slq_runs: 3\n  trace_matvecs: 30\n"
    )
    paths = []
    for nproc in (1, 2):
        out = tmp / f"report-{nproc}.h5"
        args = ["report", "--config", str(config), *COMMON, "--out", str(out), "--no-plots"]
        result = _run([*args, "--json"], tmp, nproc=nproc)
        assert result.returncode == 0, result.stderr[-2000:]
        payload = json.loads(result.stdout)  # exactly one JSON object: rank 1 prints nothing
        assert payload["command"] == "report"
        paths.append(out)
    files = sorted(p.name for p in tmp.iterdir())
    # rank 1 leaves no files of its own (HTML is on by default, one per report)
    assert files == ["report-1.h5", "report-1.html", "report-2.h5", "report-2.html", "run.yaml"]
    return paths


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
            found[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def test_torchrun_report_matches_single_process(report_pair):
    """Every floating-point dataset of the report (Lanczos coefficients and Ritz values, trace
    samples, SLQ nodes and weights, sharpness values including m-sharpness, surface losses and
    accuracies, classification evidence) agrees with the single-process run."""
    one, two = (_datasets(p) for p in report_pair)
    assert one.keys() == two.keys()
    assert any("surface" in k for k in one) and any("trace" in k for k in one)
    for name in one:
        if np.all(np.isfinite(one[name])) and one[name].size:
            _close(one[name], two[name])
    with h5py.File(report_pair[0]) as a, h5py.File(report_pair[1]) as b:
        assert a["classify"].attrs["classification"] == b["classify"].attrs["classification"]
        assert float(a["spectrum"].attrs["lambda_max"]) == pytest.approx(
            float(b["spectrum"].attrs["lambda_max"]), rel=REL
        )


def test_torchrun_with_more_ranks_than_batches(tmp_path):
    """One batch of 512 samples: rank 1 holds no data and still takes part in every reduction."""
    args = ["spectrum", "--dtype", "float64", "--batch-size", "512", "--json", "--quiet"]
    args += ["--no-density", "--trace-matvecs", "20"]
    single = _run(args, tmp_path)
    double = _run(args, tmp_path, nproc=2)
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-2000:]
    a, b = json.loads(single.stdout), json.loads(double.stdout)
    _close(a["top_eigenvalues"], b["top_eigenvalues"])
    _close(a["trace"]["estimate"], b["trace"]["estimate"])
    assert a["hvp_count"] == b["hvp_count"]


def test_a_failure_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    """A label out of range in batch 3 (which rank 1 evaluates; the loader cannot know the number
    of classes) makes both ranks stop with exit code 2, and rank 0 prints the message of rank 1,
    naming the batch; nobody waits forever in a collective."""
    from landscape_cli.sample_models.data import blobs  # the sample MLP's data set

    x, y = blobs()
    y = y.clone()
    y[300] = 99  # batch 3 of 6 with --batch-size 100; the model has 4 classes
    torch.save({"x": x, "y": y}, tmp_path / "bad.pt")
    args = ["spectrum", "--data", str(tmp_path / "bad.pt"), *COMMON]
    result = _run(args, tmp_path, nproc=2, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("landscape: error")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "batch 3 of 6" in errors[0] and "(rank 1)" in errors[0]
    assert "exitcode  : 2" in result.stderr  # torchrun's summary of the failed ranks


@pytest.mark.parametrize("curvature", ["ggn", "ef"])
def test_torchrun_gauss_newton_and_fisher_match_single_process(tmp_path, curvature):
    """The GGN and empirical-Fisher data loops shard and reduce like the Hessian's, including
    the per-layer blocks and the data-subset spread."""
    args = ["spectrum", "--curvature", curvature, *COMMON, "--json", "--no-density"]
    args += ["--trace-matvecs", "20", "--per-layer", "--spread", "2"]
    single = _run(args, tmp_path)
    double = _run(args, tmp_path, nproc=2)
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-2000:]
    a, b = json.loads(single.stdout), json.loads(double.stdout)
    assert a["curvature"] == b["curvature"] == curvature
    _close(a["top_eigenvalues"], b["top_eigenvalues"])
    _close(a["trace"]["estimate"], b["trace"]["estimate"])
    _close([r["lambda_max"] for r in a["per_layer"]], [r["lambda_max"] for r in b["per_layer"]])
    _close(
        [s["lambda_max"] for s in a["spread"]["subsets"]],
        [s["lambda_max"] for s in b["spread"]["subsets"]],
    )


def test_torchrun_exact_ggn_trace_with_more_ranks_than_batches(tmp_path):
    """The exact per-sample trace sums each rank's batches; rank 1 holding no batch still decides
    applicability on the first batch like rank 0 (no rank falls back alone) and joins the sum."""
    args = ["spectrum", "--dtype", "float64", "--json", "--quiet", "--no-density"]
    args += ["--curvature", "ggn", "--top-k", "1"]
    for batch_size in ("512", "100"):  # one batch (rank 1 empty), then 6 batches over 2 ranks
        single = _run([*args, "--batch-size", batch_size], tmp_path)
        double = _run([*args, "--batch-size", batch_size], tmp_path, nproc=2)
        assert single.returncode == 0 and double.returncode == 0, double.stderr[-2000:]
        a, b = json.loads(single.stdout), json.loads(double.stdout)
        assert a["trace"]["method"] == b["trace"]["method"] == "per-sample exact"
        _close(a["trace"]["estimate"], b["trace"]["estimate"])
