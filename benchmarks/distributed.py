"""Speed-up of a data-heavy analysis on 2 processes (``torchrun``, gloo) against 1 (not a test).

Run from the repository root::

    python benchmarks/distributed.py               # 16 384 samples, 3 rounds, ~3 minutes
    python benchmarks/distributed.py --quick       # 4 096 samples, 1 round

Workload: the 784-128-64-10 ReLU MLP (109 386 parameters) on N Gaussian inputs with random
labels, batches of 1 024, ``landscape spectrum --top-k 5 --no-trace --no-density`` in float32,
``--hvp-mode streaming`` (the data-heavy regime, where every HVP is a pass over all the data;
``--hvp-mode cached`` is measured too). Every process runs with one thread
(``OMP_NUM_THREADS=1``, ``--threads 1``), so 2 processes use 2 cores and 1 process uses 1: the
ratio is the parallel efficiency of sharding the batches, not of a thread pool.

Rounds alternate 1-process and 2-process runs, so a change of machine load hits both. Reported:
the median analysis time (the JSON ``seconds``: after loading, so the same work on both sides),
the median whole-process wall time (python start-up, loading and the process group included),
their ratios, and the largest relative difference of the top eigenvalues between the two runs
(float32: they differ only by the order of the additions). The CPU used by other processes
meanwhile is shown per round (``other``, in cores), as in ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import mlp_784  # the shared workload definitions

ROOT = Path(__file__).resolve().parents[1]


def model() -> torch.nn.Module:
    """The model factory the CLI is given (``--model benchmarks/distributed.py:model``)."""
    return mlp_784()


def write_inputs(directory: Path, num_samples: int, seed: int) -> tuple[Path, Path]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = mlp_784()
    checkpoint = directory / "mlp784.pt"
    torch.save(net.state_dict(), checkpoint)
    x = torch.randn(num_samples, 784, generator=gen)
    y = torch.randint(0, 10, (num_samples,), generator=gen)
    data = directory / "data.pt"
    torch.save({"x": x, "y": y}, data)
    return checkpoint, data


def _cpu_seconds() -> tuple[float, float]:
    """Machine busy CPU seconds (``/proc/stat``) and this process's plus its waited-for
    children's CPU seconds (``os.times``)."""
    own = os.times()
    mine = own.user + own.system + own.children_user + own.children_system
    try:
        with open("/proc/stat") as handle:
            values = [int(x) for x in handle.readline().split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    return busy, mine


def run_once(nproc: int, args: list[str]) -> tuple[dict, float, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if nproc == 1:
        command = [sys.executable, "-m", "landscape_cli", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={nproc}", "-m", "landscape_cli", *args]
    busy0, mine0 = _cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    busy1, mine1 = _cpu_seconds()
    other = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / wall  # cores used by other processes
    if done.returncode != 0:
        raise SystemExit(f"{nproc}-process run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall, other


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4096 samples, 1 round")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.samples, opts.rounds = 4096, 1
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {opts.samples} samples")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, data = write_inputs(Path(tmp), opts.samples, opts.seed)
        for hvp_mode in ("streaming", "cached"):
            args = [
                "spectrum",
                str(checkpoint),
                "--model",
                str(Path(__file__).resolve()) + ":model",
                "--data",
                str(data),
                "--batch-size",
                "1024",
                "--top-k",
                "5",
                "--no-trace",
                "--no-density",
                "--threads",
                "1",
                "--hvp-mode",
                hvp_mode,
                "--json",
                "--quiet",
            ]
            seconds: dict[int, list[float]] = {1: [], 2: []}
            walls: dict[int, list[float]] = {1: [], 2: []}
            others: list[float] = []
            tops: dict[int, list[float]] = {}
            for _ in range(opts.rounds):
                for nproc in (1, 2):
                    payload, wall, other = run_once(nproc, args)
                    seconds[nproc].append(payload["seconds"])
                    walls[nproc].append(wall)
                    others.append(other)
                    tops[nproc] = payload["top_eigenvalues"]
                    hvps = payload["hvp_count"]
            diff = max(abs(a - b) / abs(a) for a, b in zip(tops[1], tops[2], strict=True))
            rows.append((hvp_mode, hvps, seconds, walls, max(others), diff))
    print()
    print(
        "| hvp mode | HVPs | rounds | other | analysis 1 proc s | analysis 2 proc s | "
        "speed-up | process 1 s | process 2 s | speed-up | top-5 max rel diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, hvps, seconds, walls, other, diff in rows:
        s1, s2 = statistics.median(seconds[1]), statistics.median(seconds[2])
        w1, w2 = statistics.median(walls[1]), statistics.median(walls[2])
        print(
            f"| {mode} | {hvps} | {len(seconds[1])} | {other:.2f} | {s1:.2f} | {s2:.2f} | "
            f"{s1 / s2:.2f}x | {w1:.2f} | {w2:.2f} | {w1 / w2:.2f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
