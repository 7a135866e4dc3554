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

from landscape_cli.analyses.classify import ClassifySettings, escape_probe
from landscape_cli.analyses.sharpness import SharpnessSettings, measure_sharpness
from landscape_cli.analyses.surface import evaluate_points
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.determinism import check_determinism
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64


def make(compile: bool, loss=None, *, dropout: float = 0.0, mode: str = "eval") -> Objective:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(24, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (24,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(dropout), nn.Linear(6, 3)).double()
    return Objective(
        model,
        loss or SplitLoss("cross_entropy"),
        tensor_batches((x, y), 10, None, "t"),
        dtype=F64,
        compile=compile,
        mode=mode,
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
    assert torch.equal(
        HessianOperator(compiled) @ v, HessianOperator(eager) @ v
    )  # the same eager path
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


def test_train_mode_dropout_compiled_draws_the_eager_masks():
    """Compiled Dropout draws the eager masks, not its own from inductor's RNG: a compiled loss in
    train mode is the function the eager HVPs differentiate, and the determinism check passes."""
    eager, compiled = make(False, dropout=0.5, mode="train"), make(True, dropout=0.5, mode="train")
    delta = 0.1 * torch.linspace(-1, 1, eager.num_parameters, dtype=F64)
    assert eager.loss(delta) != eager.loss_value  # dropout is active and the point moved
    assert compiled.loss(delta) == pytest.approx(eager.loss(delta), rel=1e-10)
    assert compiled.loss_and_gradient(delta)[0] == pytest.approx(eager.loss(delta), rel=1e-10)
    assert compiled.compile_mode == "on"
    assert check_determinism(compiled, HessianOperator(compiled)) == 2


def test_base_loss_is_evaluated_on_the_compiled_path():
    eager, compiled = make(False), make(True)
    assert eager.base_loss() == eager.loss_value
    assert compiled.base_loss() == compiled.loss()  # bit-identical: the same compiled call
    assert compiled.base_loss() == pytest.approx(compiled.loss_value, rel=1e-10)


def test_differences_from_w_do_not_mix_compiled_and_eager(monkeypatch):
    """Sharpness and the escape probe subtract L(w) from compiled L(w + δ): L(w) must come from
    the compiled path too. A stand-in offset on the eager ``loss_value`` shows which is used."""
    compiled = make(True)
    compiled.loss_value += 1.0  # what an eager/compiled mismatch would add to each difference
    v = torch.cos(torch.arange(compiled.num_parameters, dtype=F64))
    probe = escape_probe(compiled, v, 0.5, ClassifySettings())
    assert probe.best_decrease == pytest.approx(
        compiled.loss() - min(probe.loss_plus.min(), probe.loss_minus.min()), rel=1e-12
    )
    settings = SharpnessSettings(rho=(1e-3,), samples=4, steps=3, restarts=0, second_order=False)
    result = measure_sharpness(compiled, settings)
    for measure in (result.worst_case, result.one_step, result.average_case):
        assert 0.0 <= measure[0] < 1e-2  # would be about -1 with the eager baseline


def test_surface_metric_is_recorded_when_the_loss_was_compiled_before_the_hook():
    """A forward hook registered after the first compile (the surface metric's) fires, although
    dynamo skips hook guards by default: the compiled surface records the eager accuracy."""
    import numpy as np

    eager, compiled = make(False), make(True)
    compiled.loss()  # compile without any hook
    d = torch.full((eager.num_parameters,), 0.01, dtype=F64)
    coefficients = np.array([[0.0], [1.0], [-2.0]])
    losses_e, acc_e = evaluate_points(eager, [d], coefficients)
    losses_c, acc_c = evaluate_points(compiled, [d], coefficients)
    assert acc_e is not None and acc_c is not None
    assert acc_c.tolist() == acc_e.tolist()
    assert losses_c == pytest.approx(losses_e, rel=1e-10)
