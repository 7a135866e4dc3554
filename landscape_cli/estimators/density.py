"""Spectral density by stochastic Lanczos quadrature (SLQ) with Gaussian broadening.

The spectral density of a symmetric ``n x n`` operator ``A`` with eigenpairs ``(lambda_k, u_k)`` is
``phi(t) = (1/n) sum_k delta(t - lambda_k)``. For a probe ``v`` with ``E[v v^T] = I``,
``(1/n) v^T f(A) v = sum_k (u_k^T v)^2 / n * f(lambda_k)`` is an unbiased estimate of
``int f dphi``; ``m`` Lanczos steps started at ``v / ||v||`` turn that sum into the
``m``-node Gauss quadrature ``sum_i tau_i^2 f(theta_i)`` (Golub & Meurant, *Matrices, Moments and
Quadrature*), where ``theta_i`` are the Ritz values and ``tau_i`` the first components of the
eigenvectors of ``T_m``; it is exact for polynomials ``f`` of degree ``<= 2m - 1``. Averaging over
independent probes gives stochastic Lanczos quadrature (Lin, Saad & Yang, "Approximating spectral
densities of large matrices", SIAM Review 58, 2016; Ghorbani, Krishnan & Xiao, "An investigation
into neural net optimization via Hessian eigenvalue density", ICML 2019):

    phi(t) ~ (1/R) sum_r sum_i tau_{r,i}^2 g_sigma(t - theta_{r,i}),   g_sigma = N(0, sigma^2) pdf.

Probes are Rademacher vectors, so ``||v||^2 = n`` exactly and the weights of each run sum to 1.

**Runs made elsewhere.** Any Lanczos run whose start vector ``q`` is isotropic (``E[q q^T]`` a
multiple of ``I``: a normalised Rademacher or Gaussian vector, i.e. ``q`` uniform on the sphere)
is an SLQ run: ``E[(u_k^T q)^2] = 1 / n`` for every eigenvector, so its quadrature is an equally
unbiased node set. ``slq_density(..., lanczos_runs=[...])`` adds such runs, given by their
``(alphas, betas)`` (e.g. the extremes' run of :func:`~landscape_cli.estimators.lanczos.lanczos`, started
from a Gaussian vector), to its own, with equal weight per run; their products were paid for by
whoever made them and are not counted in ``matvecs`` (``SLQResult.shared_runs`` says how many rows
are such runs). A run stopped early (by a convergence test) is a shorter quadrature, exact for
polynomials of degree ``2m - 1`` for its own ``m``; since every run makes at least
``min_iter`` steps before such a test may fire, low moments stay unbiased.

Example:
    >>> import torch
    >>> A = torch.diag(torch.linspace(-1.0, 1.0, 400, dtype=torch.float64))
    >>> res = slq_density(A, runs=4, steps=30, seed=0)
    >>> dens = res.density()
    >>> res.nodes.shape, res.matvecs, dens.values.shape, dens.sigma == default_sigma(res.nodes)
    ((4, 30), 120, (1000,), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import InputError
from ..linear_operator import OperatorLike
from .lanczos_process import LanczosProcess, checked_product
from .ritz import tridiagonal_eigh

#: Memory the lockstep SLQ runs' Lanczos bases may take together (bytes), when ``block_size`` is
#: not given: 10 runs of 80 steps for models up to ~3M float32 parameters.
BLOCK_MEMORY = 1 << 30

#: Default size of :func:`slq_density`: 3 runs of 30 steps, the quadrature of ``landscape
#: spectrum``'s default density (``SpectrumSettings``: ``slq_runs = 2`` runs of ``slq_steps = 30``
#: plus the extremes' Lanczos run, which has ~20-40 steps), so a library call without a shared
#: run gets a density of the size the CLI reports (``benchmarks/shared_budget.py`` measures both
#: against exact spectra and against one 100-step run, PyHessian's ``density()``).
DEFAULT_RUNS = 3
DEFAULT_STEPS = 30


@runtime_checkable
class LanczosCoefficients(Protocol):
    """The coefficients of a Lanczos run: a :class:`~landscape_cli.estimators.lanczos.LanczosResult`
    has them."""

    @property
    def alphas(self) -> np.ndarray: ...

    @property
    def betas(self) -> np.ndarray: ...


#: A Lanczos run made elsewhere that :func:`slq_density` reuses: its result, or its
#: ``(alphas, betas)`` pair.
SharedRun = LanczosCoefficients | tuple[np.ndarray, np.ndarray]

__all__ = [
    "DEFAULT_RUNS",
    "DEFAULT_SIGMA_FRACTION",
    "DEFAULT_STEPS",
    "SLQResult",
    "SpectralDensity",
    "default_grid",
    "default_sigma",
    "gaussian_broadening",
    "lanczos_quadrature",
    "probe_error_bound",
    "rebroaden",
    "runs_for_probe_error",
    "slq_density",
    "wasserstein1",
]

#: Default broadening as a fraction of the spectral width, see :func:`default_sigma`.
DEFAULT_SIGMA_FRACTION = 0.005


def probe_error_bound(n: int, runs: int) -> float:
    """A bound on the standard error, from the random probes, of the mass SLQ gives any interval.

    For a probe ``q`` uniform on the unit sphere (a normalised Gaussian) and ``f`` the indicator
    of an interval, ``q^T f(A) q`` is unbiased for ``φ(f)``, the interval's share of the ``n``
    eigenvalues, with variance ``2 Var_φ(f) / (n + 2)``; for a normalised Rademacher probe the
    variance is ``2 (‖B‖_F² − Σ_i B_ii²) / n² ≤ 2 Var_φ(f) / n`` with ``B = f(A) − φ(f) I``
    (Hutchinson 1989; Avron & Toledo 2011). ``Var_φ(f) = φ(f)(1 − φ(f)) ≤ 1/4``, so the mean of
    ``runs`` independent probes has standard error at most ``sqrt(1 / (2 n runs))``. It bounds
    the sampling part of the density's error only; the quadrature of ``steps`` nodes and the
    broadening are deterministic given the probes.
    """
    return math.sqrt(1.0 / (2.0 * n * max(runs, 1)))


def runs_for_probe_error(n: int, target: float, most: int) -> int:
    """The fewest runs, between 1 and ``most``, whose :func:`probe_error_bound` is at most
    ``target`` (``most`` when none is, or when ``target`` is 0)."""
    if target <= 0:
        return most
    return max(1, min(most, math.ceil(1.0 / (2.0 * n * target * target))))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density sampled on a grid; ``values`` integrate to 1 (trapezoid rule)."""

    grid: np.ndarray
    values: np.ndarray
    sigma: float

    def to_dict(self) -> dict[str, Any]:
        """``{"grid": [...], "values": [...], "sigma": ...}`` with plain Python floats."""
        return {
            "grid": [float(x) for x in self.grid],
            "values": [float(x) for x in self.values],
            "sigma": float(self.sigma),
        }


@dataclass(frozen=True)
class SLQResult:
    """Gauss quadrature nodes and weights of every SLQ run.

    Attributes:
        nodes: ``(runs, steps)`` Ritz values of each run, ascending within a row. A run with
            ``j < steps`` nodes (it broke down early: the probe's Krylov space became invariant,
            so its ``j`` nodes are exact; or it is a shared run that stopped at convergence) is
            padded with NaN in columns ``j:``.
        weights: ``(runs, steps)`` squared first components ``tau_i^2``; each row sums to 1;
            0 where padded.
        matvecs: matrix-vector products spent by :func:`slq_density` itself (one per Lanczos
            step over its own runs; shared runs are not counted).
        shared_runs: the first ``shared_runs`` rows are runs made elsewhere (``lanczos_runs`` of
            :func:`slq_density`, e.g. the extremes' Lanczos run of ``landscape spectrum``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    matvecs: int
    shared_runs: int = 0

    @property
    def runs(self) -> int:
        """Number of quadrature runs (rows), shared ones included."""
        return int(self.nodes.shape[0])

    @property
    def run_steps(self) -> np.ndarray:
        """``(runs,)`` Lanczos steps (= nodes) of each run: the non-padded entries of its row."""
        return np.isfinite(np.asarray(self.nodes, dtype=np.float64)).sum(axis=1).astype(np.int64)

    @property
    def complete_runs(self) -> np.ndarray:
        """``(runs,)`` whether each run's rule is exact: an own run shorter than the others broke
        down, its probe's Krylov space being invariant (a shared run may be shorter because its
        convergence test stopped it, so it is never marked)."""
        complete = self.run_steps < self.nodes.shape[1]
        complete[: self.shared_runs] = False
        return complete

    def density(self, sigma: float | None = None, grid: np.ndarray | int = 1000) -> SpectralDensity:
        """Broadened density: ``sigma`` defaults to :func:`default_sigma`; ``grid`` is an array of
        increasing points or a number of points for :func:`default_grid`."""
        if sigma is None:
            sigma = default_sigma(self.nodes)
        if isinstance(grid, int | np.integer):
            grid_arr = default_grid(self.nodes, sigma, int(grid))
        else:
            grid_arr = np.asarray(grid, dtype=np.float64)
        values = gaussian_broadening(self.nodes, self.weights, grid_arr, sigma)
        return SpectralDensity(grid=grid_arr, values=values, sigma=float(sigma))


def rebroaden(
    slq: SLQResult | None, sigma: float | None = None, grid_points: int = 1000
) -> SpectralDensity:
    """The SLQ density with another Gaussian width ``sigma`` (default: :func:`default_sigma`) on
    ``grid_points`` points, from stored nodes and weights (no matrix-vector product):
    ``φ(t) ≈ (1/R) Σ_r Σ_i τ²_{r,i} N(t; θ_{r,i}, σ²)`` (Lin, Saad & Yang 2016).

    Raises:
        InputError: ``slq`` is ``None`` (the density was switched off).
        ValueError: ``sigma <= 0`` or ``grid_points < 2``.
    """
    if slq is None:
        raise InputError(
            "no SLQ nodes and weights to re-broaden (the density was switched off)",
            hint="run spectrum with the density on",
        )
    return slq.density(sigma=sigma, grid=int(grid_points))


def _finite_nodes(nodes: np.ndarray) -> np.ndarray:
    arr = np.asarray(nodes, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("nodes contain no finite value")
    return arr


def default_sigma(nodes: np.ndarray) -> float:
    """Default Gaussian width: ``0.005 * (max(nodes) - min(nodes))`` (NaN padding ignored).

    Justification. Convolving a distribution with ``N(0, sigma^2)`` moves it by at most
    ``E|Z| sigma = sqrt(2/pi) sigma ~ 0.8 sigma`` in Wasserstein-1 distance, so this choice costs at
    most ``0.004`` of the spectral width, a seventh of the ``0.03`` W1 budget the SLQ density must
    meet; the rest is left for the quadrature and sampling error of SLQ. With the default grid of
    1000 points over ``width + 10 sigma`` a Gaussian of this width spans about five grid spacings,
    enough for the trapezoid rule to integrate it to ~1e-10 and for the curve to look smooth; a
    narrower peak would alias on the grid, a wider one would smear the bulk of a Hessian spectrum
    (which is typically a few percent of the width set by the outliers).

    If all nodes coincide (e.g. a multiple of the identity), the width is taken as ``max|node|``,
    and as 1 for the zero operator, so ``sigma > 0`` always.
    """
    arr = _finite_nodes(nodes)
    width = float(arr.max() - arr.min())
    magnitude = float(np.abs(arr).max())
    if width <= 1e-12 * magnitude or width == 0.0:
        width = magnitude if magnitude > 0.0 else 1.0
    return DEFAULT_SIGMA_FRACTION * width


def default_grid(nodes: np.ndarray, sigma: float, num_points: int = 1000) -> np.ndarray:
    """``num_points`` equispaced points on ``[min(nodes) - 5 sigma, max(nodes) + 5 sigma]``."""
    if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer):
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}")
    if num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    arr = _finite_nodes(nodes)
    return np.linspace(arr.min() - 5.0 * sigma, arr.max() + 5.0 * sigma, int(num_points))


def gaussian_broadening(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """Average over runs of ``sum_i w_i N(t; theta_i, sigma^2)`` on ``grid``, normalised to 1.

    Each grid value is the kernel's *average over the grid point's cell* (from the midpoints to
    its neighbours; half cells at the ends), ``[Φ((b−θ)/σ) − Φ((a−θ)/σ)] / (b − a)``, not its
    value at the point: the trapezoid integral of the result is then exactly the mass inside the
    grid, whatever ``sigma`` is against the spacing. (Sampling the kernel at the points loses the
    mass of a node between two points when ``sigma`` is below the spacing, and the normalisation
    then hands it to nodes that happen to sit on points: two equal clusters come out as 0.1 % and
    99.9 %.) For ``sigma`` several spacings wide the two agree to ``O(h²/σ²)``.

    Args:
        nodes: ``(steps,)`` or ``(runs, steps)`` node positions; NaN entries (padding) are skipped.
        weights: same shape as ``nodes``.
        grid: increasing points, at least 2.
        sigma: standard deviation of the Gaussian kernel, ``> 0``.

    Returns:
        Density values on ``grid``, divided by their trapezoid integral so that they integrate to
        1 over the grid (this absorbs the mass of tails cut off by a narrow grid).
    """
    nodes_arr = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights_arr = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if nodes_arr.shape != weights_arr.shape:
        raise ValueError(
            f"nodes and weights must have the same shape, got {nodes_arr.shape} and "
            f"{weights_arr.shape}"
        )
    grid_arr = np.asarray(grid, dtype=np.float64)
    if grid_arr.ndim != 1 or grid_arr.size < 2 or not np.all(np.diff(grid_arr) > 0):
        raise ValueError(
            f"grid must be a 1-D increasing array of at least 2 points, got shape {grid_arr.shape}"
        )
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    runs = nodes_arr.shape[0]
    keep = np.isfinite(nodes_arr) & (weights_arr != 0)
    theta = nodes_arr[keep]
    w = weights_arr[keep] / runs
    if theta.size == 0:
        raise ValueError("nodes contain no finite value with non-zero weight")
    middle = (grid_arr[1:] + grid_arr[:-1]) / 2
    edges = torch.from_numpy(np.concatenate([grid_arr[:1], middle, grid_arr[-1:]]))
    widths = np.diff(edges.numpy())
    values = np.zeros_like(grid_arr)
    chunk = max(1, 4_000_000 // edges.numel())
    for lo in range(0, theta.size, chunk):
        centre = torch.from_numpy(theta[lo : lo + chunk, None])
        cdf = torch.special.ndtr((edges[None, :] - centre) / sigma).numpy()
        values += (w[lo : lo + chunk, None] * np.diff(cdf, axis=1)).sum(axis=0)
    values = values / widths
    total = _trapezoid(values, grid_arr)
    if not total > 0:
        raise ValueError(
            f"the density vanishes on the grid [{grid_arr[0]}, {grid_arr[-1]}] "
            f"(nodes lie in [{theta.min()}, {theta.max()}], sigma={sigma}); widen the grid"
        )
    return values / total


def wasserstein1(grid: np.ndarray, values: np.ndarray, eigenvalues: np.ndarray) -> float:
    """Wasserstein-1 distance ``int |F(t) - G(t)| dt`` between a density and a point set.

    ``F`` is the CDF of the density sampled on ``grid`` (cumulative trapezoid, rescaled to end at
    1; 0 left of the grid, 1 right of it, linear between grid points); ``G`` is the empirical CDF
    of ``eigenvalues`` (each with mass ``1/n``). On the merged sorted breakpoints ``G`` is constant
    and ``F`` linear on every piece, so the integral of ``|F - G|`` is evaluated exactly piecewise.
    """
    x = np.asarray(grid, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).reshape(-1))
    if x.ndim != 1 or x.size < 2 or y.shape != x.shape or not np.all(np.diff(x) > 0):
        raise ValueError(
            f"grid must be 1-D increasing with values of the same shape, got {x.shape}, {y.shape}"
        )
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be a non-empty array of finite numbers")
    cdf = np.concatenate([[0.0], np.cumsum((y[1:] + y[:-1]) * np.diff(x) / 2.0)])
    if not cdf[-1] > 0:
        raise ValueError("values must have a positive integral over the grid")
    cdf /= cdf[-1]

    pts = np.unique(np.concatenate([x, lam]))
    F = np.interp(pts, x, cdf, left=0.0, right=1.0)
    G = np.searchsorted(lam, pts, side="right") / lam.size  # G on [pts[k], pts[k+1])
    a = F[:-1] - G[:-1]
    b = F[1:] - G[:-1]
    h = np.diff(pts)
    same_sign = a * b >= 0
    abs_sum = np.abs(a) + np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(abs_sum > 0, (a * a + b * b) / (2.0 * abs_sum), 0.0)
    pieces = np.where(same_sign, abs_sum / 2.0, crossing) * h
    return float(pieces.sum())


def lanczos_quadrature(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature nodes and weights of one Lanczos run from its coefficients.

    With ``T_m = tridiag(betas[:m-1], alphas, betas[:m-1]) = S diag(theta) S^T``, the nodes are
    the Ritz values ``theta`` (ascending) and the weights the squared first components
    ``S[0, i]^2`` (Golub & Meurant 2010); they sum to 1. ``betas`` may have length ``m`` (as in
    :class:`~landscape_cli.estimators.lanczos.LanczosResult`, whose last entry is the final residual norm,
    not part of ``T_m``) or ``m - 1``.

    Example:
        >>> nodes, weights = lanczos_quadrature(np.array([2.0, 2.0]), np.array([1.0]))
        >>> nodes.round(12).tolist(), weights.round(12).tolist()
        ([1.0, 3.0], [0.5, 0.5])
    """
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    m = a.shape[0]
    if m == 0 or b.shape[0] not in (m, m - 1):
        raise ValueError(
            f"a Lanczos run needs m >= 1 alphas and m or m - 1 betas, got {m} and {b.shape[0]}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("the Lanczos coefficients must be finite")
    theta, S = tridiagonal_eigh(a, b[: m - 1])
    return theta, S[0, :] ** 2


def _shared_quadratures(lanczos_runs: Sequence[SharedRun]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, run in enumerate(lanczos_runs):
        if isinstance(run, LanczosCoefficients):  # has alphas and betas
            alphas, betas = run.alphas, run.betas
        else:
            try:
                alphas, betas = run
            except (TypeError, ValueError):
                raise ValueError(
                    f"lanczos_runs[{i}] must be a LanczosResult or an (alphas, betas) pair, "
                    f"got {type(run).__name__}"
                ) from None
        out.append(lanczos_quadrature(alphas, betas))
    return out


def slq_density(
    A: OperatorLike,
    *,
    runs: int = DEFAULT_RUNS,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    block_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    lanczos_runs: Sequence[SharedRun] = (),
) -> SLQResult:
    """Stochastic Lanczos quadrature: ``runs`` Lanczos runs of ``steps`` steps from Rademacher
    probes (Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019).

    The runs are independent recurrences advanced in lockstep, ``block_size`` at a time: each
    step multiplies their current Lanczos vectors as one ``(n, b)`` block, which a Hessian
    operator evaluates with one pass over the data in streaming mode, one all-reduce under
    ``torchrun``, or one batched backward (the numbers equal those of one run at a time, up to
    the operator's rounding). Memory: ``b · steps · n`` basis entries.

    Args:
        A: symmetric operator (``.shape``, ``.dtype``, ``.device``, ``A @ v``).
        runs: number of independent probes ``R >= 1`` (default :data:`DEFAULT_RUNS`).
        steps: Lanczos steps per run ``m >= 1`` (clamped to ``n``; default
            :data:`DEFAULT_STEPS`); the quadrature is exact for polynomials of degree ``2m - 1``.
        seed: the probes are drawn in sequence from ``torch.Generator().manual_seed(seed)`` on the
            CPU in float64, so runs are independent of each other and reproducible.
        block_size: runs advanced together; ``None``: as many as keep their bases within
            :data:`BLOCK_MEMORY` bytes (at least one).
        progress: ``progress(done_steps, runs * steps)``.
        lanczos_runs: runs already made from isotropic start vectors (see the module docstring),
            each a :class:`~landscape_cli.estimators.lanczos.LanczosResult` or an ``(alphas, betas)`` pair;
            they become the first rows of the result, weighted like the others, and cost no
            products here. With at least one of them, ``runs`` may be 0.

    Returns:
        :class:`SLQResult` (nodes padded with NaN, weights with 0, for runs that broke down early
        because the probe's Krylov space was invariant: those nodes are exact; and for shared
        runs shorter than ``steps``); ``.density()`` broadens it.
    """
    shared = _shared_quadratures(lanczos_runs)
    for name, value, minimum in (("runs", runs, 0 if shared else 1), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"the operator must have a square shape (n, n) with n >= 1, got {shape}")
    n = int(shape[0])
    steps = min(int(steps), n)
    runs = int(runs)
    total = runs * steps
    if block_size is None:
        per_run = steps * n * torch.empty((), dtype=A.dtype).element_size()
        block_size = max(1, min(runs, BLOCK_MEMORY // max(per_run, 1)))
    elif isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
    gen = torch.Generator().manual_seed(int(seed))
    probes = [
        torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0
        for _ in range(runs)
    ]
    width = max(([steps] if runs else []) + [len(theta) for theta, _ in shared] or [1])
    nodes = np.full((len(shared) + runs, width), np.nan)
    weights = np.zeros((len(shared) + runs, width))
    for r, (theta, tau2) in enumerate(shared):
        nodes[r, : len(theta)] = theta
        weights[r, : len(theta)] = tau2
    own = len(shared)  # row of the first own run
    matvecs = 0
    for first in range(0, runs, block_size):
        group = [
            LanczosProcess(probe, A.dtype, A.device, steps)
            for probe in probes[first : first + block_size]
        ]
        while active := [p for p in group if not p.finished]:
            V = torch.stack([p.vector for p in active], dim=1)
            W = checked_product(A, V, f"at SLQ step {active[0].steps + 1}")
            for process, w in zip(active, W.unbind(dim=1), strict=True):
                process.advance(w)
            matvecs += len(active)
            if progress is not None:
                done = first * steps + sum(steps if p.finished else p.steps for p in group)
                progress(done, total)
        for r, process in enumerate(group, start=own + first):
            res = process.result()
            j = res.steps
            nodes[r, :j] = res.ritz_values
            weights[r, :j] = res.first_components**2
    return SLQResult(nodes=nodes, weights=weights, matvecs=matvecs, shared_runs=len(shared))
