"""Accuracy of ``landscape spectrum``'s default trace and density against PyHessian's procedure.

Run from the repository root (not a test)::

    python benchmarks/shared_budget.py                    # both bundled samples, 10 seeds
    python benchmarks/shared_budget.py --samples mlp --seeds 5
    python benchmarks/shared_budget.py --scan             # also the candidate settings
    python benchmarks/shared_budget.py --samples planted-3000   # a planted 3000 x 3000 spectrum

For each bundled sample (float64) the exact spectrum comes from the dense Hessian
(:func:`~landscape_cli.estimators.exact.exact_spectrum`, ``n`` HVPs, ``eigvalsh``). For each seed:

* the extremes' Lanczos run exactly as ``landscape spectrum`` makes it (top-5, bottom-1,
  ``tol``, ``max_iter`` and seed from :class:`~landscape_cli.analyses.spectrum.SpectrumSettings`);
* **trace**: landscape's default (``trace_matvecs`` HVPs of Hutchinson, ``trace_method="auto"``,
  on the remainder after deflating the Lanczos basis, :func:`~landscape_cli.estimators.trace.deflated_trace`)
  against PyHessian's
  ``trace(maxIter=100)``: plain Hutchinson with 100 Rademacher probes
  (:func:`~landscape_cli.estimators.trace.hutchinson_trace`); relative error to ``sum(eigenvalues)``;
* **density**: landscape's default (the extremes' run counted as one SLQ run plus ``slq_runs``
  runs of ``slq_steps`` steps, :func:`~landscape_cli.estimators.density.slq_density` with
  ``lanczos_runs``) against PyHessian's ``density(iter=100, n_v=1)``: one SLQ run of 100 steps
  from a Rademacher probe, with full reorthogonalisation (``slq_density(runs=1, steps=100)``).
  Wasserstein-1 distance to the exact spectrum of the quadrature measure (``w1 nodes``: the
  nodes with weights ``tau^2 / runs``) and of the broadened density at the default sigma on the
  default grid (``w1 density``, :func:`~landscape_cli.estimators.density.wasserstein1`), both divided by
  the spectral width ``lambda_max - lambda_min``.

The references draw their probes from streams of their own, so they are independent of
landscape's. Printed: median and largest value over the seeds, and the HVPs each part costs
(the Lanczos run is shared by the extremes, the trace deflation and the density).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from landscape_cli.analyses.spectrum import SpectrumSettings
from landscape_cli.estimators.density import (
    DEFAULT_RUNS,
    DEFAULT_STEPS,
    SLQResult,
    slq_density,
    wasserstein1,
)
from landscape_cli.estimators.exact import exact_spectrum
from landscape_cli.estimators.lanczos import LanczosResult, lanczos
from landscape_cli.estimators.trace import choose_method, deflated_trace, hutchinson_trace
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.seeding import derive_seed


@dataclass(frozen=True)
class DensityPlan:
    """``runs x steps`` SLQ runs of their own, plus the extremes' run when ``shared``."""

    shared: bool
    runs: int
    steps: int

    def label(self) -> str:
        own = f"{self.runs}x{self.steps}" if self.runs else "no own run"
        return f"extremes run + {own}" if self.shared else f"SLQ {own}"


def planted_powerlaw(n: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """A Hessian-like planted spectrum (as ``tests/spectra.py``'s power-law case): 30 outliers
    ``40 i^-1.2`` merging into an exponential bulk (mean 0.3) with 10 % negatives (mean 0.1);
    ``A = U diag(lam) U^T`` with ``U`` the Q factor of a Gaussian matrix. No eigenvalue repeats,
    so unlike the bundled samples no Lanczos run breaks down early."""
    rng = np.random.default_rng(seed)
    outliers = 40.0 * np.arange(1, 31, dtype=np.float64) ** -1.2
    n_neg = n // 10
    bulk = rng.exponential(0.3, size=n - outliers.size - n_neg)
    lam = np.sort(np.concatenate([outliers, bulk, -rng.exponential(0.1, size=n_neg)]))
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn((n, n), generator=gen, dtype=torch.float64))
    A = (U * torch.from_numpy(lam)) @ U.mT
    return lam, 0.5 * (A + A.mT)


def w1_nodes(slq: SLQResult, eigenvalues: np.ndarray) -> float:
    """W1 between the quadrature measure (each run's weights / runs) and the exact spectrum."""
    mask = np.isfinite(slq.nodes) & (slq.weights > 0)
    return float(
        wasserstein_distance(slq.nodes[mask], eigenvalues, u_weights=slq.weights[mask] / slq.runs)
    )


def density_errors(
    H, plan: DensityPlan, seed: int, run: LanczosResult, eigenvalues: np.ndarray
) -> tuple[float, float, int]:
    """(W1 of the nodes, W1 of the broadened density, HVPs beyond the Lanczos run)."""
    settings = SpectrumSettings()
    slq = slq_density(
        H,
        runs=plan.runs,
        steps=max(plan.steps, 1),
        seed=seed,
        lanczos_runs=[run] if plan.shared else (),
    )
    dens = slq.density(sigma=settings.sigma, grid=settings.grid)
    return (
        w1_nodes(slq, eigenvalues),
        wasserstein1(dens.grid, dens.values, eigenvalues),
        slq.matvecs,
    )


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        nargs="+",
        default=["mlp", "cnn"],
        help="bundled samples (mlp, cnn) and planted-N (a dense N x N Hessian-like spectrum)",
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--scan", action="store_true", help="also measure the candidate settings considered"
    )
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    s = SpectrumSettings()
    own = DensityPlan(s.share_lanczos, s.slq_runs, s.slq_steps)
    pyhessian = DensityPlan(False, 1, 100)
    library = DensityPlan(False, DEFAULT_RUNS, DEFAULT_STEPS)  # slq_density's own defaults
    density_plans = [own, pyhessian, library]
    trace_plans = [("deflated " + choose_method(s.trace_method), s.trace_matvecs)]
    if opts.scan:
        density_plans += [
            DensityPlan(True, 0, 0),
            DensityPlan(True, 1, 40),
            DensityPlan(True, 1, 50),
            DensityPlan(True, 1, 60),
            DensityPlan(True, 1, 70),
            DensityPlan(True, 1, 80),
            DensityPlan(True, 2, 30),
            DensityPlan(True, 2, 40),
            DensityPlan(False, 1, 60),
            DensityPlan(False, 2, 50),
        ]
        trace_plans += [
            (f"deflated {method}", budget)
            for method in ("hutch++", "hutchinson")
            for budget in (40, 50, 60, 70)
        ]
    seen: set = set()
    density_plans = [p for p in density_plans if not (p in seen or seen.add(p))]
    trace_plans = list(dict.fromkeys(trace_plans))

    print(row("sample", "n", "part", "procedure", "HVPs", "median", "max"))
    print(row("---", "---:", "---", "---", "---:", "---:", "---:"))
    for sample in opts.samples:
        if sample.startswith("planted"):  # planted-N: a dense matrix with a known spectrum
            eigenvalues, H = planted_powerlaw(int(sample.split("-")[1]))
            n = H.shape[0]
        else:
            config = resolve_run_config({"checkpoint": f"sample:{sample}", "dtype": "float64"})
            objective = build_objective(config)
            H = HessianOperator(objective)
            eigenvalues = exact_spectrum(H).eigenvalues
            n = objective.num_parameters
        exact_trace = float(eigenvalues.sum())
        width = float(eigenvalues[-1] - eigenvalues[0])
        print(f"{sample}: n={n}, exact trace {exact_trace:.6g}, width {width:.4g}", file=sys.stderr)
        runs = [
            lanczos(
                H,
                seed=derive_seed(seed, "lanczos"),
                max_iter=s.max_iter,
                tol=s.tol,
                top_k=s.top_k,
                bottom_k=s.bottom_k,
                return_basis=True,
            )
            for seed in range(opts.seeds)
        ]
        steps = [r.steps for r in runs]
        print(row(sample, n, "extremes", "Lanczos top-5 + bottom-1, tol 1e-4", "", "", ""))
        print(row(sample, n, "extremes", "Lanczos steps (HVPs)", "", np.median(steps), max(steps)))
        trace_errors: dict[tuple[str, int], list[float]] = {}
        for seed, run in enumerate(runs):
            for method, budget in trace_plans:
                est = deflated_trace(
                    H,
                    run.basis,
                    float(run.alphas.sum()),
                    budget,
                    method=method.removeprefix("deflated "),
                    seed=derive_seed(seed, "trace"),
                )
                trace_errors.setdefault((method, budget), []).append(
                    abs(est.estimate - exact_trace) / abs(exact_trace)
                )
            ref = hutchinson_trace(H, 100, seed=derive_seed(seed, "reference trace"))
            trace_errors.setdefault(("PyHessian: Hutchinson", 100), []).append(
                abs(ref.estimate - exact_trace) / abs(exact_trace)
            )
        for (method, budget), errs in trace_errors.items():
            print(
                row(
                    sample,
                    n,
                    "trace rel. error",
                    method,
                    budget,
                    f"{np.median(errs):.2e}",
                    f"{np.max(errs):.2e}",
                )
            )
        for plan in density_plans:
            nodes_w1, dens_w1, hvps = [], [], []
            for seed, run in enumerate(runs):
                stream = "reference density" if plan == pyhessian else "density"
                a, b, c = density_errors(H, plan, derive_seed(seed, stream), run, eigenvalues)
                nodes_w1.append(a / width)
                dens_w1.append(b / width)
                hvps.append(c)
            label = "PyHessian: SLQ 1x100" if plan == pyhessian else plan.label()
            if plan == own:
                label = "default: " + label
            elif plan == library:
                label = "slq_density() defaults: " + label
            for what, values in (("W1 nodes / width", nodes_w1), ("W1 density / width", dens_w1)):
                print(
                    row(
                        sample,
                        n,
                        what,
                        label,
                        int(np.median(hvps)),
                        f"{np.median(values):.2e}",
                        f"{np.max(values):.2e}",
                    )
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
