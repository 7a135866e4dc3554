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

from landscape_cli import sample_models
from landscape_cli.analyses.stability import parse_optimizer_state, stability_report
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.loading import build_objective

TRAINING = str(sample_models.CHECKPOINT_DIR / "mlp_training.pt")


def objective_for(checkpoint: str, **kw):
    flags = {
        "checkpoint": checkpoint,
        "model": "landscape_cli.sample_models.mlp:build",
        "data": "sample:blobs",
        "dtype": "float64",
    }
    flags.update(kw)
    return build_objective(resolve_run_config(flags))


def test_sgd_learning_rate_read_from_checkpoint():
    objective = objective_for(TRAINING)
    lam = float(lanczos(HessianOperator(objective), top_k=1).top(1)[0])
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
    lam = float(lanczos(HessianOperator(objective), top_k=1).top(1)[0])
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


def _sgd_state(**kwargs):
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=0.1, **kwargs)
    w.grad = torch.ones(1)
    optimizer.step()
    return optimizer.state_dict()


def _sgd_final_distance(h: float, steps: int = 3000, **kwargs) -> float:
    """|w| after ``steps`` of torch.optim.SGD on f(w) = ½ w² with learning rate h (η·λ = h)."""
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=h, **kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * w.pow(2)).sum().backward()
        optimizer.step()
    return float(w.detach().abs())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.5, "nesterov": True},
        {"momentum": 0.9, "dampening": 0.5},
        {"momentum": 0.0},
        {"momentum": 0.0, "dampening": 0.5},  # torch ignores dampening without momentum
    ],
)
def test_sgd_momentum_threshold_is_where_torch_sgd_diverges(kwargs):
    """The reported bound on η·λ_max separates converging from diverging runs of PyTorch's own
    SGD on a quadratic (Nesterov's bound is 2(1+β)/(1+2β), dampening divides by 1-τ)."""
    state = parse_optimizer_state(_sgd_state(**kwargs))
    assert state.kind == "sgd"
    report = stability_report_for(state)
    threshold = report.momentum_threshold
    assert _sgd_final_distance(0.97 * threshold, **kwargs) < 1e-3
    diverged = _sgd_final_distance(1.03 * threshold, **kwargs)
    assert not diverged < 1e3  # inf or nan once it overflows


def stability_report_for(state):
    from landscape_cli.analyses.stability import StabilityReport

    return StabilityReport(
        state.lr,
        "checkpoint",
        state.kind,
        1.0,
        state.momentum,
        nesterov=state.nesterov,
        dampening=state.dampening,
    )


def test_amsgrad_preconditions_with_the_running_maximum():
    w = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.01, amsgrad=True)
    for scale in (10.0, 1.0, 0.1):  # shrinking gradients: max_exp_avg_sq > exp_avg_sq
        w.grad = torch.full((3,), scale)
        optimizer.step()
    raw = optimizer.state_dict()
    parsed = parse_optimizer_state(raw)
    assert parsed.kind == "adam"
    maximum, current = raw["state"][0]["max_exp_avg_sq"], raw["state"][0]["exp_avg_sq"]
    assert not torch.allclose(maximum, current)
    assert torch.equal(parsed.exp_avg_sq[0], maximum)


@pytest.mark.parametrize(
    "factory, kind",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), "sgd"),
        (lambda p: torch.optim.Adam(p, lr=0.1), "adam"),
        (lambda p: torch.optim.AdamW(p, lr=0.1), "adam"),
        (lambda p: torch.optim.RMSprop(p, lr=0.1, momentum=0.9), "unknown"),
        (lambda p: torch.optim.RAdam(p, lr=0.1), "unknown"),
        (lambda p: torch.optim.NAdam(p, lr=0.1), "unknown"),
        (lambda p: torch.optim.Adagrad(p, lr=0.1), "unknown"),
        (lambda p: torch.optim.Adamax(p, lr=0.1), "unknown"),
    ],
)
def test_optimizers_are_recognised_or_reported_unknown_with_a_note(factory, kind):
    w = torch.zeros(2, requires_grad=True)
    optimizer = factory([w])
    w.grad = torch.ones(2)
    optimizer.step()
    parsed = parse_optimizer_state(optimizer.state_dict())
    assert parsed.kind == kind
    assert ("not its stability threshold" in parsed.note) is (kind == "unknown")


def test_terminal_compares_with_the_optimizer_s_own_bound():
    """Adam's line is its preconditioned sharpness against 38/η; SGD with Nesterov against
    2(1+β)/(1+2β); plain GD (or --lr alone) against 2."""
    from rich.console import Console

    from landscape_cli.analyses.stability import StabilityReport
    from landscape_cli.render.terminal import _print_stability

    def shown(report) -> str:
        console = Console(record=True, width=300)
        _print_stability(console, report)
        return console.export_text()

    adam = StabilityReport(0.01, "checkpoint", "adam", 100.0, 0.0, 4000.0, 3800.0, 12)
    assert "(Adam): λ_max(P⁻¹H) = 4000 vs (2+2β₁)/((1−β₁)η) = 3800 (beyond" in shown(adam)
    nesterov = StabilityReport(0.1, "checkpoint", "sgd", 20.0, 0.9, nesterov=True)
    text = shown(nesterov)
    assert "η·λ_max = 2 vs momentum bound 2(1+β)/(1+2β), Nesterov = 1.36 (beyond" in text
    plain = StabilityReport(0.1, "--lr", "unknown", 15.0, 0.0)
    assert "η·λ_max = 1.5 vs 2 (within" in shown(plain)


def test_full_dampening_is_an_infinite_bound_not_a_crash():
    report = stability_report_for(parse_optimizer_state(_sgd_state(momentum=0.9, dampening=1.0)))
    assert report.momentum_threshold == float("inf") and report.within_bound
    assert report.to_dict()["momentum_threshold"] is None  # JSON has no infinity


def test_adam_outside_torch_optim_is_recognised_and_bias_correction_honoured():
    """transformers' AdamW (correct_bias) and apex/DeepSpeed FusedAdam (bias_correction) keep
    exp_avg_sq but no amsgrad key: they are Adam; without bias correction P = √v + ε."""
    w = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.ones(2)
    optimizer.step()
    raw = optimizer.state_dict()
    group = {
        k: v for k, v in raw["param_groups"][0].items() if k in ("lr", "betas", "eps", "params")
    }
    for extra, corrected in (({"correct_bias": True}, True), ({"bias_correction": False}, False)):
        parsed = parse_optimizer_state(
            {"state": raw["state"], "param_groups": [{**group, **extra}]}
        )
        assert parsed.kind == "adam"
        assert (parsed.step is not None) is corrected


def test_stability_without_nesterov_dampening_and_note_reads_with_their_defaults(tmp_path):
    import h5py

    from landscape_cli.io import report_file as rep

    out = tmp_path / "r.h5"
    result = CliRunner().invoke(
        app, ["classify", "sample:mlp", "--lr", "0.1", "--quiet", "--out", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    with h5py.File(out, "a") as handle:
        group = handle["classify/stability"]
        for name in ("nesterov", "dampening", "note"):
            if name in group.attrs:
                del group.attrs[name]
    stability = rep.read_report(out).classify.stability
    assert (stability.nesterov, stability.dampening, stability.note) == (False, 0.0, "")
    assert stability.momentum_threshold == 2.0


def test_a_hand_written_sgd_state_with_only_lr_and_momentum_is_sgd():
    groups = [{"lr": 0.5, "momentum": 0.9, "params": [0]}]
    parsed = parse_optimizer_state({"state": {}, "param_groups": groups})
    assert (parsed.kind, parsed.momentum, parsed.nesterov, parsed.dampening) == (
        "sgd",
        0.9,
        False,
        0.0,
    )
