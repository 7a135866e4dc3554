"""The fraction of eigenvalues below a threshold from SLQ quadratures, with its standard error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ritz import tridiagonal_eigh

__all__ = ["FractionEstimate", "fraction_below", "null_space_radau_rule", "run_fraction_below"]


@dataclass(frozen=True)
class FractionEstimate:
    """Mean over SLQ runs of each run's fraction, and its standard error.

    Attributes:
        estimate: the mean of ``per_run``.
        stderr: the sample standard deviation of ``per_run`` over ``sqrt(runs)``; ``None`` with
            one run (no spread to measure).
        runs: the number of runs averaged.
        per_run: each run's estimate.
    """

    estimate: float
    stderr: float | None
    runs: int
    per_run: np.ndarray


def _jacobi_matrix(nodes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, betas)`` of the Jacobi matrix whose Gauss rule is ``(nodes, weights)``: Lanczos
    on ``diag(nodes)`` from ``sqrt(weights)`` (the rule's own Lanczos process; Golub & Meurant,
    *Matrices, Moments and Quadrature with Applications*, 2010), reorthogonalised twice.
    ``betas[j]`` couples steps ``j`` and ``j + 1``; ``betas[-1]`` is the final residual norm (0
    for a complete rule). Stops early when the residual vanishes."""
    m = nodes.size
    basis = np.zeros((m, m))
    basis[:, 0] = np.sqrt(weights) / math.sqrt(float(weights.sum()))
    alphas, betas = [], []
    scale = float(np.abs(nodes).max()) or 1.0
    for j in range(m):
        z = nodes * basis[:, j]
        alphas.append(float(basis[:, j] @ z))
        for _ in range(2):
            z -= basis[:, : j + 1] @ (basis[:, : j + 1].T @ z)
        beta = float(np.linalg.norm(z))
        betas.append(beta)
        if j + 1 == m or beta <= 1e-13 * scale:
            break
        basis[:, j + 1] = z / beta
    return np.array(alphas), np.array(betas)


def null_space_radau_rule(nodes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss-Radau rule with the prescribed node 0 built from an ``m``-node Gauss rule.

    With ``T_k`` (``k = m - 1``) the Jacobi matrix of the first ``k`` Lanczos steps and
    ``beta_k`` the next off-diagonal (both recovered from the Gauss rule by
    :func:`_jacobi_matrix`), solve ``(T_k - 0·I) δ = beta_k² e_k`` and extend ``T_k`` by the row
    ``(beta_k e_kᵀ, δ_k)``: the extended matrix has the eigenvalue 0, and its eigenvalues and
    squared first eigenvector components are an ``m``-node rule with a node at 0, exact for
    polynomials of degree ``2k`` (Golub, "Some modified matrix eigenvalue problems", SIAM
    Review 15, 1973; Golub & Meurant 2010). Its weight at 0 is the Christoffel function
    ``min {∫ q² dμ : deg q ≤ k, q(0) = 1}``: the largest mass at 0 that the moments allow, so an
    exact null space is all at 0, together with whatever the ``k``-step polynomials cannot tell
    apart from 0.

    A rule of one node, or one whose Jacobi matrix ends early (a complete rule), is returned
    unchanged. Returns ``(nodes, weights)`` ascending.
    """
    alphas, betas = _jacobi_matrix(nodes, weights)
    k = alphas.size - 1
    if k < 1 or betas[k - 1] == 0.0 or alphas.size < nodes.size:
        return nodes, weights
    a, b = alphas[:k], betas[:k]
    T = np.diag(a) + np.diag(b[: k - 1], 1) + np.diag(b[: k - 1], -1)
    rhs = np.zeros(k)
    rhs[-1] = b[k - 1] ** 2
    scale = float(np.abs(nodes).max()) or 1.0
    try:
        delta = np.linalg.solve(T, rhs)
    except np.linalg.LinAlgError:  # 0 is a node of the k-step rule already
        delta = np.linalg.solve(T - 1e-12 * scale * np.eye(k), rhs)
    theta, S = tridiagonal_eigh(np.append(a, delta[-1]), b)
    return theta, S[0, :] ** 2


def run_fraction_below(
    nodes: np.ndarray, weights: np.ndarray, threshold: float, *, complete: bool = False
) -> float:
    """One run's estimate of ``μ((−∞, −t))``, ``t = threshold``, for its probe's measure ``μ``.

    The Gauss rule puts a node at a weighted centre of each group of eigenvalues it cannot
    resolve, so the count ``Σ_{θ_i < −t} w_i`` jumps by a whole group's mass when that centre
    crosses ``−t``: with a null space and a bulk near 0, one node carries half the spectrum and
    lands on either side of a threshold far below the node spacing. Instead:

    1. The rule becomes the Gauss-Radau rule with the prescribed node 0
       (:func:`null_space_radau_rule`): the null space, with whatever the quadrature cannot tell
       from 0, is at 0 and not negative.
    2. The other ("free") nodes' masses are spread over cells: below 0 the distribution function
       ``F`` is interpolated linearly through ``(θ_i, Σ_{θ_j < θ_i} w_j + w_i/2)`` (half of a
       node's mass below it, half above; 0 half a node gap below the lowest node) and evaluated
       at ``−t``. From the last negative node ``θ_-`` to ``0⁻`` it rises by ``w_-/2`` (the rest
       of ``θ_-``'s mass) plus the part of the weight ``w_0`` at 0 that is the continuous density
       left of 0: at a point of a smooth density the Christoffel function, which ``w_0`` is, is
       about the density times the local node spacing (Máté, Nevai & Totik, "Szegő's extremum
       problem on the unit circle", Annals of Math. 134, 1991), so that part is ``w_-/2``,
       capped at ``θ_-``'s share ``w_0 · w_- / (w_- + w_+)`` of ``w_0`` (``w_+`` the first
       positive node's weight).

    The error is then the misplaced mass of eigenvalues within a node gap of ``−t``, at most
    the weights of the nodes next to it, instead of a whole cluster's mass. A ``complete`` rule
    (the run broke down: its nodes are eigenvalues and its weights their exact masses) and a
    one-node rule are counted as they are.
    """
    keep = np.isfinite(nodes) & (weights > 0)
    theta, w = np.asarray(nodes, float)[keep], np.asarray(weights, float)[keep]
    if theta.size == 0:
        return float("nan")
    order = np.argsort(theta)
    theta, w = theta[order], w[order] / w.sum()
    x = -float(threshold)
    if complete or theta.size == 1:
        return float(w[theta < x].sum())
    theta, w = null_space_radau_rule(theta, w)
    at_zero = np.abs(theta) <= 1e-9 * (float(np.abs(theta).max()) or 1.0)
    free_theta, free_w = theta[~at_zero], w[~at_zero]
    negative = free_theta < 0
    if not negative.any():
        return 0.0
    neg_theta, neg_w = free_theta[negative], free_w[negative]
    first_gap = free_theta[1] - free_theta[0] if free_theta.size > 1 else -free_theta[0]
    w_minus = float(neg_w[-1])
    w_plus = float(free_w[~negative][0]) if (~negative).any() else 0.0
    left_of_zero = min(w_minus / 2, float(w[at_zero].sum()) * w_minus / (w_minus + w_plus))
    points = np.concatenate([[neg_theta[0] - first_gap / 2], neg_theta, [0.0]])
    values = np.concatenate(
        [[0.0], np.cumsum(neg_w) - neg_w / 2, [float(neg_w.sum()) + left_of_zero]]
    )
    return float(np.interp(min(x, 0.0), points, values))


def fraction_below(
    nodes: np.ndarray,
    weights: np.ndarray,
    threshold: float,
    *,
    complete: np.ndarray | None = None,
) -> FractionEstimate:
    """SLQ estimate of the fraction of eigenvalues below ``−threshold``, with its standard error.

    Each row of ``nodes``/``weights`` (an SLQ run, NaN-padded as in
    :class:`~landscape_cli.estimators.density.SLQResult`) gives :func:`run_fraction_below` of its
    probe's measure ``μ_r = Σ_k (u_kᵀ q_r)² δ_{λ_k}``; ``complete`` marks the rows whose rules
    are exact (``SLQResult.complete_runs``). For an isotropic probe ``E[μ_r]`` is the spectral
    measure ``(1/n) Σ_k δ_{λ_k}`` (Lin, Saad & Yang, "Approximating spectral densities of large
    matrices", SIAM Review 58, 2016; with ``f`` the indicator of ``(−∞, −threshold)`` this is
    the estimate of ``tr f(A) / n`` of Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via
    stochastic Lanczos quadrature", SIMAX 38, 2017), so the runs' estimates are independent
    samples and their spread is the sampling error: ``stderr = s / sqrt(R)``, ``s`` the sample
    standard deviation of the ``R`` runs' estimates; ``None`` when ``R = 1``. The quadrature's
    error (eigenvalues within a node gap of ``−threshold``, see :func:`run_fraction_below`) is
    not in it.
    """
    nodes_arr = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights_arr = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    exact = np.zeros(nodes_arr.shape[0], bool) if complete is None else np.asarray(complete, bool)
    per_run = np.array(
        [
            run_fraction_below(t, w, threshold, complete=bool(c))
            for t, w, c in zip(nodes_arr, weights_arr, exact, strict=True)
        ]
    )
    per_run = per_run[np.isfinite(per_run)]
    runs = int(per_run.size)
    if runs == 0:
        raise ValueError("no SLQ run has a finite node with a positive weight")
    stderr = float(np.std(per_run, ddof=1) / math.sqrt(runs)) if runs > 1 else None
    return FractionEstimate(float(per_run.mean()), stderr, runs, per_run)
