"""Trace accuracy of Hutch++ with and without the free Lanczos deflation (not a test).

Run from the repository root::

    python benchmarks/trace_deflation.py           # both bundled samples, ~2 minutes
    python benchmarks/trace_deflation.py --seeds 5 --samples mlp

For each bundled sample (float64) the exact trace comes from the dense Hessian (``eigvalsh``).
For each seed, the extremes' Lanczos run of ``landscape spectrum``'s defaults (top-5, bottom-1,
``tol=1e-4``, its own seed) gives the basis ``Q_m``; then, at equal budgets of trace HVPs:

* ``hutch++``: plain Hutch++ (Meyer et al. 2021) on ``H``;
* ``deflated hutch++``: ``Σα + Hutch++(P H P)`` with ``P = I - Q_m Q_mᵀ``;
* ``deflated hutchinson``: ``Σα + Hutchinson(P H P)``.

The Lanczos HVPs are not counted against the budgets: ``landscape spectrum`` spends them on the
extreme eigenvalues anyway. Printed: the median and the largest relative error over the seeds.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from landscape_cli.estimators.exact import exact_spectrum
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.trace import deflated_trace, hutchpp_trace
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.seeding import derive_seed


def extremes_runs(H, seeds: int) -> list:
    """The extremes' Lanczos run of ``landscape spectrum``'s defaults (top-5, bottom-1,
    ``tol=1e-4``, with its basis) for seeds ``0 .. seeds - 1``."""
    return [
        lanczos(
            H,
            seed=derive_seed(seed, "lanczos"),
            max_iter=200,
            tol=1e-4,
            top_k=5,
            bottom_k=1,
            return_basis=True,
        )
        for seed in range(seeds)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 150])
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| sample | n | budget | estimator | median rel. error | max rel. error |")
    print("|---|---:|---:|---|---:|---:|")
    for sample in opts.samples:
        config = resolve_run_config({"checkpoint": f"sample:{sample}", "dtype": "float64"}, None)
        objective = build_objective(config)
        H = HessianOperator(objective)
        exact = float(exact_spectrum(H).eigenvalues.sum())
        print(f"{sample}: exact trace {exact:.6g}", file=sys.stderr)
        runs = extremes_runs(H, opts.seeds)
        for budget in opts.budgets:
            errors: dict[str, list[float]] = {}
            for seed, run in enumerate(runs):
                trace_seed = derive_seed(seed, "trace")
                estimates = {
                    "hutch++": hutchpp_trace(H, budget, seed=trace_seed).estimate,
                    "deflated hutch++": deflated_trace(
                        H, run.basis, float(run.alphas.sum()), budget, seed=trace_seed
                    ).estimate,
                    "deflated hutchinson": deflated_trace(
                        H,
                        run.basis,
                        float(run.alphas.sum()),
                        budget,
                        method="hutchinson",
                        seed=trace_seed,
                    ).estimate,
                }
                for name, value in estimates.items():
                    errors.setdefault(name, []).append(abs(value - exact) / abs(exact))
            for name, values in errors.items():
                print(
                    f"| {sample} | {objective.num_parameters} | {budget} | {name} | "
                    f"{np.median(values):.2e} | {np.max(values):.2e} |"
                )


if __name__ == "__main__":
    main()
