"""GGN and empirical Fisher operators, parameter blocks, compositions and per-layer spectra
against dense references built independently with torch.func (float64, a 38-parameter tanh MLP,
23 samples in batches of 7, 7, 7, 2), through :func:`assert_matches_dense`.

References: the dense GGN is (1/N) Σ_i J_iᵀ H_ℓ,i J_i from ``jacrev`` of the model outputs and the
*analytic* Hessian of each sample's loss in its outputs (cross-entropy: diag(p) − ppᵀ; MSE: 2/C·I;
BCE with logits: diag(σ(1−σ))/C); the dense empirical Fisher is (1/N) Σ_i g_i g_iᵀ from ``jacrev``
of the vector of per-sample losses; the dense Hessian is ``torch.func.hessian`` of their mean. Tolerances: operator products are exact up to float64
rounding of sums over 23 samples and 38 parameters, so 1e-10 relative to the matrix's largest
entry is ample while any weighting error (a short last batch mis-weighted is an O(1/4) error)
fails it. λ_max from Lanczos on a 38-dimensional operator converges to rounding, so 1e-4
relative (the spectrum command's default tolerance) is met with room to spare.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from operator_checks import assert_matches_dense
from torch import nn
from torch.func import functional_call, hessian, jacrev
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.operators.blocks import (
    BlockOperator,
    block_indices,
    layer_groups,
    select_parameters,
)
from landscape_cli.operators.curvature import curvature_operator
from landscape_cli.operators.empirical_fisher import EmpiricalFisherOperator
from landscape_cli.operators.ggn import GGNOperator
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

N, BATCH = 23, 7  # batches of 7, 7, 7 and a short one of 2
F64 = torch.float64
FAST = SpectrumSettings(top_k=1, bottom_k=0, tol=1e-8, trace=False, density=False)


def mlp(out: int = 3, log_softmax: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, out)]
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers).double()


def data(kind: str, out: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, generator=gen, dtype=F64)
    if kind == "classes":
        return x, torch.randint(0, out, (N,), generator=gen)
    if kind == "binary":
        return x, torch.randint(0, 2, (N, out), generator=gen).to(F64)
    return x, torch.randn(N, out, generator=gen, dtype=F64)


def objective(model, loss, x, y, **kw) -> Objective:
    return Objective(model, loss, tensor_batches((x, y), BATCH, None, "t"), dtype=F64, **kw)


def flat_function(model: nn.Module):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def params(w):
        out, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            out[name] = w[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        return out

    return w0, params


def dense_ggn(model, loss: str, x, y) -> torch.Tensor:
    w0, params = flat_function(model)
    outputs = functional_call(model, params(w0), (x,))
    J = jacrev(lambda w: functional_call(model, params(w), (x,)))(w0)  # (N, C, n)
    C = outputs.shape[1]
    if loss in ("cross_entropy", "nll"):
        p = torch.softmax(outputs, dim=1)  # nll: the outputs are log-probabilities, softmax = exp
        HL = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    elif loss == "mse":
        HL = (2.0 / C) * torch.eye(C, dtype=F64).expand(N, C, C)
    else:  # bce_with_logits
        s = torch.sigmoid(outputs)
        HL = torch.diag_embed(s * (1 - s)) / C
    return torch.einsum("icn,icd,idm->nm", J, HL, J) / N


def per_sample_losses(model, loss: str, x, y):
    _, params = flat_function(model)
    functional = nn.functional

    def losses(w):
        out = functional_call(model, params(w), (x,))
        if loss == "cross_entropy":
            return functional.cross_entropy(out, y, reduction="none")
        if loss == "nll":
            return functional.nll_loss(out, y, reduction="none")
        if loss == "mse":
            return ((out - y) ** 2).mean(dim=1)
        return functional.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=1)

    return losses


def dense_ef(model, loss: str, x, y) -> torch.Tensor:
    w0, _ = flat_function(model)
    G = jacrev(per_sample_losses(model, loss, x, y))(w0)  # (N, n): g_i as rows
    return G.T @ G / N


def dense_hessian(model, loss: str, x, y) -> torch.Tensor:
    w0, _ = flat_function(model)
    losses = per_sample_losses(model, loss, x, y)
    return hessian(lambda w: losses(w).mean())(w0)


def dense(op) -> torch.Tensor:
    return op @ torch.eye(op.shape[0], dtype=F64)


CASES = [
    ("cross_entropy", "classes", 3, False),
    ("nll", "classes", 3, True),
    ("mse", "real", 2, False),
    ("bce_with_logits", "binary", 2, False),
]


@pytest.mark.parametrize(("loss", "kind", "out", "log_softmax"), CASES)
def test_ggn_and_ef_products_match_dense_references(loss, kind, out, log_softmax):
    model = mlp(out, log_softmax)
    x, y = data(kind, out)
    obj = objective(model, SplitLoss(loss), x, y)
    for name, reference in (("ggn", dense_ggn), ("ef", dense_ef)):
        M = reference(model, loss, x, y)
        op = curvature_operator(obj, name)
        assert_matches_dense(op, M, tol=1e-10)
        # λ_max through the spectrum command's estimator, against eigvalsh of the reference
        settings = SpectrumSettings(**{**FAST.__dict__, "curvature": name})
        result = analyze_spectrum(obj, settings)
        exact = torch.linalg.eigvalsh(M)
        assert result.curvature == name
        assert abs(result.lambda_max - float(exact[-1])) <= 1e-4 * float(exact[-1])
        # both are PSD: Gram matrices J_iᵀ H_ℓ J_i with H_ℓ ⪰ 0, and Σ g_i g_iᵀ
        computed = torch.linalg.eigvalsh(dense(op))
        assert float(computed[0]) >= -1e-10 * float(computed[-1])


@pytest.mark.parametrize(("loss", "kind", "out", "log_softmax"), CASES)
def test_cached_ggn_graphs_give_the_dense_ggn_without_another_forward(loss, kind, out, log_softmax):
    """Cached GGN (the objective's cached mode): products from the kept per-batch graphs equal
    the dense GGN and the uncached operator, and after the first product no forward pass runs."""
    model = mlp(out, log_softmax)
    x, y = data(kind, out)
    obj = objective(model, SplitLoss(loss), x, y, hvp_mode="cached")
    split = SplitLoss(loss)
    cached, fresh = GGNOperator(obj, split), GGNOperator(obj, split, cache=False)
    assert cached.cache and not fresh.cache
    assert not GGNOperator(objective(model, split, x, y, hvp_mode="streaming"), split).cache
    M = dense_ggn(model, loss, x, y)
    V = torch.randn(obj.num_parameters, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    cached @ V[:, 0]
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        got = cached @ V
    finally:
        handle.remove()
    assert forwards == []  # the kept graphs serve every later product
    assert torch.allclose(got, M @ V, atol=1e-10 * M.abs().max(), rtol=0)
    assert torch.allclose(got, fresh @ V, atol=1e-13 * M.abs().max(), rtol=0)
    assert_matches_dense(cached, M, tol=1e-10)
    assert_matches_dense(fresh, M, tol=1e-10)


def test_first_ggn_product_does_not_import_sympy():
    """Like the HVP (tests/test_objective.py): tensor ``grad_outputs`` make torch import sympy
    (~0.3 s, once per process); the GGN's backward passes differentiate scalars instead."""
    code = (
        "import sys, torch\n"
        "from landscape_cli.operators.curvature import GGNOperator\n"
        "from landscape_cli.problem.data import tensor_batches\n"
        "from landscape_cli.problem.losses import SplitLoss\n"
        "from landscape_cli.problem.objective import Objective\n"
        "m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))\n"
        "x, y = torch.randn(20, 3), torch.randint(0, 3, (20,))\n"
        "for mode in ('cached', 'streaming'):\n"
        "    obj = Objective(m, SplitLoss('cross_entropy'), tensor_batches((x, y), 8, None, 't'),\n"
        "                    hvp_mode=mode)\n"
        "    before = 'sympy' in sys.modules\n"
        "    GGNOperator(obj, SplitLoss('cross_entropy')) @ torch.ones(obj.num_parameters)\n"
        "    print(before, 'sympy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    if out[0] == "True":
        pytest.skip("this torch imports sympy before any product")
    assert out == ["False", "False"] * 2


def test_ef_streaming_equals_cached_and_chunking_does_not_matter():
    model, (x, y) = mlp(), data("classes")
    obj = objective(model, SplitLoss("cross_entropy"), x, y)
    split = SplitLoss("cross_entropy")
    cached = EmpiricalFisherOperator(obj, split, chunk_size=64, cache=True)
    streaming = EmpiricalFisherOperator(obj, split, chunk_size=3, cache=False)
    v = torch.randn(obj.num_parameters, dtype=F64, generator=torch.Generator().manual_seed(3))
    cached @ v
    assert torch.allclose(cached @ v, streaming @ v, atol=1e-13, rtol=1e-12)


def test_ggn_equals_hessian_for_mse_on_a_linear_model():
    """f linear in w: ∇²f = 0, so H = JᵀH_LJ exactly (Schraudolph 2002)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = data("real", 2)
    obj = objective(model, SplitLoss("mse"), x, y)
    H = dense(HessianOperator(obj))
    G = dense(GGNOperator(obj, SplitLoss("mse")))
    assert torch.allclose(G, H, atol=1e-12 * H.abs().max(), rtol=0)


def test_ggn_and_ef_differ_from_the_hessian_away_from_linearity():
    """A guard that the test above is not vacuous: for the tanh MLP with cross-entropy the three
    matrices differ (the Hessian has a negative eigenvalue here, the GGN cannot)."""
    model, (x, y) = mlp(), data("classes")
    obj = objective(model, SplitLoss("cross_entropy"), x, y)
    H, G = dense(HessianOperator(obj)), dense(curvature_operator(obj, "ggn"))
    assert float(torch.linalg.eigvalsh(H)[0]) < -1e-3
    assert (H - G).abs().max() > 1e-2 * H.abs().max()


def test_custom_loss_and_train_mode_ef_are_input_errors():
    model, (x, y) = mlp(), data("classes")

    def custom(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    obj = objective(model, custom, x, y)
    for name in ("ggn", "ef"):
        with pytest.raises(InputError, match="only the built-in losses"):
            curvature_operator(obj, name)
    train = objective(model, SplitLoss("cross_entropy"), x, y, mode="train")
    curvature_operator(train, "ggn")  # GGN is defined in train mode
    with pytest.raises(InputError, match="eval mode"):
        curvature_operator(train, "ef")


def test_nll_ggn_rejects_outputs_that_are_not_log_probabilities():
    model, (x, y) = mlp(3, log_softmax=False), data("classes")
    obj = objective(model, SplitLoss("nll"), x, y)
    with pytest.raises(InputError, match="log-probabilities"):
        curvature_operator(obj, "ggn") @ torch.ones(obj.num_parameters, dtype=F64)


# ----------------------------------------------------------------------------- blocks


def test_parameter_selection_glob_regex_and_errors():
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert select_parameters(names, ["0.*"]) == ["0.weight", "0.bias"]
    assert select_parameters(names, ["re:weight$"]) == ["0.weight", "2.weight"]
    assert select_parameters(names, ["2.bias", "0.bias"]) == ["0.bias", "2.bias"]  # model order
    with pytest.raises(InputError, match="available: 0.weight, 0.bias"):
        select_parameters(names, ["fc.*"])
    with pytest.raises(InputError, match="invalid regular expression"):
        select_parameters(names, ["re:("])
    assert layer_groups(["a.w", "a.b", "b.c.w", "top"]) == {
        "a": ["a.w", "a.b"],
        "b.c": ["b.c.w"],
        "(top level)": ["top"],
    }


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_block_and_per_layer_match_the_dense_diagonal_blocks(curvature):
    model, (x, y) = mlp(), data("classes")
    obj = objective(model, SplitLoss("cross_entropy"), x, y)
    M = dense(curvature_operator(obj, curvature))
    # --params: the block of the second layer (18 coordinates)
    idx = block_indices(obj, ["2.weight", "2.bias"])
    block = BlockOperator(curvature_operator(obj, curvature), idx)
    assert_matches_dense(block, M[idx][:, idx], tol=1e-12)
    settings = SpectrumSettings(
        top_k=1, bottom_k=0, tol=1e-8, trace=True, trace_matvecs=20, density=False,
        curvature=curvature, params=("2.*",), per_layer=True,
    )  # fmt: skip
    result = analyze_spectrum(obj, settings)
    exact = torch.linalg.eigvalsh(M[idx][:, idx])
    assert result.block_size == 18 and result.block_parameters == ["2.weight", "2.bias"]
    assert abs(result.lambda_max - float(exact[-1])) <= 1e-4 * abs(float(exact[-1]))
    # trace_matvecs (20) >= block size (18): Hutch++ computes the trace exactly (stderr 0)
    assert result.trace_estimate.method == "exact"
    assert result.trace_estimate.estimate == pytest.approx(float(M[idx][:, idx].trace()), rel=1e-10)
    # per layer within the selected block: one module
    assert [r.name for r in result.per_layer] == ["2"]
    # per layer over all parameters: layer 0 has 20 coordinates, layer 2 has 18
    settings = SpectrumSettings(
        top_k=1, bottom_k=0, tol=1e-8, trace_matvecs=20, density=False, curvature=curvature,
        per_layer=True,
    )  # fmt: skip
    rows = analyze_spectrum(obj, settings).per_layer
    assert [r.lambda_max for r in rows] == sorted([r.lambda_max for r in rows], reverse=True)
    for row in rows:
        i = block_indices(obj, row.parameters)
        sub = M[i][:, i]
        assert row.size == sub.shape[0]
        top = float(torch.linalg.eigvalsh(sub)[-1])
        assert abs(row.lambda_max - top) <= 1e-4 * abs(top)
        # the tanh MLP's Hessian: Hutch++ with 20 probes >= 20 and 18 coordinates is exact;
        # its GGN: the per-sample exact trace, whatever the budget
        assert row.trace_method == ("exact" if curvature == "hessian" else "per-sample exact")
        assert row.trace == pytest.approx(float(sub.trace()), rel=1e-10, abs=1e-12)
    # fewer products than coordinates: the block's trace is deflated by its own Lanczos basis
    # and the remainder estimated by auto, as spectrum's default (a ~8-vector basis of
    # an 18-20 coordinate block leaves a small remainder: within 5 % of the exact trace)
    small = dataclasses.replace(settings, trace_matvecs=6)
    for row in analyze_spectrum(obj, small).per_layer:
        i = block_indices(obj, row.parameters)
        if curvature == "ggn":
            assert row.trace_method == "per-sample exact"
            assert row.trace == pytest.approx(float(M[i][:, i].trace()), rel=1e-10)
        else:
            assert row.trace_method in ("deflated hutchinson", "deflated hutch++")
            assert row.trace == pytest.approx(float(M[i][:, i].trace()), rel=5e-2)


@pytest.mark.parametrize("composition", ["scale", "sum", "block", "deflate"])
def test_compositions_of_curvature_operators_match_dense_references(composition):
    """``T H T`` (ASAM's coordinates), ``H + G``, the empirical Fisher's block of the second
    layer and ``P G P`` with ``P = I − QQᵀ``, each against the same composition of the dense
    references."""
    model, (x, y) = mlp(), data("classes")
    obj = objective(model, SplitLoss("cross_entropy"), x, y)
    n = obj.num_parameters
    gen = torch.Generator().manual_seed(5)
    t = torch.rand(n, generator=gen, dtype=F64) + 0.5
    idx = block_indices(obj, ["2.weight", "2.bias"])
    Q, _ = torch.linalg.qr(torch.randn(n, 5, generator=gen, dtype=F64))
    P = torch.eye(n, dtype=F64) - Q @ Q.T
    if composition == "scale":
        H = dense_hessian(model, "cross_entropy", x, y)
        built, reference = HessianOperator(obj).scale(t), t[:, None] * H * t[None, :]
    elif composition == "sum":
        H, G = dense_hessian(model, "cross_entropy", x, y), dense_ggn(model, "cross_entropy", x, y)
        built, reference = HessianOperator(obj) + curvature_operator(obj, "ggn"), H + G
    elif composition == "block":
        F = dense_ef(model, "cross_entropy", x, y)
        built, reference = curvature_operator(obj, "ef").block(idx), F[idx][:, idx]
    else:
        G = dense_ggn(model, "cross_entropy", x, y)
        built, reference = curvature_operator(obj, "ggn").deflate(Q), P @ G @ P
    assert_matches_dense(built, reference, tol=1e-10)


@pytest.mark.parametrize(
    ("curvature", "method"), [("ggn", "_graph"), ("ef", "per_sample_gradients")]
)
def test_per_layer_and_spread_reuse_or_release_what_the_full_operator_keeps(
    monkeypatch, curvature, method
):
    """Per-layer blocks use the GGN graphs / per-sample gradients the full operator keeps: they
    are built once per batch for all layers, not once per layer (up to 3 copies in memory)."""
    model, (x, y) = mlp(), data("classes")
    obj = objective(model, SplitLoss("cross_entropy"), x, y, hvp_mode="cached")
    cls = GGNOperator if curvature == "ggn" else EmpiricalFisherOperator
    builds: list[int] = []
    original = getattr(cls, method)

    def counted(self, *args):
        builds.append(next(a for a in args if isinstance(a, int)))
        return original(self, *args)

    monkeypatch.setattr(cls, method, counted)
    settings = SpectrumSettings(
        top_k=1, bottom_k=0, tol=1e-8, trace_matvecs=20, density=False, curvature=curvature,
        per_layer=True,
    )  # fmt: skip
    result = analyze_spectrum(obj, settings)
    assert sorted(builds) == list(range(len(obj.batches)))  # once per batch, for every layer
    M = dense(curvature_operator(obj, curvature))
    for row in result.per_layer:
        i = block_indices(obj, row.parameters)
        top = float(torch.linalg.eigvalsh(M[i][:, i])[-1])
        assert abs(row.lambda_max - top) <= 1e-4 * abs(top)
    # a fresh twin counts its own products but shares the kept pieces
    full = curvature_operator(obj, curvature)
    full @ torch.ones(obj.num_parameters, dtype=F64)
    twin = full.fresh()
    assert twin.matvecs == 0 and full.matvecs == 1
    builds.clear()
    twin @ torch.ones(obj.num_parameters, dtype=F64)
    assert builds == []
    full.release()
    twin @ torch.ones(obj.num_parameters, dtype=F64)
    assert sorted(builds) == list(range(len(obj.batches)))


def test_cli_ggn_json_records_the_curvature(tmp_path):
    from landscape_cli.io.report_file import read_report

    out = tmp_path / "r.h5"
    result = CliRunner().invoke(
        app,
        ["spectrum", "--curvature", "ggn", "--json", "--top-k", "2", "--trace-matvecs", "20",
         "--no-density", "--params", "re:^2\\.", "--per-layer", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["curvature"] == "ggn"
    assert payload["params"] == ["re:^2\\."]
    assert payload["block"]["parameters"] == ["2.weight", "2.bias"]
    assert payload["per_layer"][0]["name"] == "2"
    assert payload["stability"] is None and "stability" in payload["notes"]
    report = read_report(out)
    assert report.spectrum.curvature == "ggn"
    assert report.spectrum.per_layer[0].lambda_max == pytest.approx(
        payload["per_layer"][0]["lambda_max"]
    )
    assert report.sections["spectrum"]["curvature"] == "ggn"


def test_cli_classify_needs_the_hessian_and_custom_loss_is_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["check", "--curvature", "ef", "--max", "negative_fraction=0.5", "--json"]
    )
    assert result.exit_code == 2
    assert "full Hessian only" in result.stderr
    loss = tmp_path / "myloss.py"
    loss.write_text(
        "import torch\n"
        "def ce(model, batch):\n"
        "    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])\n"
    )
    result = runner.invoke(
        app, ["spectrum", "--curvature", "ggn", "--loss", f"{loss}:ce", "--json"]
    )
    assert result.exit_code == 2
    assert "only the built-in losses" in result.stderr


def test_100_samples_in_batches_of_32_weigh_the_short_batch_by_its_count():
    """Batches of 32, 32, 32, 4 give the same GGN and empirical Fisher products as one batch of 100
    (a mis-weighted last batch would not)."""
    torch.manual_seed(0)
    model = mlp()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(100, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (100,), generator=gen)

    def obj(batch_size):
        return Objective(
            model, SplitLoss("cross_entropy"), tensor_batches((x, y), batch_size, None, "t"),
            dtype=F64,
        )  # fmt: skip

    one, many = obj(100), obj(32)
    v = torch.randn(one.num_parameters, dtype=F64, generator=gen)
    for name in ("ggn", "ef"):
        a, b = curvature_operator(one, name) @ v, curvature_operator(many, name) @ v
        assert torch.allclose(a, b, atol=1e-13 * a.abs().max(), rtol=0), name


def test_track_with_ggn_on_a_block_matches_spectrum_per_checkpoint(tmp_path):
    from landscape_cli.sample_models.run import training_run

    training_run(tmp_path, checkpoints=2)
    common = ["--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs", "--curvature",
              "ggn", "--params", "0.*", "--json"]  # fmt: skip
    runner = CliRunner()
    tracked = runner.invoke(app, ["track", "--from-dir", str(tmp_path), *common, "--no-trace"])
    assert tracked.exit_code == 0, tracked.stderr
    payload = json.loads(tracked.stdout)
    assert payload["curvature"] == "ggn" and payload["params"] == ["0.*"]
    for point in payload["points"]:
        assert point["lr_times_lambda_max"] is None  # edge of stability: full Hessian only
        alone = runner.invoke(
            app, ["spectrum", point["checkpoint"], *common, "--top-k", "1", "--no-trace",
                  "--no-density"],
        )  # fmt: skip
        assert alone.exit_code == 0, alone.stderr
        assert point["lambda_max"] == pytest.approx(
            json.loads(alone.stdout)["lambda_max"], rel=1e-4
        )


def test_config_params_accepts_a_yaml_list_or_one_string_and_report_refuses(tmp_path):
    import dataclasses

    from landscape_cli.analyses.bundle import analyze_all
    from landscape_cli.analyses.settings import RunConfig
    from landscape_cli.io.config import read_config_file, resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("spectrum:\n  curvature: ef\n  params: ['0.*', 're:bias$']\n  spread: 3\n")
    cfg = resolve_config({}, path)
    assert cfg.spectrum.params == ("0.*", "re:bias$") and cfg.spectrum.curvature == "ef"
    assert cfg.to_dict()["spectrum"]["params"] == ["0.*", "re:bias$"]
    path.write_text("spectrum:\n  params: fc1.*\n")
    assert read_config_file(path)["spectrum.params"] == ("fc1.*",)
    path.write_text("spectrum:\n  params: [1, 2]\n")
    with pytest.raises(InputError, match="a list of strings"):
        read_config_file(path)
    path.write_text("spectrum:\n  curvature: fisher\n")
    with pytest.raises(InputError, match="hessian, ggn, ef"):
        read_config_file(path)
    with pytest.raises(InputError, match="--spread"):
        resolve_config({"spectrum.spread": 1})
    ggn = RunConfig(spectrum=dataclasses.replace(SpectrumSettings(), curvature="ggn"))
    with pytest.raises(InputError, match="full Hessian only"):
        analyze_all(None, ggn)  # refused before any work


def test_check_json_says_which_matrix_its_metrics_are_of():
    result = CliRunner().invoke(
        app,
        ["check", "--curvature", "ggn", "--params", "4.*", "--max", "lambda_max=1e9", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["curvature"] == "ggn" and payload["params"] == ["4.*"] and payload["passed"]


def test_ef_of_a_model_vmap_cannot_handle_takes_one_sample_at_a_time():
    class ItemModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x) * float(x.abs().max().item() > -1)  # .item() breaks vmap

    x, y = data("classes")
    model = ItemModel()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=F64)
    looped = curvature_operator(objective(model, SplitLoss("cross_entropy"), x, y), "ef")
    plain = curvature_operator(objective(model.net, SplitLoss("cross_entropy"), x, y), "ef")
    assert torch.allclose(looped @ v, plain @ v, rtol=1e-10, atol=1e-12)


def test_ef_with_a_model_no_transform_can_differentiate_is_an_input_error():
    class NumpyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            out = self.net(x)
            return out + torch.as_tensor(out.detach().numpy() * 0)  # .numpy() breaks torch.func

    x, y = data("classes")
    obj = objective(NumpyModel(), SplitLoss("cross_entropy"), x, y)
    with pytest.raises(InputError, match="per-sample gradients"):
        curvature_operator(obj, "ef") @ torch.ones(obj.num_parameters, dtype=F64)
