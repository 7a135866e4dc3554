"""--spread K: each subset's λ_max and trace equal a separate run on that subset's samples, and
the exact values of that subset's Hessian / GGN (eigvalsh in float64).

Tolerances: λ_max from Lanczos on a 38-dimensional operator converges to rounding, so 1e-6
relative is loose; the trace is exact (Hutch++ falls back to n unit vectors when its budget is at
least the dimension), so 1e-10 relative.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.analyses.spread import MIN_SUBSET_SAMPLES, analyze_spread, subset_batches
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.operators.curvature import curvature_operator
from landscape_cli.problem.data import dataset_batches, tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64


def problem(n: int = 40):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return model, x, y


def settings(curvature: str, k: int | None = None) -> SpectrumSettings:
    return SpectrumSettings(
        top_k=1, bottom_k=0, tol=1e-8, trace_matvecs=40, density=False, curvature=curvature,
        spread=k,
    )  # fmt: skip


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_each_subset_equals_a_separate_run_on_its_samples(curvature):
    model, x, y = problem(40)  # batches of 6: 6,6,6,6,6,6,4 -> K=3 groups of 3, 2, 2 batches
    obj = Objective(
        model, SplitLoss("cross_entropy"), tensor_batches((x, y), 6, None, "t"), dtype=F64
    )
    result = analyze_spectrum(obj, settings(curvature, 3))
    spread = result.spread
    assert [(s.first_batch, s.stop_batch) for s in spread.subsets] == [(0, 3), (3, 5), (5, 7)]
    assert [s.num_samples for s in spread.subsets] == [18, 12, 10]
    starts = [0, 18, 30, 40]
    for subset, lo, hi in zip(spread.subsets, starts[:-1], starts[1:], strict=True):
        alone = Objective(
            model, SplitLoss("cross_entropy"), tensor_batches((x[lo:hi], y[lo:hi]), 6, None, "t"),
            dtype=F64,
        )  # fmt: skip
        separate = analyze_spectrum(alone, settings(curvature))
        assert subset.lambda_max == pytest.approx(separate.lambda_max, rel=1e-6)
        M = curvature_operator(alone, curvature) @ torch.eye(alone.num_parameters, dtype=F64)
        exact = torch.linalg.eigvalsh(M)
        assert subset.lambda_max == pytest.approx(float(exact[-1]), rel=1e-6)
        assert subset.trace == pytest.approx(float(M.trace()), rel=1e-10)
    values = [s.lambda_max for s in spread.subsets]
    mean, std = spread.lambda_max_mean_std
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert spread.full_lambda_max == result.lambda_max
    # 18/12/10 samples: below the 128-sample floor, so the result warns
    assert any(f"< {MIN_SUBSET_SAMPLES}" in w for w in result.warnings)
    lanczos_and_trace = result.lanczos.matvecs + result.trace_estimate.matvecs
    assert result.info.hvp_count == lanczos_and_trace + spread.matvecs + 2  # +2: determinism


def test_dataset_source_subsets_and_range_errors():
    model, x, y = problem(20)
    items = [(x[i], y[i]) for i in range(20)]
    batches = dataset_batches(items, 8, None, "items")  # 8, 8, 4
    sub = subset_batches(batches, 1, 3)
    assert sub.num_samples == 12 and len(sub) == 2
    first = next(iter(sub))[0]
    assert torch.equal(first[0], x[8:16])
    obj = Objective(model, SplitLoss("cross_entropy"), batches, dtype=F64)
    with pytest.raises(InputError, match="number of batches"):
        analyze_spread(obj, settings("hessian"), k=4, full_lambda_max=1.0, full_trace=None)


def test_large_stable_sample_gives_no_warning():
    """Linear least squares on 600 Gaussian samples: H = (2/N) XᵀX is a stable mean, the subsets
    agree to a few per cent, and each has 300 ≥ 128 samples."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(600, 4, generator=gen, dtype=F64)
    y = torch.randn(600, 1, generator=gen, dtype=F64)
    obj = Objective(model, SplitLoss("mse"), tensor_batches((x, y), 100, None, "t"), dtype=F64)
    result = analyze_spectrum(obj, settings("hessian", 2))
    assert result.spread.lambda_max_cv < 0.10
    assert result.warnings == []


def test_cli_spread_json_stderr_warning_and_report(tmp_path):
    from landscape_cli.io.report_file import read_report

    out = tmp_path / "r.h5"
    result = CliRunner().invoke(
        app,
        ["spectrum", "--json", "--spread", "2", "--batch-size", "64", "--max-samples", "128",
         "--trace-matvecs", "20", "--no-density", "--top-k", "1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["spread"]["k"] == 2
    assert [s["num_samples"] for s in payload["spread"]["subsets"]] == [64, 64]
    assert payload["warnings"] and "landscape: warning:" in result.stderr
    assert payload["spread"]["lambda_max"]["full"] == payload["lambda_max"]
    spread = read_report(out).spectrum.spread
    assert [s.lambda_max for s in spread.subsets] == payload["spread"]["lambda_max"]["values"]
    assert spread.warnings == payload["spread"]["warnings"] == payload["warnings"]


def test_html_summary_shows_per_layer_spread_and_warnings(tmp_path):
    from landscape_cli.io.report_file import read_report
    from landscape_cli.render.html import render_html

    out = tmp_path / "r.h5"
    result = CliRunner().invoke(
        app,
        ["spectrum", "--json", "--spread", "2", "--per-layer", "--max-samples", "128",
         "--batch-size", "64", "--trace-matvecs", "20", "--no-density", "--top-k", "1",
         "--curvature", "ggn", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    page = render_html(read_report(out))
    assert "Per layer (diagonal blocks)" in page and "Spread over 2 data subsets" in page
    assert "Warning:" in page and "generalised Gauss-Newton" in page
