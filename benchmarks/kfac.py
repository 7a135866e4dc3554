"""The cost of the K-FAC analysis over one gradient, measured in the same process (not a test).

Run from the repository root on an idle machine::

    python benchmarks/kfac.py                           # the sample CNN and ResNet-18
    python benchmarks/kfac.py --workloads cnn           # the sample CNN only
    python benchmarks/kfac.py --samples 256             # fewer ResNet-18 images

Workloads, float32, eval mode, mean cross-entropy:

* ``cnn``: the bundled ``sample:cnn`` (its checkpoint and data, as ``landscape kfac`` sees them);
* ``resnet18``: ``workloads.resnet18`` (torchvision's layout, 11 181 642 parameters) at its seeded
  initialisation on ``--samples`` digits upsampled to 3x32x32 (``scale.py``'s images), batches
  of 128.

Rows: the median seconds of one gradient of the mean loss over the data
(``Objective.loss_and_gradient``, 3 repeats) and, each once and as a multiple of that gradient,
the K-FAC factors alone (``kronecker_factors``), the factors with the GGN's products with 16
probes (what the Frobenius errors need), ``analyze_kfac`` without its Lanczos runs and density
(``--no-lambda-max --no-density --no-preconditioned``: the per-layer table's errors and traces),
and, for the sample CNN only, ``analyze_kfac`` at its defaults with its count of GGN and Hessian
products. Timings belong in BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def objective_of(name: str, samples: int) -> Any:
    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.problem.loading import build_objective

    if name == "cnn":
        return build_objective(resolve_run_config({"checkpoint": "sample:cnn"}))
    import torch
    from scale import digit_images
    from workloads import resnet18

    from landscape_cli.problem.data import tensor_batches
    from landscape_cli.problem.losses import SplitLoss
    from landscape_cli.problem.objective import Objective

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    x, y = digit_images(samples, 0)
    batches = tensor_batches((x, y), 128, None, "resnet18")
    return Objective(model, SplitLoss("cross_entropy"), batches)


def timed(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = function()
    return time.perf_counter() - start, out


def measure(name: str, samples: int) -> dict[str, Any]:
    import torch

    from landscape_cli.analyses.kfac import analyze_kfac
    from landscape_cli.analyses.settings import KFACSettings
    from landscape_cli.operators.curvature import split_loss
    from landscape_cli.operators.kfac import covered_layers, kronecker_factors

    objective = objective_of(name, samples)
    split = split_loss(objective, "kfac")
    gradient = statistics.median(timed(objective.loss_and_gradient)[0] for _ in range(3))
    factors, _ = timed(lambda: kronecker_factors(objective, split))
    shapes, _ = covered_layers(objective.model, set(objective.parameter_names))
    probes = [
        torch.randn(16, m.weight.shape[0], m.weight[0].numel() + (len(n) == 2))
        for _, m, n in shapes
    ]
    with_probes, _ = timed(lambda: kronecker_factors(objective, split, probes=probes))
    table = KFACSettings(lambda_max=False, density=False, preconditioned=False)
    errors, _ = timed(lambda: analyze_kfac(objective, table))
    row = {
        "workload": name,
        "parameters": objective.num_parameters,
        "samples": objective.num_samples,
        "gradient": gradient,
        "factors": factors,
        "probes": with_probes,
        "errors": errors,
    }
    if name == "cnn":
        full, result = timed(lambda: analyze_kfac(objective))
        row.update(full=full, products=result.info.hvp_count)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="cnn,resnet18")
    parser.add_argument("--samples", type=int, default=1024, help="ResNet-18 images")
    args = parser.parse_args(argv)
    print(
        "| workload | parameters | samples | gradient s | factors s (× gradient) | "
        "factors + 16 probes s (×) | `kfac` table s (×) | `kfac` defaults s (×), products |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.workloads.split(","):
        r = measure(name, args.samples)
        g = r["gradient"]

        def cell(seconds: float, g: float = g) -> str:
            return f"{seconds:.3g} ({seconds / g:.1f}×)"

        full = f"{cell(r['full'])}, {r['products']}" if "full" in r else "—"
        print(
            f"| {r['workload']} | {r['parameters']:,} | {r['samples']:,} | {g:.3g} | "
            f"{cell(r['factors'])} | {cell(r['probes'])} | {cell(r['errors'])} | {full} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
