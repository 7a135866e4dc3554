"""1-D and 2-D loss surfaces around the checkpoint: random, Hessian-eigenvector and interpolation.

Following Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets"
(NeurIPS 2018), the loss is evaluated on a grid in a one- or two-dimensional slice of parameter
space through the checkpoint ``w``:

    f(x)    = L(w + x d₁)                 (1-D),
    f(x, y) = L(w + x d₁ + y d₂)          (2-D),

with ``L`` the same full-data mean loss as every other analysis
(:class:`~landscape_cli.problem.objective.Objective`). Each grid point is one forward pass over the data
without gradients (no Hessian-vector products); the user's module is never mutated (the
evaluation goes through :func:`torch.func.functional_call` on the objective's parameter copies).

**Directions** (flat vectors in the objective's parameter order):

* ``random``: Gaussian ``d ~ N(0, I)``, **filter-normalised** (Li et al. §4): for every parameter
  tensor and every filter ``i`` (slice along dim 0: an output channel of a convolution, a row of
  a linear layer; for a transposed convolution, whose weight is ``(in, out, ...)``, an *input*
  channel, as in the authors' code), ``d_i ← d_i · ‖w_i‖ / ‖d_i‖``, so a step ``x = 1`` changes
  every filter by its own size and the plot is invariant to the scale symmetry of ReLU/BatchNorm
  networks. 1-D (and
  0-D) tensors, i.e. biases and BatchNorm/LayerNorm affine parameters, get a zero direction by
  default (the paper's ``ignore='biasbn'``); with ``ignore_bn_and_bias=False`` the whole tensor is
  treated as one filter (a Gaussian rescaled to ``‖w‖``; the authors' code copies ``w`` itself
  there, which makes both directions of a 2-D plot coincide on those tensors). Without filter
  normalisation the Gaussian is rescaled as one vector to the norm of ``w`` over the same
  (non-ignored) tensors, so both choices move on the same scale. The two directions of a 2-D
  surface are drawn independently from one seeded stream; in high dimension they are nearly
  orthogonal (cosine ~ 1/√n, reported as ``cosine``). With ``orthogonalize`` ``d₂`` is made exactly
  orthogonal to ``d₁`` (Gram–Schmidt) and rescaled to its previous norm, after which its filter
  norms match those of ``w`` only approximately.
* ``eigen``: unit eigenvectors of the top Hessian eigenvalues (Lanczos with full
  reorthogonalisation, :func:`~landscape_cli.estimators.lanczos.lanczos`). Coordinates are Euclidean
  distances. The second-order Taylor model is drawn next to the measured loss:

      L(w) + x gᵀv₁ + ½ λ₁ x²      (1-D),
      L(w) + x gᵀv₁ + y gᵀv₂ + ½ (λ₁ x² + λ₂ y²)     (2-D; v₁ ⟂ v₂ so there is no cross term).

  It is exact for a quadratic loss, and its departure from the measured curve shows where the
  landscape stops being quadratic.
* ``interpolation``: ``d = w_other − w``, the straight line to another checkpoint (Goodfellow,
  Vinyals & Saxe, "Qualitatively characterizing neural network optimization problems", ICLR 2015;
  used by Li et al. §3): ``x = 0`` is this checkpoint, ``x = 1`` the other, default range
  ``[-0.5, 1.5]``. Only trainable parameters are interpolated; buffers (BatchNorm running
  statistics) stay those of this checkpoint, and a note says so when they differ. A 2-D
  interpolation surface adds a filter-normalised random ``y`` direction.

**Accuracy.** When a batch is ``(x, y, …)`` with integer labels ``y`` and the model's output is
2-D logits ``(batch, classes)``, the classification accuracy at every grid point is measured in the
same forward pass (a forward hook on the top-level module captures the output the loss computes,
and is removed afterwards); otherwise it is ``None``. Any ``metric_fn(output, target) -> float |
None`` can replace it.

Example
-------
>>> import torch
>>> from landscape_cli.problem.data import no_data
>>> from landscape_cli.problem.objective import Objective
>>> A = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
>>> model = torch.nn.Module()
>>> model.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
>>> obj = Objective(model, lambda m, b: 0.5 * m.w @ A @ m.w, no_data(), dtype=torch.float64)
>>> res = analyze_surface(obj, SurfaceSettings(dims=1, kind="eigen", points=5))
>>> [round(v, 6) for v in res.losses.tolist()]  # ½ λ_max t² with λ_max = 4
[2.0, 0.5, 0.0, 0.5, 2.0]
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError, NumericalError
from ..estimators.lanczos import LanczosResult, lanczos
from ..hdf5 import from_field_attrs, optional_array, read_array, read_attrs, write_group
from ..operators.hessian import HessianOperator
from ..problem.data import move_batch
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from .run_info import RunInfo, json_number, json_numbers
from .settings import SurfaceSettings

Progress = Callable[[int, int], None]
StageProgress = Callable[[str, int, int], None]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float | None]

KINDS = ("random", "eigen", "interpolation")
#: A surface's notes are attributes of its report group, each named ``note_<key>``.
NOTE_PREFIX = "note_"
INTERPOLATION_RANGE = (-0.5, 1.5)


def validate_settings(settings: SurfaceSettings) -> str:
    """Raise :class:`ValueError` naming the offending value; return the effective kind."""
    s = settings
    if s.dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got dims={s.dims!r}")
    if s.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got kind={s.kind!r}")
    if s.points < 2:
        raise ValueError(f"points must be >= 2, got points={s.points}")
    if not (math.isfinite(s.span) and s.span > 0):
        raise ValueError(f"span must be a finite number > 0, got span={s.span!r}")
    if s.max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got max_iter={s.max_iter}")
    kind = s.kind
    if s.to is not None:
        if kind == "eigen":
            raise ValueError(
                f"`to={s.to}` asks for an interpolation surface, but `kind=eigen`; "
                "drop `to` or use `kind=interpolation`"
            )
        kind = "interpolation"
    elif kind == "interpolation":
        raise ValueError("`kind=interpolation` needs `to`, the path of the other checkpoint")
    return kind


def grid(lo: float, hi: float, points: int) -> np.ndarray:
    """``points`` equispaced coordinates from ``lo`` to ``hi`` as ``lo + (hi - lo)·i/(points-1)``,
    so that e.g. 0 and 1 are hit exactly when they are grid points (``np.linspace`` rounds)."""
    i = np.arange(points, dtype=np.float64)
    return lo + (hi - lo) * i / (points - 1)


# ---------------------------------------------------------------------------- directions
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


def _other_parameters(
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
    flat, _ = _other_parameters(objective, other_state_dict, where)
    return flat - objective.flat_parameters()


# ---------------------------------------------------------------------------- evaluation
def classification_accuracy(output: Any, target: Any) -> float | None:
    """Fraction of rows whose arg-max logit is the integer label; ``None`` when ``output`` is not
    2-D logits ``(batch, classes ≥ 2)`` or ``target`` not a 1-D integer label vector."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        return None
    if output.ndim != 2 or output.shape[1] < 2 or not output.is_floating_point():
        return None
    if target.ndim != 1 or target.shape[0] != output.shape[0]:
        return None
    return float((output.argmax(dim=1) == target).double().mean())


def evaluate_points(
    objective: Objective,
    directions: Sequence[torch.Tensor],
    coefficients: np.ndarray,
    *,
    metric_fn: MetricFn | None = classification_accuracy,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``L(w + Σ_j c_pj d_j)`` for every row ``c_p`` of ``coefficients`` ``(P, k)``, and the metric.

    The loop runs over the data batches outside and the points inside, so each batch is moved to
    the device once per surface; the sums ``Σ_b (n_b/N) L_b`` are accumulated in batch order, as
    in :meth:`Objective.loss`. A non-finite loss at a point is recorded (NaN/Inf), not raised: a
    wide span may overflow far from ``w``. The metric is ``None`` as soon as one batch does not
    admit it. ``progress(done, P·B)`` is called after each point of each of the ``B`` batches
    (``B = 1`` for data in one batch: one tick per grid point).

    Under :mod:`torch.distributed` the *points* are split across ranks (rank ``r`` evaluates
    points ``r, r + R, ...`` on all batches, as Goldstein et al.'s loss-landscape code does with
    MPI) and one all-reduce gathers the losses: a grid of many points on data of few batches
    still uses every rank, and each point's sum is accumulated in the single-process order, so
    the surface equals the single-process one exactly.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if coefficients.ndim != 2 or coefficients.shape[1] != len(directions):
        raise ValueError(
            f"coefficients must have shape (points, {len(directions)}), got {coefficients.shape}"
        )
    dirs = [
        objective.unflatten(d.to(device=objective.device, dtype=objective.dtype))
        for d in directions
    ]
    base = objective.unflatten(objective.flat_parameters())
    count = coefficients.shape[0]
    losses = np.zeros(count, dtype=np.float64)
    metric = np.zeros(count, dtype=np.float64)
    metric_ok = metric_fn is not None
    ranks = objective.ranks
    points = range(ranks.rank, count, ranks.world_size)
    if ranks.distributed:  # every batch, in order, for this rank's points
        pairs: Any = (
            (index, move_batch(batch, objective.device, objective.dtype), weight)
            for index, (batch, weight) in enumerate(objective.batches)
        )
        num_batches = len(objective.batches)
    else:
        pairs = objective._batches_on_device()
        num_batches = len(objective.batches.local_indices)
    total = len(points) * num_batches
    done = 0
    captured: list[Any] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        captured.append(output)

    handle = objective.model.register_forward_hook(hook) if metric_ok else None
    try:
        with torch.no_grad(), objective.collect_failure() as failure:
            for index, batch, weight in pairs:
                for p in points:
                    c = coefficients[p]
                    params = []
                    for i, w in enumerate(base):
                        t = w
                        for j, d in enumerate(dirs):
                            if c[j] != 0.0:
                                t = t + float(c[j]) * d[i]
                        params.append(t)
                    captured.clear()
                    value = float(objective._call(params, batch, index))
                    losses[p] += value * weight
                    if metric_ok:
                        m = None
                        if isinstance(batch, tuple) and len(batch) >= 2 and len(captured) == 1:
                            m = metric_fn(captured[0], batch[1])  # type: ignore[misc]
                        if m is None:
                            metric_ok = False
                        else:
                            metric[p] += float(m) * weight
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        if handle is not None:
            handle.remove()
    if objective.ranks.distributed or failure.error is not None:
        packed = torch.from_numpy(np.concatenate([losses, metric, [0.0 if metric_ok else 1.0]]))
        packed = objective.reduce_sum(packed.to(objective.device), failure).cpu().numpy()
        losses, metric, metric_ok = packed[:count], packed[count:-1], bool(packed[-1] == 0.0)
    return losses, (metric if metric_ok else None)


def loss_surface_1d(
    objective: Objective,
    direction: torch.Tensor,
    ts: Sequence[float] | np.ndarray,
    *,
    metric_fn: MetricFn | None = classification_accuracy,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(L(w + t d) for t in ts, accuracies or None)``, see :func:`evaluate_points`."""
    ts = np.asarray(ts, dtype=np.float64).reshape(-1, 1)
    return evaluate_points(objective, [direction], ts, metric_fn=metric_fn, progress=progress)


def loss_surface_2d(
    objective: Objective,
    d1: torch.Tensor,
    d2: torch.Tensor,
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    progress: Progress | None = None,
    *,
    metric_fn: MetricFn | None = classification_accuracy,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``L(w + x d₁ + y d₂)`` on the grid, shape ``(len(ys), len(xs))`` (row ``i`` is ``ys[i]``,
    as ``matplotlib``'s ``contour(xs, ys, Z)`` expects), and the accuracies or ``None``."""
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    gx, gy = np.meshgrid(xs, ys)  # (len(ys), len(xs))
    coefficients = np.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    losses, metric = evaluate_points(
        objective, [d1, d2], coefficients, metric_fn=metric_fn, progress=progress
    )
    shape = (len(ys), len(xs))
    return losses.reshape(shape), None if metric is None else metric.reshape(shape)


def quadratic_model(
    loss: float, slopes: Sequence[float], eigenvalues: Sequence[float], *axes: np.ndarray
) -> np.ndarray:
    """Second-order Taylor model along eigenvectors: ``L + Σ_j (t_j gᵀv_j + ½ λ_j t_j²)``; one
    axis gives a curve, two axes a ``(len(ys), len(xs))`` grid."""
    if len(axes) == 1:
        t = np.asarray(axes[0], dtype=np.float64)
        return loss + slopes[0] * t + 0.5 * eigenvalues[0] * t**2
    gx, gy = np.meshgrid(np.asarray(axes[0], np.float64), np.asarray(axes[1], np.float64))
    return (
        loss
        + slopes[0] * gx
        + slopes[1] * gy
        + 0.5 * (eigenvalues[0] * gx**2 + eigenvalues[1] * gy**2)
    )


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SurfaceResult:
    """A loss curve or surface and how it was made.

    ``losses`` (and ``accuracies``) have shape ``(len(xs),)`` for ``dims == 1`` and
    ``(len(ys), len(xs))`` for ``dims == 2``. ``direction_norms`` are ``‖d_j‖``; ``slopes`` are
    ``gᵀd_j``; ``cosine`` is ``d₁ᵀd₂/(‖d₁‖‖d₂‖)`` for 2-D. ``quadratic_model`` (eigen only) has the
    shape of ``losses``.
    """

    info: RunInfo
    name: str
    kind: str
    dims: int
    xs: np.ndarray
    ys: np.ndarray | None
    losses: np.ndarray
    accuracies: np.ndarray | None
    direction_norms: tuple[float, ...]
    slopes: tuple[float, ...]
    weight_norm: float
    filter_normalize: bool
    ignore_bn_and_bias: bool
    orthogonalize: bool
    seed: int
    settings: SurfaceSettings
    cosine: float | None = None
    eigenvalues: np.ndarray | None = None
    quadratic_model: np.ndarray | None = None
    to: str | None = None
    to_sha256: str | None = None
    lanczos: LanczosResult | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def center_loss(self) -> float:
        """The loss at the grid point nearest ``w`` (exactly ``w`` for an odd ``points``)."""
        i = int(np.argmin(np.abs(self.xs)))
        if self.dims == 1:
            return float(self.losses[i])
        assert self.ys is not None
        return float(self.losses[int(np.argmin(np.abs(self.ys))), i])

    def to_dict(self) -> dict[str, Any]:
        def nested(a: np.ndarray | None) -> Any:
            if a is None:
                return None
            return json_numbers(a) if a.ndim == 1 else [json_numbers(row) for row in a]

        finite = self.losses[np.isfinite(self.losses)]
        out = self.info.to_dict()
        out.update(
            {
                "name": self.name,
                "kind": self.kind,
                "dims": self.dims,
                "x": json_numbers(self.xs),
                "y": None if self.ys is None else json_numbers(self.ys),
                "losses": nested(self.losses),
                "accuracies": nested(self.accuracies),
                "loss_min": json_number(finite.min()) if finite.size else None,
                "loss_max": json_number(finite.max()) if finite.size else None,
                "directions": {
                    "norms": json_numbers(self.direction_norms),
                    "slopes": json_numbers(self.slopes),
                    "weight_norm": json_number(self.weight_norm),
                    "cosine": json_number(self.cosine),
                    "filter_normalize": self.filter_normalize,
                    "ignore_bn_and_bias": self.ignore_bn_and_bias,
                    "orthogonalize": self.orthogonalize,
                    "seed": self.seed,
                },
                "eigenvalues": None if self.eigenvalues is None else json_numbers(self.eigenvalues),
                "quadratic_model": nested(self.quadratic_model),
                "to": self.to,
                "to_sha256": self.to_sha256,
            }
        )
        if self.lanczos is not None:
            out["lanczos"] = self.lanczos.summary()
        if self.notes:
            out["notes"] = dict(self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/surface/<name>``: coordinates ``x`` (and ``y``) as dimension scales of ``loss``,
        ``accuracy`` and ``quadratic_model`` (axes ``("y", "x")`` in 2-D); the run, the
        settings, the direction metadata and each note (``note_<key>``) as attributes. The
        Lanczos run of eigen directions is not kept (its summary is in the JSON)."""
        axes: tuple[str, ...] = ("x",) if self.dims == 1 else ("y", "x")
        arrays: dict[str, Any] = {"x": self.xs, "loss": self.losses}
        if self.ys is not None:
            arrays["y"] = self.ys
        if self.accuracies is not None:
            arrays["accuracy"] = self.accuracies
        if self.quadratic_model is not None:
            arrays["quadratic_model"] = self.quadratic_model
        if self.eigenvalues is not None:
            arrays["eigenvalues"] = self.eigenvalues
        arrays["direction_norms"] = np.asarray(self.direction_norms, dtype=np.float64)
        arrays["slopes"] = np.asarray(self.slopes, dtype=np.float64)
        dims = {k: axes for k in ("loss", "accuracy", "quadratic_model") if k in arrays}
        attrs: dict[str, Any] = {
            "kind": self.kind,
            "dims": self.dims,
            "points": self.settings.points,
            "span": self.settings.span,
            "filter_normalize": self.filter_normalize,
            "ignore_bn_and_bias": self.ignore_bn_and_bias,
            "orthogonalize": self.orthogonalize,
            "seed": self.seed,
            "weight_norm": self.weight_norm,
            "cosine": self.cosine,
            "to": self.to,
            "to_sha256": self.to_sha256,
            "loss_at_w": self.info.loss,
            "hvp_count": self.info.hvp_count,
            "seconds": self.info.seconds,
        }
        for key, text in self.notes.items():
            attrs[f"{NOTE_PREFIX}{key}"] = text
        write_group(group, arrays, attrs, dims=dims)
        self.info.to_hdf5(group)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> SurfaceResult:
        """The surface of a group written by :meth:`to_hdf5`, named after the group. Its
        settings are those the group keeps (kind, dims, points, span, the direction options,
        ``to``; the others take their defaults) and ``lanczos`` is ``None``."""
        a = read_attrs(group)
        return cls(
            info=RunInfo.from_hdf5(group),
            name=group.name.rsplit("/", 1)[-1],
            kind=str(a["kind"]),
            dims=int(a["dims"]),
            xs=read_array(group, "x"),
            ys=optional_array(group, "y"),
            losses=read_array(group, "loss"),
            accuracies=optional_array(group, "accuracy"),
            direction_norms=tuple(read_array(group, "direction_norms").tolist()),
            slopes=tuple(read_array(group, "slopes").tolist()),
            weight_norm=a["weight_norm"],
            filter_normalize=a["filter_normalize"],
            ignore_bn_and_bias=a["ignore_bn_and_bias"],
            orthogonalize=a["orthogonalize"],
            seed=a["seed"],
            settings=from_field_attrs(SurfaceSettings, a),
            cosine=a.get("cosine"),
            eigenvalues=optional_array(group, "eigenvalues"),
            quadratic_model=optional_array(group, "quadratic_model"),
            to=a.get("to"),
            to_sha256=a.get("to_sha256"),
            notes={
                key.removeprefix(NOTE_PREFIX): str(text)
                for key, text in a.items()
                if key.startswith(NOTE_PREFIX)
            },
        )


def analyze_surface(
    objective: Objective,
    settings: SurfaceSettings | None = None,
    *,
    seed: int = 0,
    progress: StageProgress | None = None,
    trust_checkpoint: bool = False,
    metric_fn: MetricFn | None = classification_accuracy,
) -> SurfaceResult:
    """The loss curve/surface that ``settings`` describe (module docstring), with its metadata.

    Progress stages: ``"lanczos"`` (eigen directions) and ``"surface"`` (one tick per grid point
    and data batch). ``trust_checkpoint`` is passed to :func:`~landscape_cli.problem.loading.load_checkpoint`
    for the ``to`` checkpoint.

    Raises:
        ValueError: a bad setting (named).
        InputError: the ``to`` checkpoint is missing, corrupt or does not fit the model.
        NumericalError: Lanczos broke down on non-finite numbers.
    """
    s = settings or SurfaceSettings()
    kind = validate_settings(s)
    start_time = time.perf_counter()
    notes: dict[str, str] = {}
    stage = (
        (lambda name: None)
        if progress is None
        else (lambda name: lambda d, t: progress(name, d, t))
    )
    centre = grid(-s.span, s.span, s.points)
    xs = centre
    ys = centre if s.dims == 2 else None
    eigenvalues = None
    lz = None
    hvps = 0
    to_sha = None
    if kind == "random":
        directions = random_directions(
            objective,
            s.dims,
            seed,
            filter_normalize=s.filter_normalize,
            ignore_bn_and_bias=s.ignore_bn_and_bias,
            orthogonalize=s.orthogonalize,
        )
    elif kind == "eigen":
        eig = eigen_directions(objective, s.dims, seed, s.tol, s.max_iter, stage("lanczos"))
        directions, eigenvalues, lz, hvps = eig.vectors, eig.eigenvalues, eig.lanczos, eig.hvp_count
        if not lz.converged:
            notes["lanczos"] = f"stopped at max_iter {s.max_iter} before reaching tol={s.tol:g}"
    else:
        from ..problem.loading import load_checkpoint

        assert s.to is not None
        other = load_checkpoint(s.to, trust=trust_checkpoint)
        to_sha = other.sha256
        flat, differing = _other_parameters(objective, other.state_dict, f"checkpoint {s.to}")
        directions = [flat - objective.flat_parameters()]
        if differing:
            notes["buffers"] = (
                f"{len(differing)} buffer(s) or frozen parameter(s) differ between the checkpoints "
                f"(e.g. '{differing[0]}'); they are held at this checkpoint's values along the line, "
                "so at x = 1 the loss need not equal the other checkpoint's"
            )
        xs = grid(*INTERPOLATION_RANGE, s.points)
        if s.dims == 2:
            directions += random_directions(
                objective,
                1,
                seed,
                filter_normalize=s.filter_normalize,
                ignore_bn_and_bias=s.ignore_bn_and_bias,
            )
    use_metric = metric_fn if s.accuracy else None
    if s.dims == 1:
        losses, accuracies = loss_surface_1d(
            objective, directions[0], xs, metric_fn=use_metric, progress=stage("surface")
        )
    else:
        assert ys is not None
        losses, accuracies = loss_surface_2d(
            objective,
            directions[0],
            directions[1],
            xs,
            ys,
            stage("surface"),
            metric_fn=use_metric,
        )
    bad = int(np.sum(~np.isfinite(losses)))
    if bad:
        notes["non_finite"] = f"{bad} grid point(s) have a non-finite loss (reported as null)"
    slopes = tuple(float(objective.gradient @ d) for d in directions)
    norms = tuple(float(torch.linalg.vector_norm(d)) for d in directions)
    cosine = None
    if s.dims == 2 and norms[0] > 0 and norms[1] > 0:
        cosine = float(directions[0] @ directions[1]) / (norms[0] * norms[1])
    quad = None
    if eigenvalues is not None:
        axes = (xs,) if s.dims == 1 else (xs, ys)
        quad = quadratic_model(objective.loss_value, slopes, eigenvalues.tolist(), *axes)
    if accuracies is None and s.accuracy and metric_fn is not None:
        notes["accuracies"] = (
            "not measured: the batches are not (inputs, integer labels) or the model output is "
            "not 2-D logits"
        )
    info = RunInfo.from_objective(
        objective, "surface", seed, hvps, time.perf_counter() - start_time
    )
    return SurfaceResult(
        info=info,
        name=s.name or f"{kind}-{s.dims}d",
        kind=kind,
        dims=s.dims,
        xs=xs,
        ys=ys,
        losses=losses,
        accuracies=accuracies,
        direction_norms=norms,
        slopes=slopes,
        weight_norm=float(torch.linalg.vector_norm(objective.flat_parameters())),
        filter_normalize=s.filter_normalize,
        ignore_bn_and_bias=s.ignore_bn_and_bias,
        orthogonalize=s.orthogonalize,
        seed=seed,
        settings=s,
        cosine=cosine,
        eigenvalues=eigenvalues,
        quadratic_model=quad,
        to=s.to,
        to_sha256=to_sha,
        lanczos=lz,
        notes=notes,
    )
