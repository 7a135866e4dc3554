"""`spectrum --lambda-max`: λ_max alone, from a Lanczos run that waits for the top Ritz value only.

The bottom of a network Hessian's spectrum is a dense bulk near zero whose extreme Ritz value
converges several times more slowly than an isolated top eigenvalue, so a run that does not ask
for λ_min must not wait for it. The references are independent of the code under test: a planted
spectrum, and the dense float64 Hessian of a tiny network by ``torch.func.hessian``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from spectra import nn_like_eigenvalues, planted
from torch import nn
from torch.func import functional_call, hessian
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.objective import Objective

runner = CliRunner()
F64 = torch.float64


def test_lanczos_without_bottom_k_stops_when_the_top_converges():
    """Outliers above a bulk near zero: the top Ritz value converges in a few steps, the bottom
    one (inside the bulk's edge) takes many more; bottom_k=0 stops at the top's convergence."""
    eigenvalues = nn_like_eigenvalues(n=600, seed=3)
    A = planted(eigenvalues, seed=5)
    top_only = lanczos(A, seed=0, max_iter=300, tol=1e-4, top_k=1, bottom_k=0)
    with_bottom = lanczos(A, seed=0, max_iter=300, tol=1e-4, top_k=1, bottom_k=1)
    assert top_only.converged and with_bottom.converged
    assert top_only.matvecs < with_bottom.matvecs
    error = abs(top_only.top(1)[0] - eigenvalues[-1])
    assert error <= top_only.ritz_residuals[top_only.top_index()]


def tiny_network_objective() -> tuple[Objective, torch.Tensor]:
    """A tanh MLP with 180 parameters away from a minimum (λ_min < 0), float64, and its dense
    Hessian by ``torch.func.hessian`` of the full-data mean loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x, y = torch.randn(128, 6, dtype=F64), torch.randint(0, 4, (128,))

    def mean_loss(m: nn.Module, batch) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    objective = Objective(model, mean_loss, tensor_batches((x, y), 64, None, "t"), dtype=F64)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(w: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, torch.split(w, [s.numel() for s in shapes]), strict=True))
        params = {n: p.reshape(s) for (n, p), s in zip(params.items(), shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return objective, hessian(loss_of)(w0)


def test_lambda_max_spends_fewer_products_and_meets_its_bound_against_the_dense_hessian():
    objective, dense = tiny_network_objective()
    reference = torch.linalg.eigvalsh((dense + dense.T) / 2).numpy()
    assert reference[0] < 0  # a saddle: λ_min sits at the edge of a bulk, slow to converge
    fast = analyze_spectrum(objective, SpectrumSettings(lambda_max=True))
    full = analyze_spectrum(objective, SpectrumSettings())
    assert fast.lanczos.matvecs < full.lanczos.matvecs
    assert fast.info.hvp_count < full.info.hvp_count
    assert fast.lambda_min is None and fast.trace_estimate is None and fast.density_estimate is None
    bound = fast.lanczos.error_bounds[fast.lanczos.top_index()]
    # the reported bound, plus the rounding of two float64 computations of a 180 x 180 spectrum
    assert abs(fast.lambda_max - reference[-1]) <= bound + 1e-12 * abs(reference[-1])
    assert fast.lanczos.converged and bound <= 1e-4 * abs(reference[-1])


def test_lambda_max_json_has_a_null_lambda_min_saying_it_was_not_requested():
    result = runner.invoke(app, ["spectrum", "--lambda-max", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["lambda_min"] is None and payload["bottom_eigenvalues"] == []
    assert payload["top_eigenvalues"] == [payload["lambda_max"]]
    assert payload["trace"] is None and payload["density"] is None
    for quantity in ("lambda_min", "trace", "density"):
        assert payload["notes"][quantity] == "not requested (--lambda-max)"
    checks = payload["determinism_check"]["matvecs"]
    assert payload["hvp_count"] == payload["lanczos"]["matvecs"] + checks
    with_bottom = runner.invoke(
        app, ["spectrum", "--json", "--top-k", "1", "--no-trace", "--no-density"]
    )
    assert with_bottom.exit_code == 0, with_bottom.stderr
    assert json.loads(with_bottom.stdout)["lanczos"]["matvecs"] > payload["lanczos"]["matvecs"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--top-k", "3"], "--top-k 3"),
        (["--bottom-k", "1"], "--bottom-k 1"),
        (["--trace"], "--trace"),
        (["--density"], "--density"),
    ],
)
def test_lambda_max_with_a_flag_asking_for_more_is_one_usage_error(flags, named):
    result = runner.invoke(app, ["spectrum", "--lambda-max", *flags])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error: --lambda-max"), lines
    assert f"which {named} contradicts" in lines[0]
    assert result.stdout == ""


def test_lambda_max_with_the_flags_it_implies_is_accepted():
    args = ["spectrum", "--lambda-max", "--top-k", "1", "--bottom-k", "0", "--no-trace", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["lambda_min"] is None


def test_lambda_max_in_a_config_file_conflicts_with_an_explicit_default(tmp_path):
    """top_k: 5 is the default, but written next to lambda_max it is a request for five."""
    config = tmp_path / "run.yaml"
    config.write_text("spectrum:\n  lambda_max: true\n  top_k: 5\n")
    result = runner.invoke(app, ["spectrum", "--config", str(config)])
    assert result.exit_code == 2, result.stderr
    assert "which --top-k 5 contradicts" in result.stderr


def test_library_settings_with_lambda_max_refuse_a_contradicting_value():
    assert SpectrumSettings(lambda_max=True).resolved().top_k == 1
    with pytest.raises(InputError, match="`top_k=3` contradicts"):
        SpectrumSettings(lambda_max=True, top_k=3).resolved()


def test_top_k_alone_keeps_lambda_min():
    """--top-k without --bottom-k still reports λ_min (bottom_k keeps its default): what an
    option means does not depend on which other flags were typed; --bottom-k 0 or --lambda-max
    drop it."""
    args = ["spectrum", "--json", "--top-k", "2", "--no-trace", "--no-density"]
    payload = json.loads(runner.invoke(app, args).stdout)
    assert payload["lambda_min"] is not None and len(payload["top_eigenvalues"]) == 2
    assert not np.isnan(payload["lambda_min"])
