"""What ``--compile`` buys: a 2-D loss surface and gradient evaluations, eager against
torch.compile, on the benchmark workloads (not a test).

Run from the repository root::

    python benchmarks/compile.py              # both workloads, 11 x 11 grid, 1 thread
    python benchmarks/compile.py --points 21  # 441 grid points

For each workload (:mod:`workloads`: ``mlp-784`` and ``cnn3-cifar`` at their seeded
initialisation), the same :class:`~landscape_cli.problem.objective.Objective` is built twice, eager and
with ``compile=True``, and timed on

* ``analyze_surface`` (2-D, random filter-normalised directions): forward passes only; the
  compiled time includes the one-off compile, which happens at the first evaluation;
* 5 ``loss_and_gradient`` calls (what SAM's ascent steps cost), after a first call that
  compiles (its time reported separately).

Printed: seconds, the eager/compiled ratio (> 1 means compile is faster) and the largest
relative difference of the surface losses (float32: rounding from fused kernels). Curvature
products are not compiled (torch 2.13 compiled graphs have no double backward), so spectrum-type
commands do not change.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(name: str, points: int, compile: bool) -> dict[str, float]:
    import numpy as np
    import torch
    from workloads import SYNTHETIC, build_synthetic

    from landscape_cli.analyses.surface import SurfaceSettings, analyze_surface
    from landscape_cli.problem.data import tensor_batches
    from landscape_cli.problem.losses import SplitLoss
    from landscape_cli.problem.objective import Objective

    model, x, y = build_synthetic(name)
    spec = SYNTHETIC[name]
    batches = tensor_batches((x, y), 256, None, spec.name)
    objective = Objective(
        model.eval(), SplitLoss("cross_entropy"), batches, hvp_mode="streaming", compile=compile
    )
    start = time.perf_counter()
    surface = analyze_surface(objective, SurfaceSettings(dims=2, points=points), seed=0)
    surface_s = time.perf_counter() - start
    start = time.perf_counter()
    objective.loss_and_gradient()
    first_gradient_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(5):
        objective.loss_and_gradient(torch.full((objective.num_parameters,), 1e-3 * (i + 1)))
    gradient_s = (time.perf_counter() - start) / 5
    return {
        "surface_s": surface_s,
        "first_gradient_s": first_gradient_s,
        "gradient_s": gradient_s,
        "losses": np.asarray(surface.losses, dtype=float),
        "mode": objective.compile_mode,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=11, help="grid points per axis")
    parser.add_argument("--workloads", nargs="+", default=["mlp-784", "cnn3-cifar"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"2-D surface of {args.points}x{args.points} points on 512/2048 samples; "
        f"torch {torch.__version__}, {args.threads} thread(s)\n"
    )
    print(
        "| workload | surface eager s | surface compiled s (incl. compile) | ratio | "
        "gradient eager s | gradient compiled s | ratio | first compiled gradient s | "
        "max rel. loss diff | compile |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.workloads:
        eager = measure(name, args.points, False)
        compiled = measure(name, args.points, True)
        diff = float(np.max(np.abs(compiled["losses"] - eager["losses"]) / np.abs(eager["losses"])))
        print(
            f"| {name} | {eager['surface_s']:.2f} | {compiled['surface_s']:.2f} | "
            f"{eager['surface_s'] / compiled['surface_s']:.2f}x | {eager['gradient_s']:.3f} | "
            f"{compiled['gradient_s']:.3f} | {eager['gradient_s'] / compiled['gradient_s']:.2f}x | "
            f"{compiled['first_gradient_s']:.2f} | {diff:.1e} | {compiled['mode']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
