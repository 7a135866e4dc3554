"""Regression tests for the bugs found in the first code review (one test per bug)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.problem.data import dataset_batches, tensor_batches
from landscape_cli.problem.objective import Objective

runner = CliRunner()
FAST = ["--trace-matvecs", "8", "--slq-runs", "1", "--slq-steps", "5", "--grid", "20"]


def ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


@pytest.mark.parametrize(
    "args, text",
    [
        (["--sigma", "-1"], "--sigma"),
        (["--sigma", "0"], "greater than 0"),
        (["--tol", "0"], "greater than 0"),
        (["--top-k", "5", "--max-iter", "3"], "--max-iter"),
    ],
)
def test_out_of_range_numbers_are_input_errors(args, text):
    one_error_line(runner.invoke(app, ["spectrum", *args, *FAST]), 2, text)


def test_more_eigenvalues_than_parameters_is_fine():
    result = runner.invoke(
        app, ["spectrum", "sample:saddle", "--top-k", "5", "--json", "--no-density"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["top_eigenvalues"] == pytest.approx([2.0, -2.0], abs=1e-6)


def test_loss_that_ignores_the_parameters(tmp_path):
    module = tmp_path / "losses.py"
    module.write_text("def detached(model, batch):\n    return model(batch[0]).sum().detach()\n")
    result = runner.invoke(app, ["inspect", "--loss", f"{module}:detached"])
    one_error_line(result, 2, "does not depend on the model's parameters")


def test_bad_label_in_a_later_batch_names_the_batch(tmp_path):
    x, y = torch.randn(40, 8), torch.zeros(40, dtype=torch.long)
    y[35] = 9  # 4 classes only
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    result = runner.invoke(
        app, ["inspect", "sample:mlp", "--data", str(tmp_path / "d.pt"), "--batch-size", "10"]
    )
    one_error_line(result, 2, "at batch 3 of 4")


class DictData(torch.utils.data.Dataset):
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


def test_dataset_of_mappings_and_failing_items():
    model = nn.Linear(5, 3)
    a = Objective(model, ce, dataset_batches(DictData(), 5, None, "dicts"), dtype=torch.float64)
    d = DictData()
    b = Objective(model, ce, tensor_batches((d.x, d.y), 12, None, "t"), dtype=torch.float64)
    assert a.loss_value == pytest.approx(b.loss_value, abs=1e-14)
    with pytest.raises(InputError, match="reading item 7 failed"):
        Objective(model, ce, dataset_batches(DictData(fail_at=7), 5, None, "dicts"))


def test_rich_markup_in_paths_is_printed_literally(tmp_path):
    from landscape_cli import sample_models

    path = tmp_path / "[red]net[bold].pt"
    path.write_bytes(sample_models.get_sample("mlp").checkpoint.read_bytes())
    result = runner.invoke(
        app,
        [
            "inspect",
            str(path),
            "--model",
            "landscape_cli.sample_models.mlp:build",
            "--data",
            "sample:blobs",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "[red]net[bold].pt" in result.stdout.replace("\n", "")


def test_train_mode_dropout_is_seeded_and_consistent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))

    def make(mode, seed=0):
        return Objective(
            model, ce, tensor_batches((x, y), 20, None, "t"), dtype=torch.float64,
            mode="train", hvp_mode=mode, seed=seed,
        )  # fmt: skip

    cached, streaming, other = make("cached"), make("streaming"), make("cached", seed=1)
    v = torch.randn(cached.num_parameters, dtype=torch.float64)
    assert torch.allclose(cached.hvp(v), streaming.hvp(v), atol=1e-12)
    assert cached.loss() == pytest.approx(cached.loss_value, abs=1e-14)  # same masks every time
    assert abs(other.loss_value - cached.loss_value) > 1e-6  # the seed picks the masks


def test_user_model_mode_flags_are_restored():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    model.train()
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    Objective(model, ce, tensor_batches((x, y), 10, None, "t"), mode="eval").hvp(torch.ones(47))
    assert all(m.training for m in model.modules())
    model.eval()
    Objective(model, ce, tensor_batches((x, y), 10, None, "t"), mode="train")
    assert not any(m.training for m in model.modules())


def test_loss_spec_in_config_is_relative_to_the_config_file(tmp_path, monkeypatch):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "lossmod.py").write_text(
        "import torch\ndef ce(model, batch):\n    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])\n"
    )
    (sub / "run.yaml").write_text("checkpoint: sample:mlp\nloss: lossmod.py:ce\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["inspect", "--config", str(sub / "run.yaml"), "--json"])
    assert result.exit_code == 0, result.stderr


def test_exact_is_refused_before_any_hvp():
    model = nn.Linear(100, 70)  # 7070 parameters > 6000
    x, y = torch.randn(8, 100), torch.randint(0, 70, (8,))
    objective = Objective(model, ce, tensor_batches((x, y), 8, None, "t"))
    calls = []
    original = objective.hvp_block
    objective.hvp_block = lambda v: calls.append(1) or original(v)
    with pytest.raises(InputError, match="refused above 6000"):
        analyze_spectrum(objective, SpectrumSettings(exact=True))
    assert calls == []


def test_factory_internal_type_error_is_not_blamed_on_kwargs(tmp_path):
    module = tmp_path / "nets.py"
    module.write_text("def build(width=3):\n    return len(width)\n")
    result = runner.invoke(app, ["inspect", "--model", f"{module}:build", "--data", "sample:blobs"])
    one_error_line(result, 2, "the factory raised TypeError")
