"""HVPs shared across estimators: the extremes' Lanczos run is one SLQ run of the density.

* On the bundled MLP (float64): the default run's HVP count is the sum of its parts, the first
  quadrature run is the quadrature of a fixed-length Lanczos run from the extremes' Gaussian start
  (regenerated from the documented seed scheme), and switching parts off spends nothing on them.
* The density adds its own runs only while the probes' error bound is above
  ``slq_probe_error``: the bound holds (and is nearly attained) on exact quadratic forms, and a
  model above 5,000 parameters takes the shared run alone.
* On planted Hessian-like spectra (``tests/spectra.py``, eigenvalues known exactly): the trace
  and the density at the defaults (the spectrum's estimators with ``SpectrumSettings()``)
  are within stated tolerances, seed by seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from spectra import nn_like_matrix

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum, own_slq_runs
from landscape_cli.errors import InputError
from landscape_cli.estimators.density import (
    lanczos_quadrature,
    probe_error_bound,
    slq_density,
    wasserstein1,
)
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.trace import choose_method, deflated_trace, hutchinson_trace
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.seeding import derive_seed

#: The default run's budget on the bundled samples: about half PyHessian's ~300 HVPs for top-5 +
#: 100-probe trace + 100-step density (sample:mlp spends 141, in float32 and float64).
DEFAULT_BUDGET = 170


@pytest.fixture(scope="module")
def objective():
    config = resolve_run_config({"checkpoint": "sample:mlp", "dtype": "float64"})
    return build_objective(config)


@pytest.fixture(scope="module")
def default_run(objective):
    return analyze_spectrum(objective, SpectrumSettings(), seed=3)


def test_default_hvp_count_is_the_sum_of_its_parts(default_run):
    s = SpectrumSettings()
    r = default_run
    lz, trace, slq = r.lanczos, r.trace_estimate, r.slq
    assert r.determinism_matvecs == 2
    # auto on the sample MLP: the remainder's next eigenvalues are what Hutch++'s sketch removes
    assert trace.matvecs == s.trace_matvecs == 60 and trace.method == "deflated hutch++"
    assert slq.matvecs == s.slq_runs * s.slq_steps == 60  # the shared run costs nothing here
    assert r.info.hvp_count == 2 + lz.matvecs + trace.matvecs + slq.matvecs
    assert r.info.hvp_count <= DEFAULT_BUDGET
    payload = r.to_dict()
    assert payload["hvp_count"] == r.info.hvp_count
    density = payload["density"]
    assert density["runs"] == 1 + s.slq_runs and density["shared_runs"] == 1
    assert density["run_steps"] == [lz.steps] + [s.slq_steps] * s.slq_runs
    assert density["steps"] == max(lz.steps, s.slq_steps) and density["matvecs"] == 60


def test_first_density_run_is_the_extremes_run(objective, default_run):
    # lanczos' documented default start: a Gaussian from torch.Generator().manual_seed(seed),
    # with the spectrum's seed derive_seed(seed, "lanczos"). A fixed-length run (tol=None) of the
    # same number of steps from that vector gives the same T_m; its quadrature must be row 0.
    # Same products in the same order (float64, cached graph): equal to rounding, 1e-12 * ||H||.
    r = default_run
    m, n = r.lanczos.steps, objective.num_parameters
    gen = torch.Generator().manual_seed(derive_seed(3, "lanczos"))
    start = torch.randn(n, generator=gen, dtype=torch.float64)
    fixed = lanczos(HessianOperator(objective), start=start, tol=None, max_iter=m)
    nodes, weights = lanczos_quadrature(fixed.alphas, fixed.betas)
    scale = abs(r.lambda_max)
    np.testing.assert_allclose(r.slq.nodes[0, :m], nodes, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(r.slq.weights[0, :m], weights, rtol=0, atol=1e-12)
    assert np.all(np.isnan(r.slq.nodes[0, m:]))
    # the shared run is the extremes' own quadrature, not merely one like it
    np.testing.assert_array_equal(r.slq.nodes[0, :m], r.lanczos.ritz_values)


def test_switching_parts_off_spends_nothing_on_them(objective, default_run):
    r = default_run
    no_density = analyze_spectrum(objective, SpectrumSettings(density=False), seed=3)
    assert no_density.slq is None and no_density.density_estimate is None
    assert no_density.info.hvp_count == 2 + r.lanczos.matvecs + r.trace_estimate.matvecs
    assert no_density.trace_estimate.estimate == r.trace_estimate.estimate  # own random stream

    alone = analyze_spectrum(
        objective, SpectrumSettings(top_k=1, trace=False, density=False), seed=3
    )
    assert alone.info.hvp_count == 2 + alone.lanczos.matvecs

    unshared = analyze_spectrum(objective, SpectrumSettings(share_lanczos=False), seed=3)
    assert unshared.slq.shared_runs == 0 and unshared.slq.runs == SpectrumSettings().slq_runs
    np.testing.assert_array_equal(unshared.slq.nodes[:, :30], r.slq.nodes[1:, :30])
    assert unshared.info.hvp_count == r.info.hvp_count  # the shared run was free

    shared_only = analyze_spectrum(objective, SpectrumSettings(slq_runs=0), seed=3)
    assert shared_only.slq.runs == 1 and shared_only.slq.matvecs == 0
    assert shared_only.info.hvp_count == r.info.hvp_count - r.slq.matvecs
    with pytest.raises(InputError, match="`slq_runs=0`"):
        analyze_spectrum(objective, SpectrumSettings(slq_runs=0, share_lanczos=False), seed=3)


@pytest.mark.parametrize("kind", ["nn", "powerlaw"])
def test_default_trace_and_density_accuracy_on_planted_spectra(kind: str) -> None:
    """The spectrum's estimators at SpectrumSettings() on a 2000 x 2000 planted spectrum, 5 seeds.

    Tolerances (measured maxima in brackets): trace within 1 % (0.4 %) and 3 reported standard
    errors (1.0); and the median error at most half that of PyHessian's trace (Hutchinson,
    100 Rademacher probes; ours is 3-20x smaller); W1 of the quadrature measure to the exact
    spectrum within 0.3 % of the spectral width (0.14 %); the broadened density within 1 %
    (0.43 %; the project budget is 3 %)."""
    s = SpectrumSettings()
    lam, A = nn_like_matrix(2000, kind=kind)
    width, exact_trace = lam[-1] - lam[0], lam.sum()
    ours, theirs = [], []
    for seed in range(5):
        lz = lanczos(
            A,
            seed=derive_seed(seed, "lanczos"),
            tol=s.tol,
            max_iter=s.max_iter,
            top_k=s.top_k,
            bottom_k=s.bottom_k,
            return_basis=True,
        )
        trace = deflated_trace(
            A,
            lz.basis,
            float(lz.alphas.sum()),
            s.trace_matvecs,
            method=choose_method(s.trace_method),
            seed=derive_seed(seed, "trace"),
        )
        error = abs(trace.estimate - exact_trace)
        assert error <= 0.01 * abs(exact_trace) and error <= 3 * trace.stderr
        ours.append(error)
        theirs.append(abs(hutchinson_trace(A, 100, seed=seed + 100).estimate - exact_trace))

        slq = slq_density(
            A,
            runs=s.slq_runs,
            steps=s.slq_steps,
            seed=derive_seed(seed, "density"),
            lanczos_runs=[lz] if s.share_lanczos else (),
        )
        np.testing.assert_allclose(slq.weights.sum(axis=1), 1.0, atol=1e-12)
        keep = np.isfinite(slq.nodes)
        w1_nodes = scipy.stats.wasserstein_distance(
            slq.nodes[keep], lam, u_weights=slq.weights[keep] / slq.runs
        )
        assert w1_nodes <= 3e-3 * width
        dens = slq.density(sigma=s.sigma, grid=s.grid)
        assert wasserstein1(dens.grid, dens.values, lam) <= 0.01 * width
    assert np.median(ours) <= 0.5 * np.median(theirs)


def test_auto_trace_method(objective) -> None:
    # "auto": Hutchinson or Hutch++ as its sketch predicts, on the deflated remainder or not
    assert choose_method("auto") == choose_method("per-sample") == "auto"
    assert choose_method("hutch++") == "hutch++"
    with pytest.raises(ValueError, match="auto, hutch"):
        choose_method("exact")
    plain = analyze_spectrum(
        objective, SpectrumSettings(deflate_trace=False, density=False, top_k=1), seed=3
    )
    assert plain.trace_estimate.method in ("hutch++", "hutchinson")
    assert plain.trace_estimate.predicted_stderrs is not None
    forced = analyze_spectrum(
        objective, SpectrumSettings(trace_method="hutch++", density=False, top_k=1), seed=3
    )
    assert forced.trace_estimate.method == "deflated hutch++"


# ------------------------------------------------------------------ runs from the probe error
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("share", [0.5, 0.05])
def test_probe_error_bound_holds_and_is_nearly_attained(distribution, share):
    """The mass one probe gives an interval, ``Σ_k (u_kᵀ v)² f(λ_k) / ‖v‖²`` for ``f`` its
    indicator and random eigenvectors ``u_k`` (the exact quadratic form SLQ's quadrature
    integrates), over 4,000 probes: its standard deviation is below sqrt(1/(2n)), and within a
    factor 2·sqrt(share·(1-share)) of it."""
    n, draws = 400, 4000
    inside = torch.zeros(n, dtype=torch.float64)
    inside[: int(share * n)] = 1.0
    gen = torch.Generator().manual_seed(0)
    if distribution == "rademacher":
        v = torch.randint(0, 2, (draws, n), generator=gen, dtype=torch.float64) * 2 - 1
    else:
        v = torch.randn(draws, n, generator=gen, dtype=torch.float64)
    eigenvectors = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    masses = ((v @ eigenvectors) ** 2 * inside).sum(1) / (v**2).sum(1)
    assert float(masses.mean()) == pytest.approx(share, abs=4 * probe_error_bound(n, draws))
    sd, bound = float(masses.std()), probe_error_bound(n, 1)
    attainable = 2 * (share * (1 - share)) ** 0.5 * bound
    assert 0.9 * attainable < sd < bound * 1.05  # 1.05: the sampling error of 4,000 draws


@pytest.mark.parametrize(
    ("n", "probe_error", "share", "own"),
    [
        (1_476, 0.01, True, 2),  # the bundled samples: the bound needs all three runs
        (2_500, 0.01, True, 1),
        (5_000, 0.01, True, 0),  # sqrt(1/(2·5000)) = 0.01: the shared run alone
        (11_181_642, 0.01, True, 0),
        (11_181_642, 0.0, True, 2),  # 0: every run asked for
        (11_181_642, 0.01, False, 1),  # without the shared run, one own run
    ],
)
def test_own_slq_runs_stop_at_the_probe_error(n, probe_error, share, own):
    settings = SpectrumSettings(slq_probe_error=probe_error, share_lanczos=share)
    assert own_slq_runs(settings, n) == own
    if own < settings.slq_runs and probe_error > 0:
        assert (
            probe_error_bound(n, own + share) <= probe_error < probe_error_bound(n, own + share - 1)
            or own + share == 1
        )


def test_a_model_above_5000_parameters_takes_the_shared_run_alone_and_says_so():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(50, 100), torch.nn.Tanh(), torch.nn.Linear(100, 3))
    x, y = torch.randn(64, 50, dtype=torch.float64), torch.randint(0, 3, (64,))
    from landscape_cli.problem.data import tensor_batches
    from landscape_cli.problem.losses import SplitLoss
    from landscape_cli.problem.objective import Objective

    obj = Objective(
        model.double(), SplitLoss("cross_entropy"), tensor_batches((x, y), 64, None, "t"),
        dtype=torch.float64,
    )  # fmt: skip
    assert obj.num_parameters == 5_403
    settings = SpectrumSettings(trace=False, top_k=1, determinism_check=False)
    fewer = analyze_spectrum(obj, settings, seed=0)
    every = analyze_spectrum(obj, SpectrumSettings(**{**vars(settings), "slq_probe_error": 0}))
    assert fewer.slq.matvecs == 0 and fewer.slq.nodes.shape[0] == 1
    assert every.slq.matvecs == 60 and every.slq.nodes.shape[0] == 3
    assert fewer.info.hvp_count == every.info.hvp_count - 60
    assert "0 SLQ run(s) besides the extremes' Lanczos run" in fewer.notes["density"]
    assert "density" not in every.notes
    # the shared run is the first run of the fuller density, node for node
    np.testing.assert_allclose(fewer.slq.nodes[0], every.slq.nodes[0], rtol=1e-12)
