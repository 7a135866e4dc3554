"""``--compile``: loss and gradient evaluations through torch.compile give the eager numbers, and
curvature products stay eager; a failing compile falls back to eager and says so.

Tolerances: float64 compiled kernels may fuse and reorder the same arithmetic, so results agree
with eager to rounding (1e-10 relative is ~1e5 ulps of slack for reassociation over a few hundred
terms); float32 CLI runs to 1e-5 relative for the same reason.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.data import tensor_batches
from landscape_cli.errors import InputError
from landscape_cli.loading import SplitLoss
from landscape_cli.objective import Objective

F64 = torch.float64


def make(compile: bool, loss=None) -> Objective:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(24, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (24,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    return Objective(
        model,
        loss or SplitLoss("cross_entropy"),
        tensor_batches((x, y), 10, None, "t"),
        dtype=F64,
        compile=compile,
    )


def test_compiled_loss_and_gradient_equal_eager_and_products_stay_eager():
    eager, compiled = make(False), make(True)
    delta = 0.1 * torch.linspace(-1, 1, eager.num_parameters, dtype=F64)
    assert compiled.loss(delta) == pytest.approx(eager.loss(delta), rel=1e-10)
    assert compiled._compiled is not None and compiled.compile_mode == "on"
    (la, ga), (lb, gb) = eager.loss_and_gradient(delta), compiled.loss_and_gradient(delta)
    assert lb == pytest.approx(la, rel=1e-10)
    assert torch.allclose(gb, ga, rtol=1e-10, atol=1e-14)
    v = torch.cos(torch.arange(eager.num_parameters, dtype=F64))
    assert torch.equal(compiled.operator() @ v, eager.operator() @ v)  # the same eager path
    assert make(False).compile_mode == "off"


def test_a_failing_compile_falls_back_to_eager_and_records_why(monkeypatch):
    def broken(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    eager, compiled = make(False), make(True)
    assert compiled.loss() == eager.loss()
    assert compiled.compile_mode == "fallback: RuntimeError: no C++ compiler found"
    assert compiled.loss_and_gradient()[0] == eager.loss_and_gradient()[0]


def test_an_error_in_the_user_loss_is_reported_as_without_compile():
    def vector_loss(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1], reduction="none")

    with pytest.raises(InputError, match="must return a scalar"):
        make(True, loss=vector_loss).loss()


def test_cli_surface_with_compile_matches_eager():
    runner = CliRunner()
    common = ["surface", "sample:mlp", "--dims", "1", "--points", "5", "--json", "--quiet"]
    eager = runner.invoke(app, common)
    compiled = runner.invoke(app, [*common, "--compile"])
    assert eager.exit_code == 0 and compiled.exit_code == 0, compiled.stderr
    a, b = json.loads(eager.stdout), json.loads(compiled.stdout)
    assert a["compile"] == "off" and b["compile"] == "on"
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-5)
    assert b["accuracies"] == pytest.approx(a["accuracies"], abs=1e-12)
