"""The module mode (train or eval): which layers depend on it, and the note that says so."""

from __future__ import annotations

import json

import pytest
from torch import nn
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.problem.modes import mode_dependent_layers

runner = CliRunner()
FAST = ["--no-density", "--no-trace", "--lr", "0.1", "--json"]


def test_only_layers_that_behave_differently_in_the_two_modes_are_counted():
    model = nn.Sequential(
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.BatchNorm1d(4, track_running_stats=False),  # batch statistics in both modes
        nn.Dropout(0.0),  # the identity in both modes
        nn.Dropout(0.5),
        nn.InstanceNorm1d(4),  # no running statistics by default
    )
    assert mode_dependent_layers(model) == {"BatchNorm": 1, "Dropout": 1}
    assert mode_dependent_layers(nn.Linear(2, 2)) == {}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_batchnorm_network_says_which_mode_its_numbers_are_of(mode):
    result = runner.invoke(app, ["spectrum", "sample:cnn", "--mode", mode, *FAST])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["stability"]["mode"] == mode
    note = payload["notes"]["mode"]
    assert f"analysed in {mode} mode" in note and "2 BatchNorm" in note
    other = "train" if mode == "eval" else "eval"
    assert f"--mode {other}" in note


def test_a_network_without_mode_dependent_layers_has_no_mode_note():
    result = runner.invoke(app, ["spectrum", "sample:mlp", *FAST])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert "mode" not in payload.get("notes", {})
    assert payload["stability"]["mode"] == "eval"
