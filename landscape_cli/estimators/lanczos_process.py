"""The Lanczos recurrence, one step at a time, and the result it leaves.

:class:`LanczosProcess` holds the basis ``Q_m`` and the coefficients of one (restarted) Lanczos
run whose products ``A q`` the caller supplies, so several runs can share block products
(stochastic Lanczos quadrature). Every new vector is reorthogonalised against all previous ones
with two passes of classical Gram-Schmidt in matrix-vector form (CGS2; Giraud, Langou &
Rozloznik 2005: "twice is enough"), so ``Q_m`` stays orthonormal to working precision and no
spurious "ghost" copies of converged Ritz values appear (Paige 1972). :class:`LanczosResult` is
what a run leaves: the projected matrix, its Ritz values and their bounds
(:mod:`landscape_cli.estimators.ritz`). The driver with its stopping test is
:func:`landscape_cli.estimators.lanczos.lanczos`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..linear_operator import OperatorLike
from .ritz import error_bounds, projected_matrix, ritz_pairs, rounding_floor, tridiagonal_eigh

__all__ = ["LanczosProcess", "LanczosResult", "checked_product"]


def _wanted_indices(m: int, top_k: int, bottom_k: int) -> np.ndarray:
    """Indices (into ascending Ritz values) of the ``top_k`` largest and ``bottom_k`` smallest."""
    idx = set(range(max(m - top_k, 0), m)) | set(range(min(bottom_k, m)))
    return np.array(sorted(idx), dtype=np.int64)


@dataclass(frozen=True)
class LanczosResult:
    """Outcome of :func:`~landscape_cli.estimators.lanczos.lanczos`: the tridiagonal ``T_m``, its Ritz values and their accuracy.

    Attributes:
        alphas: ``(m,)`` diagonal of ``T_m`` (float64).
        betas: ``(m,)``; ``betas[j]`` is the norm of the residual that couples ``q_{j+1}`` to
            ``q_{j+2}`` (0-based: ``betas[:-1]`` is the off-diagonal of ``T_m``) and ``betas[-1]``
            is the final residual norm ``beta_m``.
        ritz_values: ``(m,)`` eigenvalues of ``T_m``, ascending.
        ritz_residuals: ``(m,)`` ``|beta_m s_{m,i}|`` = ``||A y_i - theta_i y_i||`` (exact
            arithmetic; with full reorthogonalisation it holds to ``O(eps ||A||)``).
        error_bounds: ``(m,)`` error estimates ``min(r_i, r_i^2 / gap_i)``, see :func:`~landscape_cli.estimators.lanczos.lanczos`.
        first_components: ``(m,)`` first components ``s_{1,i}`` of the eigenvectors of ``T_m``;
            their squares are the Gauss quadrature weights used by stochastic Lanczos quadrature.
        converged: the stopping test was met (every wanted extreme Ritz value within ``tol``), or
            the process broke down (Ritz values exact). With ``tol=None`` it is ``breakdown``.
        breakdown: an invariant subspace was found (``beta ~ 0``, or ``m == n``). This is a
            success: the Ritz values are exact eigenvalues of ``A`` (of the part of ``A`` reachable
            from the start vector; multiplicities are not resolved by single-vector Lanczos).
        matvecs: number of products ``A @ v`` spent (one per step).
        start_vector_norm: ``||q||`` of the start vector before normalisation.
        top_vectors: ``(n, top_k)`` unit Ritz vectors of the ``top_k`` largest Ritz values in
            descending order, on the operator's device, if ``return_vectors=True``.
        bottom_vectors: ``(n, bottom_k)`` unit Ritz vectors of the smallest Ritz values in
            ascending order, if ``return_vectors=True`` and ``bottom_k > 0``.
        basis: ``(n, m)`` the orthonormal Lanczos vectors ``Q_m`` (``Q_m^T A Q_m = T_m``), if
            ``return_basis=True``: e.g. to deflate a trace estimate
            (:func:`landscape_cli.estimators.trace.deflated_trace`).
        block_starts: the step at which each Krylov block began: ``(0,)`` for one run; a restart
            (:func:`~landscape_cli.estimators.lanczos.lanczos`, "Restarts") begins a block from a random vector orthogonal to the
            basis so far. ``alphas`` and ``betas`` run over all blocks; ``betas`` at a block's last
            step is that block's final residual norm.
        couplings: ``(blocks, m)``: row ``b`` holds ``q_e^T A q_j`` for the last vector ``q_e`` of
            block ``b`` and every later basis vector ``q_j`` (zero elsewhere); with the blocks'
            tridiagonals they make the projected matrix ``Q_m^T A Q_m``
            (:meth:`projected_matrix`). ``None`` for one block.
        rounding_floor: the smallest error the arithmetic allows a Ritz value
            (:func:`~landscape_cli.estimators.ritz.rounding_floor`); every entry of ``error_bounds`` is at least this.
        asymmetry: the largest norm over the run of the coefficients that are zero for an exactly
            symmetric product (:func:`~landscape_cli.estimators.ritz.rounding_floor`): evidence of the products' rounding.
        multiplicity_checked: a restart found no further eigenvalue among the wanted ones, so
            repeated or clustered eigenvalues are counted (:func:`~landscape_cli.estimators.lanczos.lanczos`, "Restarts").
        resolved: ``(m,)`` per Ritz value: its bound is evidence for the eigenvalue of the same
            rank (its interval is disjoint from its neighbours'; a restart, if any ran, moved it
            by no more than its bound). An unresolved value is within its bound of *some*
            eigenvalue; the ``i``-th largest Ritz value is a lower bound of the ``i``-th largest
            eigenvalue whatever it says (:func:`~landscape_cli.estimators.lanczos.lanczos`, "Error bounds").
    """

    alphas: np.ndarray
    betas: np.ndarray
    ritz_values: np.ndarray
    ritz_residuals: np.ndarray
    error_bounds: np.ndarray
    first_components: np.ndarray
    converged: bool
    breakdown: bool
    matvecs: int
    start_vector_norm: float
    top_vectors: torch.Tensor | None = None
    bottom_vectors: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    block_starts: tuple[int, ...] = (0,)
    couplings: np.ndarray | None = None
    rounding_floor: float = 0.0
    asymmetry: float = 0.0
    multiplicity_checked: bool = False
    resolved: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.resolved is None:
            object.__setattr__(self, "resolved", np.ones(self.ritz_values.shape[0], dtype=bool))

    @property
    def steps(self) -> int:
        """Number of Lanczos steps ``m`` (the size of ``T_m``)."""
        return int(self.alphas.shape[0])

    def top(self, k: int) -> np.ndarray:
        """The ``k`` largest Ritz values, descending (at most ``m`` of them)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if k == 0:
            return self.ritz_values[:0].copy()
        return self.ritz_values[::-1][:k].copy()

    def bottom(self, k: int) -> np.ndarray:
        """The ``k`` smallest Ritz values, ascending (at most ``m`` of them)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return self.ritz_values[:k].copy()

    @property
    def restarts(self) -> int:
        """Number of restarts (blocks after the first)."""
        return len(self.block_starts) - 1

    def first_block(self) -> tuple[np.ndarray, np.ndarray]:
        """``(alphas, betas)`` of the first Krylov block: the run from the (isotropic) start
        vector alone, which is a stochastic Lanczos quadrature node set."""
        end = self.block_starts[1] if len(self.block_starts) > 1 else self.steps
        return self.alphas[:end].copy(), self.betas[:end].copy()

    def projected_matrix(self) -> np.ndarray:
        """``Q_m^T A Q_m`` (float64, ``m x m``): the blocks' tridiagonals and their couplings."""
        return projected_matrix(self.alphas, self.betas, self.block_starts, self.couplings)

    def summary(self) -> dict[str, int | bool | float]:
        """The run's size and outcome for JSON: iterations, matvecs, converged, breakdown,
        restarts, whether multiplicities were checked, and the rounding floor."""
        return {
            "iterations": self.steps,
            "matvecs": int(self.matvecs),
            "converged": bool(self.converged),
            "breakdown": bool(self.breakdown),
            "restarts": self.restarts,
            "multiplicity_checked": bool(self.multiplicity_checked),
            "rounding_floor": float(self.rounding_floor),
        }

    def top_indices(self, k: int) -> np.ndarray:
        """Indices into the ascending :attr:`ritz_values` of the ``k`` largest, largest first
        (also index :attr:`ritz_residuals` and :attr:`error_bounds`)."""
        m = self.steps
        return np.arange(m - 1, max(m - 1 - k, -1), -1)

    def bottom_indices(self, k: int) -> np.ndarray:
        """Indices of the ``k`` smallest Ritz values, smallest first."""
        return np.arange(min(k, self.steps))

    def top_index(self) -> int:
        """Index of the largest Ritz value."""
        return self.steps - 1

    def bottom_index(self) -> int:
        """Index of the smallest Ritz value."""
        return 0

    def ritz_values_at(self, j: int) -> np.ndarray:
        """Ritz values after ``j`` steps: eigenvalues of the leading ``j x j`` block of ``T_m``.

        Used for convergence plots; ``ritz_values_at(m)`` equals ``ritz_values``.
        """
        m = self.steps
        if not 1 <= j <= m:
            raise ValueError(f"j must be in [1, {m}] (the number of Lanczos steps), got {j}")
        if len(self.block_starts) == 1:
            theta, _ = tridiagonal_eigh(self.alphas[:j], self.betas[: j - 1])
            return theta
        return np.linalg.eigvalsh(self.projected_matrix()[:j, :j])


def checked_product(A: OperatorLike, V: torch.Tensor, where: str) -> torch.Tensor:
    """``A @ V`` for a vector ``(n,)`` or a block ``(n, k)``, checked for shape (``ValueError``)
    and finiteness (``FloatingPointError`` saying ``where`` it happened); the one check every
    estimator applies to the operator it is given."""
    W = A @ V
    if not isinstance(W, torch.Tensor) or tuple(W.shape) != tuple(V.shape):
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        name = "v" if V.ndim == 1 else "V"
        raise ValueError(f"A @ {name} must return a tensor of shape {tuple(V.shape)}, got {shape}")
    if not bool(torch.isfinite(W).all()):
        raise FloatingPointError(f"the operator returned a non-finite value {where}")
    return W


class LanczosProcess:
    """One Lanczos recurrence whose matrix-vector products the caller supplies.

    ``vector`` is the next Lanczos vector ``q_{m+1}``; after computing ``w = A q_{m+1}`` (alone,
    or as one column of a block product shared with other processes, as
    :func:`landscape_cli.estimators.density.slq_density` does), ``advance(w)`` reorthogonalises it (CGS2),
    appends ``alpha`` and ``beta`` and detects breakdown. :func:`~landscape_cli.estimators.lanczos.lanczos` is this loop plus the
    stopping test; see it for the numerics.

    Args:
        start: start vector ``(n,)`` (any dtype/device; normalised here).
        dtype, device: those of the operator; the basis is stored in them.
        max_iter: the basis capacity (clamped to ``n``): the process is finished after it.
    """

    def __init__(
        self, start: torch.Tensor, dtype: torch.dtype, device: torch.device, max_iter: int
    ) -> None:
        n = int(start.shape[0])
        self.n = n
        self.dtype = dtype
        self.device = device
        self.max_iter = min(int(max_iter), n)
        q = start.to(device=device, dtype=dtype)
        self.start_norm = float(torch.linalg.vector_norm(q.to(torch.float64)))
        if not math.isfinite(self.start_norm) or self.start_norm == 0.0:
            raise ValueError(
                f"start vector must be finite and non-zero, its norm is {self.start_norm}"
            )
        self._q: torch.Tensor | None = q / torch.linalg.vector_norm(q)
        eps = torch.finfo(dtype).eps
        self._breakdown_factor = eps  # see lanczos(), "Breakdown"
        # Basis stored row-wise (Q[i] = q_{i+1}) so that writes and the block products are
        # contiguous; storage grows by doubling up to max_iter rows so a run that stops early
        # does not pay for more.
        self._capacity = min(self.max_iter, 32)
        self._Q = torch.empty((self._capacity, n), dtype=dtype, device=device)
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.breakdown = False
        self.block_starts = [0]
        # one row per finished block b: q_e^T A q_j for its last vector q_e and each later q_j
        self._coupling_rows: list[list[float]] = []
        self.asymmetry = 0.0

    @property
    def steps(self) -> int:
        """Steps taken so far (= products consumed)."""
        return len(self.alphas)

    @property
    def finished(self) -> bool:
        """Broke down (an invariant subspace; includes ``m == n``) or reached ``max_iter``."""
        return self.breakdown or self.steps >= self.max_iter

    @property
    def vector(self) -> torch.Tensor:
        """The unit vector ``q_{m+1}`` whose product ``A q_{m+1}`` :meth:`advance` expects."""
        if self._q is None or self.finished:
            raise RuntimeError("the Lanczos process is finished: no further vector")
        return self._q

    def basis(self) -> torch.Tensor:
        """``Q_m^T`` as an ``(m, n)`` view: the orthonormal Lanczos vectors as rows."""
        return self._Q[: self.steps]

    def restart(self, start: torch.Tensor) -> None:
        """Begin a new Krylov block from ``start`` made orthogonal to the basis (CGS2).

        The block so far ends where it stands (converged or broken down); its pending vector is
        not lost: the coupling of its last vector to every later one is recorded by
        :meth:`advance`, so the projected matrix stays ``Q^T A Q`` exactly
        (:func:`~landscape_cli.estimators.ritz.projected_matrix`)."""
        m = self.steps
        if m == 0 or m >= self.max_iter:
            raise RuntimeError("a restart needs at least one step taken and room for another")
        Q = self._Q[:m]
        z = start.to(device=self.device, dtype=self.dtype)
        for _ in range(2):
            z = z - Q.mT @ (Q @ z)
        norm = float(torch.linalg.vector_norm(z))
        if not math.isfinite(norm) or norm <= 1e3 * torch.finfo(self.dtype).eps * float(
            torch.linalg.vector_norm(start.to(torch.float64))
        ):
            raise RuntimeError("the restart vector lies in the Krylov space")
        self._q = z / norm
        self.breakdown = False
        self.block_starts.append(m)
        self._coupling_rows.append([])

    def advance(self, w: torch.Tensor) -> None:
        """Take one step with ``w = A @ vector``."""
        j = self.steps
        q = self.vector
        if j == self._capacity:
            self._capacity = min(2 * self._capacity, self.max_iter)
            grown = torch.empty((self._capacity, self.n), dtype=self.dtype, device=self.device)
            grown[:j] = self._Q[:j]
            self._Q = grown
        self._Q[j] = q
        w = w.to(self.dtype)
        # CGS2: two passes of classical Gram-Schmidt against all basis vectors, including q_j.
        # The coefficient on q_j accumulates alpha_j; those on q_{j-1} (~beta_{j-1}) and on older
        # vectors (~0 in exact arithmetic) remove the three-term recurrence and rounding drift.
        Qj = self._Q[: j + 1]
        h = Qj @ w
        w = w - Qj.mT @ h
        h2 = Qj @ w
        w = w - Qj.mT @ h2
        coefficients = (h + h2).to(torch.float64).cpu().numpy()
        alpha = float(coefficients[j])
        self._record_couplings(coefficients, j)
        beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            raise FloatingPointError(
                f"non-finite Lanczos coefficient at iteration {j + 1} (alpha={alpha}, beta={beta})"
            )
        self.alphas.append(alpha)
        self.betas.append(beta)
        m = j + 1
        # Breakdown test against a cheap bound on ||T_m||_2: the largest Gershgorin row sum
        # |alpha_i| + beta_{i-1} + beta_i of T_m (within a factor 3 of ||T_m||_2 <= ||A||_2).
        a_abs = np.abs(np.asarray(self.alphas))
        off = np.asarray(self.betas[:-1])
        rows = a_abs.copy()
        rows[1:] += off
        rows[:-1] += off
        norm_est = float(rows.max())
        if beta <= self._breakdown_factor * norm_est or m == self.n:
            self.breakdown = True
        self._q = None if self.finished else w / beta

    def _record_couplings(self, coefficients: np.ndarray, j: int) -> None:
        """From the step-``j`` projection coefficients ``Q^T (A q_j)``: record the couplings to
        the earlier blocks' last vectors, and the asymmetry (the coefficients that vanish for an
        exactly symmetric product, :func:`~landscape_cli.estimators.ritz.rounding_floor`)."""
        start = self.block_starts[-1]
        ends = [b - 1 for b in self.block_starts[1:]]
        for row, e in zip(self._coupling_rows, ends, strict=True):
            row.append(float(coefficients[e]))
        expected_zero = np.ones(j, dtype=bool)
        expected_zero[ends] = False
        skew = 0.0
        if j - 1 >= start:
            expected_zero[j - 1] = False
            skew = (float(coefficients[j - 1]) - self.betas[j - 1]) ** 2
        skew += float(np.sum(coefficients[:j][expected_zero] ** 2))
        self.asymmetry = max(self.asymmetry, math.sqrt(skew))

    def _couplings(self) -> np.ndarray | None:
        if len(self.block_starts) == 1:
            return None
        m = self.steps
        out = np.zeros((len(self._coupling_rows), m))
        for b, row in enumerate(self._coupling_rows):
            out[b, m - len(row) :] = row
        return out

    def _view(
        self, upto: int | None
    ) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray | None]:
        """``(alphas, betas, block_starts, couplings)`` of the first ``upto`` steps (a block
        boundary, or all steps with ``None``)."""
        m = self.steps if upto is None else upto
        starts = [b for b in self.block_starts if b < m]
        couplings = self._couplings()
        if couplings is not None:
            couplings = couplings[: len(starts) - 1, :m] if len(starts) > 1 else None
        return (
            np.asarray(self.alphas[:m], dtype=np.float64),
            np.asarray(self.betas[:m], dtype=np.float64),
            starts,
            couplings,
        )

    def ritz(self, upto: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors ``S`` of the projected matrix, residual bounds
        (of the first ``upto`` steps, a block boundary; all by default)."""
        return ritz_pairs(*self._view(upto))

    def block_settled(self, tol: float, top: float | None, bottom: float | None) -> bool:
        """Whether the current block has settled what it looks for: its own largest Ritz value
        (the block is a Lanczos run on ``A`` with the earlier blocks projected out) has a residual
        within ``tol`` times the spectral-norm estimate, or lies more than its residual plus that
        below ``top`` (the smallest wanted top value kept: it cannot enter the wanted ones);
        likewise its smallest against ``bottom``. ``None`` skips an end."""
        lo = self.block_starts[-1]
        theta, S = tridiagonal_eigh(
            np.asarray(self.alphas[lo:], dtype=np.float64),
            np.asarray(self.betas[lo:-1], dtype=np.float64),
        )
        residuals = np.abs(self.betas[-1] * S[-1, :])
        all_theta, _, _ = self.ritz()
        margin = tol * float(max(abs(all_theta[0]), abs(all_theta[-1])))
        ok = True
        if top is not None:
            ok &= bool(residuals[-1] <= margin or theta[-1] + residuals[-1] + margin < top)
        if bottom is not None:
            ok &= bool(residuals[0] <= margin or theta[0] - residuals[0] - margin > bottom)
        return ok

    def wanted_values(self, top_k: int, bottom_k: int) -> np.ndarray:
        """The ``top_k`` largest then the ``bottom_k`` smallest Ritz values (as many as exist)."""
        theta, _, _ = self.ritz()
        return np.concatenate([theta[::-1][:top_k], theta[:bottom_k]])

    def wanted_within(self, tol: float, top_k: int, bottom_k: int) -> bool:
        """The stopping test: every wanted extreme Ritz value's residual is within ``tol`` times
        the spectral-norm estimate ``max(|theta_1|, |theta_m|)`` (see :func:`~landscape_cli.estimators.lanczos.lanczos`)."""
        theta, _, residuals = self.ritz()
        scale = float(max(abs(theta[0]), abs(theta[-1])))
        wanted = _wanted_indices(self.steps, top_k, bottom_k)
        return bool(np.all(residuals[wanted] <= tol * scale))

    def result(
        self,
        *,
        converged: bool = False,
        return_vectors: bool = False,
        top_k: int = 1,
        bottom_k: int = 0,
        multiplicity_checked: bool = False,
        upto: int | None = None,
    ) -> LanczosResult:
        """The :class:`LanczosResult` of the steps so far, or of the first ``upto`` (a block
        boundary); ``converged`` also when broken down."""
        m = self.steps if upto is None else upto
        if m == 0:
            raise RuntimeError("no Lanczos step taken yet")
        dtype, device = self.dtype, self.device
        alphas_np, betas_np, starts, couplings = self._view(upto)
        theta, S, residuals = ritz_pairs(alphas_np, betas_np, starts, couplings)
        scale = float(max(abs(theta[0]), abs(theta[-1])))
        floor = rounding_floor(dtype, scale, self.asymmetry)
        bounds, certified = error_bounds(
            theta, residuals, floor, refine=bool(converged or self.breakdown)
        )

        top_vectors = None
        bottom_vectors = None
        if return_vectors:
            Qm = self._Q[:m].mT

            def ritz_vectors(cols: np.ndarray) -> torch.Tensor:
                s = torch.as_tensor(np.ascontiguousarray(S[:, cols]), dtype=dtype, device=device)
                Y = Qm @ s
                return Y / torch.linalg.vector_norm(Y, dim=0, keepdim=True)

            top_vectors = ritz_vectors(np.arange(m - 1, m - 1 - min(top_k, m), -1))
            if bottom_k > 0:
                bottom_vectors = ritz_vectors(np.arange(min(bottom_k, m)))

        return LanczosResult(
            alphas=alphas_np,
            betas=betas_np,
            ritz_values=theta,
            ritz_residuals=residuals,
            error_bounds=bounds,
            first_components=S[0, :].copy(),  # the quadrature weights of a single block
            converged=bool(converged or self.breakdown),
            breakdown=self.breakdown,
            matvecs=m,
            start_vector_norm=self.start_norm,
            top_vectors=top_vectors,
            bottom_vectors=bottom_vectors,
            block_starts=tuple(starts),
            couplings=couplings,
            rounding_floor=floor,
            asymmetry=self.asymmetry,
            multiplicity_checked=multiplicity_checked,
            resolved=certified,
        )
