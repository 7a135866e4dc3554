"""Tests of landscape_cli.estimators.density: SLQ on planted spectra, broadening and the W1 distance.

The W1 budget of the project is 0.03 * (lambda_max - lambda_min) with the default runs, steps and
sigma; closed-form cases (a Gaussian, a uniform density) are checked to grid accuracy (~1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from spectra import nn_like_matrix, planted

from landscape_cli.estimators.density import (
    DEFAULT_RUNS,
    DEFAULT_SIGMA_FRACTION,
    DEFAULT_STEPS,
    SLQResult,
    SpectralDensity,
    default_grid,
    default_sigma,
    gaussian_broadening,
    lanczos_quadrature,
    slq_density,
    wasserstein1,
)
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.trace import hutchinson_trace


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


# ---------------------------------------------------------------------------------------------
# broadening, grid, sigma


def cell_average_pdf(grid: np.ndarray, loc: float, scale: float) -> np.ndarray:
    """The normal density averaged over each grid point's cell (midpoints; half cells at the
    ends), by scipy's CDF: what gaussian_broadening computes."""
    edges = np.concatenate([grid[:1], (grid[1:] + grid[:-1]) / 2, grid[-1:]])
    return np.diff(scipy.stats.norm.cdf(edges, loc=loc, scale=scale)) / np.diff(edges)


def test_single_node_broadens_to_a_normalised_gaussian() -> None:
    grid = np.linspace(-3.0, 5.0, 4001)  # +-20 sigma: tails beyond the grid are ~1e-88
    values = gaussian_broadening(np.array([1.0]), np.array([1.0]), grid, 0.2)
    np.testing.assert_allclose(values, cell_average_pdf(grid, 1.0, 0.2), atol=1e-12)
    # sigma = 100 spacings: the cell average is the point value to O(h²/σ²) (here 4e-6 relative)
    pdf = scipy.stats.norm.pdf(grid, loc=1.0, scale=0.2)
    np.testing.assert_allclose(values, pdf, atol=1e-5 * pdf.max())
    assert trapezoid(values, grid) == pytest.approx(1.0, abs=1e-12)


def test_narrow_kernels_keep_every_node_s_mass() -> None:
    """sigma far below the grid spacing: each node's mass stays in its cell (sampling the kernel
    at the points would lose nodes between points and give their mass to the others)."""
    grid = np.linspace(-0.0005, 1.0005, 1001)
    nodes = np.array([0.0, 0.3004, 1.0])
    weights = np.array([0.4975, 0.4975, 0.005])
    for sigma in (1e-4, 1e-6):
        values = gaussian_broadening(nodes, weights, grid, sigma)
        cdf = np.concatenate([[0.0], np.cumsum((values[1:] + values[:-1]) * np.diff(grid) / 2)])
        masses = np.diff(np.interp([-1.0, 0.15, 0.65, 2.0], grid, cdf))
        np.testing.assert_allclose(masses, weights, atol=1e-6)


def test_broadening_averages_runs_and_skips_padding() -> None:
    grid = np.linspace(-5.0, 6.0, 3001)
    nodes = np.array([[0.0, 1.0, np.nan], [2.0, np.nan, np.nan]])
    weights = np.array([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])
    values = gaussian_broadening(nodes, weights, grid, 0.3)
    pdf = cell_average_pdf
    expected = 0.5 * (0.25 * pdf(grid, 0.0, 0.3) + 0.75 * pdf(grid, 1.0, 0.3)) + 0.5 * pdf(
        grid, 2.0, 0.3
    )
    np.testing.assert_allclose(values, expected, atol=1e-12)


def test_broadening_normalises_over_a_narrow_grid() -> None:
    # Half of the Gaussian lies outside the grid: the values are rescaled to integrate to 1, i.e.
    # divided by the mass on the grid, Phi(3) - Phi(0) (exactly: cell averages integrate exactly).
    grid = np.linspace(0.0, 3.0, 500)
    values = gaussian_broadening(np.array([0.0]), np.array([1.0]), grid, 1.0)
    assert trapezoid(values, grid) == pytest.approx(1.0, abs=1e-12)
    mass = scipy.stats.norm.cdf(3.0) - scipy.stats.norm.cdf(0.0)
    np.testing.assert_allclose(values, cell_average_pdf(grid, 0.0, 1.0) / mass, rtol=1e-10)


def test_default_sigma_and_grid() -> None:
    nodes = np.array([[-1.0, 0.5, np.nan], [3.0, 2.0, 1.0]])
    sigma = default_sigma(nodes)
    assert sigma == pytest.approx(DEFAULT_SIGMA_FRACTION * 4.0)
    grid = default_grid(nodes, sigma, 101)
    assert grid.shape == (101,)
    assert grid[0] == pytest.approx(-1.0 - 5 * sigma) and grid[-1] == pytest.approx(3.0 + 5 * sigma)
    # Degenerate widths still give sigma > 0.
    assert default_sigma(np.array([2.0, 2.0])) == pytest.approx(DEFAULT_SIGMA_FRACTION * 2.0)
    assert default_sigma(np.array([0.0])) == pytest.approx(DEFAULT_SIGMA_FRACTION)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gaussian_broadening([0.0], [1.0], np.linspace(0, 1, 5), 0.0), "sigma"),
        (lambda: gaussian_broadening([0.0], [1.0], np.array([0.0, 1.0, 0.5]), 1.0), "increasing"),
        (lambda: gaussian_broadening([0.0, 1.0], [1.0], np.linspace(0, 1, 5), 1.0), "same shape"),
        (lambda: gaussian_broadening([50.0], [1.0], np.linspace(0, 1, 5), 0.01), "widen"),
        (lambda: default_grid([0.0, 1.0], 0.1, 1), "num_points"),
        (lambda: default_sigma([np.nan]), "finite"),
        (lambda: slq_density(torch.eye(3), runs=0), "runs"),
        (lambda: slq_density(torch.eye(3), steps=0), "steps"),
    ],
)
def test_invalid_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Wasserstein-1


def test_wasserstein1_closed_forms() -> None:
    # Uniform density on [0, 1] vs a point mass at 0.5: int |x - 0.5| dx = 1/4.
    grid = np.linspace(0.0, 1.0, 1001)
    assert wasserstein1(grid, np.ones_like(grid), np.array([0.5])) == pytest.approx(0.25, abs=1e-9)
    # ... vs a point mass at 3 (outside the grid): E|X - 3| = 2.5.
    assert wasserstein1(grid, np.ones_like(grid), np.array([3.0])) == pytest.approx(2.5, abs=1e-9)
    # N(0, s^2) vs a point mass at 0: E|Z| s = s sqrt(2/pi).
    s = 0.3
    g = np.linspace(-10 * s, 10 * s, 20001)
    w = wasserstein1(g, scipy.stats.norm.pdf(g, scale=s), np.array([0.0]))
    assert w == pytest.approx(s * math.sqrt(2 / math.pi), rel=1e-6)


def test_wasserstein1_matches_scipy_for_discretised_density() -> None:
    rng = np.random.default_rng(0)
    grid = np.linspace(-2.0, 3.0, 2001)
    values = np.exp(-((grid - 0.5) ** 2)) * (1 + 0.5 * np.sin(3 * grid))
    eig = rng.normal(0.3, 0.8, size=300)
    ours = wasserstein1(grid, values, eig)
    # Reference: the density as point masses at the grid points with trapezoid weights.
    h = np.diff(grid)
    mass = np.zeros_like(grid)
    mass[:-1] += values[:-1] * h / 2
    mass[1:] += values[1:] * h / 2
    ref = scipy.stats.wasserstein_distance(grid, eig, u_weights=mass)
    assert ours == pytest.approx(ref, abs=5e-3 * 1.0)  # discretisation error ~ grid spacing
    assert wasserstein1(grid, values, eig) >= 0.0


# ---------------------------------------------------------------------------------------------
# SLQ accuracy and structure


@pytest.mark.parametrize(
    ("n", "kind", "seed"), [(2000, "nn", 0), (2000, "powerlaw", 1), (1000, "nn", 2)]
)
def test_slq_density_w1_budget_on_nn_like_spectra(n: int, kind: str, seed: int) -> None:
    lam, A = nn_like_matrix(n, kind=kind)
    res = slq_density(A, seed=seed)  # defaults: the size of `landscape spectrum`'s density
    assert res.nodes.shape == (DEFAULT_RUNS, DEFAULT_STEPS) == (3, 30)
    assert res.matvecs == 90 and res.shared_runs == 0
    dens = res.density()
    assert trapezoid(dens.values, dens.grid) == pytest.approx(1.0, abs=1e-10)
    assert np.all(dens.values >= 0)
    width = lam[-1] - lam[0]
    w1 = wasserstein1(dens.grid, dens.values, lam)
    # Project budget. Measured ~0.002-0.004 (10 x 80 and 3 x 30 alike): mostly the broadening
    # (<= 0.8 sigma = 0.004 width).
    assert w1 <= 0.03 * width
    # The quadrature nodes are Ritz values: inside [lambda_min, lambda_max] (rounding aside).
    assert np.nanmin(res.nodes) >= lam[0] - 1e-10 * width
    assert np.nanmax(res.nodes) <= lam[-1] + 1e-10 * width
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)


def test_slq_w1_fails_for_a_wrong_spectrum() -> None:
    # Sanity check that the W1 test has teeth: the density of one matrix is far from the spectrum
    # of another with the same width but different shape.
    lam, A = nn_like_matrix(1000)
    other = np.linspace(lam[0], lam[-1], 1000)
    dens = slq_density(A, runs=4, steps=40).density()
    assert wasserstein1(dens.grid, dens.values, other) > 0.1 * (lam[-1] - lam[0])


def test_slq_moments_equal_probe_quadratic_forms() -> None:
    # Gauss quadrature is exact for degree <= 2m - 1: sum_i w_i theta_i^k = z^T A^k z / n for the
    # Rademacher probe z of each run (||z||^2 = n). The probes are regenerated from the documented
    # scheme: Rademacher vectors drawn in sequence from torch.Generator().manual_seed(seed).
    n, steps, runs = 300, 6, 3
    lam = np.random.default_rng(4).uniform(-1.0, 1.0, n)
    A = planted(lam, seed=41)
    res = slq_density(A, runs=runs, steps=steps, seed=9)
    gen = torch.Generator().manual_seed(9)
    for r in range(runs):
        z = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0
        x = z.clone()
        for k in range(2 * steps):
            exact = float(z @ x) / n
            quad = float(np.sum(res.weights[r] * res.nodes[r] ** k))
            assert quad == pytest.approx(exact, abs=1e-12), (r, k)
            x = A @ x
    # The first moment is the Hutchinson sample of the same probe: n * mean(first moments) is the
    # Hutchinson estimate with the same seed and number of probes.
    hutch = hutchinson_trace(A, runs, seed=9)
    first = n * np.sum(res.weights * res.nodes, axis=1)
    np.testing.assert_allclose(first, hutch.samples, rtol=1e-10, atol=1e-10)


def test_slq_breakdown_pads_with_nan() -> None:
    # Three distinct eigenvalues with multiplicity 100, as a diagonal matrix whose products are
    # exact: every run breaks down after 3 steps (a residual below one unit of rounding) with the
    # exact eigenvalues as nodes; the weights are ||P_k z||^2 / n = 1/3 each.
    lam = np.repeat([-2.0, 0.5, 7.0], 100)
    A = torch.diag(torch.as_tensor(lam))
    res = slq_density(A, runs=4, steps=10, seed=0)
    assert res.nodes.shape == (4, 10) and res.matvecs == 12
    np.testing.assert_allclose(res.nodes[:, :3], np.tile([-2.0, 0.5, 7.0], (4, 1)), atol=1e-11)
    assert np.all(np.isnan(res.nodes[:, 3:])) and np.all(res.weights[:, 3:] == 0)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.weights[:, :3].mean(axis=0), 1 / 3, atol=0.1)
    dens = res.density()
    assert np.all(np.isfinite(dens.values))
    assert trapezoid(dens.values, dens.grid) == pytest.approx(1.0, abs=1e-10)
    assert wasserstein1(dens.grid, dens.values, lam) <= 0.03 * 9.0


def test_slq_steps_clamped_to_n_gives_exact_nodes() -> None:
    lam = np.array([-1.0, 0.0, 2.0, 3.5, 4.0])
    A = planted(lam, seed=43)
    res = slq_density(A, runs=2, steps=50)
    assert res.nodes.shape == (2, 5) and res.matvecs == 10
    np.testing.assert_allclose(res.nodes, np.tile(lam, (2, 1)), atol=1e-12)


def test_slq_reproducible_and_progress() -> None:
    _, A = nn_like_matrix(1000)
    calls: list[tuple[int, int]] = []
    a = slq_density(A, runs=3, steps=20, seed=5, progress=lambda d, t: calls.append((d, t)))
    b = slq_density(A, runs=3, steps=20, seed=5)
    np.testing.assert_array_equal(a.nodes, b.nodes)
    np.testing.assert_array_equal(a.weights, b.weights)
    c = slq_density(A, runs=3, steps=20, seed=6)
    assert not np.array_equal(a.nodes, c.nodes)
    # Runs use independent probes: their nodes differ.
    assert not np.array_equal(a.nodes[0], a.nodes[1])
    done = [d for d, _ in calls]  # one call per lockstep block product
    assert done == sorted(done) and done[-1] == 60 and all(t == 60 for _, t in calls)


def test_slq_lockstep_blocks_equal_one_run_at_a_time() -> None:
    """Advancing the runs together (one (n, b) block product per step) changes nothing but the
    rounding of the products: same probes, same nodes and weights to 1e-10 (float64), and a run
    that breaks down early (rank-5 operator) leaves the others running."""
    _, A = nn_like_matrix(400)
    one = slq_density(A, runs=4, steps=30, seed=2, block_size=1)
    for block in (2, 4, None):
        other = slq_density(A, runs=4, steps=30, seed=2, block_size=block)
        np.testing.assert_allclose(other.nodes, one.nodes, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(other.weights, one.weights, rtol=1e-10, atol=1e-12)
        assert other.matvecs == one.matvecs == 120
    gen = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(60, 5, generator=gen, dtype=torch.float64))[0]
    low = U @ torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)) @ U.T
    res = slq_density(low, runs=3, steps=20, seed=1, block_size=3)
    lengths = np.isfinite(res.nodes).sum(axis=1)  # Krylov dimension 6 (5 eigenvalues + 0), and
    assert np.all((lengths >= 6) & (lengths <= 8))  # breakdown is detected within 2 more steps
    assert res.matvecs == int(lengths.sum())
    finite = res.nodes[np.isfinite(res.nodes)]
    assert np.all(np.min(np.abs(finite[:, None] - np.arange(0.0, 6.0)), axis=1) < 1e-8)
    with pytest.raises(ValueError, match="block_size"):
        slq_density(A, runs=2, steps=5, block_size=0)


def test_density_options_and_to_dict() -> None:
    _, A = nn_like_matrix(1000)
    res = slq_density(A, runs=2, steps=20)
    grid = np.linspace(-1.0, 45.0, 300)
    dens = res.density(sigma=0.5, grid=grid)
    assert isinstance(dens, SpectralDensity)
    np.testing.assert_array_equal(dens.grid, grid)
    assert dens.sigma == 0.5
    np.testing.assert_allclose(dens.values, gaussian_broadening(res.nodes, res.weights, grid, 0.5))
    assert res.density(grid=50).grid.shape == (50,)
    d = dens.to_dict()
    assert set(d) == {"grid", "values", "sigma"}
    assert len(d["grid"]) == len(d["values"]) == 300
    assert all(isinstance(x, float) for x in d["values"][:5])
    assert isinstance(res, SLQResult)


# ---------------------------------------------------------------------------------------------
# runs made elsewhere (the extremes' Lanczos run counted as an SLQ run)


def test_shared_run_equals_an_own_run_from_the_same_probe() -> None:
    # A Lanczos run handed in from outside gives the nodes and weights slq_density computes itself
    # from the same start vector (regenerated from the documented scheme). Both are the same
    # recurrence on the same dense matrix, so they agree to rounding: 1e-12 of ||A|| = 40.
    lam, A = nn_like_matrix(600)
    n, steps, seed = 600, 25, 3
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0
    run = lanczos(A, start=z, tol=None, max_iter=steps)
    own = slq_density(A, runs=1, steps=steps, seed=seed)
    shared = slq_density(A, runs=0, steps=steps, lanczos_runs=[run])
    pair = slq_density(A, runs=0, steps=1, lanczos_runs=[(run.alphas, run.betas[:-1])])
    assert (own.shared_runs, shared.shared_runs, shared.matvecs, own.matvecs) == (0, 1, 0, steps)
    for res in (shared, pair):
        assert res.nodes.shape == (1, steps)
        np.testing.assert_allclose(res.nodes, own.nodes, rtol=0, atol=1e-12 * lam[-1])
        np.testing.assert_allclose(res.weights, own.weights, rtol=0, atol=1e-12)
    # without own runs, ``steps`` does not widen the table: a 25-step shared run with steps=40
    # has 25 node columns, not 15 columns of NaN padding
    wide = slq_density(A, runs=0, steps=40, lanczos_runs=[run])
    assert wide.nodes.shape == (1, steps) and not np.isnan(wide.nodes).any()


def test_stopped_extremes_run_is_the_quadrature_of_its_gaussian_start() -> None:
    # The extremes' run (stopped by its convergence test after m steps, Gaussian start from the
    # seed as lanczos documents) equals an m-step fixed-length run from the same start vector, and
    # sits in row 0, padded, before the own runs, which are unchanged by its presence.
    lam, A = nn_like_matrix(600)
    n = 600
    extremes = lanczos(A, seed=11, tol=1e-4, top_k=5, bottom_k=1, max_iter=200)
    m = extremes.steps
    assert extremes.converged and 10 <= m < 40
    start = torch.randn(n, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    fixed = lanczos(A, start=start, tol=None, max_iter=m)
    res = slq_density(A, runs=2, steps=50, seed=5, lanczos_runs=[extremes])
    alone = slq_density(A, runs=2, steps=50, seed=5)
    assert res.nodes.shape == (3, 50) and res.matvecs == alone.matvecs == 100
    assert res.shared_runs == 1 and res.runs == 3
    np.testing.assert_array_equal(res.run_steps, [m, 50, 50])
    np.testing.assert_allclose(res.nodes[0, :m], fixed.ritz_values, rtol=0, atol=1e-12 * lam[-1])
    np.testing.assert_allclose(res.weights[0, :m], fixed.first_components**2, atol=1e-12)
    assert np.all(np.isnan(res.nodes[0, m:])) and np.all(res.weights[0, m:] == 0)
    np.testing.assert_array_equal(res.nodes[1:], alone.nodes)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    # every run counts once in the broadened density
    grid = np.linspace(lam[0] - 1.0, lam[-1] + 1.0, 400)
    keep = np.isfinite(res.nodes)
    theta, w = res.nodes[keep], res.weights[keep] / 3.0  # weight 1/3 per run, padding skipped
    expected = sum(wi * cell_average_pdf(grid, ti, 0.3) for ti, wi in zip(theta, w, strict=True))
    got = res.density(sigma=0.3, grid=grid).values
    np.testing.assert_allclose(got, expected / trapezoid(expected, grid), rtol=1e-10, atol=1e-14)


def test_gaussian_start_gives_unbiased_quadrature_moments() -> None:
    # lanczos' default start (a Gaussian, normalised: uniform on the sphere) is isotropic, so
    # each quadrature's moments sum_i w_i theta_i^k are unbiased for tr(A^k) / n (exact for
    # k <= 2m - 1). Over 400 seeds the means must be within 4 standard errors of tr(A^k) / n:
    # a start vector concentrated on some eigenvectors (e.g. a unit vector) fails this.
    n = 60
    lam = np.linspace(-1.0, 3.0, n) ** 3
    A = planted(lam, seed=44)
    moments = np.array(
        [
            [np.sum(lanczos_quadrature(r.alphas, r.betas)[1] * r.ritz_values**k) for k in (1, 2, 3)]
            for r in (lanczos(A, seed=s, tol=None, max_iter=2) for s in range(400))
        ]
    )
    exact = np.array([np.mean(lam**k) for k in (1, 2, 3)])
    stderr = moments.std(axis=0, ddof=1) / math.sqrt(moments.shape[0])
    assert np.all(np.abs(moments.mean(axis=0) - exact) <= 4.0 * stderr)


def test_lanczos_quadrature_and_shared_run_validation() -> None:
    nodes, weights = lanczos_quadrature(np.array([1.0, 5.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(nodes, [1.0, 5.0])
    np.testing.assert_allclose(weights, [1.0, 0.0])
    with pytest.raises(ValueError, match="m >= 1 alphas"):
        lanczos_quadrature(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="finite"):
        lanczos_quadrature(np.array([1.0, np.nan]), np.array([1.0]))
    _, A = nn_like_matrix(400)
    with pytest.raises(ValueError, match="runs must be an integer >= 1"):
        slq_density(A, runs=0, steps=5)
    with pytest.raises(ValueError, match=r"lanczos_runs\[0\]"):
        slq_density(A, runs=1, steps=5, lanczos_runs=[object()])
