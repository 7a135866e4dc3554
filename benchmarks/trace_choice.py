"""Accuracy of the trace estimators, and of the choice ``--trace-method auto`` makes (not a test).

Run from the repository root::

    python benchmarks/trace_choice.py                  # three networks, 40 seeds, ~25 minutes
    python benchmarks/trace_choice.py --nets gelu-ln --seeds 10 --budgets 60

Networks (float64): the bundled samples ``mlp`` and ``cnn``, and ``gelu-ln``: a
Linear(64, 32)-LayerNorm-GELU-Linear(32, 10) classifier (2 474 parameters) trained for 300 SGD
steps on 512 points of a 10-class Gaussian mixture with 20 % of the labels redrawn. The exact
trace comes from the dense Hessian (``n`` HVPs); all estimators then run on that matrix, which
gives the numbers of the HVPs up to rounding. For each seed, the extremes' Lanczos run of
``landscape spectrum``'s defaults (top-5, bottom-1, ``tol=1e-4``) gives the basis ``Q_m``; then,
at equal budgets of trace products (the Lanczos run is not counted: ``spectrum`` spends it
anyway):

* ``hutchinson``, ``hutch++``: plain Hutchinson and Hutch++ (Meyer et al. 2021) on ``H``;
* ``deflated X``: ``Σα + X(P H P)``, ``P = I - Q_m Q_mᵀ``;
* ``auto``: the default, ``Σα + auto_trace(P H P)``: Hutchinson or Hutch++ on the remainder,
  whichever the first ``budget // 3`` products predict to have the smaller standard error.

Printed per network: the Frobenius shares ``‖H‖_F²`` left by the Lanczos basis and by the top
eigenvalues; per budget and estimator: the median and largest relative error over the seeds,
the share of seeds within 2 and 3 reported standard errors, and how often ``auto`` chose Hutch++.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from trace_deflation import extremes_runs  # benchmarks/ is not a package

from landscape_cli import HessianOperator, make_objective
from landscape_cli.estimators.exact import dense_matrix
from landscape_cli.estimators.trace import deflated_trace, hutchinson_trace, hutchpp_trace
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.seeding import derive_seed


def gelu_layernorm_objective():
    """The ``gelu-ln`` network of the module docstring, trained, as an objective in float64."""
    gen = torch.Generator().manual_seed(0)
    classes, dim, samples = 10, 64, 512
    centers = torch.randn(classes, dim, generator=gen) * 0.5
    y = torch.randint(0, classes, (samples,), generator=gen)
    x = centers[y] + torch.randn(samples, dim, generator=gen)
    redrawn = torch.rand(samples, generator=gen) < 0.2
    y = torch.where(redrawn, torch.randint(0, classes, (samples,), generator=gen), y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, 32), torch.nn.LayerNorm(32), torch.nn.GELU(), torch.nn.Linear(32, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def loss(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return make_objective(model, (x, y), loss, batch_size=samples, dtype=torch.float64)


def objective_of(net: str):
    if net == "gelu-ln":
        return gelu_layernorm_objective()
    config = resolve_run_config({"checkpoint": f"sample:{net}", "dtype": "float64"}, None)
    return build_objective(config)


def frobenius_share(H: torch.Tensor, Q: torch.Tensor) -> float:
    """``‖P H P‖_F² / ‖H‖_F²`` for ``P = I - Q Qᵀ``."""
    HQ = H @ Q
    rest = (H**2).sum() - 2 * (HQ**2).sum() + ((Q.mT @ HQ) ** 2).sum()
    return float(rest / (H**2).sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["gelu-ln", "mlp", "cnn"])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--budgets", type=int, nargs="+", default=[60, 150])
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for net in opts.nets:
        H = dense_matrix(HessianOperator(objective_of(net)))
        H = 0.5 * (H + H.mT)
        eigenvalues = torch.linalg.eigvalsh(H).numpy()
        exact = float(eigenvalues.sum())
        mass = np.sort(eigenvalues**2)[::-1].cumsum() / (eigenvalues**2).sum()
        runs = extremes_runs(H, opts.seeds)
        steps = [run.basis.shape[1] for run in runs]
        left = [frobenius_share(H, run.basis) for run in runs]
        print(
            f"{net}: n {H.shape[0]}, exact trace {exact:.6g}; Lanczos basis {np.median(steps):.0f} "
            f"vectors (median) leaves {np.median(left):.2f} of ‖H‖_F²; the top 5 / 20 / 50 "
            f"|λ| hold {mass[4]:.2f} / {mass[19]:.2f} / {mass[49]:.2f}",
            file=sys.stderr,
        )
        for budget in opts.budgets:
            errors: dict[str, list[tuple[float, float]]] = {}
            chose_hutchpp = 0
            for seed, run in enumerate(runs):
                trace_seed = derive_seed(seed, "trace")
                alphas = float(run.alphas.sum())
                estimates = {
                    "hutchinson": hutchinson_trace(H, budget, seed=trace_seed),
                    "hutch++": hutchpp_trace(H, budget, seed=trace_seed),
                }
                for method in ("hutchinson", "hutch++", "auto"):
                    name = "auto" if method == "auto" else f"deflated {method}"
                    estimates[name] = deflated_trace(
                        H, run.basis, alphas, budget, method=method, seed=trace_seed
                    )
                chose_hutchpp += estimates["auto"].method == "deflated hutch++"
                for name, est in estimates.items():
                    error = abs(est.estimate - exact)
                    errors.setdefault(name, []).append((error / abs(exact), error / est.stderr))
            for name, values in errors.items():
                rel, z = np.array(values).T
                chosen = f"{chose_hutchpp}/{len(runs)}" if name == "auto" else ""
                rows.append(
                    f"| {net} | {H.shape[0]} | {budget} | {name} | {np.median(rel):.2e} | "
                    f"{np.max(rel):.2e} | {np.mean(z <= 2):.2f} | {np.mean(z <= 3):.2f} | "
                    f"{chosen} |"
                )
    print(
        "| net | n | budget | estimator | median rel. error | max rel. error | ≤ 2 s.e. | ≤ 3 s.e. | auto chose Hutch++ |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
