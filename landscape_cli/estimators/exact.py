"""The exact Hessian of a small model, assembled column by column from HVPs.

``H e_j`` for every unit vector ``e_j``: ``n`` HVPs and ``n²`` numbers, so it is refused above
:data:`MAX_EXACT_PARAMETERS`. It gives users of tiny models the true spectrum and gives the
tests their reference (the tests also check it against :func:`torch.func.hessian`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..linear_operator import OperatorLike

MAX_EXACT_PARAMETERS = 6000  # 6000² float64 = 288 MB, and an O(n³) eigvalsh


@dataclass(frozen=True)
class ExactSpectrum:
    """All eigenvalues (ascending, float64) of the symmetrised exact Hessian."""

    eigenvalues: np.ndarray
    asymmetry: float  # max |H - Hᵀ| / max |H|: should be rounding-level
    matvecs: int

    def to_dict(self, k_top: int = 5, k_bottom: int = 1, *, neg_tol: float) -> dict:
        """The extremes, trace, and ``negative_fraction``: the share of eigenvalues below
        ``−neg_tol·κ`` (``κ = max |λ|``), not below 0, where rounding puts about half of a
        network's near-zero bulk."""
        ev = self.eigenvalues
        threshold = neg_tol * float(np.abs(ev).max(initial=0.0))
        return {
            "lambda_max": float(ev[-1]),
            "lambda_min": float(ev[0]),
            "top_eigenvalues": [float(v) for v in ev[::-1][:k_top]],
            "bottom_eigenvalues": [float(v) for v in ev[:k_bottom]],
            "trace": float(ev.sum()),
            "negative_fraction": float(np.mean(ev < -threshold)),
            "negative_threshold": threshold,
            "asymmetry": self.asymmetry,
            "matvecs": self.matvecs,
        }


def check_exact_size(n: int) -> None:
    """Refuse the dense Hessian above :data:`MAX_EXACT_PARAMETERS` parameters (InputError)."""
    if n > MAX_EXACT_PARAMETERS:
        raise InputError(
            f"`exact=True` needs the full {n}x{n} Hessian; refused above {MAX_EXACT_PARAMETERS} parameters",
            hint="drop `exact`; the Lanczos estimates do not need it",
        )


def dense_matrix(
    A: OperatorLike, *, block_size: int = 64, progress: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """``A`` as a dense matrix ``A @ I``, built in column blocks of ``block_size``."""
    n = A.shape[0]
    check_exact_size(n)
    columns = []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = torch.zeros(n, stop - start, dtype=A.dtype, device=A.device)
        block[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        columns.append((A @ block).to("cpu", torch.float64))
        if progress is not None:
            progress(stop, n)
    return torch.cat(columns, dim=1)


def exact_spectrum(
    A: OperatorLike, *, progress: Callable[[int, int], None] | None = None
) -> ExactSpectrum:
    """Eigenvalues of the dense symmetrised ``(H + Hᵀ)/2`` by ``torch.linalg.eigvalsh`` (float64)."""
    H = dense_matrix(A, progress=progress)
    scale = float(H.abs().max()) or 1.0
    asymmetry = float((H - H.T).abs().max()) / scale
    eigenvalues = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    return ExactSpectrum(eigenvalues, asymmetry, H.shape[0])
