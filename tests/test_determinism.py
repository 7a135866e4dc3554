"""The determinism check: an objective that changes between evaluations stops the run (exit 2)
with the likely cause, and so does a shuffling DataLoader (read in its sampler's order on every
pass); fixed data, a fixed-order DataLoader and a reordering dataset in eval mode (the mean loss
does not depend on the order) pass.

The check's tolerance is sqrt(eps) relative (1.5e-8 in float64); the randomness injected here
changes the loss by O(1e-2) relative, and reordering in eval mode by O(1e-16).
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
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import dataset_batches, loader_batches, tensor_batches
from landscape_cli.problem.determinism import check_determinism
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64


def tensors(n: int = 40):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=gen, dtype=F64), torch.randint(0, 3, (n,), generator=gen)


def mlp(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(3, 5)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    return nn.Sequential(*layers).double()


class Augmenting(torch.utils.data.Dataset):
    """Random noise on every read: the classic unseeded augmentation."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(3, dtype=F64), self.y[i]


class Reordering(torch.utils.data.Dataset):
    """Reshuffles its items at the start of every pass (a dataset doing its own shuffling)."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.perm = torch.arange(len(x))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == 0:
            self.perm = torch.randperm(len(self.x))
        j = self.perm[i]
        return self.x[j], self.y[j]


class MCDropout(nn.Module):
    """Dropout that stays on in eval mode, with the global (unseeded) random state."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(nn.functional.dropout(x, 0.3, training=True))


def objective(model, batches, **kw):
    return Objective(model, SplitLoss("cross_entropy"), batches, dtype=F64, **kw)


def test_fixed_data_passes_and_costs_two_products():
    x, y = tensors()
    obj = objective(mlp(), tensor_batches((x, y), 16, None, "t"), hvp_mode="streaming")
    H = HessianOperator(obj)
    assert check_determinism(obj, H) == 2 and H.matvecs == 2
    result = analyze_spectrum(
        obj, SpectrumSettings(top_k=1, bottom_k=0, trace=False, density=False)
    )
    assert result.info.hvp_count == result.lanczos.matvecs + 2
    assert result.to_dict()["determinism_check"]["matvecs"] == 2
    off = analyze_spectrum(
        obj,
        SpectrumSettings(top_k=1, bottom_k=0, trace=False, density=False, determinism_check=False),
    )
    assert off.info.hvp_count == off.lanczos.matvecs
    assert off.to_dict()["determinism_check"] is None


def test_random_augmentation_stops_with_the_cause_and_the_fix():
    x, y = tensors()
    torch.manual_seed(5)
    obj = objective(mlp(), dataset_batches(Augmenting(x, y), 16, None, "aug"), hvp_mode="streaming")
    with pytest.raises(InputError, match="not reproducible") as info:
        check_determinism(obj, HessianOperator(obj))
    text = str(info.value)
    assert "augmentation" in text and "`determinism_check=False`" in text


def test_reordering_dataset_passes_in_eval_mode_and_stops_with_train_mode_batchnorm():
    x, y = tensors()
    torch.manual_seed(5)
    # eval mode: the mean over all samples does not depend on their order or batching
    obj = objective(mlp(), dataset_batches(Reordering(x, y), 16, None, "r"), hvp_mode="streaming")
    check_determinism(obj, HessianOperator(obj))
    # train-mode BatchNorm: batch statistics depend on which samples share a batch
    obj = objective(
        mlp(batchnorm=True),
        dataset_batches(Reordering(x, y), 16, None, "r"),
        hvp_mode="streaming",
        mode="train",
    )
    with pytest.raises(InputError, match="reorders its items"):
        check_determinism(obj, HessianOperator(obj))


def test_unseeded_randomness_in_the_model_stops_even_with_cached_data():
    x, y = tensors()
    torch.manual_seed(5)
    obj = objective(MCDropout(), tensor_batches((x, y), 16, None, "t"), hvp_mode="cached")
    with pytest.raises(InputError, match="randomness in the model"):
        check_determinism(obj, HessianOperator(obj))


def test_train_mode_dropout_is_seeded_per_batch_and_passes():
    x, y = tensors()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.3), nn.Tanh(), nn.Linear(5, 3)).double()
    obj = objective(
        model, tensor_batches((x, y), 16, None, "t"), hvp_mode="streaming", mode="train"
    )
    check_determinism(obj, HessianOperator(obj))


DATA_FILE = """
import torch

def _tensors():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    return x, y

class Augmenting(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = _tensors()
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(3), self.y[i]

def fixed():
    return _tensors()

def shuffled_loader():
    x, y = _tensors()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7, shuffle=True)

def ordered_loader():
    x, y = _tensors()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)

def augmented():
    return Augmenting()

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
"""


def test_cli_shuffling_loader_and_augmentation_are_exit_2_fixed_order_passes(tmp_path):
    spec = tmp_path / "user_data.py"
    spec.write_text(DATA_FILE)
    runner = CliRunner()
    common = ["spectrum", "--model", f"{spec}:model", "--json", "--top-k", "1", "--no-trace",
              "--no-density", "--batch-size", "16", "--hvp-mode", "streaming",
              "--dtype", "float64"]  # fmt: skip
    fixed = runner.invoke(app, [*common, "--data", f"{spec}:fixed"])
    assert fixed.exit_code == 0, fixed.stderr
    lambda_fixed = json.loads(fixed.stdout)["lambda_max"]
    ordered = runner.invoke(app, [*common, "--data", f"{spec}:ordered_loader"])
    assert ordered.exit_code == 0, ordered.stderr
    # eval mode: batches of 7 instead of 16 change only the summation order (float64 rounding)
    assert json.loads(ordered.stdout)["lambda_max"] == pytest.approx(lambda_fixed, rel=1e-10)
    shuffled = runner.invoke(app, [*common, "--data", f"{spec}:shuffled_loader"])
    assert shuffled.exit_code == 2, shuffled.stderr
    assert len(shuffled.stderr.strip().splitlines()) == 1
    assert "different order on every pass" in shuffled.stderr
    assert "shuffle=False" in shuffled.stderr and "--no-determinism-check" in shuffled.stderr
    assert shuffled.stdout == ""
    # run anyway: in eval mode over all samples a new order per product is rounding only
    anyway = runner.invoke(
        app, [*common, "--data", f"{spec}:shuffled_loader", "--no-determinism-check"]
    )
    assert anyway.exit_code == 0, anyway.stderr
    assert json.loads(anyway.stdout)["lambda_max"] == pytest.approx(lambda_fixed, rel=1e-8)
    augmented = runner.invoke(app, [*common, "--data", f"{spec}:augmented"])
    assert augmented.exit_code == 2
    assert "not reproducible" in augmented.stderr and "augmentation" in augmented.stderr
    assert len(augmented.stderr.strip().splitlines()) == 1
    anyway = runner.invoke(app, [*common, "--data", f"{spec}:augmented", "--no-determinism-check"])
    assert anyway.exit_code == 0, anyway.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["surface", "--dims", "1", "--points", "3"],
        ["sharpness", "--rho", "0.01", "--samples", "2", "--steps", "2"],
        ["classify"],
        ["jacobian"],
    ],
)
def test_every_command_refuses_a_shuffling_loader_and_the_config_turns_it_off(tmp_path, command):
    """Every command compares two loader passes before it starts: a surface or sharpness sweep on
    a shuffling loader would evaluate every point on other batches without a word."""
    spec = tmp_path / "user_data.py"
    spec.write_text(DATA_FILE)
    runner = CliRunner()
    common = [*command, "--model", f"{spec}:model", "--json", "--dtype", "float64"]
    shuffled = runner.invoke(app, [*common, "--data", f"{spec}:shuffled_loader"])
    assert shuffled.exit_code == 2, shuffled.stderr
    assert len(shuffled.stderr.strip().splitlines()) == 1
    assert "different order on every pass" in shuffled.stderr and shuffled.stdout == ""
    config = tmp_path / "off.yaml"
    config.write_text("spectrum:\n  determinism_check: false\n")
    anyway = runner.invoke(
        app, [*common, "--data", f"{spec}:shuffled_loader", "--config", str(config)]
    )
    assert anyway.exit_code == 0, anyway.stderr


def test_shuffling_loader_stops_the_library_check_before_any_product():
    x, y = tensors()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True
    )
    obj = objective(mlp(), loader_batches(loader, None, "train_loader"), hvp_mode="cached")
    H = HessianOperator(obj)
    with pytest.raises(InputError, match="different order on every pass") as info:
        check_determinism(obj, H)
    assert H.matvecs == 0 and "shuffle=False" in str(info.value)
    # the same loader with a seeded generator still reorders between passes: also refused
    seeded = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    obj = objective(mlp(), loader_batches(seeded, None, "seeded"), hvp_mode="cached")
    with pytest.raises(InputError, match="different order"):
        check_determinism(obj, HessianOperator(obj))
