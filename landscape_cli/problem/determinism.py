"""Is the objective one fixed function? A cheap check before a long run.

Lanczos, Hutch++ and SLQ assume that every product ``A v`` is with the *same* matrix; a loss
that changes between evaluations (random data augmentation, a dataset that reorders its items
between reads while train-mode BatchNorm makes the batch composition matter, randomness in the
model or loss outside train-mode Dropout — which the objective already seeds per batch — or
non-deterministic kernels) silently turns the Krylov recurrences into noise.

The check costs one loss evaluation and two products:

0. the data order: a ``DataLoader`` is read as its batch sampler orders it on every pass, so a
   shuffling loader (``shuffle=True``, a ``RandomSampler``) changes the batches between products;
   two passes over its sampler's indices (no data read) must agree;
1. ``L(w)`` evaluated again, compared with the value from the objective's initial pass;
2. ``A v`` twice for one fixed random ``v`` (seeded), compared with each other.

Both must agree to a relative tolerance ``sqrt(eps)`` of the dtype (3.5e-4 in float32, 1.5e-8
in float64). Rounding differences from a different summation order (e.g. atomics in CUDA
kernels) are orders of magnitude below that and harmless to estimators whose own tolerances are
1e-4; randomness that changes the function shows up far above it. Data that are read once and
kept on the device (``--hvp-mode cached``) are frozen at their first read, so only randomness in
the model or loss can show there; with ``streaming`` every product reads the data again.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import InputError

SHUFFLING = (
    "the DataLoader visits the samples in a different order on every pass (its sampler shuffles, "
    "e.g. DataLoader(shuffle=True)), so the batches change between curvature products"
)
SHUFFLING_FIX = (
    "build the DataLoader with shuffle=False (the analysis averages over all samples and needs "
    "no shuffling), return its dataset instead, or turn the check off to run anyway "
    "(`determinism_check=False`; spectrum.determinism_check: false in a config file)"
)
CAUSES = (
    "likely causes: random data augmentation in the dataset, a dataset that reorders its items "
    "between reads (matters with `mode=train` and BatchNorm), randomness in the model or loss "
    "outside train-mode Dropout (e.g. F.dropout(training=True) or torch.rand in forward), or "
    "non-deterministic kernels"
)
FIX = (
    "return fixed tensors (x, y) or a Dataset without random transforms, make forward "
    "deterministic (torch.use_deterministic_algorithms(True) on CUDA), or pass "
    "`determinism_check=False` to run anyway"
)


def tolerance(dtype: torch.dtype) -> float:
    """``sqrt(eps)`` of ``dtype``: the relative difference above which a repeat disagrees."""
    return math.sqrt(torch.finfo(dtype).eps)


def check_data_order(batches: Any) -> None:
    """Raise :class:`InputError` when two passes over ``batches`` visit the samples in different
    orders (a shuffling ``DataLoader``). Reads sampler indices only, no data: every command runs it
    on loading (:func:`landscape_cli.problem.loading.build_objective`), since a surface or a sharpness
    sweep evaluated on changing batches is as wrong as a Krylov run."""
    if batches is not None and batches.reorders_between_passes():
        raise InputError(f"data {batches.description}: {SHUFFLING}", hint=SHUFFLING_FIX)


def check_determinism(objective: Any, operator: Any, *, seed: int = 0) -> int:
    """Raise :class:`InputError` when the data order, the loss or ``operator @ v`` is not
    reproducible.

    Returns the number of products spent (2; they are also counted in ``operator.matvecs``).
    """
    check_data_order(getattr(objective, "batches", None))
    tol = tolerance(objective.dtype)
    again = objective.loss()
    first = objective.loss_value
    scale = max(abs(first), abs(again))
    if abs(again - first) > tol * scale:
        raise InputError(
            f"the loss is not reproducible: two evaluations at the same weights gave {first:.10g} "
            f"and {again:.10g} (relative difference {abs(again - first) / scale:.2g} > "
            f"{tol:.1e}); {CAUSES}",
            hint=FIX,
        )
    n = operator.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    v = (v / v.norm()).to(device=operator.device, dtype=operator.dtype)
    a = operator @ v
    b = operator @ v
    size = float(torch.maximum(a.norm(), b.norm()))
    diff = float((a - b).norm())
    if diff > tol * size:
        raise InputError(
            "the curvature-vector product is not reproducible: two products with the same vector "
            f"differ by {diff / size:.2g} relative (> {tol:.1e}); {CAUSES}",
            hint=FIX,
        )
    return 2
