"""Where the model comes from: an archive that is its own model (TorchScript, torch.export), a
Lightning checkpoint with the bare network or its LightningModule, factory arguments from the
command line, timm and torchvision by name, and half-precision weights."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.loading import apply_state_dict, build_objective
from landscape_cli.problem.torchvision_compat import NOTE, allow_torchvision_without_extension

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
MLP = "landscape_cli.sample_models.mlp:build"


def importable(name: str) -> str | None:
    """``None`` when ``name`` imports, else why not (any exception: a broken install is a skip
    with its reason, not an error in the test)."""
    try:
        importlib.import_module(name)
    except Exception as exc:
        return f"{name} cannot be imported here ({exc.__class__.__name__}: {exc})"
    return None


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------- --model-arg
def test_model_args_merge_over_the_config_kwargs_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{spec: '{MLP}', kwargs: {{hidden: 4, num_classes: 5}}}}\n")
    result = runner.invoke(
        app,
        [
            "inspect",
            "--config",
            str(config),
            "--data",
            "sample:blobs",
            "--json",
            "--model-arg",
            "hidden=6",
            "--model-arg",
            "in_features=8",
        ],
    )
    assert result.exit_code == 0, result.stderr
    # hidden=6 from the command line, num_classes=5 from the config: 8·6+6 + 6·6+6 + 6·5+5
    assert json.loads(result.stdout)["num_parameters"] == 54 + 42 + 35


def test_model_arg_values_are_read_as_yaml():
    config = resolve_run_config(
        {"model": MLP, "model_args": ["hidden=6", "num_classes=[1, 2]", "in_features=null"]}
    )
    from landscape_cli.problem.model_sources import model_kwargs

    assert model_kwargs(config) == {"hidden": 6, "num_classes": [1, 2], "in_features": None}


def test_a_model_arg_the_factory_does_not_take_is_one_line_naming_it():
    line = one_line_error(
        runner.invoke(
            app, ["inspect", "--model", MLP, "--data", "sample:blobs", "--model-arg", "widht=3"]
        )
    )
    assert "unexpected keyword argument 'widht'" in line and "--model-arg" in line


def test_a_model_arg_with_invalid_yaml_is_one_line():
    line = one_line_error(
        runner.invoke(
            app, ["inspect", "--model", MLP, "--data", "sample:blobs", "--model-arg", "hidden=[1,"]
        )
    )
    assert "--model-arg hidden=[1," in line and "invalid YAML" in line


def test_a_long_model_arg_is_shown_cut_in_its_error():
    line = one_line_error(
        runner.invoke(
            app,
            ["inspect", "--model", MLP, "--data", "sample:blobs", "--model-arg", "a=" + "[" * 5000],
        )
    )
    assert "--model-arg a=[[[" in line and "...:" in line and len(line) < 300


def test_a_model_arg_without_a_value_is_one_line():
    line = one_line_error(
        runner.invoke(
            app, ["inspect", "--model", MLP, "--data", "sample:blobs", "--model-arg", "hidden"]
        )
    )
    assert "expected KEY=VALUE" in line


@pytest.mark.parametrize(
    ("model", "argument"),
    [
        ("torchvision.models:resnet18", "weights=DEFAULT"),
        ("torchvision.models:resnet18", "pretrained=true"),
        ("timm:resnet18", "pretrained=true"),
    ],
)
def test_arguments_that_would_download_weights_are_refused(model, argument):
    line = one_line_error(
        runner.invoke(
            app, ["inspect", "--model", model, "--data", "sample:blobs", "--model-arg", argument]
        )
    )
    assert "would download pretrained weights" in line


# ---------------------------------------------------------------- timm and torchvision by name
def image_data(path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    torch.save({"x": x, "y": torch.tensor([0, 1, 2, 3])}, path)
    return path


@pytest.mark.parametrize(
    ("package", "model"),
    [("torchvision", "torchvision.models:resnet18"), ("timm", "timm:resnet18")],
)
def test_a_vision_model_by_name_takes_model_args(tmp_path, package, model):
    reason = importable(package)
    if reason is not None:
        pytest.skip(reason)
    images = image_data(tmp_path / "images.pt")
    result = runner.invoke(
        app,
        [
            *("spectrum", "--model", model, "--model-arg", "num_classes=10", "--data", str(images)),
            *("--top-k", "1", "--no-trace", "--no-density", "--max-iter", "8", "--json"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["num_parameters"] == 11_181_642  # resnet18 with a 10-class head
    assert payload["lambda_max"] is not None
    if allow_torchvision_without_extension():  # e.g. PyPI's CUDA wheel beside the CPU torch
        assert payload["notes"]["torchvision"] == NOTE
    else:
        assert "torchvision" not in payload.get("notes", {})


def test_models_not_built_from_torchvision_carry_no_torchvision_note():
    objective = build_objective(resolve_run_config({"model": MLP, "data": "sample:blobs"}))
    assert "torchvision" not in objective.notes


# A stand-in for a torchvision built for another torch: an extension that does not load, and an
# __init__ that registers a fake kernel for its operator unconditionally, as torchvision does.
STAND_IN_INIT = """
import torch
try:
    torch.ops.load_library(__file__.replace("__init__.py", "_C.so"))
except OSError:
    pass
@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return dets.new_empty(0, dtype=torch.long)
from torch import nn
resnet = nn.Linear
"""


@pytest.mark.parametrize("allowed", [False, True])
def test_torchvision_whose_extension_does_not_load_imports_once_allowed(tmp_path, allowed):
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text(STAND_IN_INIT)
    (package / "_C.so").write_bytes(b"not a shared library")
    allow = (
        "from landscape_cli.problem.torchvision_compat import allow_torchvision_without_extension"
        "\nassert allow_torchvision_without_extension()\n"
    )
    code = (allow if allowed else "") + "import torchvision\nprint(torchvision.resnet(2, 3))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    if allowed:
        assert done.returncode == 0, done.stderr
        assert "Linear(in_features=2, out_features=3" in done.stdout
    else:
        assert "operator torchvision::nms does not exist" in done.stderr


def test_a_working_or_absent_torchvision_is_left_alone(tmp_path):
    code = (
        "import sys\nsys.modules.pop('torchvision', None)\n"
        "from landscape_cli.problem.torchvision_compat import allow_torchvision_without_extension"
        "\nprint(allow_torchvision_without_extension())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    (tmp_path / "torchvision").mkdir()  # installed, with no compiled extension to fail
    (tmp_path / "torchvision" / "__init__.py").write_text("")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr


def test_timm_names_are_built_without_pretrained_weights(monkeypatch):
    import types

    from landscape_cli.problem.model_sources import build_model

    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return nn.Linear(8, 4)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    build_model("timm:tiny_net", {"num_classes": 4})
    build_model("timm:tiny_net", {"pretrained": False})
    assert calls == [
        ("tiny_net", {"pretrained": False, "num_classes": 4}),
        ("tiny_net", {"pretrained": False}),
    ]


# ---------------------------------------------------------------- key prefixes
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def tiny_data(path: Path, n: int = 12) -> Path:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    torch.save({"x": x, "y": y}, path)
    return path


def objective_of(**config):
    return build_objective(resolve_run_config({"dtype": "float64", **config}))


def test_a_single_attribute_prefix_is_stripped_and_noted():
    net = tiny_net()
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    target = tiny_net()
    assert apply_state_dict(target, state, "checkpoint c.pt") == "net."


def test_keys_left_beside_the_stripped_prefix_are_unexpected():
    net = tiny_net()
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["criterion.weight"] = torch.ones(3)
    with pytest.raises(InputError, match=r"unexpected keys 'criterion.weight'") as caught:
        apply_state_dict(tiny_net(), state, "checkpoint c.pt")
    assert "missing" not in str(caught.value)


def test_two_prefixes_that_both_fit_are_ambiguous():
    net = tiny_net()
    state = {f"{p}.{k}": v for p in ("net", "ema") for k, v in net.state_dict().items()}
    with pytest.raises(InputError, match=r"'ema\.', 'net\.'.*ambiguous"):
        apply_state_dict(tiny_net(), state, "checkpoint c.pt")


def test_a_prefix_under_which_some_model_keys_are_missing_is_not_stripped():
    net = tiny_net()
    state = {f"net.{k}": v for k, v in net.state_dict().items() if k != "2.bias"}
    state["other"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing keys '0.weight'"):
        apply_state_dict(tiny_net(), state, "checkpoint c.pt")


# ---------------------------------------------------------------- Lightning checkpoints
@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    """A real LightningModule (``self.net = ...``, ``save_hyperparameters()``) fit for one
    epoch on 16 samples by a real Trainer; its checkpoint, data file and module."""
    reason = importable("lightning")
    if reason is not None:
        pytest.skip(reason)
    import lightning
    from lightning_net import LitNet
    from torch.utils.data import DataLoader, TensorDataset

    root = tmp_path_factory.mktemp("lightning")
    data = tiny_data(root / "d.pt", n=16)
    batch = torch.load(data, weights_only=True)
    torch.manual_seed(0)
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(LitNet(hidden=5), DataLoader(TensorDataset(batch["x"], batch["y"]), 8))
    (checkpoint,) = (root / "checkpoints").glob("*.ckpt")  # what ModelCheckpoint wrote
    return checkpoint, data


def test_lightning_checkpoint_fits_the_bare_network_by_stripping_its_attribute(lightning_run):
    checkpoint, data = lightning_run
    bare = [*("inspect", str(checkpoint), "--model", "lightning_net:network", "--data", str(data))]
    result = runner.invoke(app, [*bare, "--model-arg", "hidden=5", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["checkpoint_prefix"] == "net."
    assert payload["checkpoint_format"] == "nested:state_dict"
    assert payload["notes"]["checkpoint_keys"] == (
        "stripped the prefix 'net.' from every key to fit the model"
    )
    screen = runner.invoke(app, [*bare, "--model-arg", "hidden=5"], terminal_width=200)
    assert screen.exit_code == 0, screen.stderr
    assert "prefix 'net.' stripped from its keys" in screen.stdout
    assert "stripped the prefix 'net.'" in screen.stdout


def test_lightning_module_class_is_built_with_the_checkpoints_hyper_parameters(lightning_run):
    checkpoint, data = lightning_run
    objective = objective_of(
        checkpoint=str(checkpoint), model="lightning_net:LitNet", data=str(data)
    )
    assert objective.parameter_names[0] == "net.0.weight"
    assert objective.num_parameters == 4 * 5 + 5 + 5 * 3 + 3  # hidden=5 from the checkpoint
    assert objective.notes["model_kwargs"] == (
        "built LitNet with the checkpoint's hyper_parameters (hidden=5, lr=0.1)"
    )
    assert objective.checkpoint.key_prefix == ""


def test_given_model_kwargs_win_over_the_lightning_hyper_parameters(lightning_run):
    checkpoint, data = lightning_run
    result = runner.invoke(
        app,
        [
            "inspect",
            str(checkpoint),
            "--model",
            "lightning_net:LitNet",
            "--data",
            str(data),
            "--model-arg",
            "hidden=6",
        ],
    )
    line = one_line_error(result)
    assert "shape mismatch" in line and "'net.0.weight'" in line


# ---------------------------------------------------------------- half-precision weights
@pytest.mark.parametrize(("stored", "analysed"), [("bfloat16", "float32"), ("float16", "float64")])
def test_half_precision_weights_are_analysed_in_the_requested_dtype(tmp_path, stored, analysed):
    from landscape_cli.sample_models import mlp

    torch.manual_seed(0)
    state = {k: v.to(getattr(torch, stored)) for k, v in mlp.build().state_dict().items()}
    torch.save(state, tmp_path / "half.pt")
    objective = build_objective(
        resolve_run_config(
            {"checkpoint": str(tmp_path / "half.pt"), "model": MLP, "data": "sample:blobs"}
            | {"dtype": analysed}
        )
    )
    assert objective.notes["weights_dtype"] == f"weights stored in {stored}, analysed in {analysed}"
    assert objective.flat_parameters().dtype == getattr(torch, analysed)
    expected = torch.cat([v.to(getattr(torch, analysed)).reshape(-1) for v in state.values()])
    assert torch.equal(objective.flat_parameters(), expected)


# ---------------------------------------------------------------- TorchScript as the model
def dense_hessian(model: nn.Module, data: Path) -> torch.Tensor:
    """The Hessian of the mean cross-entropy of ``model`` on ``data`` in float64, formed densely
    with torch.func.hessian."""
    batch = torch.load(data, weights_only=True)
    x, y = batch["x"].double(), batch["y"]
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(w, [s.numel() for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        out = torch.func.functional_call(model, params, (x,))
        return nn.functional.cross_entropy(out, y)

    with warnings.catch_warnings():  # torch.func scripts a helper, and torch.jit is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.func.hessian(loss)(flat)


def assert_hvps_match(objective, hessian: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(2)
    for _ in range(2):
        v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
        assert torch.allclose(objective.hvp(v), hessian @ v, atol=1e-10, rtol=1e-8)


def trusted_inspect_error(archive: Path, data: Path, *more: str) -> str:
    """The one error line of ``landscape inspect ARCHIVE --data DATA --trust-checkpoint ...``."""
    command = ["inspect", str(archive), "--data", str(data), "--trust-checkpoint", *more]
    return one_line_error(runner.invoke(app, command))


def save_scripted(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13
        torch.jit.save(torch.jit.script(model), str(path))
    return path


def test_torchscript_archive_is_the_model_and_its_hvps_match_the_dense_hessian(tmp_path):
    net = tiny_net()
    archive = save_scripted(net, tmp_path / "model.ts.pt")
    data = tiny_data(tmp_path / "d.pt")
    objective = objective_of(checkpoint=str(archive), data=str(data), trust_checkpoint=True)
    assert objective.num_parameters == sum(p.numel() for p in net.parameters())
    assert objective.checkpoint.format == "torchscript"
    assert "TorchScript module stored in the archive" in objective.notes["model"]
    assert_hvps_match(objective, dense_hessian(net, data))


def test_torchscript_archive_as_the_model_runs_spectrum_from_the_command_line(tmp_path):
    archive = save_scripted(tiny_net(), tmp_path / "model.ts.pt")
    data = tiny_data(tmp_path / "d.pt")
    result = runner.invoke(
        app,
        [
            "spectrum",
            str(archive),
            "--data",
            str(data),
            "--trust-checkpoint",
            "--top-k",
            "1",
            "--no-trace",
            "--no-density",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["num_parameters"] == 43 and payload["lambda_max"] > 0
    assert "TorchScript" in payload["notes"]["model"]


def test_a_scripted_convolutional_network_computes_blocks_of_products_in_a_loop(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    archive = save_scripted(net, tmp_path / "conv.ts.pt")
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 6, generator=generator), torch.randint(0, 3, (6,), generator=generator)
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    objective = objective_of(
        checkpoint=str(archive), data=str(tmp_path / "d.pt"), trust_checkpoint=True
    )
    assert objective.hvp_block_mode == "loop"  # as for the eager network (BENCHMARKS.md)


def test_torchscript_archive_with_a_model_loads_its_weights_into_the_factory(tmp_path):
    torch.manual_seed(3)
    from landscape_cli.sample_models import mlp

    archive = save_scripted(mlp.build(), tmp_path / "model.ts.pt")
    objective = objective_of(
        checkpoint=str(archive), model=MLP, data="sample:blobs", trust_checkpoint=True
    )
    assert "model" not in objective.notes
    assert objective.checkpoint.format == "torchscript"


def test_another_archive_loads_into_a_scripted_model_by_its_own_names(tmp_path):
    from landscape_cli.analyses.directions import other_parameters
    from landscape_cli.problem.loading import load_checkpoint

    data = tiny_data(tmp_path / "d.pt")
    objective = objective_of(
        checkpoint=str(save_scripted(tiny_net(), tmp_path / "a.ts.pt")),
        data=str(data),
        trust_checkpoint=True,
    )
    torch.manual_seed(7)
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    state = load_checkpoint(save_scripted(other, tmp_path / "b.ts.pt"), trust=True).state_dict
    flat, _ = other_parameters(objective, state, "checkpoint b.ts.pt")
    expected = torch.cat([p.detach().double().reshape(-1) for p in other.parameters()])
    assert torch.equal(flat, expected)
    assert objective.parameter_names[0] == "scripted.0.weight"


def test_model_args_are_refused_when_the_archive_is_the_model(tmp_path):
    archive = save_scripted(tiny_net(), tmp_path / "model.ts.pt")
    data = tiny_data(tmp_path / "d.pt")
    line = trusted_inspect_error(archive, data, "--model-arg", "hidden=3")
    assert "the archive is the model" in line and "'hidden'" in line


# ---------------------------------------------------------------- torch.export programs
def save_exported(model: nn.Module, path: Path, batch: int = 4, dynamic: bool = True) -> Path:
    from torch.export import Dim

    example = (torch.randn(batch, 4),)
    shapes = {"dynamic_shapes": ({0: Dim("batch")},)} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, example, **shapes), str(path))
    return path


def test_exported_program_is_the_model_and_its_hvps_match_the_dense_hessian(tmp_path):
    net = tiny_net()
    archive = save_exported(net, tmp_path / "model.pt2")
    data = tiny_data(tmp_path / "d.pt")
    objective = objective_of(
        checkpoint=str(archive), data=str(data), trust_checkpoint=True, batch_size=5
    )
    assert objective.checkpoint.format == "torch.export"
    assert "torch.export program" in objective.notes["model"]
    assert "`mode` does not change it" in objective.notes["model"]
    assert_hvps_match(objective, dense_hessian(net, data))


@pytest.mark.parametrize(
    ("save", "kind"),
    [("save_scripted", "TorchScript archive"), ("save_exported", "torch.export program")],
)
def test_an_archive_that_would_be_the_model_is_refused_without_trust(tmp_path, save, kind):
    archive = globals()[save](tiny_net(), tmp_path / "model.bin")
    data = tiny_data(tmp_path / "d.pt")
    line = one_line_error(runner.invoke(app, ["inspect", str(archive), "--data", str(data)]))
    assert kind in line and "--trust-checkpoint" in line


def test_exported_program_without_second_derivatives_is_one_input_error(tmp_path):
    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.norm = nn.Linear(4, 3), nn.BatchNorm1d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.linear(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(Normed().train(), (torch.randn(4, 4),))
        torch.export.save(program.run_decompositions(), str(tmp_path / "model.pt2"))
    data = tiny_data(tmp_path / "d.pt")
    line = trusted_inspect_error(tmp_path / "model.pt2", data)
    assert "second derivatives" in line and "exported graph" in line
    assert "run_decompositions()" in line


def test_exported_program_with_a_fixed_batch_size_names_the_shape_guard(tmp_path):
    archive = save_exported(tiny_net(), tmp_path / "model.pt2", batch=4, dynamic=False)
    data = tiny_data(tmp_path / "d.pt", n=6)
    line = trusted_inspect_error(archive, data, "--batch-size", "4")
    assert "does not take these inputs" in line and "dynamic_shapes" in line


def test_exported_program_with_a_model_loads_its_weights_into_the_factory(tmp_path):
    net = tiny_net()
    archive = save_exported(net, tmp_path / "model.pt2")
    factory = tmp_path / "nets.py"
    factory.write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))\n"
    )
    data = tiny_data(tmp_path / "d.pt")
    objective = objective_of(
        checkpoint=str(archive), model=f"{factory}:build", data=str(data), trust_checkpoint=True
    )
    assert objective.checkpoint.format == "torch.export"
    assert torch.equal(objective.model[0].weight, net[0].weight)


def test_track_follows_a_series_of_archives_that_are_their_own_models(tmp_path):
    data = tiny_data(tmp_path / "d.pt")
    paths = [str(save_exported(tiny_net(), tmp_path / f"step{k}.pt2")) for k in (1, 2)]
    result = runner.invoke(
        app,
        ["track", *paths, "--data", str(data), "--trust-checkpoint", "--no-trace", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    points = json.loads(result.stdout)["points"]
    assert len(points) == 2 and points[0]["lambda_max"] == pytest.approx(points[1]["lambda_max"])


def test_track_of_weights_without_a_model_is_the_usual_error(tmp_path):
    torch.save(tiny_net().state_dict(), tmp_path / "step1.pt")
    data = tiny_data(tmp_path / "d.pt")
    line = one_line_error(
        runner.invoke(app, ["track", str(tmp_path / "step1.pt"), "--data", str(data)])
    )
    assert "no model given" in line
