"""Configuration layering, validation, and the reference config staying in sync with the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.io.config import (
    COMMON,
    SECTIONS,
    read_config_file,
    reference_yaml,
    resolve_config,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_layers_flags_over_file_over_sample_over_defaults(tmp_path):
    path = write(tmp_path, "batch_size: 64\nloss: mse\nspectrum:\n  top_k: 3\n  tol: 1.0e-6\n")
    sample = {
        "model": "landscape_cli.sample_models.mlp:build",
        "loss": "cross_entropy",
        "data": "sample:blobs",
    }
    cfg = resolve_config({"batch_size": 8, "spectrum.top_k": None}, path, sample, "mlp")
    assert cfg.batch_size == 8 and cfg.sources["batch_size"] == "flag"
    assert cfg.loss == "mse" and cfg.sources["loss"].startswith("config:")
    assert cfg.spectrum.top_k == 3 and cfg.spectrum.tol == 1e-6
    assert cfg.data == "sample:blobs" and cfg.sources["data"] == "sample:mlp"
    assert cfg.seed == 0 and cfg.sources["seed"] == "default"


def test_unknown_key_is_named_with_suggestion(tmp_path):
    path = write(tmp_path, "batchsize: 64\n")
    with pytest.raises(InputError, match=r"unknown key 'batchsize'.*did you mean 'batch_size'"):
        read_config_file(path)


def test_unknown_key_in_section(tmp_path):
    path = write(tmp_path, "spectrum:\n  topk: 3\n")
    with pytest.raises(InputError, match=r"unknown key 'spectrum.topk'.*spectrum.top_k"):
        read_config_file(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch_size: many\n", r"'batch_size' should be int"),
        ("batch_size: 0\n", r"at least 1"),
        ("dtype: float16\n", r"choose one of float32, float64"),
        ("- a\n- b\n", r"expected a mapping"),
        ("batch_size: [1\n", r"invalid YAML at line"),
        ("seed: \x1b\n", r"invalid YAML: special characters are not allowed$"),
        ("spectrum: 3\n", r"section 'spectrum' must be a mapping"),
        ("model: {spec: a:b, kwarg: {}}\n", r"unknown key 'model.kwarg'"),
        ("spectrum:\n  tol: .nan\n", r"finite number"),
        ("spectrum:\n  tol: 0\n", r"greater than 0"),
        ("classify:\n  cg_tol: 0\n", r"greater than 0"),
    ],
)
def test_bad_values_are_input_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        read_config_file(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_config_file(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "c.yaml"
    path.write_text(
        "checkpoint: w.pt\ndata: d/x.npz\nmodel: {spec: net.py:build, kwargs: {h: 3}}\n"
    )
    values = read_config_file(path)
    assert values["checkpoint"] == str(sub / "w.pt")
    assert values["data"] == str(sub / "d" / "x.npz")
    assert values["model"] == f"{sub / 'net.py'}:build"
    assert values["model_kwargs"] == {"h": 3}
    other = sub / "d.yaml"
    other.write_text(
        "model: landscape_cli.sample_models.mlp:build\ndata: sample:blobs\ncheckpoint: sample:mlp\n"
    )
    values = read_config_file(other)
    assert values == {
        "model": "landscape_cli.sample_models.mlp:build",
        "data": "sample:blobs",
        "checkpoint": "sample:mlp",
    }


def test_loss_spec_in_config_is_relative_to_the_config_file(tmp_path, monkeypatch):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "lossmod.py").write_text(
        "import torch\ndef ce(model, batch):\n    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])\n"
    )
    (sub / "run.yaml").write_text("checkpoint: sample:mlp\nloss: lossmod.py:ce\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["inspect", "--config", str(sub / "run.yaml"), "--json"])
    assert result.exit_code == 0, result.stderr


def test_flag_values_are_validated():
    with pytest.raises(InputError, match=r"--top-k.*at least 1"):
        resolve_config({"spectrum.top_k": 0})
    with pytest.raises(InputError, match=r"--dtype.*choose one of"):
        resolve_config({"dtype": "half"})


def test_to_yaml_round_trips(tmp_path):
    cfg = resolve_config({"batch_size": 17, "spectrum.top_k": 2, "model": "a.b:c"})
    path = write(tmp_path, cfg.to_yaml())
    again = resolve_config({}, path)
    assert again.to_dict() == cfg.to_dict()


def test_reference_config_is_generated_from_the_settings():
    """configs/reference.yaml is what the settings' fields say; regenerate it with
    `python -m landscape_cli.io.config > configs/reference.yaml`."""
    committed = (ROOT / "configs" / "reference.yaml").read_text()
    assert committed == reference_yaml()
    document = yaml.safe_load(committed)

    def plain(value):  # list options are stored as tuples and written as YAML lists
        return list(value) if isinstance(value, tuple) else value

    for key, option in COMMON.items():
        assert document[key] == plain(option.default), key
    for section, options in SECTIONS.items():
        for key, option in options.items():
            assert document[section][key] == plain(option.default)


def test_every_bundled_config_is_valid():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        read_config_file(path)  # raises InputError on any unknown key or bad value


def test_library_slq_defaults_are_the_size_of_the_spectrum_density():
    # slq_density(A) alone gives a quadrature of the size `landscape spectrum` reports by default:
    # its own slq_runs runs of slq_steps steps plus the shared extremes' Lanczos run.
    import inspect

    from landscape_cli.estimators.density import slq_density

    params = inspect.signature(slq_density).parameters
    s = SpectrumSettings()
    assert params["runs"].default == s.slq_runs + int(s.share_lanczos)
    assert params["steps"].default == s.slq_steps


def test_a_key_given_twice_in_a_config_is_an_error_naming_both_lines(tmp_path):
    path = write(tmp_path, "spectrum:\n  top_k: 3\n  tol: 1.0e-6\n  top_k: 8\n")
    with pytest.raises(InputError, match=r"key 'top_k' is given twice \(lines 2 and 4\)"):
        read_config_file(path)
    path = write(tmp_path, "batch_size: 8\nbatch_size: 16\n")
    with pytest.raises(InputError, match=r"key 'batch_size' is given twice \(lines 1 and 2\)"):
        read_config_file(path)


def test_config_nested_thousands_of_levels_deep_is_an_input_error(tmp_path):
    path = write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError, match=r"nested too deeply"):
        read_config_file(path)
