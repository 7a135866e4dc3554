"""Jacobian diagnostics against exact answers: weight-matrix SVDs, |σ'(x)|, softmax's null vector,
dense jacrev Jacobians and kernels, the NTK/GGN relation for MSE; the CLI, report and check.

Tolerances (float64 unless stated): the Jacobians here have rank ≤ 7, so Lanczos on ``JᵀJ`` stops
by an (exact) breakdown after ≤ rank + 1 steps and the Ritz values are eigenvalues to rounding
(~1e-15 relative); ``σ = sqrt(λ)`` halves the relative error. 1e-9 relative leaves a wide margin
above rounding while any real error (a wrong product, a missed eigenvalue) is O(1). The brief's
1e-6 is used where it asks for it. The NTK Lanczos runs to ``tol`` = 1e-10 (relative error bound
of each wanted Ritz value), and 1e-8 relative is checked. CLI runs are float32 (the bundled
sample): σ_max agrees with a float64 dense computation to ~1e-6 relative, so the check tests put
the limit 1e-3 relative above or below the independent value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from operator_checks import assert_matches_dense
from torch import nn
from torch.func import functional_call, jacrev
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.analyses.jacobian import (
    JacobianSettings,
    analyze_jacobian,
    jacobian_singular_values,
    summarize,
)
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.operators.jacobian import JacobianGram, NTKOperator
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.objective import Objective

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def mse(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def objective_for(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 4, **kwargs
) -> Objective:
    return Objective(
        model, mse, tensor_batches((x, y), bs, None, "toy"), dtype=F64, hvp_mode="streaming",
        **kwargs,
    )  # fmt: skip


def tiny_mlp(d: int = 5, h: int = 7, c: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).to(F64)


def dense_param_jacobian(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """J_θ (N·C × P) of the flattened outputs by jacrev, parameters in named_parameters order."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (X,)).reshape(-1))(params)
    return torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1).detach()


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("shape", [(4, 6), (7, 3)])  # wide: C VJPs; tall: d JVPs
def test_linear_model_singular_values_are_the_weight_matrix_ones(shape):
    out_dim, in_dim = shape
    torch.manual_seed(1)
    model = nn.Linear(in_dim, out_dim).to(F64)
    x, y = torch.randn(5, in_dim, dtype=F64), torch.randn(5, out_dim, dtype=F64)
    result = analyze_jacobian(objective_for(model, x, y), JacobianSettings(samples=5, ntk=False))
    exact = torch.linalg.svdvals(model.weight.detach()).numpy()
    assert result.singular_values.shape == (5, min(shape))
    np.testing.assert_allclose(result.sigma_max, exact[0], rtol=1e-9)
    np.testing.assert_allclose(result.singular_values, np.tile(exact, (5, 1)), rtol=1e-9)
    np.testing.assert_allclose(result.sigma_min, exact[-1], rtol=1e-9)
    assert (result.rank == min(shape)).all()
    np.testing.assert_allclose(result.condition, exact[0] / exact[-1], rtol=1e-9)
    (layer,) = result.layers  # the model itself is its only leaf
    assert layer.name == "(model)" and layer.type == "Linear"
    np.testing.assert_allclose(layer.sigma_max, exact[0], rtol=1e-9)


def test_elementwise_activation_singular_values_are_abs_derivative():
    z = torch.linspace(-2.5, 2.0, 9, dtype=F64)
    s = jacobian_singular_values(torch.tanh, z)
    exact = np.sort(np.abs(1 - np.tanh(z.numpy()) ** 2))[::-1]  # tanh' = 1 - tanh²
    np.testing.assert_allclose(s.singular_values, exact, rtol=1e-12)
    assert s.sigma_max == pytest.approx(exact[0], rel=1e-9)
    # the same through the layer-wise pass: layer "1" (Tanh) at its recorded input W1 x + b1
    model = tiny_mlp()
    x, y = torch.randn(6, 5, dtype=F64), torch.randn(6, 3, dtype=F64)
    result = analyze_jacobian(objective_for(model, x, y), JacobianSettings(samples=6, ntk=False))
    assert [layer.name for layer in result.layers] == ["0", "1", "2"]
    with torch.no_grad():
        pre = model[0](x)
    expected = (1 - torch.tanh(pre) ** 2).abs().max(dim=1).values.numpy()
    np.testing.assert_allclose(result.layers[1].sigma_max, expected, rtol=1e-9)
    for index in (0, 2):  # Linear layers: σ_max(W) for every sample
        w = model[index].weight.detach()
        np.testing.assert_allclose(
            result.layers[index].sigma_max, torch.linalg.svdvals(w)[0].item(), rtol=1e-9
        )


def test_softmax_jacobian_has_null_vector_ones_and_rank_k_minus_one():
    k = 6
    z = torch.randn(k, generator=torch.Generator().manual_seed(3), dtype=F64)
    A = JacobianGram(lambda v: torch.softmax(v, dim=0), z)
    J = A.dense()
    p = torch.softmax(z, dim=0)
    torch.testing.assert_close(J, torch.diag(p) - torch.outer(p, p), rtol=0, atol=1e-15)
    assert torch.linalg.vector_norm(J @ torch.ones(k, dtype=F64)) < 1e-15  # J·1 = p - p(pᵀ1) = 0
    s = jacobian_singular_values(lambda v: torch.softmax(v, dim=0), z)
    assert s.rank == k - 1
    assert s.singular_values[-1] < 1e-15 * k
    exact = torch.linalg.svdvals(torch.diag(p) - torch.outer(p, p)).numpy()
    assert s.sigma_min == pytest.approx(exact[k - 2], rel=1e-9)
    assert s.sigma_max == pytest.approx(exact[0], rel=1e-9)


# ------------------------------------------------------------------ dense references
def test_jacobian_gram_and_ntk_operators_match_jacrev_and_count_one_jvp_and_vjp_per_column():
    """``JᵀJ`` of one sample's input–output Jacobian and the NTK ``J_θ J_θᵀ`` of four samples,
    against ``jacrev``; products are a JVP and a VJP each, exact up to float64 rounding."""
    model = tiny_mlp().requires_grad_(False)  # as the analysis's copies: products hold no graph
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(8), dtype=F64)

    def sample(v: torch.Tensor) -> torch.Tensor:
        return model(v.unsqueeze(0))[0]

    J = jacrev(sample)(x[0]).detach()
    gram = JacobianGram(sample, x[0])
    assert_matches_dense(gram, J.T @ J, tol=1e-12)
    assert gram.jvps == gram.vjps == gram.matvecs
    names = [name for name, _ in model.named_parameters()]

    def outputs(*params: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, params, strict=True)), (x,)).reshape(-1)

    ntk = NTKOperator(outputs, [p.detach() for p in model.parameters()])
    Jt = dense_param_jacobian(model, x)
    assert_matches_dense(ntk, Jt @ Jt.T, tol=1e-12)
    assert ntk.jvps == ntk.vjps == ntk.matvecs


def test_tiny_network_sigma_max_and_ntk_match_dense_jacrev():
    model = tiny_mlp()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    y = torch.randn(6, 3, generator=gen, dtype=F64)
    settings = JacobianSettings(samples=6, tol=1e-10, ntk_top_k=4)
    result = analyze_jacobian(objective_for(model, x, y), settings, seed=5)
    for i in range(6):
        J = jacrev(lambda v: model(v.unsqueeze(0))[0])(x[i])
        exact = torch.linalg.svdvals(J.detach()).numpy()
        assert result.sigma_max[i] == pytest.approx(exact[0], rel=1e-6)
        np.testing.assert_allclose(result.singular_values[i], exact, rtol=1e-9)
    Jt = dense_param_jacobian(model, x)
    K = Jt @ Jt.T
    eig = torch.linalg.eigvalsh(K).flip(0).numpy()
    np.testing.assert_allclose(result.ntk.top_eigenvalues, eig[:4], rtol=1e-8)
    assert result.ntk.trace == pytest.approx(float(torch.trace(K)), rel=1e-12)
    assert result.ntk.outputs == 18 and result.info.hvp_count == 0
    assert result.jvp_count > 0 and result.vjp_count > 0


def test_ntk_eigenvalues_times_two_over_nc_are_the_mse_ggn_eigenvalues():
    """For L = (1/(N·C)) Σ‖f − y‖²: G = J_θᵀ (∇²_F L) J_θ with ∇²_F L from torch.func.hessian
    (not assumed to be 2/(N·C)·I), so the non-zero eigenvalues of G must equal 2/(N·C) times the
    NTK's. And for a linear model the GGN is the full Hessian of L (torch.func.hessian)."""
    n, c = 5, 2
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(n, 4, generator=gen, dtype=F64)
    y = torch.randn(n, c, generator=gen, dtype=F64)
    for model in (tiny_mlp(4, 3, c, seed=2), nn.Linear(4, c).to(F64)):
        linear = isinstance(model, nn.Linear)
        # a linear model's kernel is (X Xᵀ + 1) ⊗ I_C: every eigenvalue C times, which the
        # restarted Lanczos blocks resolve
        settings = JacobianSettings(samples=n, tol=1e-10, ntk_top_k=n * c, layers=False)
        result = analyze_jacobian(objective_for(model, x, y), settings)
        Jt = dense_param_jacobian(model, x)
        F0 = model(x).detach().reshape(-1)
        loss_f = torch.func.hessian(lambda F: nn.functional.mse_loss(F.reshape(n, c), y))(F0)
        G = Jt.T @ loss_f @ Jt
        ggn = torch.linalg.eigvalsh(G).flip(0).numpy()
        scaled = 2.0 / (n * c) * result.ntk.top_eigenvalues
        expected = ggn[: n * c]
        if linear:
            np.testing.assert_allclose(expected[::c], expected[1::c], rtol=1e-10)
        np.testing.assert_allclose(scaled, expected, rtol=1e-8, atol=1e-12 * ggn[0])
        assert np.abs(ggn[n * c :]).max(initial=0.0) < 1e-12 * ggn[0]  # rank G ≤ N·C
        assert 2.0 / (n * c) * result.ntk.trace == pytest.approx(float(torch.trace(G)), rel=1e-10)
        if linear:
            params = {k: v.detach() for k, v in model.named_parameters()}

            def loss(p, model=model):
                return nn.functional.mse_loss(functional_call(model, p, (x,)), y)

            hess = torch.func.hessian(loss)(params)
            P = [(k, v.numel()) for k, v in params.items()]
            H = torch.cat(
                [torch.cat([hess[a][b].reshape(na, nb) for b, nb in P], 1) for a, na in P], 0
            )
            torch.testing.assert_close(H, G, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ behaviour
def test_user_module_is_untouched_and_train_mode_uses_batch_rows():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    settings = JacobianSettings(samples=5, tol=1e-10, ntk=False)
    result = analyze_jacobian(objective_for(model, x, y, bs=5, mode="train"), settings)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics not updated
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())
    reference = copy.deepcopy(model).train()  # batch statistics
    reference[1].track_running_stats = False  # and no in-place update under jacrev
    for i in (0, 3):  # row i replaced, the other rows held fixed

        def row(v, i=i):
            return reference(torch.cat([x[:i], v.unsqueeze(0), x[i + 1 :]]))[i]

        exact = torch.linalg.svdvals(jacrev(row)(x[i]).detach())[0].item()
        assert result.sigma_max[i] == pytest.approx(exact, rel=1e-9)


class SharedNet(nn.Module):
    """One Linear applied twice, a functional op between modules, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.shared(x))
        h = self.act(self.shared(2.0 * h))
        return self.head(h)


def test_repeated_calls_are_separate_layers_and_children_scope():
    torch.manual_seed(8)
    model = SharedNet().to(F64)
    x, y = torch.randn(3, 4, dtype=F64), torch.randn(3, 2, dtype=F64)
    settings = JacobianSettings(samples=3, ntk=False, tol=1e-10)
    result = analyze_jacobian(objective_for(model, x, y), settings)
    names = [layer.name for layer in result.layers]
    assert names == ["shared#1", "act#1", "shared#2", "act#2", "head"]
    w = torch.linalg.svdvals(model.shared.weight.detach())[0].item()
    for index in (0, 2):
        np.testing.assert_allclose(result.layers[index].sigma_max, w, rtol=1e-9)
    with torch.no_grad():
        second = model.shared(2.0 * torch.tanh(model.shared(x)))
    expected = (1 - torch.tanh(second) ** 2).max(dim=1).values.numpy()
    np.testing.assert_allclose(result.layers[3].sigma_max, expected, rtol=1e-9)

    nested = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.Tanh()), nn.Linear(5, 2)).to(F64)
    scope = JacobianSettings(samples=3, ntk=False, tol=1e-10, layer_scope="children")
    result = analyze_jacobian(objective_for(nested, x, y), scope)
    assert [layer.name for layer in result.layers] == ["0", "1"]
    for i in range(3):
        J = jacrev(lambda v: nested[0](v.unsqueeze(0))[0])(x[i]).detach()
        exact = torch.linalg.svdvals(J)[0].item()
        assert result.layers[0].sigma_max[i] == pytest.approx(exact, rel=1e-9)


def test_integer_inputs_are_an_input_error():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).to(F64)
    x = torch.randint(0, 10, (4, 3))
    y = torch.randn(4, 2, dtype=F64)
    with pytest.raises(InputError, match="real-valued inputs"):
        analyze_jacobian(objective_for(model, x, y), JacobianSettings(samples=2))


def test_summarize_is_numpy_quantiles():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, np.nan])
    stats = summarize(values)
    finite = values[np.isfinite(values)]
    assert stats["median"] == np.median(finite) and stats["min"] == 1.0 and stats["max"] == 5.0
    assert stats["q10"] == pytest.approx(np.quantile(finite, 0.1))
    assert summarize([np.nan]) is None


# ------------------------------------------------------------------ CLI
JSON_KEYS = {
    "command",
    "num_parameters",
    "loss",
    "grad_norm",
    "hvp_count",
    "seconds",
    "seed",
    "num_samples",
    "hvp_mode",
    "device",
    "dtype",
    "checkpoint",
    "checkpoint_sha256",
    "hvp_block",
    "processes",
    "compile",
    "samples",
    "input_dim",
    "output_dim",
    "jacobian_products",
    "sigma_max",
    "sigma_min",
    "condition",
    "per_sample",
    "lanczos",
    "layers",
    "ntk",
}  # fmt: skip (with a "notes" key only when there is a note)
STATS_KEYS = {"min", "q10", "q25", "median", "q75", "q90", "max"}


def sample_mlp_sigmas(n: int) -> tuple[np.ndarray, np.ndarray]:
    """σ_max and σ_max/σ_min of the bundled MLP's first n samples, by jacrev in float64."""
    sample = sample_models.get_sample("mlp")
    model = sample_models.mlp.build().to(F64)
    state = torch.load(sample.checkpoint, weights_only=True)
    model.load_state_dict({k: v.to(F64) for k, v in state.items()})
    model.eval()
    x, _ = sample_models.load_dataset("blobs")
    sigma, cond = [], []
    for i in range(n):
        J = jacrev(lambda v: model(v.unsqueeze(0))[0])(x[i].to(F64)).detach()
        s = torch.linalg.svdvals(J)
        sigma.append(s[0].item())
        cond.append((s[0] / s[-1]).item())
    return np.array(sigma), np.array(cond)


def test_cli_json_has_exact_keys():
    result = runner.invoke(app, ["jacobian", "--json", "--samples", "4", "--ntk-top-k", "3"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == JSON_KEYS
    assert payload["command"] == "jacobian" and payload["hvp_count"] == 0
    assert payload["samples"] == 4 and (payload["input_dim"], payload["output_dim"]) == (8, 4)
    assert set(payload["sigma_max"]) == STATS_KEYS
    assert set(payload["per_sample"]) == {"sigma_max", "sigma_min", "condition", "rank"}
    assert [layer["type"] for layer in payload["layers"]] == ["Linear", "Tanh"] * 2 + ["Linear"]
    assert set(payload["ntk"]) == {"samples", "outputs", "top_eigenvalues", "trace", "lanczos"}
    assert len(payload["ntk"]["top_eigenvalues"]) == 3 and payload["ntk"]["outputs"] == 16
    sigma, _ = sample_mlp_sigmas(4)
    np.testing.assert_allclose(payload["per_sample"]["sigma_max"], sigma, rtol=1e-5)


def test_cli_out_writes_and_reads_back_the_jacobian_group(tmp_path: Path):
    out = tmp_path / "r.h5"
    args = ["jacobian", "--samples", "3", "--out", str(out), "--quiet", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    with h5py.File(out, "r") as f:
        g = f["jacobian"]
        assert g["sigma_max"].shape == (3,) and g["sigma_min"].shape == (3,)
        assert g["singular_values"].shape == (3, 4) and g["layer_sigma_max"].shape == (5, 3)
        np.testing.assert_allclose(g["sigma_max"][()], payload["per_sample"]["sigma_max"])
        assert [str(n) for n in g.attrs["layer_types"]][:2] == ["Linear", "Tanh"]
        assert g["ntk/top_eigenvalues"].shape == (5,) and "alphas" in g["ntk/lanczos"]
        assert g.attrs["hvp_count"] == 0 and g["settings"].attrs["samples"] == 3
    from landscape_cli.io.report_file import read_report
    from landscape_cli.render.plots import report_figures

    report = read_report(out)
    again = report.jacobian.to_dict()
    for key in ("sigma_max", "sigma_min", "condition", "per_sample", "layers", "ntk"):
        assert again[key] == payload[key], key
    assert "jacobian" in report_figures(report)
    plotted = runner.invoke(app, ["plot", str(out), "--format", "svg"])
    assert plotted.exit_code == 0 and (tmp_path / "r-jacobian.svg").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--max-samples", "0"],
        ["--samples", "0"],
        ["--layer-scope", "all"],
        ["--tol", "-1"],
        ["--config", str(ROOT / "configs" / "cubic.yaml")],  # an analytic loss: no inputs
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args):
    result = runner.invoke(app, ["jacobian", "--quiet", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error:")


def test_cli_without_dense_jacobian_reports_null_with_reason():
    args = ["jacobian", "--json", "--samples", "2", "--dense-max", "0", "--no-layers", "--no-ntk"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["sigma_min"] is None and payload["condition"] is None
    assert payload["layers"] == [] and payload["ntk"] is None
    assert {"sigma_min", "layers", "ntk"} <= set(payload["notes"])


def test_check_jacobian_metrics_against_independent_values():
    sigma, cond = sample_mlp_sigmas(6)
    median_sigma, median_cond = float(np.median(sigma)), float(np.median(cond))
    base = ["check", "--max-samples", "6", "--quiet", "--json"]
    for limit, code in ((median_sigma * 1.001, 0), (median_sigma * 0.999, 1)):
        result = runner.invoke(app, [*base, "--max", f"jacobian_sigma_max={limit}"])
        assert result.exit_code == code, result.stdout + result.stderr
        (outcome,) = json.loads(result.stdout)["checks"]
        assert outcome["value"] == pytest.approx(median_sigma, rel=1e-5)
    for limit, code in ((median_cond * 0.999, 0), (median_cond * 1.001, 1)):
        result = runner.invoke(app, [*base, "--min", f"jacobian_condition={limit}"])
        assert result.exit_code == code, result.stdout + result.stderr
