"""Default `spectrum` settings against the exact Hessian of small networks.

The reference is independent of the code under test: the full Hessian of the mean loss over all
samples by ``torch.func`` (``jacrev(grad(loss))``) on one batch, in float64, then ``torch.linalg.eigvalsh``.
Tolerances are the accuracy docs/algorithms.md states:
- λ_max within 1e-4 relative; each of the top-5 within 1e-3 relative;
- λ_min within 1e-3·|λ_max|;
- the trace within 2 % and within 3 reported standard errors;
- the SLQ density within Wasserstein-1 distance 3 % of the spectral width.

``--exact`` itself is refused above 6000 parameters, before any HVP is spent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev

from landscape_cli import sample_models
from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.errors import InputError
from landscape_cli.estimators.density import wasserstein1
from landscape_cli.estimators.exact import exact_spectrum
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.objective import Objective


def exact_eigenvalues(name: str, mode: str = "eval") -> np.ndarray:
    """eigvalsh of the torch.func Hessian (jacrev of grad) of the full-data mean cross-entropy (float64, one batch)."""
    sample = sample_models.get_sample(name)
    model = sample.build_model()
    model.load_state_dict(torch.load(sample.checkpoint, weights_only=True))
    model = model.double().train(mode == "train")
    x, y = sample_models.load_dataset(sample.data.split(":", 1)[1])
    x = x.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = w[i : i + s.numel()].reshape(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y)

    # reverse-over-reverse in chunks: torch.func.hessian (forward-over-reverse, vmapped over all
    # n basis vectors at once) needs n copies of the CNN's activations and runs out of memory
    H = jacrev(grad(loss), chunk_size=16)(w0)
    return torch.linalg.eigvalsh((H + H.T) / 2).numpy()


def objective_for(name: str, **flags):
    config = resolve_run_config({"checkpoint": f"sample:{name}", "dtype": "float64", **flags})
    return build_objective(config)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def case(request):
    name = request.param
    objective = objective_for(name)
    result = analyze_spectrum(objective, SpectrumSettings(), seed=0)
    return name, objective, result, exact_eigenvalues(name)


def test_lambda_max_and_top5(case):
    _name, _objective, result, exact = case
    top = exact[::-1][:5]
    assert abs(result.lambda_max - top[0]) <= 1e-4 * abs(top[0])
    np.testing.assert_allclose(result.top_eigenvalues, top, rtol=1e-3)


def test_lambda_min(case):
    _name, _objective, result, exact = case
    assert abs(result.lambda_min - exact[0]) <= 1e-3 * abs(exact[-1])


def test_trace_within_2_percent_and_3_stderr(case):
    _name, _objective, result, exact = case
    trace = result.trace_estimate
    true = exact.sum()
    assert abs(trace.estimate - true) <= 0.02 * abs(true)
    assert abs(trace.estimate - true) <= 3 * trace.stderr + 1e-12 * abs(true)


def test_density_wasserstein(case):
    _name, _objective, result, exact = case
    d = result.density_estimate
    assert abs(np.trapezoid(d.values, d.grid) - 1) < 1e-6
    assert wasserstein1(d.grid, d.values, exact) <= 0.03 * (exact[-1] - exact[0])


def test_exact_spectrum_from_hvps_matches_torch_func(case):
    name, objective, _result, exact = case
    if name != "mlp":
        pytest.skip("n HVPs of the CNN take ~45 s; the MLP exercises the same code")
    ours = exact_spectrum(HessianOperator(objective))
    assert ours.asymmetry < 1e-10
    np.testing.assert_allclose(ours.eigenvalues, exact, atol=1e-9 * abs(exact).max())


def test_same_seed_same_numbers_and_other_seed_differs():
    objective = objective_for("mlp")
    settings = SpectrumSettings(top_k=2, trace_matvecs=30, slq_runs=2, slq_steps=20)
    a = analyze_spectrum(objective, settings, seed=5).to_dict()
    b = analyze_spectrum(objective, settings, seed=5).to_dict()
    c = analyze_spectrum(objective, settings, seed=6).to_dict()
    for d in (a, b, c):
        d.pop("seconds")
    assert a == b
    assert a["trace"] != c["trace"]


def test_exact_negative_fraction_ignores_rounding_noise_around_zero():
    """A network's near-zero bulk straddles 0 by rounding: the exact negative fraction counts
    eigenvalues below −neg_tol·κ, classify's threshold."""
    from landscape_cli.estimators.exact import ExactSpectrum

    ev = np.array([-0.5, -1e-9, -1e-12, 1e-12, 1e-9, 10.0])
    d = ExactSpectrum(ev, 0.0, 6).to_dict(neg_tol=1e-3)
    assert d["negative_threshold"] == pytest.approx(1e-3 * 10.0)
    assert d["negative_fraction"] == pytest.approx(1 / 6)


def test_exact_spectrum_above_6000_parameters_is_refused_before_any_hvp():
    model = nn.Linear(100, 70)  # 7070 parameters > 6000
    x, y = torch.randn(8, 100), torch.randint(0, 70, (8,))

    def ce(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    objective = Objective(model, ce, tensor_batches((x, y), 8, None, "t"))
    calls = []
    original = objective.hvp_block
    objective.hvp_block = lambda v: calls.append(1) or original(v)
    with pytest.raises(InputError, match="refused above 6000"):
        analyze_spectrum(objective, SpectrumSettings(exact=True))
    assert calls == []
