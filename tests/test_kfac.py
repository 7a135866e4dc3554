"""K-FAC factors and operator against dense float64 references built from their definitions.

References are computed independently of the package: input rows from the layers' own forward
(convolution patches by slicing, not ``unfold``), output-gradient covariances ``J_zᵀ H_n J_z`` from
``torch.func.jacrev`` of the network's tail and the closed-form per-sample output Hessians, and
the GGN from the full Jacobian. The per-sample Kronecker sums of those references are checked to
be the GGN's layer blocks, which pins the layout (row-major weight, then bias) they share with
the operator.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from operator_checks import assert_matches_dense
from test_curvature import flat_function
from torch import nn
from torch.func import functional_call, jacrev

from landscape_cli.analyses.kfac import OVERALL, KFACSettings, analyze_kfac
from landscape_cli.errors import InputError
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.operators.ggn import GGNOperator
from landscape_cli.operators.kfac import KFACOperator, kronecker_factors
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64
N, BATCH = 11, 4  # batches of 4, 4 and a short one of 3


def objective(model: nn.Module, loss: str, x, y, batch: int = BATCH) -> Objective:
    return Objective(model, SplitLoss(loss), tensor_batches((x, y), batch, None, "t"), dtype=F64)


def dense(op) -> torch.Tensor:
    return op @ torch.eye(op.shape[0], dtype=F64)


def targets(loss: str, C: int, gen: torch.Generator) -> torch.Tensor:
    if loss in ("cross_entropy", "nll"):
        return torch.randint(0, C, (N,), generator=gen)
    if loss == "bce_with_logits":
        return torch.randint(0, 2, (N, C), generator=gen).to(F64)
    return torch.randn(N, C, generator=gen, dtype=F64)


def output_hessians(loss: str, f: torch.Tensor) -> torch.Tensor:
    """``(N, C, C)``: the Hessian of each sample's loss in its outputs (closed forms)."""
    C = f.shape[1]
    if loss in ("cross_entropy", "nll"):
        p = torch.softmax(f, dim=1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    if loss == "mse":
        return (2.0 / C) * torch.eye(C, dtype=F64).expand(f.shape[0], C, C)
    s = torch.sigmoid(f)
    return torch.diag_embed(s * (1 - s)) / C


def dense_ggn(model: nn.Module, loss: str, x: torch.Tensor) -> torch.Tensor:
    w0, params = flat_function(model)
    f = functional_call(model, params(w0), (x,))
    J = jacrev(lambda w: functional_call(model, params(w), (x,)))(w0)  # (N, C, n)
    return torch.einsum("icn,icd,idm->nm", J, output_hessians(loss, f), J) / x.shape[0]


def layout(out: int, d: int, bias: bool) -> torch.Tensor:
    """Position in ``vec([W | b])`` (row-major) of each flat parameter (weight rows, then bias)."""
    width = d + bias
    weight = (torch.arange(out)[:, None] * width + torch.arange(d)[None, :]).reshape(-1)
    return torch.cat([weight, torch.arange(out) * width + d]) if bias else weight


def kron_in_parameter_order(G, A, out: int, d: int, bias: bool) -> torch.Tensor:
    order = layout(out, d, bias)
    return torch.kron(G, A)[order][:, order]


def mlp(out: int, log_softmax: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, out)]
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers).double()


def mlp_references(model: nn.Sequential, loss: str, x: torch.Tensor):
    """Per layer ``(ā rows (N, d+1), per-sample Σ_c b bᵀ (N, out, out))`` of the MLP."""
    lin1, lin2 = model[0], model[2]
    z1 = lin1(x)
    h = torch.tanh(z1)
    z2 = lin2(h)
    tail2 = (lambda z: torch.log_softmax(z, dim=-1)) if len(model) == 4 else (lambda z: z)
    f = tail2(z2)
    Hn = output_hessians(loss, f)

    def tail1(z):
        return tail2(lin2(torch.tanh(z)))

    ones = torch.ones(x.shape[0], 1, dtype=F64)
    refs = []
    for a, z, tail in ((x, z1, tail1), (h, z2, tail2)):
        Jz = torch.stack([jacrev(tail)(z[i]) for i in range(z.shape[0])])  # (N, C, out)
        refs.append(
            (torch.cat([a, ones], 1).detach(), torch.einsum("ico,icd,idp->iop", Jz, Hn, Jz))
        )
    return [r for r in refs]


LOSSES = [
    ("cross_entropy", 3, False),
    ("nll", 3, True),
    ("mse", 2, False),
    ("bce_with_logits", 2, False),
]


@pytest.mark.parametrize(("loss", "C", "log_softmax"), LOSSES)
def test_mlp_factors_are_the_means_of_their_definitions(loss, C, log_softmax):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, generator=gen, dtype=F64)
    model = mlp(C, log_softmax)
    y = targets(loss, C, gen)
    layers, uncovered, _ = kronecker_factors(objective(model, loss, x, y), SplitLoss(loss))
    assert uncovered == [] and [layer.module for layer in layers] == ["0", "2"]
    ggn = dense_ggn(model, loss, x)
    for layer, (a, bb) in zip(layers, mlp_references(model, loss, x), strict=True):
        out, d = bb.shape[1], a.shape[1] - 1
        # the references' per-sample Kronecker sum is the GGN's block: same layout, same b's
        exact = sum(torch.kron(bb[i], torch.outer(a[i], a[i])) for i in range(N)) / N
        order = layout(out, d, True)
        block = ggn[layer.indices][:, layer.indices]
        torch.testing.assert_close(exact[order][:, order], block, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.A, a.T @ a / N, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.G, bb.mean(0), rtol=1e-10, atol=1e-12)
        assert layer.rows == pytest.approx(1.0)
        K = kron_in_parameter_order(layer.G, layer.A, out, d, True)
        torch.testing.assert_close(layer.matmat(torch.eye(layer.size, dtype=F64)), K)


def test_kfac_of_a_linear_model_under_mse_is_the_ggn():
    """One Linear layer, MSE: the output Hessian is the same for every sample, so the mean of
    Kronecker products is the product of means and K-FAC is the GGN (= the Hessian)."""
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(N, 4, generator=gen, dtype=F64), torch.randn(N, 3, generator=gen, dtype=F64)
    model = nn.Linear(4, 3).double()
    obj = objective(model, "mse", x, y)
    K = KFACOperator(obj, SplitLoss("mse"))
    assert_matches_dense(K, dense_ggn(model, "mse", x))
    assert_matches_dense(GGNOperator(obj, SplitLoss("mse")), dense(K))


def test_kfac_of_a_hidden_layer_is_not_its_ggn_block():
    """The approximation is not exact in general: a test that compares with the GGN can fail."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, 3, generator=gen, dtype=F64)
    model = mlp(3)
    y = targets("cross_entropy", 3, gen)
    K = KFACOperator(objective(model, "cross_entropy", x, y), SplitLoss("cross_entropy"))
    first = K.layers[0].indices
    block = dense_ggn(model, "cross_entropy", x)[first][:, first]
    error = torch.linalg.norm(dense(K)[first][:, first] - block) / torch.linalg.norm(block)
    assert float(error) > 1e-3


def test_factors_do_not_depend_on_the_batching():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(N, 3, generator=gen, dtype=F64)
    y = targets("cross_entropy", 3, gen)
    split = SplitLoss("cross_entropy")
    one, _, _ = kronecker_factors(objective(mlp(3), "cross_entropy", x, y, batch=N), split)
    many, _, _ = kronecker_factors(objective(mlp(3), "cross_entropy", x, y, batch=3), split)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a.A, b.A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.G, b.G, rtol=1e-12, atol=1e-14)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=(1, 2), padding=1)
        self.norm = nn.GroupNorm(1, 3)  # not covered: its parameters are zero rows
        self.head = nn.Linear(3 * 5 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.conv(x))).flatten(1))


def patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(N, T, C_in·k_h·k_w)`` input patches by slicing the zero-padded input."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = nn.functional.pad(x, (pw, pw, ph, ph))
    rows = []
    for i in range(0, xp.shape[2] - kh + 1, sh):
        for j in range(0, xp.shape[3] - kw + 1, sw):
            rows.append(xp[:, :, i : i + kh, j : j + kw].reshape(x.shape[0], -1))
    return torch.stack(rows, dim=1)


def test_conv2d_factors_are_the_patch_means_and_their_sum_is_the_ggn_block():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(N, 2, 5, 6, generator=gen, dtype=F64)
    model = TinyCNN().double()
    y = torch.randint(0, 4, (N,), generator=gen)
    obj = objective(model, "cross_entropy", x, y)
    K = KFACOperator(obj, SplitLoss("cross_entropy"))
    conv, head = K.layers
    assert (conv.module, conv.layer_type, head.module) == ("conv", "Conv2d", "head")
    assert K.uncovered == ["norm.bias", "norm.weight"]

    z = model.conv(x)  # (N, 3, 5, 4)
    T = z.shape[2] * z.shape[3]
    a = torch.cat([patches(model.conv, x), torch.ones(N, T, 1, dtype=F64)], dim=2).detach()
    f = model(x)
    Hn = output_hessians("cross_entropy", f)

    def tail(zi):
        return model.head(torch.tanh(model.norm(zi[None])).flatten(1))[0]

    Jz = torch.stack([jacrev(tail)(z[i]) for i in range(N)])  # (N, C, 3, 5, 4)
    Jt = Jz.reshape(N, Jz.shape[1], 3, T).permute(0, 3, 1, 2)  # (N, T, C, out)
    # A averages over the N·T patches, G sums over positions and averages over samples
    torch.testing.assert_close(conv.A, torch.einsum("ntd,nte->de", a, a) / (N * T))
    G = torch.einsum("ntco,ncd,ntdp->op", Jt, Hn, Jt) / N
    torch.testing.assert_close(conv.G, G)
    assert conv.rows == pytest.approx(T)
    # the gradient of [W | b] is Σ_t b_t ā_tᵀ: its per-sample sum is the GGN's block
    lam, U = torch.linalg.eigh(Hn)  # any L with L Lᵀ = H_n
    L = U * lam.clamp_min(0).sqrt()[:, None, :]
    grads = torch.einsum("ntco,nck,ntd->nkod", Jt, L, a).reshape(N, L.shape[2], -1)
    exact = torch.einsum("nki,nkj->ij", grads, grads) / N
    order = layout(3, a.shape[2] - 1, True)
    block = dense_ggn(model, "cross_entropy", x)[conv.indices][:, conv.indices]
    torch.testing.assert_close(exact[order][:, order], block, rtol=1e-9, atol=1e-12)


def test_eigenvalues_and_trace_from_the_factors_are_those_of_the_operator():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, 2, 5, 6, generator=gen, dtype=F64)
    y = torch.randint(0, 4, (N,), generator=gen)
    K = KFACOperator(
        objective(TinyCNN().double(), "cross_entropy", x, y), SplitLoss("cross_entropy")
    )
    M = dense(K)
    exact = np.linalg.eigvalsh(M.numpy())[::-1]
    np.testing.assert_allclose(K.eigenvalues(), exact, rtol=0, atol=1e-12 * exact[0])
    assert K.trace() == pytest.approx(float(torch.trace(M)), rel=1e-12)
    assert np.sum(K.eigenvalues() == 0) >= 6  # GroupNorm's weight and bias: zero rows
    res = lanczos(K, top_k=3, tol=1e-10, max_iter=K.shape[0])
    np.testing.assert_allclose(res.top(3), exact[:3], rtol=1e-9)


def test_empirical_kfac_uses_the_per_sample_loss_gradients():
    gen = torch.Generator().manual_seed(8)
    x, y = torch.randn(N, 4, generator=gen, dtype=F64), torch.randn(N, 3, generator=gen, dtype=F64)
    model = nn.Linear(4, 3).double()
    (layer,), _, _ = kronecker_factors(objective(model, "mse", x, y), SplitLoss("mse"), "empirical")
    g = (2.0 / 3) * (model(x) - y).detach()  # ∂/∂f of ℓ_n = mean_c (f_c - y_c)²
    torch.testing.assert_close(layer.G, g.T @ g / N)


def test_losses_without_a_closed_form_and_models_without_layers_are_refused():
    gen = torch.Generator().manual_seed(9)
    x, y = torch.randn(N, 3, generator=gen, dtype=F64), torch.randn(N, 3, generator=gen, dtype=F64)
    with pytest.raises(InputError, match="no trained one"):
        kronecker_factors(objective(nn.LayerNorm(3).double(), "mse", x, y), SplitLoss("mse"))
    with pytest.raises(InputError, match="K-FAC kind"):
        kronecker_factors(objective(nn.Linear(3, 3).double(), "mse", x, y), SplitLoss("mse"), "x")
    tokens = torch.randint(0, 5, (N, 4), generator=gen)
    lm = objective(
        nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5)).double(), "lm", tokens, tokens
    )
    with pytest.raises(InputError, match="closed-form square root"):
        kronecker_factors(lm, SplitLoss("lm"))


def to_layout(v: torch.Tensor, out: int, d: int, bias: bool) -> torch.Tensor:
    """A layer's flat parameter vector(s) ``(..., p)`` as ``[W | b]`` matrices ``(..., out, d)``."""
    order = layout(out, d - bias, bias)
    M = torch.empty(*v.shape[:-1], out * d, dtype=v.dtype)
    M[..., order] = v
    return M.reshape(*v.shape[:-1], out, d)


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
def test_probe_products_are_the_ggn_blocks_applied_to_the_probes(model_kind):
    """``own`` is each layer's GGN block times its probe, ``joint`` the GGN of all covered
    parameters times all probes at once (off-diagonal blocks included), from the same pass."""
    gen = torch.Generator().manual_seed(10)
    if model_kind == "mlp":
        model, x = mlp(3), torch.randn(N, 3, generator=gen, dtype=F64)
        y = torch.randint(0, 3, (N,), generator=gen)
    else:
        model, x = TinyCNN().double(), torch.randn(N, 2, 5, 6, generator=gen, dtype=F64)
        y = torch.randint(0, 4, (N,), generator=gen)
    obj = objective(model, "cross_entropy", x, y)
    split = SplitLoss("cross_entropy")
    layers, _, _ = kronecker_factors(obj, split)
    m = 3
    probes = [torch.randn(m, L.G.shape[0], L.A.shape[0], generator=gen, dtype=F64) for L in layers]
    again, _, products = kronecker_factors(obj, split, probes=probes)
    for a, b in zip(layers, again, strict=True):
        torch.testing.assert_close(a.A, b.A)
        torch.testing.assert_close(a.G, b.G)
    ggn = dense_ggn(model, "cross_entropy", x)
    n = ggn.shape[0]
    full = torch.zeros(m, n, dtype=F64)
    for i, (L, Z) in enumerate(zip(layers, probes, strict=True)):
        out, d = Z.shape[1:]
        flat = Z.reshape(m, -1)[:, layout(out, d - L.has_bias, L.has_bias)]
        full[:, L.indices] = flat
        expected_own = to_layout(flat @ ggn[L.indices][:, L.indices], out, d, L.has_bias)
        torch.testing.assert_close(products.own[i], expected_own)
        block_trace = float(torch.trace(ggn[L.indices][:, L.indices]))
        assert products.traces[i] == pytest.approx(block_trace, rel=1e-10)
    applied = full @ ggn
    for i, L in enumerate(layers):
        out, d = probes[i].shape[1:]
        expected = to_layout(applied[:, L.indices], out, d, L.has_bias)
        torch.testing.assert_close(products.joint[i], expected)


# ---------------------------------------------------------------- the comparison with the GGN
def cnn_problem(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 2, 5, 6, generator=gen, dtype=F64)
    model = TinyCNN().double()
    y = torch.randint(0, 4, (N,), generator=gen)
    return model, x, objective(model, "cross_entropy", x, y)


def dense_errors(model, x, obj):
    """``{module: ‖B − K‖_F / ‖B‖_F}`` and the overall one, from dense matrices."""
    G = dense_ggn(model, "cross_entropy", x)
    K = KFACOperator(obj, SplitLoss("cross_entropy"))
    Kd = dense(K)
    out = {}
    for L in K.layers:
        B = G[L.indices][:, L.indices]
        out[L.module] = float(
            torch.linalg.norm(B - Kd[L.indices][:, L.indices]) / torch.linalg.norm(B)
        )
    cov = torch.cat([L.indices for L in K.layers])
    B = G[cov][:, cov]
    out[OVERALL] = float(torch.linalg.norm(B - Kd[cov][:, cov]) / torch.linalg.norm(B))
    return out, G, Kd, K


def test_reported_frobenius_errors_are_within_their_standard_errors_of_the_dense_ones():
    """Over 40 probe seeds, the rows' estimates lie within 3 reported standard errors of the
    dense errors in at least 97 % of the cases (99.73 % for a normal estimate) and within 2 in
    at least 90 %."""
    model, x, obj = cnn_problem(11)
    exact, *_ = dense_errors(model, x, obj)
    z = []
    settings = KFACSettings(probes=16, lambda_max=False, density=False)
    for seed in range(40):
        result = analyze_kfac(obj, settings, seed=seed)
        for row in (result.overall, *result.layers):
            z.append(abs(row.frobenius_error - exact[row.module]) / row.frobenius_stderr)
    assert np.mean(np.array(z) < 3) >= 0.97 and np.mean(np.array(z) < 2) >= 0.9, sorted(z)[-5:]


def test_traces_lambda_max_and_top_vectors_match_the_dense_blocks():
    model, x, obj = cnn_problem(12)
    _, G, Kd, K = dense_errors(model, x, obj)
    result = analyze_kfac(obj, KFACSettings(probes=4, tol=1e-10, grid=50), seed=0)
    by_module = {row.module: row for row in result.layers}
    cov = torch.cat([L.indices for L in K.layers])
    blocks = {L.module: L.indices for L in K.layers}
    for name, idx in [*blocks.items(), (OVERALL, cov)]:
        row = by_module.get(name, result.overall)
        B, KB = G[idx][:, idx], Kd[idx][:, idx]
        assert row.ggn_trace == pytest.approx(float(torch.trace(B)), rel=1e-10)
        assert row.kfac_trace == pytest.approx(float(torch.trace(KB)), rel=1e-10)
        b_vals, b_vecs = torch.linalg.eigh(B)
        k_vals, k_vecs = torch.linalg.eigh(KB)
        assert row.ggn_lambda_max == pytest.approx(float(b_vals[-1]), rel=1e-8)
        assert row.kfac_lambda_max == pytest.approx(float(k_vals[-1]), rel=1e-10)
        cosine = abs(float(b_vecs[:, -1] @ k_vecs[:, -1]))
        assert row.top_cosine == pytest.approx(cosine, abs=1e-6)
    assert result.uncovered == ("norm.bias", "norm.weight") and result.uncovered_parameters == 6
    for density in (result.kfac_density, result.ggn_density):
        np.testing.assert_array_equal(density.grid, result.kfac_density.grid)
        assert np.sum((density.values[1:] + density.values[:-1]) * np.diff(density.grid)) / 2 == (
            pytest.approx(1.0)
        )


def test_a_linear_model_under_mse_has_zero_error():
    gen = torch.Generator().manual_seed(13)
    x, y = torch.randn(N, 4, generator=gen, dtype=F64), torch.randn(N, 1, generator=gen, dtype=F64)
    result = analyze_kfac(
        objective(nn.Linear(4, 1).double(), "mse", x, y), KFACSettings(probes=4, grid=50)
    )
    assert result.overall.frobenius_error < 1e-7 and result.overall.frobenius_stderr < 1e-7
    assert result.overall.trace_ratio == pytest.approx(1.0, rel=1e-12)
    assert result.overall.lambda_max_ratio == pytest.approx(1.0, rel=1e-6)
    assert result.overall.top_cosine == pytest.approx(1.0, abs=1e-6)


def test_a_repeated_top_eigenvalue_has_no_cosine():
    """Three outputs under MSE: G = (2/3) I, so K-FAC's top eigenvalue is threefold."""
    gen = torch.Generator().manual_seed(14)
    x, y = torch.randn(N, 4, generator=gen, dtype=F64), torch.randn(N, 3, generator=gen, dtype=F64)
    result = analyze_kfac(
        objective(nn.Linear(4, 3).double(), "mse", x, y), KFACSettings(probes=4, grid=50)
    )
    assert math.isnan(result.overall.top_cosine) and math.isnan(result.layers[0].top_cosine)
    assert "repeated" in result.notes["top_cosine"]
    assert result.overall.lambda_max_ratio == pytest.approx(1.0, rel=1e-6)


# ---------------------------------------------------------------- the command line
def test_kfac_command_prints_one_row_per_layer_and_writes_its_report_group(tmp_path):
    from typer.testing import CliRunner

    from landscape_cli.cli import app
    from landscape_cli.io.report_file import read_report

    out = tmp_path / "r.h5"
    args = ["kfac", "--json", "--probes", "4", "--slq-steps", "10", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["command"] == "kfac" and payload["kind"] == "type-2"
    assert [row["module"] for row in payload["layers"]] != [] and payload["uncovered"] == []
    errors = [row["frobenius_error"] for row in payload["layers"]]
    assert errors == sorted(errors, reverse=True)
    stored = read_report(out).kfac
    assert stored.overall.frobenius_error == payload["overall"]["frobenius_error"]
    table = CliRunner().invoke(app, ["kfac", "--probes", "4", "--no-density", "--no-lambda-max"])
    assert table.exit_code == 0 and "all covered" in table.stdout and "n/a" in table.stdout


def test_spectrum_of_the_kfac_curvature_takes_trace_and_exact_spectrum_from_the_factors():
    from typer.testing import CliRunner

    from landscape_cli.cli import app

    args = ["spectrum", "--json", "--curvature", "kfac", "--exact", "--no-density", "--top-k", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["curvature"] == "kfac" and d["trace"]["method"] == "Kronecker factors"
    assert d["trace"]["stderr"] == 0 and d["exact"]["matvecs"] == 0
    assert d["trace"]["estimate"] == pytest.approx(d["exact"]["trace"], rel=1e-5)
    assert d["top_eigenvalues"] == pytest.approx(d["exact"]["top_eigenvalues"][:3], rel=1e-3)


# ---------------------------------------------------------------- the preconditioned curvature
def test_preconditioned_hessian_is_the_damped_kfac_inverse_root_sandwich():
    from landscape_cli.operators.hessian import HessianOperator
    from landscape_cli.operators.kfac import KFACPreconditioned

    _, _, obj = cnn_problem(15)
    K = KFACOperator(obj, SplitLoss("cross_entropy"))
    H = HessianOperator(obj)
    cov = torch.cat([L.indices for L in K.layers])
    damping = 0.05
    P = dense(K)[cov][:, cov] + damping * torch.eye(cov.numel(), dtype=F64)
    values, vectors = torch.linalg.eigh(P)
    root = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    expected = root @ dense(H)[cov][:, cov] @ root
    assert_matches_dense(KFACPreconditioned(H, K.layers, damping), (expected + expected.T) / 2)


def test_preconditioned_sharpness_is_the_top_generalised_eigenvalue():
    """``λ_max((K + δI)⁻¹H)`` of the analysis is the top eigenvalue of the pencil ``(H, K + δI)``
    on the covered parameters (scipy's generalised symmetric eigensolver), and ``η λ_max``."""
    from scipy.linalg import eigh

    from landscape_cli.operators.hessian import HessianOperator

    _, _, obj = cnn_problem(16)
    settings = KFACSettings(
        probes=2, lambda_max=False, density=False, damping=0.02, tol=1e-10, max_iter=300
    )
    result = analyze_kfac(obj, settings, lr=0.1)
    K = KFACOperator(obj, SplitLoss("cross_entropy"))
    cov = torch.cat([L.indices for L in K.layers])
    P = dense(K)[cov][:, cov] + 0.02 * torch.eye(cov.numel(), dtype=F64)
    H = dense(HessianOperator(obj))[cov][:, cov]
    top = float(eigh((H + H.T).numpy() / 2, P.numpy(), eigvals_only=True)[-1])
    p = result.preconditioned
    assert p.lambda_max == pytest.approx(top, rel=1e-8) and p.damping == 0.02
    assert p.lr_times_lambda_max == pytest.approx(0.1 * top, rel=1e-8)
    assert result.to_dict()["preconditioned"]["threshold"] == 2.0


@pytest.mark.parametrize("through_probes", [True, False])
def test_per_sample_gradient_products_agree_either_way(through_probes):
    """Both ways of taking ``⟨M_nc, Z⟩``, ``Σ ‖M_nc‖²`` and ``Σ w M_nc`` give the dense sums."""
    from landscape_cli.operators.sample_gradients import SampleGradients

    gen = torch.Generator().manual_seed(17)
    n, R, d, out, C, m = 5, 3, 4, 2, 3, 6
    a = torch.randn(n, R, d, generator=gen, dtype=F64)
    bs = [torch.randn(n, R, out, generator=gen, dtype=F64) for _ in range(C)]
    Z = torch.randn(m, out, d, generator=gen, dtype=F64)
    M = torch.stack([torch.einsum("nro,nrd->nod", b, a) for b in bs], dim=1)  # (n, C, out, d)
    layer = SampleGradients(a, bs, through_probes=through_probes)
    values, norm = layer.inner(Z)
    torch.testing.assert_close(values, torch.einsum("ncod,mod->mcn", M, Z))
    torch.testing.assert_close(norm, (M * M).sum())
    w = torch.randn(2 * m, C, n, generator=gen, dtype=F64)
    expected = torch.einsum("jcn,ncod->jod", w, M).reshape(2 * m, -1)
    torch.testing.assert_close(layer.combine(w), expected)


# ---------------------------------------------------------------- EK-FAC
def test_ekfac_is_the_ggn_diagonal_in_the_kronecker_eigenbasis():
    """EK-FAC keeps K-FAC's eigenvectors ``u_i ⊗ w_j`` and takes as eigenvalues the GGN block's
    Rayleigh quotients on them: so its trace is the block's, and it is at least as close to the
    block in Frobenius norm as K-FAC (the best operator diagonal in that basis)."""
    model, x, obj = cnn_problem(18)
    split = SplitLoss("cross_entropy")
    K = KFACOperator(obj, split)
    E = KFACOperator(obj, split, corrected=True)
    G, Kd, Ed = dense_ggn(model, "cross_entropy", x), dense(K), dense(E)
    for el in E.layers:
        idx = el.indices
        B = G[idx][:, idx]
        _, U, _, W = el._eigen
        out, d = U.shape[0], W.shape[0]
        basis = torch.stack(
            [
                el.from_matrix(torch.outer(U[:, i], W[:, j])[None])[:, 0]
                for i in range(out)
                for j in range(d)
            ],
            dim=1,
        )  # (size, out·d): the eigenvectors in the flat layout
        rayleigh = torch.einsum("pk,pq,qk->k", basis, B, basis).reshape(out, d)
        torch.testing.assert_close(el.corrections, rayleigh, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            Ed[idx][:, idx],
            basis @ torch.diag(rayleigh.reshape(-1)) @ basis.T,
            rtol=1e-9,
            atol=1e-12,
        )
        assert el.trace() == pytest.approx(float(torch.trace(B)), rel=1e-10)
        error_k = torch.linalg.norm(B - Kd[idx][:, idx])
        error_e = torch.linalg.norm(B - Ed[idx][:, idx])
        assert error_e <= error_k * (1 + 1e-12)
    exact = np.linalg.eigvalsh(Ed.numpy())[::-1]
    np.testing.assert_allclose(E.eigenvalues(), exact, rtol=0, atol=1e-12 * exact[0])


def test_ekfac_kind_reports_its_own_fit():
    model, x, obj = cnn_problem(19)
    exact = {}
    G = dense_ggn(model, "cross_entropy", x)
    E = KFACOperator(obj, SplitLoss("cross_entropy"), corrected=True)
    Ed = dense(E)
    for L in E.layers:
        B = G[L.indices][:, L.indices]
        exact[L.module] = float(
            torch.linalg.norm(B - Ed[L.indices][:, L.indices]) / torch.linalg.norm(B)
        )
    result = analyze_kfac(obj, KFACSettings(kind="ekfac", probes=64, grid=50), seed=1)
    for row in result.layers:
        assert abs(row.frobenius_error - exact[row.module]) < 3 * row.frobenius_stderr
        assert row.trace_ratio == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("corrected", [False, True])
def test_a_block_trace_is_the_factors_diagonal_over_its_coordinates(corrected):
    """A ``params`` block of K-FAC or EK-FAC (a layer's weight without its bias, with an
    uncovered parameter) has the trace of the dense operator's principal submatrix, split over
    the modules it touches, and the spectrum takes it from the factors at no product."""
    from landscape_cli.analyses.settings import SpectrumSettings
    from landscape_cli.analyses.spectrum import analyze_spectrum
    from landscape_cli.operators.blocks import block_indices

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, 2, 5, 6, generator=gen, dtype=F64)
    y = torch.randint(0, 4, (N,), generator=gen)
    obj = objective(TinyCNN().double(), "cross_entropy", x, y)
    K = KFACOperator(obj, SplitLoss("cross_entropy"), corrected=corrected)
    M = dense(K)
    names = ["conv.weight", "norm.weight", "head.bias"]
    idx = block_indices(obj, names)
    block = K.exact_trace(idx)
    expected = float(torch.trace(M[idx][:, idx]))
    assert block.trace == pytest.approx(expected, rel=1e-12)
    conv = block_indices(obj, ["conv.weight"])
    assert block.per_module["conv"] == pytest.approx(float(torch.trace(M[conv][:, conv])))
    assert block.per_module["norm"] == 0.0
    assert set(block.per_module) == {"conv", "norm", "head"}
    curvature = "ekfac" if corrected else "kfac"
    settings = SpectrumSettings(
        curvature=curvature, params=tuple(names), top_k=1, bottom_k=0, density=False
    )
    result = analyze_spectrum(obj, settings)
    assert result.trace_estimate.estimate == pytest.approx(expected, rel=1e-12)
    assert result.trace_estimate.matvecs == 0 and result.trace_estimate.stderr == 0.0
