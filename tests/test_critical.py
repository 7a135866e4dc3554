"""Critical-point classification against closed forms and the exact Hessian.

Analytic 2-D objectives have exact Hessians; the HVP path reproduces them to float64 rounding,
so eigenvalues are compared with 1e-10 tolerances. Newton decrements on a quadratic are compared
with the closed form gᵀA⁻¹g; the damping μ = 1e-6·κ biases it by at most μ/λ_min(A) relative
(here < 1e-5), hence the 1e-4 tolerance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape_cli.analyses.classify import ClassifySettings, _evidence, classify_point, decide
from landscape_cli.cli import app
from landscape_cli.estimators.cg import conjugate_gradient
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.data import no_data
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.objective import Objective


def classify_sample(name: str, **kwargs):
    objective = build_objective(
        resolve_run_config({"checkpoint": f"sample:{name}", "dtype": "float64"})
    )
    return classify_point(objective, ClassifySettings(**kwargs))


@pytest.mark.parametrize(
    "name, label, flat",
    [
        ("bowl", "minimum", False),
        ("neg_bowl", "maximum", False),
        ("saddle", "saddle", False),
        ("monkey_saddle", "degenerate", True),
        ("quartic", "minimum", True),  # x⁴+y²: the degeneracy along x is stated
        ("cubic", "saddle", False),  # (0, 0): Hessian [[0, 3], [3, 0]]
        ("cubic_at_min", "minimum", False),  # (1, -1): Hessian [[6, 3], [3, 6]]
        ("rosenbrock", "minimum", False),  # ill-conditioned (4e-4) but definite: not "flat"
        ("rosenbrock_at_start", "not-critical", False),
    ],
)
def test_analytic_objectives(name, label, flat):
    result = classify_sample(name)
    assert result.classification == label, result.evidence
    assert result.decision.degenerate_directions == flat
    assert result.evidence.startswith((label + ":", "approximate minimum:"))


def test_bowl_off_the_minimum_is_not_critical():
    objective = build_objective(
        resolve_run_config(
            {
                "model": "landscape_cli.sample_models.analytic:Point",
                "model_kwargs": {"x": 1.0, "y": 1.0},
                "loss": "landscape_cli.sample_models.analytic:bowl",
                "dtype": "float64",
            }
        )
    )
    result = classify_point(objective)
    assert result.classification == "not-critical"
    assert result.lambda_max == pytest.approx(2.0, abs=1e-12)


def test_cubic_eigenvalues_and_escape_direction():
    saddle = classify_sample("cubic")
    assert saddle.lambda_max == pytest.approx(3.0, abs=1e-10)
    assert saddle.lambda_min == pytest.approx(-3.0, abs=1e-10)
    assert saddle.negative_fraction == 0.5
    e = saddle.escape
    # along v = (1, -1)/√2: f(tv) = t³(1/2√2 - (-1)/2√2)·... ; the quadratic part is -3t²/2
    assert np.all(e.loss_plus < 0) and np.all(e.loss_minus < 0) and e.best_decrease > 0
    np.testing.assert_allclose((e.loss_plus + e.loss_minus) / 2, e.model_plus, rtol=1e-10)
    minimum = classify_sample("cubic_at_min")
    assert (minimum.lambda_max, minimum.lambda_min) == pytest.approx((9.0, 3.0), abs=1e-10)
    assert minimum.escape is None


def test_saddle_escape_matches_quadratic_exactly():
    result = classify_sample("saddle")  # x² − y²: exactly quadratic
    e = result.escape
    np.testing.assert_allclose(e.loss_plus, -(e.steps**2), atol=1e-14)
    np.testing.assert_allclose(e.loss_plus, e.model_plus, atol=1e-14)


@pytest.mark.parametrize(
    "numbers, label",
    [
        (dict(grad_norm=0.0, weight_norm=0.0, lambda_max=0.0, lambda_min=0.0), "degenerate"),
        (dict(grad_norm=1.0, weight_norm=0.0, lambda_max=0.0, lambda_min=0.0), "not-critical"),
        # λ_min/λ_max = -1e-4: below neg_tol, but a resolved sign is a descent direction
        (dict(grad_norm=1e-9, weight_norm=10.0, lambda_max=10.0, lambda_min=-1e-3), "saddle"),
        (
            dict(
                grad_norm=1e-9, weight_norm=10.0, lambda_max=10.0, lambda_min=-1e-3, rounding=2e-3
            ),
            "minimum",
        ),
        # λ_min below -neg_tol·κ but within its error bound: not significant, yet a Ritz value
        # is a Rayleigh quotient, so λ_min(H) <= -0.05 whatever its residual says: weak
        (
            dict(grad_norm=0.0, weight_norm=1.0, lambda_max=10.0, lambda_min=-0.05, error_min=0.1),
            "saddle",
        ),
        (
            dict(
                grad_norm=0.0,
                weight_norm=1.0,
                lambda_max=10.0,
                lambda_min=-0.05,
                error_min=0.1,
                rounding=0.06,
            ),
            "minimum",
        ),
        (dict(grad_norm=0.0, weight_norm=1.0, lambda_max=10.0, lambda_min=-0.05), "saddle"),
        (dict(grad_norm=0.02, weight_norm=1.0, lambda_max=10.0, lambda_min=1.0), "not-critical"),
        (dict(grad_norm=0.0, weight_norm=1.0, lambda_max=-1e-6, lambda_min=-5.0), "maximum"),
        (dict(grad_norm=0.0, weight_norm=1.0, lambda_max=1e-4, lambda_min=-5.0), "saddle"),
    ],
)
def test_decision_rule(numbers, label):
    assert decide(**numbers).classification == label


def test_trained_and_untrained_networks_agree_with_exact_hessian():
    trained = build_objective(resolve_run_config({"checkpoint": "sample:mlp", "dtype": "float64"}))
    result = classify_point(trained)
    assert result.classification == "minimum" and result.decision.degenerate_directions
    assert result.evidence.startswith("approximate minimum")
    H = torch.stack(
        [trained.hvp(e) for e in torch.eye(trained.num_parameters, dtype=torch.float64)]
    )
    exact = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    assert result.lambda_max == pytest.approx(exact[-1], rel=1e-4)
    assert abs(result.lambda_min - exact[0]) <= 1e-3 * exact[-1]
    threshold = 1e-3 * max(abs(exact[0]), exact[-1])
    assert result.negative_fraction == pytest.approx(np.mean(exact < -threshold), abs=0.01)

    torch.manual_seed(0)
    untrained = build_objective(
        resolve_run_config(
            {
                "model": "landscape_cli.sample_models.mlp:build",
                "data": "sample:blobs",
                "dtype": "float64",
            }
        )
    )
    assert classify_point(untrained).classification == "not-critical"


class Quadratic(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64))


def test_newton_decrement_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=gen))
    A = Q @ torch.diag(torch.tensor([1.0, 2, 3, 5, 8, 13], dtype=torch.float64)) @ Q.T
    b = torch.randn(6, dtype=torch.float64, generator=gen)
    w0 = torch.randn(6, dtype=torch.float64, generator=gen)
    objective = Objective(
        Quadratic(w0), lambda m, _: 0.5 * m.w @ A @ m.w - b @ m.w, no_data(), dtype=torch.float64
    )
    result = classify_point(objective, ClassifySettings(grad_tol=1e9))  # any point counts
    g = A @ w0 - b
    mu = result.newton.damping
    assert mu == pytest.approx(1e-3 * 13)  # positive definite: only the neg_tol·κ floor
    M = A + mu * torch.eye(6, dtype=torch.float64)
    step = torch.linalg.solve(M, g)
    assert result.newton.decrement_squared == pytest.approx(float(g @ step), rel=1e-8)
    assert result.newton.step_norm == pytest.approx(float(step.norm()), rel=1e-8)
    # the damping is the stated resolution: within ~0.1·1.3 % of the undamped decrement
    undamped = float(g @ torch.linalg.solve(A, g))
    assert abs(result.newton.decrement_squared - undamped) <= 0.013 * undamped


def test_newton_damping_covers_negative_curvature():
    A = torch.diag(torch.tensor([4.0, 1.0, -2.0], dtype=torch.float64))
    w0 = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    objective = Objective(
        Quadratic(w0), lambda m, _: 0.5 * m.w @ A @ m.w, no_data(), dtype=torch.float64
    )
    result = classify_point(objective, ClassifySettings(grad_tol=1e9))
    mu = result.newton.damping
    assert mu == pytest.approx(2.0 * (1 + 1e-3) + 1e-3 * 4.0)
    g = A @ w0
    expected = float(g @ torch.linalg.solve(A + mu * torch.eye(3, dtype=torch.float64), g))
    assert result.newton.decrement_squared == pytest.approx(expected, rel=1e-8)


def test_conjugate_gradient():
    gen = torch.Generator().manual_seed(1)
    M = torch.randn(30, 30, dtype=torch.float64, generator=gen)
    A = M @ M.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, dtype=torch.float64, generator=gen)
    res = conjugate_gradient(A, b, tol=1e-10, max_iter=200)
    assert res.converged and torch.allclose(res.x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    shifted = conjugate_gradient(
        A - 2.0 * torch.eye(30, dtype=torch.float64), b, shift=2.0, tol=1e-10, max_iter=200
    )
    assert torch.allclose(shifted.x, res.x, rtol=1e-6, atol=1e-8)
    indefinite = conjugate_gradient(
        torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)),
        torch.ones(2, dtype=torch.float64),
    )
    assert indefinite.negative_curvature and not indefinite.converged
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(A, b, tol=0)


def test_classify_cli_json():
    result = CliRunner().invoke(app, ["classify", "sample:saddle", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {"classification", "lambda_max", "lambda_min", "negative_fraction", "evidence"} <= set(
        payload
    )
    assert payload["classification"] == "saddle"
    assert payload["command"] == "classify"
    text = CliRunner().invoke(app, ["classify", "sample:bowl"])
    assert text.exit_code == 0 and "minimum" in text.stdout


class _Weights(nn.Module):
    def __init__(self, w) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64).clone())


def _function_objective(f, w0) -> Objective:
    return Objective(_Weights(w0), lambda m, _: f(m.w), no_data(), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
def test_a_negative_eigenvalue_the_extremes_run_missed_is_taken_from_the_density(seed):
    """An exact saddle (g = 0) whose one negative eigenvalue (-3e-3, three times the resolution
    neg_tol·κ) sits below a tight bulk near 0: the top-1/bottom-1 Lanczos run can stop on the
    bulk, but every SLQ node is a Ritz value, so λ_min <= the lowest node."""
    n = 2000
    rng = np.random.default_rng(0)
    d = np.concatenate([[1.0], rng.uniform(0.05, 0.9, 19), rng.uniform(0, 2e-5, n - 21), [-3e-3]])
    diag = torch.as_tensor(d)
    obj = _function_objective(lambda w: 0.5 * (diag * w * w).sum(), np.zeros(n))
    result = classify_point(obj, ClassifySettings(newton=False), seed=seed)
    assert result.classification == "saddle"
    assert result.lambda_min == pytest.approx(-3e-3, rel=1e-6)
    assert result.decision.negative_significant


def test_a_point_far_down_a_soft_valley_is_not_critical():
    """f = x² + 1e-4 y² at (0, 50): ‖g‖/κ is tiny against ‖w‖, but the minimiser is 50 away; the
    Cauchy step along −g (curvature 2e-4, clamped to neg_tol·κ = 2e-3) is 5 = 10 % of ‖w‖."""
    f = lambda w: w[0] ** 2 + 1e-4 * w[1] ** 2  # noqa: E731
    result = classify_point(_function_objective(f, [0.0, 50.0]), ClassifySettings(newton=False))
    assert result.decision.relative_gradient < ClassifySettings().grad_tol  # not enough alone
    assert result.classification == "not-critical"
    assert result.decision.relative_step == pytest.approx(0.01 / (2e-3 * 50), rel=1e-9)
    at_minimum = classify_point(_function_objective(f, [0.0, 0.0]), ClassifySettings())
    assert at_minimum.classification == "minimum"


def test_a_tiny_hessian_does_not_make_a_non_stationary_point_degenerate():
    """Below the absolute zero_curvature floor the relative test still applies: 1e-9 × bowl at
    (1, 1) has ‖g‖/(κ‖w‖) = 1 and is not critical (not 'degenerate'); at its minimum the
    floor still calls the vanishing Hessian degenerate, as documented."""
    f = lambda w: 1e-9 * (w**2).sum()  # noqa: E731
    far = classify_point(_function_objective(f, [1.0, 1.0]), ClassifySettings())
    assert far.classification == "not-critical"
    assert classify_point(_function_objective(f, [0.0, 0.0])).classification == "degenerate"
    unscaled = classify_point(_function_objective(lambda w: (w**2).sum(), [1.0, 1.0]))
    assert unscaled.classification == "not-critical"


@pytest.mark.parametrize(
    "f, w0, label",
    [
        (lambda w: (w**2).sum(), [1e-5, 0.0], "minimum"),
        (lambda w: -(w**2).sum(), [1e-5, 0.0], "maximum"),
        (lambda w: w[0] ** 2 - w[1] ** 2, [0.0, 1e-5], "saddle"),
        (lambda w: -(w**2).sum(), [4e-4, 0.0], "maximum"),
    ],
)
def test_the_stationarity_step_is_symmetric_in_the_sign_of_the_curvature(f, w0, label):
    """Along strong negative curvature the model's stationary point is ‖g‖/|c| away, so maxima
    and saddles near their critical point are judged as minima are (clamping the signed c to
    [neg_tol·κ, κ] would call them 'not-critical' 1000x sooner)."""
    result = classify_point(_function_objective(f, w0), ClassifySettings(newton=False))
    assert result.classification == label
    assert result.decision.relative_step == pytest.approx(result.decision.relative_gradient)


def test_weak_negative_curvature_is_a_saddle_whose_evidence_says_weak() -> None:
    numbers = dict(grad_norm=1e-9, lambda_max=10.0, lambda_min=-1e-3)
    d = decide(weight_norm=10.0, error_min=1e-4, rounding=1e-5, **numbers)
    assert d.classification == "saddle"
    assert d.negative_weak and not d.negative_significant and d.positive_significant
    evidence = _evidence(numbers, d, 0.0, 1e-3)
    assert evidence.startswith("saddle with weak negative curvature")
    assert "λ_min/λ_max = -0.0001" in evidence


def test_maximum_evidence_names_its_flat_directions() -> None:
    numbers = dict(grad_norm=0.0, lambda_max=1e-9, lambda_min=-5.0)
    d = decide(weight_norm=1.0, rounding=1e-8, **numbers)
    assert d.classification == "maximum" and d.degenerate_directions
    assert "flat directions" in _evidence(numbers, d, 0.0, 1e-3)
    sharp = decide(weight_norm=1.0, rounding=1e-8, grad_norm=0.0, lambda_max=-1.0, lambda_min=-5.0)
    assert not sharp.degenerate_directions
    assert "all curvature negative" in _evidence(
        dict(grad_norm=0.0, lambda_max=-1.0, lambda_min=-5.0), sharp, 0.0, 1e-3
    )
