"""The relative Frobenius distance between two matrices from their products with random probes.

For symmetric ``B`` (a reference) and ``K`` (an approximation) and probes ``z_i`` with
``E[z zᵀ] = I`` (Rademacher), ``E‖(B − K) z‖² = ‖B − K‖_F²`` and ``E‖B z‖² = ‖B‖_F²``, so with
``e_i = ‖(B − K) z_i‖²`` and ``g_i = ‖B z_i‖²`` over ``m`` probes the ratio of means
``R = ē / ḡ`` estimates ``‖B − K‖_F² / ‖B‖_F²`` (consistent, biased by ``O(1/m)``), and
``ρ = √R`` the relative error ``‖B − K‖_F / ‖B‖_F``. Its standard error is the delta method's
(e.g. Cochran, *Sampling Techniques*, 3rd ed., §6.4, the ratio estimator):
``se(R)² = Σ_i (e_i − R g_i)² / (m (m − 1) ḡ²)`` and ``se(ρ) = se(R) / (2ρ)``, reported times
:func:`~landscape_cli.estimators.trace.student_t_multiple` ``(m − 1)`` like every standard error
of a few probes here, so that ``±3`` of it is a 99.73 % interval for a normal estimate. Measured
on a small CNN against dense errors (900 estimates each), ``±3`` delta-method errors held 98.2 %
of them with 16 probes and 93.6 % with 4, ``±3`` t-scaled ones 99.3 % with either.
"""

from __future__ import annotations

import math

import numpy as np

from .trace import student_t_multiple

__all__ = ["relative_frobenius_error"]


def relative_frobenius_error(
    residual_squares: np.ndarray, reference_squares: np.ndarray
) -> tuple[float, float]:
    """``(ρ, se(ρ))`` from ``e_i = ‖(B − K) z_i‖²`` and ``g_i = ‖B z_i‖²`` (module docstring).

    Example:
        >>> e, g = np.array([1.0, 1.2, 0.8]), np.array([100.0, 120.0, 80.0])
        >>> rho, se = relative_frobenius_error(e, g)
        >>> round(rho, 6), se
        (0.1, 0.0)
    """
    e = np.asarray(residual_squares, dtype=np.float64).reshape(-1)
    g = np.asarray(reference_squares, dtype=np.float64).reshape(-1)
    m = e.shape[0]
    if m < 2 or g.shape[0] != m:
        raise ValueError(f"need at least 2 probes with both norms, got {m} and {g.shape[0]}")
    g_mean = float(g.mean())
    if not g_mean > 0:
        raise ValueError("the reference is zero on every probe: no relative error")
    ratio = float(e.mean()) / g_mean
    spread = float(np.sum((e - ratio * g) ** 2)) / (m * (m - 1))
    se_ratio = math.sqrt(spread) / g_mean
    rho = math.sqrt(ratio)
    se = se_ratio / (2.0 * rho) if rho > 0 else math.sqrt(se_ratio)
    return rho, se * student_t_multiple(m - 1)
