"""The negative fraction and its standard error against exact spectra.

References are exact: a planted spectrum, and the dense Hessian of a small untrained ReLU MLP
(``torch.func.hessian``, :func:`test_curvature.dense_hessian`). The ReLU network (403 parameters,
above classify's dense limit of 200, so SLQ runs) has about a third of its eigenvalues exactly 0
(dead units and the rank deficit of 32 samples) and almost half within ±neg_tol·κ of 0; counting
the Gauss nodes below −neg_tol·κ, the node that carries that cluster lands on either side of the
threshold and gives 0.20-0.34 where the exact fraction is 0.25-0.27. The tolerance is the larger
of 0.02 and 2.5 standard errors, with the standard error below 0.05.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch
from spectra import planted
from test_curvature import dense_hessian
from torch import nn
from typer.testing import CliRunner

from landscape_cli.analyses.classify import ClassifyResult, ClassifySettings, classify_point
from landscape_cli.cli import app
from landscape_cli.estimators.density import slq_density
from landscape_cli.estimators.eigenvalue_count import fraction_below, run_fraction_below
from landscape_cli.estimators.exact import ExactSpectrum
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective
from landscape_cli.render.terminal import print_classification

F64 = torch.float64


def within_its_uncertainty(estimate: float, stderr: float, exact: float) -> bool:
    return stderr < 0.05 and abs(estimate - exact) <= max(0.02, 2.5 * stderr)


@cache
def relu_network(seed: int) -> tuple[Objective, np.ndarray]:
    """An untrained 4-16-16-3 ReLU MLP on 32 random samples, and its exact eigenvalues."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).double()
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(32, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (32,), generator=gen)
    objective = Objective(
        model, SplitLoss("cross_entropy"), tensor_batches((x, y), 32, None, "t"), dtype=F64
    )
    H = dense_hessian(model, "cross_entropy", x, y)
    return objective, torch.linalg.eigvalsh((H + H.T) / 2).numpy()


@cache
def classified(seed: int) -> ClassifyResult:
    return classify_point(relu_network(seed)[0], ClassifySettings(newton=False), seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_negative_fraction_of_a_relu_network_with_a_null_space_matches_its_dense_hessian(seed):
    _, eigenvalues = relu_network(seed)
    kappa = np.abs(eigenvalues).max()
    assert np.mean(np.abs(eigenvalues) <= 1e-10 * kappa) > 0.25  # the null space
    assert np.mean(np.abs(eigenvalues) <= 1e-3 * kappa) > 0.4  # and the cluster around it
    result = classified(seed)
    assert result.negative_fraction_runs == ClassifySettings().slq_runs
    threshold = result.settings.neg_tol * result.decision.curvature_scale
    exact = np.mean(eigenvalues < -threshold)
    # spectrum's `exact` block counts at the same threshold
    exact_block = ExactSpectrum(eigenvalues, 0.0, eigenvalues.size).to_dict(neg_tol=1e-3)
    assert exact_block["negative_threshold"] == pytest.approx(threshold, rel=1e-4)
    assert exact_block["negative_fraction"] == exact
    estimate, stderr = result.negative_fraction, result.negative_fraction_stderr
    assert within_its_uncertainty(estimate, stderr, exact), (estimate, stderr, exact)


def test_negative_fraction_stderr_is_in_the_json_the_report_file_and_the_terminal(tmp_path):
    import h5py
    from rich.console import Console

    result = classified(0)
    console = Console(record=True, width=200)
    print_classification(result, console)
    stderr = f"{result.negative_fraction_stderr:.2g}"
    assert f"{result.negative_fraction:.3g} ± {stderr} s.e. (4 SLQ runs)" in console.export_text()
    payload = result.to_dict()
    assert payload["negative_fraction_stderr"] == pytest.approx(result.negative_fraction_stderr)
    assert payload["negative_fraction_runs"] == 4
    with h5py.File(tmp_path / "r.h5", "w") as f:
        result.to_hdf5(f.create_group("classify"))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        back = ClassifyResult.from_hdf5(f["classify"])
    assert back.negative_fraction_stderr == result.negative_fraction_stderr
    assert back.negative_fraction_runs == 4


def planted_zero_block_and_threshold_clusters(t: float) -> np.ndarray:
    """800 eigenvalues: 320 exact zeros, 40 at −1.5t and 40 at −0.5t (below and above the
    threshold −t), and a bulk from ±0.1 to ±1 on both sides: 30 % below −t."""
    return np.concatenate(
        [
            np.zeros(320),
            np.full(40, -1.5 * t),
            np.full(40, -0.5 * t),
            -np.linspace(0.1, 1.0, 200),
            np.linspace(0.1, 1.0, 200),
        ]
    )


@pytest.mark.parametrize("seed", range(4))
def test_fraction_below_counts_a_zero_block_as_not_negative_next_to_threshold_clusters(seed):
    """Gauss nodes counted as they fall put 3-6 % too little below −t here."""
    t = 1e-3
    eigenvalues = planted_zero_block_and_threshold_clusters(t)
    slq = slq_density(planted(eigenvalues, seed=5), runs=4, steps=60, seed=seed)
    counted = fraction_below(slq.nodes, slq.weights, t, complete=slq.complete_runs)
    exact = np.mean(eigenvalues < -t)
    assert exact == pytest.approx(0.3)
    assert within_its_uncertainty(counted.estimate, counted.stderr, exact), counted


def test_fraction_below_counts_a_complete_rule_exactly_and_one_run_has_no_stderr():
    """A run that broke down has eigenvalues for nodes: they are counted, not interpolated."""
    A = torch.diag(torch.tensor([-1.0, 0.0, 1.0] * 100, dtype=F64))
    slq = slq_density(A, runs=3, steps=30, seed=0)
    assert slq.complete_runs.all()
    counted = fraction_below(slq.nodes, slq.weights, 1e-3, complete=slq.complete_runs)
    assert counted.estimate == pytest.approx(1 / 3, abs=1e-12) and counted.runs == 3
    one = fraction_below(slq.nodes[:1], slq.weights[:1], 1e-3, complete=[True])
    assert one.runs == 1 and one.stderr is None
    assert run_fraction_below(np.array([-2.0]), np.array([1.0]), 1e-3) == 1.0


#: an untrained 8-12-12-4 tanh MLP (316 parameters: SLQ, not the dense Hessian) on 64 samples
UNTRAINED = [
    "--model", "landscape_cli.sample_models.mlp:build", "--model-arg", "hidden=12",
    "--data", "sample:blobs", "--max-samples", "64", "--dtype", "float64",
]  # fmt: skip


def test_check_uses_the_negative_fraction_stderr_as_its_uncertainty():
    """A limit 1.5 standard errors below the estimate fails alone and passes with margin 2."""

    def check(*args: str):
        torch.manual_seed(0)  # the factory draws the weights from the global generator
        result = CliRunner().invoke(app, ["check", *UNTRAINED, *args, "--json"])
        return result.exit_code, json.loads(result.stdout)

    code, payload = check("--max", "negative_fraction=1")
    assert code == 0
    value, uncertainty = payload["checks"][0]["value"], payload["checks"][0]["uncertainty"]
    assert uncertainty is not None and 0 < uncertainty < 0.05 and value > 0.1
    limit = f"negative_fraction={value - 1.5 * uncertainty!r}"
    code, payload = check("--max", limit)
    assert code == 1 and payload["checks"][0]["value"] == value and not payload["passed"]
    code, payload = check("--max", limit, "--margin", "2")
    assert code == 0 and payload["passed"]
