"""Every eigenvalue the Lanczos run reports is within its error bound of the exact eigenvalue of
the same rank, or is marked unresolved; every list is as long as asked.

Planted spectra (exact eigenvalues known by construction) chosen where single-vector Lanczos
with a-posteriori bounds goes wrong: clusters tighter than the tolerance, exact multiplicities,
a large null space, a low rank that exhausts the Krylov space in a few steps, a dynamic range
beyond float32's resolution of the bulk, indefinite spectra, in float32 and float64. The exact
eigenvalues are those of the matrix in the dtype analysed (the float32 rounding of a float64
matrix has its own eigenvalues).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import nn_like_eigenvalues, planted

from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.ritz import ROUNDING_UNITS
from landscape_cli.linear_operator import SymmetricOperator

N = 300
TOP_K, BOTTOM_K = 5, 2


def planted_spectrum(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "cluster":  # 50 eigenvalues within 1e-6 of 10
        return np.concatenate([10 + 1e-6 * rng.uniform(-1, 1, 50), rng.uniform(0, 5, N - 50)])
    if kind == "multiplicity":  # two eigenvalues three times each, above a bulk
        return np.concatenate([np.repeat([9.0, 4.0], 3), rng.uniform(-1, 3, N - 6)])
    if kind == "null_space":  # half the eigenvalues exactly 0
        return np.concatenate([np.zeros(N // 2), rng.normal(0, 1, N - N // 2)])
    if kind == "low_rank":  # rank 4 with a double top: the Krylov space is exhausted in 4 steps
        return np.concatenate([[8.0, 8.0, 3.0, -1.0], np.zeros(N - 4)])
    if kind == "wide_range":  # a bulk at ~1e-6 of ||A||: float32 resolves it to ~1e-1
        return np.concatenate([[1e4, 1e2, 1.0], rng.uniform(1e-4, 1e-2, N - 3)])
    if kind == "indefinite":
        return rng.normal(0, 1, N) ** 3
    if kind == "network":
        return nn_like_eigenvalues(N, seed)
    raise ValueError(kind)


KINDS = (
    "cluster",
    "multiplicity",
    "null_space",
    "low_rank",
    "wide_range",
    "indefinite",
    "network",
)


def reported(res):
    """(values, bounds, resolved) of the top-k (descending) then the bottom-k (ascending)."""
    idx = np.concatenate([res.top_indices(TOP_K), res.bottom_indices(BOTTOM_K)])
    return res.ritz_values[idx], res.error_bounds[idx], res.resolved[idx]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_reported_eigenvalue_is_within_its_bound_or_unresolved(
    kind: str, seed: int, dtype: torch.dtype
) -> None:
    A = planted(planted_spectrum(kind, seed), seed=100 + seed).to(dtype)
    exact = np.linalg.eigvalsh(A.double().numpy())
    res = lanczos(A, seed=seed, top_k=TOP_K, bottom_k=BOTTOM_K, max_iter=N, tol=1e-3)
    assert res.converged and res.multiplicity_checked
    values, bounds, resolved = reported(res)
    assert len(values) == TOP_K + BOTTOM_K  # the lists are as long as asked
    truth = np.concatenate([exact[::-1][:TOP_K], exact[:BOTTOM_K]])
    errors = np.abs(values - truth)
    assert np.all((errors <= bounds) | ~resolved), (errors, bounds, resolved)
    # every value is within its bound of *some* eigenvalue (the residual theorem), resolved or not
    nearest = np.min(np.abs(values[:, None] - exact[None, :]), axis=1)
    assert np.all(nearest <= bounds)
    # no bound is below the arithmetic's floor
    scale = float(np.max(np.abs(res.ritz_values)))
    assert np.all(bounds >= ROUNDING_UNITS * torch.finfo(dtype).eps * scale * (1 - 1e-12))
    # λ_max is always resolved here: it is isolated or heads an isolated cluster
    assert resolved[0] and errors[0] <= bounds[0]


def test_repeated_top_eigenvalues_are_reported_once_per_copy() -> None:
    # single-vector Lanczos sees one copy of 9 and reports the next distinct value as λ_2
    A = planted(planted_spectrum("multiplicity", 0), seed=100)
    res = lanczos(A, top_k=TOP_K, bottom_k=BOTTOM_K, max_iter=N, tol=1e-3)
    np.testing.assert_allclose(res.top(5), [9.0, 9.0, 9.0, 4.0, 4.0], atol=1e-6)
    assert res.matvecs > res.steps  # the confirming block's products are counted


def test_float32_bulk_below_resolution_is_found_and_bounded_by_the_floor() -> None:
    # a breakdown test at 10·eps·sqrt(n)·||A|| stopped this run after 3 steps, with 3 of the 7
    # values asked for and λ_min 19 times off
    A = planted(planted_spectrum("wide_range", 0), seed=100).float()
    exact = np.linalg.eigvalsh(A.double().numpy())
    res = lanczos(A, top_k=TOP_K, bottom_k=BOTTOM_K, max_iter=N, tol=1e-3)
    assert len(res.top(TOP_K)) == TOP_K and len(res.bottom(BOTTOM_K)) == BOTTOM_K
    assert res.top(3) == pytest.approx(exact[::-1][:3], abs=res.rounding_floor)
    # the bulk sits below the float32 floor (100·eps·1e4 ≈ 0.12): bounds say so
    assert res.rounding_floor == pytest.approx(ROUNDING_UNITS * 2**-23 * 1e4, rel=1e-3)
    lam_min, bound = res.bottom(1)[0], res.error_bounds[res.bottom_index()]
    assert abs(lam_min - exact[0]) <= bound and bound > abs(lam_min)


class ProductsWithError(SymmetricOperator):
    """A symmetric matrix whose products carry an error ``δ ||A|| ||v||`` in a random direction,
    as a product computed in lower precision than its dtype (TF32, autocast) does."""

    def __init__(self, A: torch.Tensor, relative_error: float, seed: int = 0) -> None:
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A
        self.size = relative_error * float(torch.linalg.matrix_norm(A, ord=2))
        self.generator = torch.Generator().manual_seed(seed)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        E = torch.randn(V.shape, generator=self.generator, dtype=V.dtype)
        E = E / torch.linalg.vector_norm(E, dim=0, keepdim=True)
        return self.A @ V + self.size * torch.linalg.vector_norm(V, dim=0, keepdim=True) * E


def test_products_in_lower_precision_widen_the_floor_through_their_asymmetry() -> None:
    lam = planted_spectrum("network", 0)
    A = planted(lam, seed=100)
    exact = np.sort(lam)
    res = lanczos(ProductsWithError(A, 1e-4), top_k=TOP_K, bottom_k=BOTTOM_K, max_iter=N, tol=1e-3)
    dtype_floor = ROUNDING_UNITS * torch.finfo(torch.float64).eps * exact[-1]
    assert res.rounding_floor > 1e4 * dtype_floor  # the asymmetry, not the dtype, sets it
    values, bounds, resolved = reported(res)
    truth = np.concatenate([exact[::-1][:TOP_K], exact[:BOTTOM_K]])
    assert np.all((np.abs(values - truth) <= bounds) | ~resolved)
