"""Where the model comes from: factory arguments from the command line
(``--model-arg``), timm and torchvision by name."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.io.config import resolve_run_config

runner = CliRunner()
MLP = "landscape_cli.sample_models.mlp:build"


def importable(name: str) -> str | None:
    """``None`` when ``name`` imports, else why not. A torchvision built for another torch
    raises RuntimeError ("operator torchvision::nms does not exist") at import, and timm imports
    torchvision, so ImportError alone does not tell."""
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
