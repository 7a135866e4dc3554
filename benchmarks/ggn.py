"""Seconds per GGN product, with and without the cached per-batch graphs, next to a cached
Hessian-vector product (not a test).

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/ggn.py                 # both workloads
    OMP_NUM_THREADS=1 python benchmarks/ggn.py mlp-784

One column per product (a Lanczos step), 5 products timed after a warm-up one, float32,
batches of 256, on the :mod:`workloads` at their seeded initialisation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from landscape_cli.operators.hessian import HessianOperator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import build_synthetic  # noqa: E402

from landscape_cli.operators.ggn import GGNOperator  # noqa: E402
from landscape_cli.problem.data import tensor_batches  # noqa: E402
from landscape_cli.problem.losses import SplitLoss  # noqa: E402
from landscape_cli.problem.objective import Objective  # noqa: E402


def seconds_per_product(op: object, v: torch.Tensor, repeats: int = 5) -> float:
    op @ v  # warm-up (builds the cached graphs)
    start = time.perf_counter()
    for _ in range(repeats):
        op @ v
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or ["mlp-784", "cnn3-cifar"]
    torch.set_num_threads(1)
    print("| workload | Hessian (cached graph) | GGN fresh | GGN cached | cached / fresh |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        model, x, y = build_synthetic(name)
        split = SplitLoss("cross_entropy")
        batches = tensor_batches((x, y), 256, None, name)
        obj = Objective(model.eval(), split, batches, hvp_mode="cached")
        v = torch.randn(obj.num_parameters, generator=torch.Generator().manual_seed(0))
        hessian = seconds_per_product(HessianOperator(obj), v)
        fresh = seconds_per_product(GGNOperator(obj, split, cache=False), v)
        cached = seconds_per_product(GGNOperator(obj, split, cache=True), v)
        print(
            f"| {name} | {hessian:.4g} | {fresh:.4g} | {cached:.4g} | {cached / fresh:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
