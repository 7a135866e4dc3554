"""Edge-of-stability numbers: learning rate from optimizer state, and Adam's preconditioned
sharpness against a dense computation (float64; tolerance 1e-4 relative = the Lanczos tol)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev
from typer.testing import CliRunner

import sample_models
import sample_models.mlp
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.lanczos import lanczos
from landscape_cli.loading import build_objective, resolve_run_config
from landscape_cli.stability import parse_optimizer_state, stability_report

TRAINING = str(sample_models.CHECKPOINT_DIR / "mlp_training.pt")


def objective_for(checkpoint: str, **kw):
    flags = {
        "checkpoint": checkpoint,
        "model": "sample_models.mlp:build",
        "data": "sample:blobs",
        "dtype": "float64",
    }
    flags.update(kw)
    return build_objective(resolve_run_config(flags))


def test_sgd_learning_rate_read_from_checkpoint():
    objective = objective_for(TRAINING)
    lam = float(lanczos(objective.operator(), top_k=1).top(1)[0])
    report = stability_report(objective, lam)
    assert report.source == "checkpoint" and report.optimizer == "sgd"
    assert report.lr == 0.1 and report.momentum == 0.9
    assert report.lr_times_lambda_max == pytest.approx(0.1 * lam)
    assert report.to_dict()["gd_stable"] is (0.1 * lam < 2)
    overridden = stability_report(objective, lam, lr=0.01)
    assert overridden.lr == 0.01 and overridden.source == "--lr"


def test_no_optimizer_and_no_lr_gives_none_and_a_note():
    result = CliRunner().invoke(app, ["spectrum", "--json", "--no-trace", "--no-density"])
    payload = json.loads(result.stdout)
    assert payload["stability"] is None and "--lr" in payload["notes"]["stability"]


def test_lightning_layout_and_group_checks():
    groups = [{"lr": 0.5, "momentum": 0.0, "params": [0]}]
    assert parse_optimizer_state({"state": {}, "param_groups": groups}).lr == 0.5
    with pytest.raises(InputError, match="different learning rates"):
        parse_optimizer_state(
            {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}, {"lr": 0.2, "params": [1]}]}
        )
    with pytest.raises(InputError, match="no param_groups"):
        parse_optimizer_state({"state": {}})


def test_adam_preconditioned_sharpness_matches_dense(tmp_path):
    torch.manual_seed(0)
    model = sample_models.mlp.build(hidden=6)
    x, y = sample_models.load_dataset("blobs")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    for _ in range(7):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    path = tmp_path / "adam.pt"
    torch.save(
        {
            "optimizer_states": [optimizer.state_dict()],
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )

    objective = objective_for(str(path), model_kwargs={"hidden": 6})
    lam = float(lanczos(objective.operator(), top_k=1).top(1)[0])
    report = stability_report(objective, lam)
    assert report.optimizer == "adam"

    # dense reference: P = (1 - b1^t)(sqrt(v / (1 - b2^t)) + eps), eigenvalues of P^-1/2 H P^-1/2
    double = model.double()
    names = [n for n, _ in double.named_parameters()]
    shapes = [p.shape for _, p in double.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in double.parameters()])

    def loss(w):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = w[i : i + s.numel()].reshape(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(double, params, (x.double(),)), y)

    H = jacrev(grad(loss))(w0)
    state = optimizer.state_dict()["state"]
    v = torch.cat([state[i]["exp_avg_sq"].double().reshape(-1) for i in range(len(names))])
    t = float(state[0]["step"])
    P = (1 - 0.9**t) * (torch.sqrt(v / (1 - 0.99**t)) + 1e-6)
    S = P.rsqrt()
    exact = torch.linalg.eigvalsh(S[:, None] * H * S[None, :]).numpy()
    assert report.preconditioned_sharpness == pytest.approx(exact[-1], rel=1e-4)
    assert report.preconditioned_threshold == pytest.approx((2 + 2 * 0.9) / (0.1 * 0.01))
    assert np.isfinite(report.to_dict()["preconditioned_sharpness_ratio"])
