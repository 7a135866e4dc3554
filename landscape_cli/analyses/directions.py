"""Directions for loss surfaces: filter-normalised random, Hessian-eigenvector and interpolation.

Each direction is a flat vector in the objective's parameter order; the surfaces along them are
:mod:`landscape_cli.analyses.surface`.

* ``random``: Gaussian ``d ~ N(0, I)``, **filter-normalised** (Li, Xu, Taylor, Studer & Goldstein,
  "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, §4): for every parameter tensor and
  every filter ``i`` (slice along dim 0: an output channel of a convolution, a row of a linear
  layer; for a transposed convolution, whose weight is ``(in, out, ...)``, an *input* channel, as in
  the authors' code), ``d_i ← d_i · ‖w_i‖ / ‖d_i‖``, so a step ``x = 1`` changes every filter by its
  own size and the plot is invariant to the scale symmetry of ReLU/BatchNorm networks. 1-D (and 0-D)
  tensors, i.e. biases and BatchNorm/LayerNorm affine parameters, get a zero direction by default
  (the paper's ``ignore='biasbn'``); with ``ignore_bn_and_bias=False`` the whole tensor is treated
  as one filter (a Gaussian rescaled to ``‖w‖``; the authors' code copies ``w`` itself there, which
  makes both directions of a 2-D plot coincide on those tensors). Without filter normalisation the
  Gaussian is rescaled as one vector to the norm of ``w`` over the same (non-ignored) tensors, so
  both choices move on the same scale. The two directions of a 2-D surface are drawn independently
  from one seeded stream; in high dimension they are nearly orthogonal (cosine ~ 1/√n, reported as
  ``cosine``). With ``orthogonalize`` ``d₂`` is made exactly orthogonal to ``d₁`` (Gram–Schmidt) and
  rescaled to its previous norm, after which its filter norms match those of ``w`` only
  approximately.
* ``eigen``: unit eigenvectors of the top Hessian eigenvalues (Lanczos with full
  reorthogonalisation, :func:`~landscape_cli.estimators.lanczos.lanczos`).
* ``interpolation``: ``d = w_other − w``, the straight line to another checkpoint (Goodfellow,
  Vinyals & Saxe, "Qualitatively characterizing neural network optimization problems", ICLR 2015;
  used by Li et al. §3). Only trainable parameters are interpolated; the buffers and frozen
  parameters that differ between the checkpoints are named.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError, NumericalError
from ..estimators.lanczos import LanczosResult, lanczos
from ..operators.hessian import HessianOperator
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from ..progress import Progress

__all__ = [
    "EigenDirections",
    "eigen_directions",
    "interpolation_direction",
    "other_parameters",
    "random_directions",
]


def _filter_normalize(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rescale every filter (slice along dim 0; the whole tensor if ``w.ndim <= 1``) of ``d`` to
    the norm of the same filter of ``w`` (a zero filter of ``d`` stays zero)."""
    if w.ndim <= 1:
        dn, wn = torch.linalg.vector_norm(d), torch.linalg.vector_norm(w)
        return d * (wn / dn) if float(dn) > 0 else torch.zeros_like(d)
    d2, w2 = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
    dn = torch.linalg.vector_norm(d2, dim=1, keepdim=True)
    wn = torch.linalg.vector_norm(w2, dim=1, keepdim=True)
    scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, torch.ones_like(dn)), 0.0)
    return (d2 * scale).reshape(d.shape)


def random_directions(
    objective: Objective,
    k: int,
    seed: int,
    *,
    filter_normalize: bool = True,
    ignore_bn_and_bias: bool = True,
    orthogonalize: bool = False,
) -> list[torch.Tensor]:
    """``k`` random directions for a loss surface, filter-normalised as in Li et al. (2018).

    Each direction is a Gaussian vector of length ``n`` drawn on the CPU in float64 from
    ``torch.Generator().manual_seed(derive_seed(seed, "surface/random"))`` (direction ``j`` from
    the ``j``-th draw of that stream, so the same seed gives the same directions on any device),
    normalised in float64 as the module docstring says, then moved to the objective's
    device/dtype. ``orthogonalize`` makes each direction orthogonal to the previous ones (Gram–
    Schmidt), keeping its norm.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    generator = torch.Generator().manual_seed(derive_seed(seed, "surface/random"))
    w_parts = [
        p.detach().to(device="cpu", dtype=torch.float64)
        for p in objective.unflatten(objective.flat_parameters())
    ]
    out: list[torch.Tensor] = []
    for _ in range(k):
        z = torch.randn(objective.num_parameters, generator=generator, dtype=torch.float64)
        sizes = [p.numel() for p in w_parts]
        parts = [
            piece.reshape(p.shape) for piece, p in zip(torch.split(z, sizes), w_parts, strict=True)
        ]
        kept = [not (ignore_bn_and_bias and w.ndim <= 1) for w in w_parts]
        if filter_normalize:
            parts = [
                _filter_normalize(d, w) if keep else torch.zeros_like(d)
                for d, w, keep in zip(parts, w_parts, kept, strict=True)
            ]
        else:
            parts = [
                d if keep else torch.zeros_like(d) for d, keep in zip(parts, kept, strict=True)
            ]
            target = math.sqrt(
                sum(float(w.square().sum()) for w, keep in zip(w_parts, kept, strict=True) if keep)
            )
            norm = math.sqrt(sum(float(d.square().sum()) for d in parts))
            parts = [d * (target / norm) if norm > 0 else d for d in parts]
        d = torch.cat([p.reshape(-1) for p in parts])
        if not bool(d.any()):
            skipped = sum(1 for keep in kept if not keep)
            raise InputError(
                "the random direction is zero: "
                + (
                    f"{skipped} of {len(kept)} trainable tensors are 1-D (biases, normalisation "
                    "weights), which `ignore_bn_and_bias=True` leaves out, and the others are zero"
                    if skipped
                    else "every trainable tensor is zero"
                )
                + " (directions are scaled to the weights' norms)",
                hint="use `ignore_bn_and_bias=False`, or `kind=eigen`"
                if skipped
                else "use `kind=eigen`, or a checkpoint with non-zero weights",
            )
        if orthogonalize:
            norm = torch.linalg.vector_norm(d)
            for prev in out:
                q = prev.to(device="cpu", dtype=torch.float64)
                qq = float(q @ q)
                if qq > 0:
                    d = d - (float(q @ d) / qq) * q
            new_norm = torch.linalg.vector_norm(d)
            if not float(new_norm) > 1e-12 * float(norm):
                raise InputError(
                    f"`orthogonalize=True`: random direction {len(out) + 1} lies in the span of the "
                    "previous ones (the directions have too few free coordinates)",
                    hint="use `orthogonalize=False`, `ignore_bn_and_bias=False`, or `kind=eigen`",
                )
            d = d * (norm / new_norm)
        out.append(d.to(device=objective.device, dtype=objective.dtype))
    return out


@dataclass(frozen=True)
class EigenDirections:
    """Top Hessian eigenpairs from Lanczos: unit ``vectors`` with descending ``eigenvalues``."""

    vectors: list[torch.Tensor]
    eigenvalues: np.ndarray
    lanczos: LanczosResult
    hvp_count: int


def eigen_directions(
    objective: Objective,
    k: int,
    seed: int,
    tol: float | None = 1e-4,
    max_iter: int = 100,
    progress: Progress | None = None,
) -> EigenDirections:
    """Unit Ritz vectors of the ``k`` largest Hessian eigenvalues (Lanczos, start vector from
    ``derive_seed(seed, "surface/lanczos")``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    H = HessianOperator(objective)
    try:
        lz = lanczos(
            H,
            seed=derive_seed(seed, "surface/lanczos"),
            top_k=k,
            tol=tol,
            max_iter=max(max_iter, k),
            return_vectors=True,
            progress=progress,
        )
    except FloatingPointError as exc:
        raise NumericalError(f"the Lanczos iteration produced non-finite numbers: {exc}") from None
    assert lz.top_vectors is not None
    if lz.top_vectors.shape[1] < k:
        raise NumericalError(
            f"Lanczos found only {lz.top_vectors.shape[1]} Ritz vectors, {k} needed "
            f"(the start vector spans an invariant subspace of that size)"
        )
    vectors = []
    for j in range(k):
        v = lz.top_vectors[:, j].to(device=objective.device, dtype=objective.dtype)
        vectors.append(v / torch.linalg.vector_norm(v))
    return EigenDirections(vectors, np.asarray(lz.top(k), dtype=np.float64), lz, H.matvecs)


def other_parameters(
    objective: Objective, state_dict: Any, where: str
) -> tuple[torch.Tensor, list[str]]:
    """The other checkpoint's trainable parameters as a flat vector in the objective's order
    (loaded into a copy of the model, so prefixes, missing keys and shapes are checked as for
    the main checkpoint), and the names of buffers and frozen (``requires_grad=False``)
    parameters that differ from this checkpoint's: only trainable parameters are interpolated."""
    from ..problem.loading import apply_state_dict

    other = copy.deepcopy(objective.model)
    apply_state_dict(other, state_dict, where)
    params = dict(other.named_parameters())
    flat = objective.flatten(
        [
            params[name].detach().to(device=objective.device, dtype=objective.dtype)
            for name in objective.parameter_names
        ]
    )
    differing = []
    trainable = set(objective.parameter_names)
    mine = {
        **dict(objective.model.named_buffers()),
        **{n: p for n, p in objective.model.named_parameters() if n not in trainable},
    }
    theirs = [*other.named_buffers(), *((n, p) for n, p in params.items() if n not in trainable)]
    for name, tensor in theirs:
        base = mine.get(name)
        if base is not None and not torch.equal(base.detach().cpu(), tensor.detach().cpu()):
            differing.append(name)
    return flat, differing


def interpolation_direction(
    objective: Objective, other_state_dict: Any, where: str = "checkpoint 'to'"
) -> torch.Tensor:
    """``w_other − w``: ``w + t d`` is this checkpoint at ``t = 0`` and the other at ``t = 1``."""
    flat, _ = other_parameters(objective, other_state_dict, where)
    return flat - objective.flat_parameters()
