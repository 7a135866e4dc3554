"""Lanczos start vectors for λ_max: a Gaussian against the gradient mixed with a Gaussian (not a
test; the measurement behind "not adopted" in BENCHMARKS.md).

Run from the repository root::

    python benchmarks/start_vector.py mlp-784 --seeds 4        # ~1 minute
    python benchmarks/start_vector.py cnn3-cifar --seeds 3     # ~9 minutes
    python benchmarks/start_vector.py sample:mlp sample:cnn --seeds 4

For each workload (float64; the benchmark workloads of ``benchmarks/workloads.py`` at seed 0, or
a bundled sample) a long Lanczos run gives the reference λ_max. For each seed ``s``, with ``z``
the seed's unit Gaussian vector and ``ĝ`` the unit gradient (free: the objective computes it):

* ``rand``: start ``z`` (what landscape does);
* ``grad+z``: start ``ĝ + z`` — near a minimum ``g ≈ H(w − w*)`` weights the stiff directions,
  and ``z`` keeps every eigenvector's component at the ``1/√n`` scale the residual test relies on.

Printed per start: the first step whose top Ritz value is within 1e-3 of the reference (an oracle
stop), the steps of landscape's default stopping test (``top_k=1``, ``tol=1e-4``) and of the
default spectrum's extremes run (``top_k=5, bottom_k=1``), and the relative errors of steps 1-10.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from landscape_cli.operators.hessian import HessianOperator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from landscape_cli.estimators.lanczos import lanczos  # noqa: E402
from landscape_cli.io.config import resolve_run_config  # noqa: E402
from landscape_cli.problem.loading import build_objective  # noqa: E402


def objective_for(name: str, tmp: Path):
    """The float64 objective of a benchmark workload (files written to ``tmp``) or a sample."""
    flags = {"dtype": "float64", "device": "cpu"}
    if name.startswith("sample:"):
        return build_objective(resolve_run_config({**flags, "checkpoint": name}))
    from workloads import SYNTHETIC, build_synthetic

    model, x, y = build_synthetic(name, 0, False)
    torch.save(model.state_dict(), tmp / f"{name}.pt")
    torch.save({"x": x, "y": y}, tmp / f"{name}-data.pt")
    spec = f"{HERE / 'workloads.py'}:{SYNTHETIC[name].factory}"
    return build_objective(
        resolve_run_config(
            {
                **flags,
                "checkpoint": str(tmp / f"{name}.pt"),
                "model": spec,
                "data": str(tmp / f"{name}-data.pt"),
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="+")
    parser.add_argument("--seeds", type=int, default=4)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.workloads:
            objective = objective_for(name, Path(tmp))
            A = HessianOperator(objective)
            ref = lanczos(A, seed=123, tol=1e-12, max_iter=80, top_k=1)
            lam = float(ref.top(1)[0])
            g = objective.gradient.double()
            n = g.numel()
            print(f"{name}: n = {n}, lambda_max = {lam:.8g}, |g| = {float(g.norm()):.3g}")
            for seed in range(opts.seeds):
                z = torch.randn(
                    n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                )
                z /= z.norm()
                for label, v in (("rand", z), ("grad+z", g / g.norm() + z)):
                    run = lanczos(A, start=v, tol=1e-12, max_iter=14, min_iter=14, top_k=1)
                    errors = [
                        abs(float(run.ritz_values_at(j)[-1]) - lam) / abs(lam)
                        for j in range(1, run.steps + 1)
                    ]
                    first = next((j + 1 for j, e in enumerate(errors) if e <= 1e-3), None)
                    default = lanczos(A, start=v, top_k=1).steps
                    extremes = lanczos(A, start=v, top_k=5, bottom_k=1).steps
                    print(
                        f"  seed {seed} {label:6s} to 1e-3: {first}  default stop: {default}  "
                        f"top-5 + bottom-1 stop: {extremes}  errors: "
                        + " ".join(f"{e:.0e}" for e in errors[:10])
                    )


if __name__ == "__main__":
    main()
