"""The exact trace from per-sample gradient norms (:mod:`landscape_cli.operators.exact_trace`).

Every case is checked against the trace of the dense matrix built column by column from the
operators (GGN, empirical Fisher, Hessian), which are themselves tested against ``torch.func``
references (tests/test_curvature.py). Float64 throughout; the two sides sum the same
non-negative numbers in different orders, so they agree to rounding: 1e-12 relative.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.operators.blocks import block_indices
from landscape_cli.operators.curvature import curvature_operator
from landscape_cli.operators.exact_trace import Unsupported, exact_trace, piecewise_linear_reason
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64
N = 20


def objective(model: nn.Module, x, y, loss: str = "cross_entropy", mode: str = "eval"):
    torch.manual_seed(0)
    model = model.double()
    return Objective(
        model, SplitLoss(loss), tensor_batches((x, y), 7, None, "t"), dtype=F64, mode=mode
    )


def dense_trace(obj: Objective, curvature: str) -> float:
    n = obj.num_parameters
    return float((curvature_operator(obj, curvature) @ torch.eye(n, dtype=F64)).trace())


def inputs(*shape: int):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, *shape, generator=gen, dtype=F64)
    return x, torch.randint(0, 3, (N,), generator=gen), torch.randn(N, 3, generator=gen, dtype=F64)


def relu_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))


def relu_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 2, stride=2, bias=False),
        nn.LeakyReLU(0.1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():  # running statistics away from (0, 1), so that using them matters
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def conv1d_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(27, 3)
    )


def sequence_net() -> nn.Module:
    """Linear layers on (N, T, features) inputs and a LayerNorm: not piecewise linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3), nn.Flatten(), nn.Linear(12, 3)
    )


def tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


CASES = {
    "relu-mlp": (relu_mlp, (5,), True),
    "cnn-bn-maxpool": (relu_cnn, (2, 6, 6), True),
    "conv1d-dilated": (conv1d_net, (2, 9), True),
    "sequence-layernorm": (sequence_net, (4, 5), False),
    "tanh": (tanh_mlp, (5,), False),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce_with_logits"])
def test_exact_traces_equal_the_dense_matrices(case, loss):
    build, shape, piecewise_linear = CASES[case]
    x, labels, targets = inputs(*shape)
    y = {"cross_entropy": labels, "mse": targets, "bce_with_logits": (targets > 0).to(F64)}[loss]
    obj = objective(build(), x, y, loss)
    for curvature in ("ggn", "ef"):
        exact = exact_trace(obj, curvature)
        assert exact.trace == pytest.approx(dense_trace(obj, curvature), rel=1e-12)
    if piecewise_linear:
        assert exact_trace(obj, "hessian").trace == pytest.approx(
            dense_trace(obj, "hessian"), rel=1e-12
        )
    else:
        with pytest.raises(Unsupported, match="not piecewise linear"):
            exact_trace(obj, "hessian")
        # and it would have been wrong: the Hessian's trace differs from the GGN's here
        assert abs(dense_trace(obj, "hessian") - dense_trace(obj, "ggn")) > 1e-6


def test_nll_ggn_is_the_fisher_and_its_hessian_is_refused():
    x, y, _ = inputs(5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3), nn.LogSoftmax(dim=1))
    obj = objective(model, x, y, "nll")
    assert exact_trace(obj, "ggn").trace == pytest.approx(dense_trace(obj, "ggn"), rel=1e-12)
    with pytest.raises(Unsupported, match="LogSoftmax"):
        exact_trace(obj, "hessian")


def test_per_module_traces_are_the_diagonal_blocks_and_feed_per_layer():
    x, y, _ = inputs(2, 6, 6)
    obj = objective(relu_cnn(), x, y)
    H = curvature_operator(obj, "hessian") @ torch.eye(obj.num_parameters, dtype=F64)
    exact = exact_trace(obj, "hessian")
    assert sorted(exact.per_module) == ["0", "1", "4", "8"]
    assert exact.passes == 2  # 3 classes: the cross-entropy's Hessian has rank 2
    for module, value in exact.per_module.items():
        names = [n for n in obj.parameter_names if n.rpartition(".")[0] == module]
        i = block_indices(obj, names)
        assert value == pytest.approx(float(H[i][:, i].trace()), rel=1e-12)
    settings = SpectrumSettings(top_k=1, bottom_k=0, density=False, per_layer=True, trace_matvecs=4)
    result = analyze_spectrum(obj, settings)
    assert result.trace_estimate.method == "per-sample exact"
    assert result.trace_estimate.matvecs == 0
    for row in result.per_layer:
        assert row.trace_method == "per-sample exact"
        assert row.trace == exact.per_module[row.name]


class Gated(nn.Module):
    """``c(relu(a(x)) * b(x))``: a product of two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 6), nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.c(torch.relu(self.a(x)) * self.b(x))


class LinearAttention(nn.Module):
    """Scores ``(x W_q)(x W_k)ᵀ`` without a softmax: quadratic in the input's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 4)
        self.q, self.k, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(12, 3)

    def forward(self, x):
        h = torch.relu(self.embed(x))
        return self.out((self.q(h) @ self.k(h).transpose(1, 2) @ h).flatten(1))


class Normalised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x):
        return self.a(x) / (1 + self.b(x).abs())


@pytest.mark.parametrize(
    ("build", "shape", "reason"),
    [
        (Gated, (5,), "Mul of two tensors that both depend on the weights"),
        (LinearAttention, (3, 5), "of two tensors that both depend on the weights"),
        (Normalised, (5,), "division by a tensor that depends on the weights"),
    ],
)
def test_products_of_activations_are_not_proven_piecewise_linear(build, shape, reason):
    x, y, _ = inputs(*shape)
    torch.manual_seed(0)
    obj = objective(build(), x, y)
    with pytest.raises(Unsupported, match=reason):
        exact_trace(obj, "hessian")
    assert exact_trace(obj, "ggn").trace == pytest.approx(dense_trace(obj, "ggn"), rel=1e-12)


def test_the_check_accepts_products_with_parameters_and_sees_train_mode_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    w = nn.Parameter(torch.randn(5))
    assert piecewise_linear_reason(torch.relu(nn.Linear(5, 5)(x)) * w) is None  # x · parameter
    bn = nn.BatchNorm1d(5).train()
    assert "train mode" in piecewise_linear_reason(bn(nn.Linear(5, 5)(x)))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(torch.relu(self.a(x)))


class OwnParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(x) * self.scale


def test_unsupported_models_and_modes_say_why():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 3, generator=gen, dtype=F64), torch.randint(0, 3, (N,), generator=gen)
    torch.manual_seed(0)
    tied = Tied()
    tied.forward = lambda x: tied.b(torch.relu(tied.a(x)))
    for model, match in [
        (tied, "shared"),
        (Twice(), "used more than once"),
        (OwnParameter(), "OwnParameter"),
        (nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(3, 3)), "Embedding"),
    ]:
        data = (torch.randint(0, 5, (N, 1)), y) if isinstance(model, nn.Sequential) else (x, y)
        with pytest.raises(Unsupported, match=match):
            exact_trace(objective(model, *data), "ggn")
    x5, y5, _ = inputs(5)
    with pytest.raises(Unsupported, match="train mode"):
        exact_trace(objective(relu_mlp(), x5, y5, mode="train"), "ggn")
    with pytest.raises(Unsupported, match="outputs per sample"):
        exact_trace(objective(relu_mlp(), x5, y5), "ggn", max_outputs=2)


def test_auto_falls_back_with_a_note_and_per_sample_is_an_error():
    x, y, _ = inputs(5)
    obj = objective(tanh_mlp(), x, y)
    settings = SpectrumSettings(top_k=1, bottom_k=0, density=False, trace_matvecs=8)
    result = analyze_spectrum(obj, settings)
    assert result.trace_estimate.method == "deflated hutchinson"
    assert "not piecewise linear: the operation Tanh" in result.notes["trace"]
    ggn = analyze_spectrum(obj, SpectrumSettings(top_k=1, density=False, curvature="ggn"))
    assert ggn.trace_estimate.method == "per-sample exact"
    assert ggn.trace_estimate.estimate == pytest.approx(dense_trace(obj, "ggn"), rel=1e-12)
    # more backward passes than the budget (6 outputs, 4 HVPs): auto prefers the estimate
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6))
    targets = torch.randn(N, 6, dtype=F64)
    few = SpectrumSettings(top_k=1, density=False, curvature="ggn", trace_matvecs=4)
    result = analyze_spectrum(objective(wide, x, targets, "mse"), few)
    assert result.trace_estimate.method == "deflated hutchinson"
    assert "6 outputs per sample (> 4 backward passes)" in result.notes["trace"]


def test_exact_trace_runs_first_so_lanczos_keeps_no_basis_and_per_sample_fails_early(monkeypatch):
    """The exact trace is decided before the Lanczos run: the run keeps its m x n basis only for
    a stochastic estimate, and a per-sample request that does not apply fails before the Lanczos run."""
    import landscape_cli.analyses.spectrum as spectrum_module

    calls = []
    real = spectrum_module.lanczos

    def spy(A, **kwargs):
        calls.append(kwargs["return_basis"])
        return real(A, **kwargs)

    monkeypatch.setattr(spectrum_module, "lanczos", spy)
    x, y, _ = inputs(5)
    settings = SpectrumSettings(top_k=1, bottom_k=0, density=False, trace_matvecs=8)
    exact = analyze_spectrum(objective(relu_mlp(), x, y), settings)
    assert exact.trace_estimate.method == "per-sample exact" and calls == [False]
    smooth = objective(tanh_mlp(), x, y)
    fallback = analyze_spectrum(smooth, settings)
    assert fallback.trace_estimate.method == "deflated hutchinson" and calls == [False, True]
    with pytest.raises(InputError, match="`trace_method=per-sample` does not apply: .*Tanh"):
        analyze_spectrum(
            smooth, SpectrumSettings(top_k=1, density=False, trace_method="per-sample")
        )
    assert calls == [False, True]  # no Lanczos run was started


def test_cli_per_sample_trace(tmp_path):
    runner = CliRunner()
    common = ["--top-k", "1", "--no-density", "--json", "--dtype", "float64"]
    refused = runner.invoke(
        app, ["spectrum", "sample:mlp", "--trace-method", "per-sample", *common]
    )
    assert refused.exit_code == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "does not apply: the network is not piecewise linear: the operation Tanh" in (
        refused.stderr
    )
    # the sample CNN against the dense spectrum: tests/test_spectrum_accuracy.py (1e-12); here
    # the CLI fields, and agreement with a long stochastic estimate (within 4 standard errors)
    exact = runner.invoke(app, ["spectrum", "sample:cnn", "--trace-method", "per-sample", *common])
    assert exact.exit_code == 0, exact.stderr
    trace = json.loads(exact.stdout)["trace"]
    assert trace["method"] == "per-sample exact"
    assert trace["stderr"] == 0.0 and trace["matvecs"] == 0
    long = ["--trace-method", "hutchinson", "--trace-matvecs", "300", "--no-deflate-trace"]
    sampled = runner.invoke(app, ["spectrum", "sample:cnn", *common, *long])
    estimate = json.loads(sampled.stdout)["trace"]
    assert estimate["method"] == "hutchinson"
    assert abs(estimate["estimate"] - trace["estimate"]) <= 4 * estimate["stderr"]


def test_convolution_chunks_give_the_same_trace(monkeypatch):
    """Unfolded inputs are formed a few samples at a time; one sample at a time gives the same."""
    import landscape_cli.operators.exact_trace as ggn_trace

    x, y, _ = inputs(2, 6, 6)
    obj = objective(relu_cnn(), x, y)
    whole = exact_trace(obj, "hessian").trace
    monkeypatch.setattr(ggn_trace, "_CHUNK_ELEMENTS", 1)
    assert exact_trace(obj, "hessian").trace == pytest.approx(whole, rel=1e-13)
    assert whole == pytest.approx(dense_trace(obj, "hessian"), rel=1e-12)


@pytest.mark.parametrize("method", ["formed", "gram"])
@pytest.mark.parametrize("case", ["cnn-bn-maxpool", "conv1d-dilated", "sequence-layernorm"])
def test_each_per_sample_norm_form_gives_the_dense_traces(monkeypatch, case, method):
    """The per-sample gradient formed, or its norm from the positions' Gram matrices: both give
    the dense traces, whichever the cost model would pick for each layer."""
    import landscape_cli.operators.exact_trace as ggn_trace

    real = ggn_trace.outer_sq_norms
    monkeypatch.setattr(ggn_trace, "outer_sq_norms", lambda b, a: real(b, a, method))
    build, shape, _ = CASES[case]
    x, y, _ = inputs(*shape)
    obj = objective(build(), x, y)
    for curvature in ("ggn", "ef"):
        assert exact_trace(obj, curvature).trace == pytest.approx(
            dense_trace(obj, curvature), rel=1e-12
        )


@pytest.mark.parametrize(
    ("positions", "out", "inp"), [(1, 512, 4608), (16, 128, 1152), (64, 8, 27)]
)
def test_per_sample_norm_forms_agree_in_float32(positions, out, inp):
    """Shapes of a ResNet's last, middle and first convolution: both forms within float32
    rounding of the float64 norm."""
    from landscape_cli.operators.exact_trace import outer_sq_norms

    gen = torch.Generator().manual_seed(0)
    b = torch.randn(6, positions, out, generator=gen, dtype=F64)
    a = torch.relu(torch.randn(6, positions, inp, generator=gen, dtype=F64))
    reference = torch.linalg.vector_norm(torch.bmm(b.mT, a), dim=(1, 2)) ** 2
    for method in ("formed", "gram", "auto"):
        got = outer_sq_norms(b.float(), a.float(), method).double()
        assert torch.allclose(got, reference, rtol=1e-5, atol=0), method


def test_a_custom_loss_is_unsupported_and_an_unknown_curvature_an_error():
    x, y, _ = inputs(5)

    def loss(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    torch.manual_seed(0)
    obj = Objective(relu_mlp().double(), loss, tensor_batches((x, y), 7, None, "t"), dtype=F64)
    with pytest.raises(Unsupported, match="custom loss"):
        exact_trace(obj, "hessian")
    with pytest.raises(ValueError, match="curvature"):
        exact_trace(obj, "fisher")


class Centred(nn.Module):
    """Subtracts the batch mean of the hidden layer: samples are coupled with no parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - h.mean(0, keepdim=True))


def test_outputs_coupled_across_samples_are_unsupported():
    """The per-sample split of a backward pass needs each sample's outputs to depend on its own
    input only; a batch statistic in forward breaks it (and the trace would be wrong)."""
    x, y, _ = inputs(5)
    obj = objective(Centred(), x, y)
    with pytest.raises(Unsupported, match="depend on the other samples"):
        exact_trace(obj, "ggn")


class ReusedWeight(nn.Module):
    """``b`` runs once as a module, and its weight is used again functionally: the hooks see one
    call, the network is quadratic in that weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(nn.functional.linear(torch.relu(self.a(x)), self.a.weight))
        return self.b(h)


def test_a_parameter_used_twice_is_unsupported():
    x, y, _ = inputs(5)
    obj = objective(ReusedWeight(), x, y)
    for curvature in ("ggn", "ef", "hessian"):
        with pytest.raises(Unsupported, match="used more than once"):
            exact_trace(obj, curvature)


def test_sequence_outputs_use_the_generic_loss_factor():
    """Cross-entropy on (N, C, T) outputs (a class per position): the loss Hessian comes from
    torch.func.hessian, its null directions (one per position) cost no pass."""
    torch.manual_seed(0)
    x = torch.randn(12, 2, 5, dtype=F64)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 3, 1))
    for loss, y in [
        ("cross_entropy", torch.randint(0, 3, (12, 5))),
        ("mse", torch.randn(12, 3, 5, dtype=F64)),
    ]:
        obj = objective(model, x, y, loss)
        for curvature in ("ggn", "ef", "hessian"):
            exact = exact_trace(obj, curvature)
            assert exact.trace == pytest.approx(dense_trace(obj, curvature), rel=1e-12)
        if loss == "cross_entropy":
            assert exact_trace(obj, "ggn").passes == 10  # 15 outputs, 5 null directions


# --------------------- layers, hooks, targets and couplings the per-sample split checks, not trusts
class HalfWeightLinear(nn.Linear):
    """A subclass computing with half its weight: its own forward, not Linear's."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight * 0.5, self.bias)


class OffsetBySecond(nn.Module):
    """Couples samples through one fixed other sample, ``h - h[1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - h[1:2])


def test_in_place_activations_after_a_module_give_the_dense_traces():
    """ReLU(inplace=True) after a module does not change the module output the split keeps, so
    the backward pass gives that output's gradient (not the ReLU output's)."""
    x, y, _ = inputs(5)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))
    xi, yi, _ = inputs(2, 5, 5)
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Flatten(),
        nn.Linear(27, 3),
    )  # fmt: skip
    with torch.no_grad():
        cnn[1].running_mean.uniform_(-0.5, 0.5)
        cnn[1].running_var.uniform_(0.5, 2.0)
    for obj in (objective(mlp, x, y), objective(cnn, xi, yi)):
        for curvature in ("ggn", "ef", "hessian"):
            exact = exact_trace(obj, curvature).trace
            assert exact == pytest.approx(dense_trace(obj, curvature), rel=1e-12)


def test_subclasses_extra_parameters_and_hooks_are_unsupported():
    """A Linear subclass with its own forward, parameters besides weight and bias (such as
    weight_norm's weight_g/weight_v) and forward hooks change what the layer computes: refused."""
    x, y, _ = inputs(5)
    torch.manual_seed(0)
    subclass = nn.Sequential(HalfWeightLinear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(Unsupported, match="not subclasses"):
        exact_trace(objective(subclass, x, y), "ggn")
    torch.manual_seed(0)
    extra = nn.Linear(5, 6)
    extra.register_parameter("scale", nn.Parameter(torch.ones(6)))
    with pytest.raises(Unsupported, match="besides weight and bias"):
        exact_trace(objective(nn.Sequential(extra, nn.ReLU(), nn.Linear(6, 3)), x, y), "ggn")
    torch.manual_seed(0)
    hooked = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    hooked[0].register_forward_hook(lambda module, args, output: output * 2)
    with pytest.raises(Unsupported, match="forward hooks"):
        exact_trace(objective(hooked, x, y), "ggn")


def test_ignored_labels_are_unsupported_and_soft_targets_give_the_dense_traces():
    """Labels set to ignore_index (-100) are left out of the batch mean: refused, and auto falls
    back with the reason. Soft targets (here summing to 2) go through the loss's own Hessian, not
    the closed form for class labels, and give the dense traces."""
    x, y, _ = inputs(5)
    ignored = y.clone()
    ignored[::3] = -100
    obj = objective(relu_mlp(), x, ignored)
    for curvature in ("ggn", "ef", "hessian"):
        with pytest.raises(Unsupported, match="ignore_index"):
            exact_trace(obj, curvature)
    settings = SpectrumSettings(top_k=1, bottom_k=0, density=False, trace_matvecs=8)
    assert "ignore_index" in analyze_spectrum(obj, settings).notes["trace"]  # auto falls back
    soft = 2 * torch.softmax(torch.randn(N, 3, generator=torch.Generator().manual_seed(4)), 1)
    obj = objective(relu_mlp(), x, soft.to(F64))
    for curvature in ("ggn", "ef", "hessian"):
        assert exact_trace(obj, curvature).trace == pytest.approx(
            dense_trace(obj, curvature), rel=1e-12
        )


def test_coupling_through_any_sample_is_detected():
    """The coupling check replaces every sample, so ``h - h[1]`` is caught like a batch mean."""
    x, y, _ = inputs(5)
    with pytest.raises(Unsupported, match="depend on the other samples"):
        exact_trace(objective(OffsetBySecond(), x, y), "ggn")


def test_nll_outputs_that_are_not_log_probabilities_are_refused_like_the_operator():
    x, y, _ = inputs(5)
    obj = objective(relu_mlp(), x, y, "nll")  # logits, not log-probabilities
    with pytest.raises(Unsupported, match="not log-probabilities"):
        exact_trace(obj, "ggn")
