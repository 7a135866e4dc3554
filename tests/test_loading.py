"""Checkpoint, model, data and loss loading: every accepted format, and the errors users hit."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hostile import BANNER, PAYLOAD, torchscript_that_writes
from torch import nn
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.cli import app
from landscape_cli.errors import InputError, NumericalError
from landscape_cli.problem.loading import apply_state_dict, load_checkpoint, load_data
from landscape_cli.problem.losses import load_loss
from landscape_cli.problem.model_sources import build_model


def mlp() -> nn.Module:
    return sample_models.mlp.build()


def reference_state() -> dict[str, torch.Tensor]:
    return torch.load(sample_models.get_sample("mlp").checkpoint, weights_only=True)


def assert_state_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {}},
        lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "global_step": 10},
        lambda s: {"model_state_dict": OrderedDict(s)},
    ],
    ids=["plain", "nested-state_dict", "ddp-prefix", "lightning-prefix", "model_state_dict"],
)
def test_checkpoint_formats_load_the_same_weights(tmp_path, wrap):
    state = reference_state()
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(state), path)
    checkpoint = load_checkpoint(path)
    model = mlp()
    apply_state_dict(model, checkpoint.state_dict, str(path))
    assert_state_equal(model.state_dict(), state)
    assert len(checkpoint.sha256) == 64


def test_nested_checkpoint_keeps_the_optimizer_state():
    path = sample_models.CHECKPOINT_DIR / "mlp_training.pt"
    checkpoint = load_checkpoint(path)
    assert checkpoint.format.startswith("nested:")
    assert "optimizer" in checkpoint.extra


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = reference_state()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    checkpoint = load_checkpoint(path)
    assert checkpoint.format == "safetensors"
    assert_state_equal(checkpoint.state_dict, state)


def test_torchscript_archive_loads_its_weights_when_trusted(tmp_path):
    model = mlp()
    model.load_state_dict(reference_state())
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 8)), str(path))
    checkpoint = load_checkpoint(path, trust=True)
    assert checkpoint.format == "torchscript"
    assert_state_equal(checkpoint.state_dict, model.state_dict())


def test_torchscript_archive_is_refused_and_not_run_without_trust(tmp_path, capsys):
    target = tmp_path / "victim.txt"
    target.write_text("untouched contents")
    archive = torchscript_that_writes(tmp_path / "scripted.pt", target)
    with pytest.raises(InputError, match=r"TorchScript archive.*runs code") as caught:
        load_checkpoint(archive)
    assert "`trust_checkpoint=True`" in str(caught.value)
    assert target.read_text() == "untouched contents"
    assert BANNER not in capsys.readouterr().out


def test_torchscript_archive_prints_to_stderr_when_trusted(tmp_path, capsys):
    target = tmp_path / "victim.txt"
    target.write_text("untouched contents")
    archive = torchscript_that_writes(tmp_path / "scripted.pt", target)
    checkpoint = load_checkpoint(archive, trust=True)
    assert set(checkpoint.state_dict) == {"weight"}
    assert target.read_bytes().startswith(PAYLOAD)  # trusted: the archive's code did run
    captured = capsys.readouterr()
    assert BANNER not in captured.out and BANNER in captured.err


def test_torchscript_archive_renamed_to_any_suffix_is_still_refused(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("untouched contents")
    archive = torchscript_that_writes(tmp_path / "scripted.pt", target)
    for name in ("weights.bin", "weights.pth", "weights.ckpt", "weights"):
        renamed = tmp_path / name
        renamed.write_bytes(archive.read_bytes())
        with pytest.raises(InputError, match="TorchScript"):
            load_checkpoint(renamed)
    assert target.read_text() == "untouched contents"


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Evil()}, path)
    with pytest.raises(InputError, match=r"would run code.*`trust_checkpoint=True`"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_full_pickle_module_loads_only_when_trusted(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(InputError, match="`trust_checkpoint=True`"):
        load_checkpoint(path)
    checkpoint = load_checkpoint(path, trust=True)
    assert_state_equal(checkpoint.state_dict, model.state_dict())


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(InputError, match="empty"):
        load_checkpoint(empty)


def test_text_file_named_pt(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    source = sample_models.get_sample("mlp").checkpoint
    data = Path(source).read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_checkpoint_without_tensors(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(InputError, match="no tensors found"):
        load_checkpoint(path)


def test_other_architecture_names_missing_and_unexpected_keys():
    other = {"conv.weight": torch.zeros(3, 3), "0.weight": torch.zeros(32, 8)}
    with pytest.raises(InputError, match=r"missing keys '0.bias'.*unexpected keys 'conv.weight'"):
        apply_state_dict(mlp(), other, "ckpt")


def test_shape_mismatch_is_named():
    state = reference_state()
    model = sample_models.mlp.build(hidden=16)
    with pytest.raises(
        InputError, match=r"shape mismatch: '0.weight' \(32, 8\) vs model \(16, 8\)"
    ):
        apply_state_dict(model, state, "ckpt")


def test_nan_weights_are_a_numerical_error_naming_the_tensor():
    state = {k: v.clone() for k, v in reference_state().items()}
    key = next(iter(state))
    state[key].view(-1)[0] = float("nan")
    with pytest.raises(NumericalError, match=f"'{key}' holds 1 non-finite"):
        apply_state_dict(mlp(), state, "ckpt")


def test_model_specs(tmp_path):
    assert isinstance(
        build_model("landscape_cli.sample_models.mlp:build", {"hidden": 4}), nn.Module
    )
    file = tmp_path / "net.py"
    file.write_text("import torch\ndef build(width=2):\n    return torch.nn.Linear(width, 1)\n")
    assert build_model(f"{file}:build", {"width": 5}).in_features == 5
    with pytest.raises(InputError, match="expected package.module:callable"):
        build_model("landscape_cli.sample_models.mlp")
    with pytest.raises(InputError, match="module 'no_such_pkg' not found"):
        build_model("no_such_pkg.net:build")
    with pytest.raises(InputError, match="has no attribute 'nope'"):
        build_model("landscape_cli.sample_models.mlp:nope")
    with pytest.raises(InputError, match="bad keyword arguments"):
        build_model("landscape_cli.sample_models.mlp:build", {"widht": 3})
    with pytest.raises(InputError, match="expected an nn.Module"):
        build_model("collections:OrderedDict", {})


def test_factory_internal_type_error_is_not_blamed_on_kwargs(tmp_path):
    module = tmp_path / "nets.py"
    module.write_text("def build(width=3):\n    return len(width)\n")
    result = CliRunner().invoke(
        app, ["inspect", "--model", f"{module}:build", "--data", "sample:blobs"]
    )
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the factory raised TypeError" in lines[0], result.stderr


def test_data_files_agree(tmp_path):
    x, y = sample_models.load_dataset("blobs")
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    torch.save((x, y), tmp_path / "pair.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        handle["x"] = x.numpy()
        handle["y"] = y.numpy()
    for name in ("d.pt", "pair.pt", "d.npz", "d.h5"):
        batches = load_data(str(tmp_path / name), 100, 250)
        assert batches.num_samples == 250 and len(batches) == 3
        got = torch.cat([b[0] for b, _ in batches])
        assert torch.equal(got, x[:250]), name
        assert abs(sum(w for _, w in batches) - 1.0) < 1e-15


def test_data_errors(tmp_path):
    torch.save({"inputs": torch.zeros(3, 2)}, tmp_path / "keys.pt")
    with pytest.raises(InputError, match=r"missing key\(s\) x, y"):
        load_data(str(tmp_path / "keys.pt"), 8, None)
    torch.save({"x": torch.zeros(3, 2), "y": torch.zeros(4)}, tmp_path / "n.pt")
    with pytest.raises(InputError, match="x has 3 samples but y has 4"):
        load_data(str(tmp_path / "n.pt"), 8, None)
    with h5py.File(tmp_path / "only_x.h5", "w") as handle:
        handle["x"] = np.zeros((3, 2))
    with pytest.raises(InputError, match="needs datasets 'x' and 'y'; found x"):
        load_data(str(tmp_path / "only_x.h5"), 8, None)
    with pytest.raises(InputError, match="unknown data format '.csv'"):
        load_data(str(tmp_path / "d.csv"), 8, None)
    with pytest.raises(InputError, match="available"):
        load_data("sample:nope", 8, None)
    with pytest.raises(InputError, match="file not found"):
        load_data(str(tmp_path / "missing.npz"), 8, None)
    torch.save({"x": torch.full((3, 2), float("nan")), "y": torch.zeros(3)}, tmp_path / "nan.pt")
    with pytest.raises(NumericalError, match="NaN or Inf"):
        load_data(str(tmp_path / "nan.pt"), 8, None)


def test_data_callable_dataset_and_loader(tmp_path):
    module = tmp_path / "mydata.py"
    module.write_text(
        "import torch\n"
        "x = torch.arange(20.0).reshape(10, 2)\n"
        "y = torch.arange(10)\n"
        "def dataset():\n    return torch.utils.data.TensorDataset(x, y)\n"
        "def loader():\n    return torch.utils.data.DataLoader(dataset(), batch_size=3)\n"
        "def pair():\n    return x, y\n"
    )
    for name in ("dataset", "loader", "pair"):
        batches = load_data(f"{module}:{name}", 4, None)
        got = torch.cat([b[0] for b, _ in batches])
        assert torch.equal(got, torch.arange(20.0).reshape(10, 2)), name  # index order
    # a DataLoader keeps its own batch size; --batch-size applies to tensors and datasets
    assert load_data(f"{module}:loader", 4, None).sizes == (3, 3, 3, 1)
    assert len(load_data(f"{module}:dataset", 4, None)) == 3


def test_unknown_loss_suggests_the_closest():
    with pytest.raises(InputError, match=r"unknown loss.*did you mean 'cross_entropy'"):
        load_loss("crossentropy")
    assert load_loss("mse") is not None
    with pytest.raises(InputError, match="has no attribute"):
        load_loss("landscape_cli.sample_models.analytic:not_a_loss")


def test_pickle_protocol_error_is_input_error(tmp_path):
    path = tmp_path / "raw.pkl.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(InputError):
        load_checkpoint(path)


def test_make_objective_from_tensors_dataset_and_loader_agree():
    from torch.utils.data import DataLoader, TensorDataset

    from landscape_cli.operators.hessian import HessianOperator
    from landscape_cli.problem.loading import make_objective

    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(10, 3, generator=generator), torch.randint(0, 2, (10,), generator=generator)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    products = []
    for data in ((x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=4)):
        objective = make_objective(model, data, "cross_entropy", batch_size=4, dtype=torch.float64)
        assert objective.batches.num_samples == 10
        products.append(HessianOperator(objective) @ v)
    assert torch.allclose(products[0], products[1], atol=1e-12)
    assert torch.allclose(products[0], products[2], atol=1e-12)


def test_make_objective_takes_an_analytic_loss_and_refuses_other_data():
    from landscape_cli.problem.loading import make_objective

    point = nn.Linear(1, 1, bias=False)
    objective = make_objective(point, None, lambda m, batch: (m.weight**2).sum())
    assert objective.num_parameters == 1
    with pytest.raises(InputError, match="expected \\(x, y\\), a Dataset, a DataLoader or None"):
        make_objective(point, 3.0)


def _token_arrays(n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(0, 20, (n, 6)).astype(np.int32),
        "attention_mask": np.ones((n, 6), dtype=np.int64),
        "labels": rng.integers(0, 3, n),
    }


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".h5"])
def test_token_files_give_batches_of_named_integer_inputs(tmp_path, suffix):
    from landscape_cli.problem.data import batch_size_of, move_batch

    arrays = _token_arrays()
    path = tmp_path / f"tokens{suffix}"
    if suffix == ".pt":
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    elif suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as handle:
            for key, value in arrays.items():
                handle[key] = value
    batches = load_data(str(path), batch_size=4, max_samples=9)
    assert (len(batches), batches.num_samples) == (3, 9)
    collected = [move_batch(b, torch.device("cpu"), torch.float64) for b, _ in batches]
    assert [batch_size_of(b) for b in collected] == [4, 4, 1]
    assert set(collected[0]) == set(arrays)
    assert collected[0]["input_ids"].dtype == torch.int32  # never cast to the float dtype
    assert torch.equal(collected[2]["labels"], torch.as_tensor(arrays["labels"][8:9]))


def test_token_arrays_of_different_lengths_are_one_line(tmp_path):
    arrays = _token_arrays()
    arrays["labels"] = arrays["labels"][:7]
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(InputError, match="input_ids has 10 samples but labels has 7"):
        load_data(str(tmp_path / "t.npz"), 4, None)


def test_a_dataset_of_named_items_collates_to_named_batches():
    from landscape_cli.problem.data import dataset_batches

    items = [{"input_ids": torch.arange(i, i + 5), "labels": torch.tensor(i % 2)} for i in range(5)]
    (first, weight), *_ = list(dataset_batches(items, 3, None, "items"))
    assert first["input_ids"].shape == (3, 5) and first["labels"].tolist() == [0, 1, 0]
    assert weight == pytest.approx(3 / 5)


def test_the_model_is_called_with_the_inputs_its_forward_names():
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 3)

        def forward(self, input_ids, attention_mask=None):
            return {"logits": self.embed(input_ids).mean(1) * attention_mask[:, :1]}

    loss = load_loss("sequence_classification")
    batch = {
        "input_ids": torch.randint(0, 20, (4, 6)),
        "attention_mask": torch.ones(4, 6),
        "token_type_ids": torch.zeros(4, 6, dtype=torch.int64),  # not a forward parameter
        "labels": torch.tensor([0, 1, 2, 0]),
    }
    value = loss(Named(), batch)
    assert value.ndim == 0 and bool(torch.isfinite(value))


def test_a_dataloader_of_named_items_and_make_objective_take_token_data():
    from landscape_cli.problem.data import loader_batches
    from landscape_cli.problem.loading import make_objective

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 3)

        def forward(self, input_ids):
            return (self.embed(input_ids).mean(1),)  # a tuple: the logits come first

    torch.manual_seed(0)
    ids, labels = torch.randint(0, 20, (7, 5)), torch.randint(0, 3, (7,))
    items = [{"input_ids": ids[i], "labels": labels[i]} for i in range(7)]
    loader = torch.utils.data.DataLoader(items, batch_size=3)
    batches = [b for b, _ in loader_batches(loader, None, "loader")]
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3, 1]
    model = Classifier()
    objective = make_objective(
        model, {"input_ids": ids, "labels": labels}, "sequence_classification",
        batch_size=3, dtype=torch.float64,
    )  # fmt: skip
    expected = nn.functional.cross_entropy(model(ids)[0].double(), labels)
    assert objective.loss_value == pytest.approx(float(expected), rel=1e-6)


def test_named_batches_split_into_subsets_and_shards_alike():
    from landscape_cli.problem.data import tensor_batches

    source = {"input_ids": torch.arange(20).reshape(10, 2), "labels": torch.arange(10)}
    batches = tensor_batches(source, 3, None, "tokens")
    subset = batches.subset(1, 3)
    assert [b["labels"].tolist() for b, _ in subset] == [[3, 4, 5], [6, 7, 8]]
    shard = batches.shard(1, 2)
    assert [(i, b["labels"].tolist()) for i, b, _ in shard.local()] == [(1, [3, 4, 5]), (3, [9])]


def test_non_finite_named_inputs_name_the_sample(tmp_path):
    scale = torch.ones(6, 4)
    scale[4, 1] = float("nan")
    torch.save(
        {"input_ids": torch.zeros(6, 4, dtype=torch.int64), "scale": scale}, tmp_path / "t.pt"
    )
    with pytest.raises(NumericalError, match="the named inputs hold NaN or Inf .* sample 4"):
        load_data(str(tmp_path / "t.pt"), 4, None)
