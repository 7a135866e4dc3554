"""The objective and its HVPs against torch.func.hessian of the full-data mean loss (float64).

Tolerances: HVPs are exact up to float64 rounding of sums over ~100 samples, so 1e-10 relative to
the Hessian's scale is ample and would still catch any weighting error (which is O(1/batches)).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from operator_checks import assert_matches_dense
from torch import nn
from torch.func import functional_call, hessian
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.errors import InputError, NumericalError
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import dataset_batches, no_data, tensor_batches
from landscape_cli.problem.objective import Objective

runner = CliRunner()


def cross_entropy(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def make_problem(num_samples: int = 100, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    x = torch.randn(num_samples, 5)
    y = torch.randint(0, 3, (num_samples,))
    return model, x, y


def exact_hessian(model: nn.Module, loss_fn, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Hessian and gradient of the mean loss over ALL samples in one batch, by torch.func."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    double_model = (
        nn.Sequential(*[m for m in model]).double() if isinstance(model, nn.Sequential) else model
    )

    def loss(w):
        params, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = w[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        return loss_fn(lambda inp: functional_call(double_model, params, (inp,)), (x.double(), y))

    grad = torch.func.grad(loss)(w0)
    return hessian(loss)(w0), grad


@pytest.mark.parametrize("hvp_mode", ["cached", "streaming"])
@pytest.mark.parametrize("batch_size", [32, 100, 7])
def test_hvp_equals_exact_hessian_of_full_data_mean(hvp_mode, batch_size):
    model, x, y = make_problem()
    H, g = exact_hessian(model, cross_entropy, x, y)
    obj = Objective(
        model,
        cross_entropy,
        tensor_batches((x, y), batch_size, None, "t"),
        dtype=torch.float64,
        hvp_mode=hvp_mode,
    )
    assert obj.hvp_mode == hvp_mode
    assert_matches_dense(HessianOperator(obj), H, tol=1e-10, columns=5)
    assert torch.allclose(obj.gradient, g, atol=1e-12)


def test_100_samples_in_batches_of_32_equal_one_batch_of_100():
    """A short last batch (4 samples) is weighted by its count, not as a batch."""
    model, x, y = make_problem(100)
    one = Objective(
        model, cross_entropy, tensor_batches((x, y), 100, None, "t"), dtype=torch.float64
    )
    many = Objective(
        model, cross_entropy, tensor_batches((x, y), 32, None, "t"), dtype=torch.float64
    )
    v = torch.randn(one.num_parameters, dtype=torch.float64)
    assert abs(one.loss_value - many.loss_value) < 1e-13
    assert torch.allclose(one.hvp(v), many.hvp(v), atol=1e-13)
    # and a mean of batch means would be measurably different: the test can fail
    batch_means = torch.stack(
        [
            nn.functional.cross_entropy(model.double()(x[i : i + 32].double()), y[i : i + 32])
            for i in range(0, 100, 32)
        ]
    ).mean()
    assert abs(float(batch_means.detach()) - one.loss_value) > 1e-4


def test_hvp_is_symmetric_to_rounding():
    model, x, y = make_problem()
    obj = Objective(
        model, cross_entropy, tensor_batches((x, y), 30, None, "t"), dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(obj.num_parameters, dtype=torch.float64, generator=gen)
    v = torch.randn(obj.num_parameters, dtype=torch.float64, generator=gen)
    assert abs(u @ obj.hvp(v) - v @ obj.hvp(u)) < 1e-12 * (
        u.norm() * v.norm() * obj.hvp(u).norm() / u.norm()
    )


def test_float32_hvp_close_to_float64():
    model, x, y = make_problem()
    H, _ = exact_hessian(model, cross_entropy, x, y)
    obj = Objective(
        model, cross_entropy, tensor_batches((x, y), 64, None, "t"), dtype=torch.float32
    )
    v = torch.randn(obj.num_parameters, dtype=torch.float64)
    # float32 rounding over a few hundred terms: 1e-5 relative to ||H|| ||v||
    err = (obj.hvp(v.float()).double() - H @ v).norm() / (torch.linalg.matrix_norm(H, 2) * v.norm())
    assert err < 1e-5


def test_model_is_not_mutated():
    model, x, y = make_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj = Objective(
        model, cross_entropy, tensor_batches((x, y), 50, None, "t"), dtype=torch.float64
    )
    obj.hvp(torch.ones(obj.num_parameters, dtype=torch.float64))
    obj.loss(torch.ones(obj.num_parameters, dtype=torch.float64))
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])


def test_user_model_mode_flags_are_restored():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    model.train()
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    batches = tensor_batches((x, y), 10, None, "t")
    Objective(model, cross_entropy, batches, mode="eval").hvp(torch.ones(47))
    assert all(m.training for m in model.modules())
    model.eval()
    Objective(model, cross_entropy, tensor_batches((x, y), 10, None, "t"), mode="train")
    assert not any(m.training for m in model.modules())


def test_auto_mode_streams_when_the_measured_graph_exceeds_the_budget():
    """The cached graph of 10 batches does not fit half its own measured size: auto counts the
    bytes autograd saves, stops caching once they pass the budget, extrapolates the graph's
    size from the batches counted, and its streaming products equal the cached ones to rounding."""
    model, x, y = make_problem()
    H, _ = exact_hessian(model, cross_entropy, x, y)

    def objective(**kwargs) -> Objective:
        batches = tensor_batches((x, y), 10, None, "t")
        return Objective(model, cross_entropy, batches, dtype=torch.float64, **kwargs)

    cached = objective(hvp_mode="cached", memory_budget=1)  # cached as asked, whatever the budget
    assert cached.hvp_mode == "cached" and cached.graph_bytes > 0
    assert cached.graph_estimate == cached.graph_bytes
    fits = objective(memory_budget=cached.graph_bytes)
    assert fits.hvp_mode == "cached" and fits.graph_bytes == cached.graph_bytes
    small = objective(memory_budget=cached.graph_bytes // 2)
    assert small.hvp_mode == "streaming" and small.graph_bytes == 0
    # batches of equal size save equal bytes: the extrapolation is the measured size
    assert small.graph_estimate == cached.graph_bytes
    assert objective(hvp_mode="streaming").graph_estimate is None  # nothing counted
    v = torch.randn(small.num_parameters, dtype=torch.float64)
    assert torch.allclose(small.hvp(v), cached.hvp(v), rtol=1e-12, atol=1e-14)
    assert torch.allclose(small.hvp(v), H @ v, atol=1e-12)
    assert abs(small.loss_value - cached.loss_value) < 1e-14
    assert torch.equal(small.gradient, cached.gradient)


def test_the_cli_reports_streaming_when_the_graph_exceeds_the_memory_budget(monkeypatch):
    """With half the available memory below the bundled sample's graph (874 kB in float32, 2
    batches), auto streams, the plan line says why, and the JSON names the mode."""
    import json

    from landscape_cli.problem import objective as objective_module

    monkeypatch.setattr(objective_module, "available_memory", lambda device: 2 * 300_000)
    result = runner.invoke(app, ["spectrum", "--lambda-max", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["hvp_mode"] == "streaming"
    assert re.search(
        r"· HVP streaming \(graph ≈ [\d.]+ kB over the 293 kB budget\) ·", result.stderr
    )


def test_loss_at_perturbed_point_matches_direct_evaluation():
    model, x, y = make_problem()
    obj = Objective(
        model, cross_entropy, tensor_batches((x, y), 16, None, "t"), dtype=torch.float64
    )
    delta = 0.1 * torch.randn(obj.num_parameters, dtype=torch.float64)
    shifted = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        flat = obj.flat_parameters() + delta
        torch.nn.utils.vector_to_parameters(flat, shifted.parameters())
    expected = float(nn.functional.cross_entropy(shifted(x.double()), y).detach())
    assert abs(obj.loss(delta) - expected) < 1e-12


class Quadratic(nn.Module):
    def __init__(self, n: int = 4):
        super().__init__()
        self.w = nn.Parameter(torch.arange(1.0, n + 1))


def test_analytic_objective_without_data():
    A = torch.tensor(
        [[2.0, 1.0, 0, 0], [1.0, 3.0, 0, 0], [0, 0, -1.0, 0], [0, 0, 0, 0.5]], dtype=torch.float64
    )

    def quad(model, batch):
        assert batch is None
        return 0.5 * model.w @ A @ model.w

    obj = Objective(Quadratic(), quad, no_data(), dtype=torch.float64)
    assert obj.num_samples == 0
    assert_matches_dense(HessianOperator(obj), A, tol=1e-14)
    w = torch.arange(1.0, 5.0, dtype=torch.float64)
    assert torch.allclose(obj.gradient, A @ w)


def test_linear_parameter_has_zero_hessian_row():
    """A parameter whose gradient is constant (no graph) must give zeros, not an autograd error."""

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
            self.b = nn.Parameter(torch.tensor([3.0]))

    def loss(model, batch):
        return (model.a**2).sum() + 5.0 * model.b.sum()

    obj = Objective(Lin(), loss, no_data(), dtype=torch.float64)
    H = torch.diag(torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))
    assert_matches_dense(HessianOperator(obj), H, tol=1e-14)


def test_batchnorm_eval_mode_is_batch_size_independent_and_train_mode_is_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))
    model.train()
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model(x)  # populate running statistics
    values = {}
    for mode in ("eval", "train"):
        for bs in (8, 64):
            obj = Objective(
                model,
                cross_entropy,
                tensor_batches((x, y), bs, None, "t"),
                dtype=torch.float64,
                mode=mode,
            )
            values[mode, bs] = obj.loss_value
    assert abs(values["eval", 8] - values["eval", 64]) < 1e-12
    assert abs(values["train", 8] - values["train", 64]) > 1e-6


def test_train_mode_dropout_masks_follow_the_seed_and_repeat_in_every_evaluation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))

    def make(mode, seed=0):
        return Objective(
            model, cross_entropy, tensor_batches((x, y), 20, None, "t"), dtype=torch.float64,
            mode="train", hvp_mode=mode, seed=seed,
        )  # fmt: skip

    cached, streaming, other = make("cached"), make("streaming"), make("cached", seed=1)
    v = torch.randn(cached.num_parameters, dtype=torch.float64)
    assert torch.allclose(cached.hvp(v), streaming.hvp(v), atol=1e-12)
    assert cached.loss() == pytest.approx(cached.loss_value, abs=1e-14)  # same masks every time
    assert abs(other.loss_value - cached.loss_value) > 1e-6  # the seed picks the masks


def test_dataset_source_matches_tensor_source():
    model, x, y = make_problem(50)
    dataset = torch.utils.data.TensorDataset(x, y)
    a = Objective(model, cross_entropy, dataset_batches(dataset, 16, 40, "ds"), dtype=torch.float64)
    b = Objective(model, cross_entropy, tensor_batches((x, y), 40, 40, "t"), dtype=torch.float64)
    v = torch.randn(a.num_parameters, dtype=torch.float64)
    assert a.num_samples == 40
    assert torch.allclose(a.hvp(v), b.hvp(v), atol=1e-13)


class DictData(torch.utils.data.Dataset):
    """12 samples as ``{"x": ..., "y": ...}`` mappings; reading item ``fail_at`` raises."""

    def __init__(self, fail_at: int | None = None):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 5, generator=gen)
        self.y = torch.randint(0, 3, (12,), generator=gen)
        self.fail_at = fail_at

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == self.fail_at:
            raise OSError("disk gone")
        return {"x": self.x[i], "y": self.y[i]}


def test_a_dataset_of_mappings_matches_tensors_and_a_failing_item_is_named():
    model = nn.Linear(5, 3)
    a = Objective(
        model, cross_entropy, dataset_batches(DictData(), 5, None, "dicts"), dtype=torch.float64
    )
    d = DictData()
    b = Objective(
        model, cross_entropy, tensor_batches((d.x, d.y), 12, None, "t"), dtype=torch.float64
    )
    assert a.loss_value == pytest.approx(b.loss_value, abs=1e-14)
    with pytest.raises(InputError, match="reading item 7 failed"):
        Objective(model, cross_entropy, dataset_batches(DictData(fail_at=7), 5, None, "dicts"))


def test_shape_mismatch_is_an_input_error_naming_the_shapes():
    model, _x, y = make_problem()
    with pytest.raises(InputError, match=r"does not fit the model.*\(50, 7\)"):
        Objective(
            model, cross_entropy, tensor_batches((torch.randn(100, 7), y), 50, None, "bad.pt")
        )


def test_non_finite_loss_names_the_batch():
    model, x, y = make_problem()
    x = x.clone()
    x[70] = float("inf")
    with pytest.raises(NumericalError, match="batch 2 of 4"):
        Objective(model, cross_entropy, tensor_batches((x, y), 32, None, "t"), hvp_mode="streaming")


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_a_bad_label_in_a_later_batch_is_an_input_error_naming_the_batch(tmp_path):
    x, y = torch.randn(40, 8), torch.zeros(40, dtype=torch.long)
    y[35] = 9  # 4 classes only
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    result = runner.invoke(
        app, ["inspect", "sample:mlp", "--data", str(tmp_path / "d.pt"), "--batch-size", "10"]
    )
    one_error_line(result, 2, "at batch 3 of 4")


def test_a_loss_that_ignores_the_parameters_is_an_input_error(tmp_path):
    module = tmp_path / "losses.py"
    module.write_text("def detached(model, batch):\n    return model(batch[0]).sum().detach()\n")
    result = runner.invoke(app, ["inspect", "--loss", f"{module}:detached"])
    one_error_line(result, 2, "does not depend on the model's parameters")


@pytest.mark.parametrize("hvp_mode", ["cached", "streaming"])
def test_batched_block_products_equal_the_exact_hessian(hvp_mode):
    """``hvp_block="batched"`` (one vmapped backward per chunk of columns) computes the same H V
    as the exact Hessian, for more columns than one chunk holds (tolerance: float64 rounding)."""
    model, x, y = make_problem()
    H, _ = exact_hessian(model, cross_entropy, x, y)
    obj = Objective(
        model,
        cross_entropy,
        tensor_batches((x, y), 40, None, "t"),
        dtype=torch.float64,
        hvp_mode=hvp_mode,
        hvp_block="batched",
    )
    k = Objective.BATCHED_COLUMNS + 3
    V = torch.randn(obj.num_parameters, k, dtype=torch.float64)
    assert torch.allclose(obj.hvp_block(V), H @ V, atol=1e-10 * H.abs().max(), rtol=0)
    assert obj.hvp_block_mode == "batched"


def test_batched_columns_are_bounded_by_the_graphs_that_fit_the_memory_budget(monkeypatch):
    """The vmapped backward keeps about one graph per column: a budget holding 3 graphs beside
    the cached one gives passes of 3 columns (asked for ``batched``), and ``auto`` loops."""
    model, x, y = make_problem()
    H, _ = exact_hessian(model, cross_entropy, x, y)
    batches = tensor_batches((x, y), 40, None, "t")
    probe = Objective(model, cross_entropy, batches, dtype=torch.float64, hvp_mode="cached")
    graph = probe.graph_bytes
    assert graph > 0 and probe.hvp_block_mode == "batched"  # the default budget fits 16
    budget = 4 * graph + graph // 2
    batched = Objective(
        model, cross_entropy, batches, dtype=torch.float64, hvp_mode="cached",
        hvp_block="batched", memory_budget=budget,
    )  # fmt: skip
    assert batched.batched_columns() == 3 and batched.hvp_block_mode == "batched"
    widths = []
    real = batched._backward_batched
    monkeypatch.setattr(
        batched,
        "_backward_batched",
        lambda g, leaves, c: widths.append(len(c)) or real(g, leaves, c),
    )
    V = torch.randn(batched.num_parameters, 7, dtype=torch.float64)
    assert torch.allclose(batched.hvp_block(V), H @ V, atol=1e-10 * H.abs().max(), rtol=0)
    assert widths == [3, 3, 1]
    auto = Objective(
        model, cross_entropy, batches, dtype=torch.float64, hvp_mode="cached",
        memory_budget=budget,
    )  # fmt: skip
    assert auto.hvp_block_mode == "loop"
    assert torch.allclose(auto.hvp_block(V), H @ V, atol=1e-10 * H.abs().max(), rtol=0)


def test_auto_block_mode_loops_for_convolutions_and_falls_back_on_failure(monkeypatch):
    model, x, y = make_problem()
    batches = tensor_batches((x, y), 40, None, "t")
    assert Objective(model, cross_entropy, batches).hvp_block_mode == "batched"
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * (x.shape[1] - 2), 3))
    conv_loss = lambda m, b: nn.functional.cross_entropy(m(b[0][:, None, :]), b[1])  # noqa: E731
    assert Objective(conv, conv_loss, batches).hvp_block_mode == "loop"

    obj = Objective(model, cross_entropy, batches, dtype=torch.float64, hvp_block="batched")
    V = torch.randn(obj.num_parameters, 4, dtype=torch.float64)
    expected = obj.hvp_block(V)

    def no_batching_rule(*args, **kwargs):
        raise RuntimeError("Batching rule not implemented for aten::something")

    monkeypatch.setattr(obj, "_backward_batched", no_batching_rule)
    assert torch.allclose(obj.hvp_block(V), expected, atol=1e-12, rtol=0)
    assert obj.hvp_block_mode == "loop"  # and it stays there, deterministically
    with pytest.raises(ValueError, match="hvp_block"):
        Objective(model, cross_entropy, batches, hvp_block="vmap")


@pytest.mark.parametrize("hvp_mode", ["cached", "streaming"])
def test_hvp_through_the_scalar_dot_equals_the_grad_outputs_product_to_the_bit(hvp_mode):
    """``H v`` is taken as ``∇(g · v)`` (no tensor ``grad_outputs``, see ``Objective._backward``);
    the backward of the product hands ``1 · v = v`` to the graph, so in float32 it must equal the
    classic ``autograd.grad(g, w, grad_outputs=v)`` through the same gradient graph exactly."""
    model, x, y = make_problem()
    obj = Objective(model, cross_entropy, tensor_batches((x, y), 100, None, "t"), hvp_mode=hvp_mode)
    leaves = [p.detach().requires_grad_(True) for p in obj._params]
    loss = obj._call(leaves, (x, y))
    g = torch.autograd.grad(loss, leaves, create_graph=True)
    v = torch.randn(obj.num_parameters, generator=torch.Generator().manual_seed(1))
    hv = torch.autograd.grad(g, leaves, grad_outputs=obj.unflatten(v))
    assert torch.equal(obj.hvp(v), obj.flatten(hv))


def test_first_hvp_does_not_import_sympy():
    """Tensor ``grad_outputs`` make ``torch.autograd.grad`` import torch's symbolic-shapes module
    and sympy (~0.4 s, once per process); a single-vector HVP must not pay that."""
    code = (
        "import sys, torch\n"
        "from landscape_cli.problem.data import tensor_batches\n"
        "from landscape_cli.problem.objective import Objective\n"
        "from landscape_cli.operators.hessian import HessianOperator\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))\n"
        "x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))\n"
        "ce = lambda model, b: torch.nn.functional.cross_entropy(model(b[0]), b[1])\n"
        "for mode in ('cached', 'streaming'):\n"
        "    obj = Objective(m, ce, tensor_batches((x, y), 8, None, 't'), hvp_mode=mode)\n"
        "    before = 'sympy' in sys.modules\n"
        "    HessianOperator(obj) @ torch.ones(obj.num_parameters)\n"
        "    print(before, 'sympy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    if out[0] == "True":
        pytest.skip("this torch imports sympy before any HVP")
    assert out == ["False", "False"] * 2


def test_problem_notes_reach_every_result_and_survive_a_report(tmp_path):
    import h5py

    from landscape_cli.analyses.run_info import RunInfo
    from landscape_cli.analyses.settings import SpectrumSettings
    from landscape_cli.analyses.spectrum import analyze_spectrum
    from landscape_cli.problem.loading import make_objective

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    objective = make_objective(model, data, notes={"checkpoint_keys": "stripped 'net.'"})
    result = analyze_spectrum(objective, SpectrumSettings(top_k=1, trace=False, density=False))
    notes = result.to_dict()["notes"]
    assert notes["checkpoint_keys"] == "stripped 'net.'"
    assert "trace" in notes  # the analysis's own notes are kept beside the problem's
    with h5py.File(tmp_path / "r.h5", "w") as handle:
        result.info.to_hdf5(handle.create_group("spectrum"))
        assert RunInfo.from_hdf5(handle["spectrum"]).problem_notes == {
            "checkpoint_keys": "stripped 'net.'"
        }


ONCE_DIFFERENTIABLE_MODEL = """
import torch
from torch.autograd.function import once_differentiable


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x):
        return Cube.apply(self.linear(x))


def build():
    torch.manual_seed(0)
    return Net()
"""


def test_a_function_without_second_derivative_is_an_input_error_naming_it(tmp_path):
    (tmp_path / "cube.py").write_text(ONCE_DIFFERENTIABLE_MODEL)
    torch.save({"x": torch.randn(8, 3), "y": torch.randint(0, 2, (8,))}, tmp_path / "d.pt")
    for curvature in ("hessian", "ggn"):
        result = CliRunner().invoke(
            app,
            ["spectrum", "--model", f"{tmp_path / 'cube.py'}:build", "--data",
             str(tmp_path / "d.pt"), "--curvature", curvature, "--no-density", "--json"],
        )  # fmt: skip
        assert result.exit_code == 2, result.stderr
        assert "no second derivative of Cube" in result.stderr
        assert "@once_differentiable" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_operation_without_double_backward_is_named():
    from landscape_cli.problem.objective import not_twice_differentiable

    error = RuntimeError(
        "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"
    )
    converted = not_twice_differentiable(error)
    assert isinstance(converted, InputError)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in str(converted)
    assert not_twice_differentiable(RuntimeError("shape mismatch")) is None


def test_attention_through_sdpa_has_hessian_vector_products():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            h = self.linear(x).reshape(x.shape[0], 1, 2, 2)
            out = nn.functional.scaled_dot_product_attention(h, h, h)
            return out.reshape(x.shape[0], 4)

    torch.manual_seed(0)
    model = Attention().double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    obj = Objective(
        model, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        tensor_batches((x, y), 6, None, "toy"), dtype=torch.float64,
    )  # fmt: skip
    names = [n for n, _ in model.named_parameters()]

    def loss(flat):
        params = dict(zip(names, obj.unflatten(flat), strict=True))
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        dense = hessian(loss)(obj.flat_parameters())
    v = torch.randn(obj.num_parameters, dtype=torch.float64)
    assert torch.allclose(obj.hvp(v), dense @ v, rtol=1e-10, atol=1e-12)
