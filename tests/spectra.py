"""Test helpers: symmetric matrices with PLANTED spectra, A = U diag(lam) U^T in float64.

U is the Q factor of a Gaussian matrix (Haar-distributed up to signs), so the eigenvalues of A are
known exactly without calling the code under test, and the eigenvectors are generic (every one has
a component ~ 1/sqrt(n) in a random start vector).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from landscape_cli.linear_operator import SymmetricOperator


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Haar-like orthogonal matrix: Q factor of an n x n Gaussian, float64."""
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn((n, n), generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    # Fix the signs so that the distribution is Haar (Mezzadri 2007); not essential, but cheap.
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


def planted(eigenvalues: np.ndarray, seed: int = 1234) -> torch.Tensor:
    """Dense symmetric float64 matrix with exactly the given eigenvalues (up to rounding)."""
    lam = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64))
    n = lam.shape[0]
    U = random_orthogonal(n, seed)
    A = (U * lam.unsqueeze(0)) @ U.mT
    return 0.5 * (A + A.mT)


def nn_like_eigenvalues(n: int = 2000, seed: int = 0) -> np.ndarray:
    """Spectrum shaped like a trained network's Hessian (Sagun et al. 2017; Papyan 2019).

    Ten outliers (one per class of a 10-class problem) from 40 down to 1.5, a bulk of small
    positive eigenvalues heavily concentrated near zero (exponential, mean 0.05), and 10% small
    negative eigenvalues (exponential, mean 0.02). Returned in ascending order.
    """
    rng = np.random.default_rng(seed)
    outliers = np.array([40.0, 25.0, 15.0, 10.0, 7.0, 5.0, 3.5, 2.5, 2.0, 1.5])
    n_neg = n // 10
    n_bulk = n - outliers.size - n_neg
    bulk = rng.exponential(0.05, size=n_bulk)
    neg = -rng.exponential(0.02, size=n_neg)
    return np.sort(np.concatenate([outliers, bulk, neg]))


def nn_like_powerlaw_eigenvalues(n: int = 2000, seed: int = 0) -> np.ndarray:
    """A harder Hessian-like spectrum: 30 outliers decaying as a power law, 40 i^-1.2, that merge
    into a wider bulk (exponential, mean 0.3, edge ~2) with 10% negatives (mean 0.1, down to ~-0.7).
    The top eigenvalues are less separated and the negative edge is a sparse tail."""
    rng = np.random.default_rng(seed)
    outliers = 40.0 * np.arange(1, 31, dtype=np.float64) ** -1.2
    n_neg = n // 10
    n_bulk = n - outliers.size - n_neg
    bulk = rng.exponential(0.3, size=n_bulk)
    neg = -rng.exponential(0.1, size=n_neg)
    return np.sort(np.concatenate([outliers, bulk, neg]))


_KINDS = {"nn": nn_like_eigenvalues, "powerlaw": nn_like_powerlaw_eigenvalues}


@lru_cache(maxsize=8)
def _nn_like_cached(n: int, seed: int, kind: str) -> tuple[np.ndarray, torch.Tensor]:
    lam = _KINDS[kind](n, seed)
    return lam, planted(lam, seed=seed + 1000)


def nn_like_matrix(
    n: int = 2000, seed: int = 0, kind: str = "nn"
) -> tuple[np.ndarray, torch.Tensor]:
    """(ascending eigenvalues, planted matrix); ``kind`` is ``"nn"`` (:func:`nn_like_eigenvalues`)
    or ``"powerlaw"`` (:func:`nn_like_powerlaw_eigenvalues`). Cached per session: callers must not
    modify the returned tensor in place."""
    return _nn_like_cached(n, seed, kind)


class CountingOperator(SymmetricOperator):
    """A dense matrix as a :class:`SymmetricOperator` (whose products count ``matvecs``), also
    counting the calls and the widest block, to check the matvec accounting of estimators. No
    finiteness check of its own: the estimators' checks are what the tests pin."""

    check_finite = False

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A
        self.calls = 0
        self.max_block = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.max_block = max(self.max_block, V.shape[1])
        return self.A @ V
