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

**Directions** (flat vectors in the objective's parameter order; how each is built, with its
references, is in :mod:`landscape_cli.analyses.directions`):

* ``random``: Gaussian, **filter-normalised** (Li et al. §4): every filter of ``d`` (a slice along
  dim 0 of a parameter tensor) has the norm of the same filter of ``w``, so a step ``x = 1``
  changes every filter by its own size. The cosine of the two directions of a 2-D surface is
  reported as ``cosine``.
* ``eigen``: unit eigenvectors of the top Hessian eigenvalues (Lanczos). Coordinates are Euclidean
  distances. The second-order Taylor model is drawn next to the measured loss:

      L(w) + x gᵀv₁ + ½ λ₁ x²      (1-D),
      L(w) + x gᵀv₁ + y gᵀv₂ + ½ (λ₁ x² + λ₂ y²)     (2-D; v₁ ⟂ v₂ so there is no cross term).

  It is exact for a quadratic loss, and its departure from the measured curve shows where the
  landscape stops being quadratic.
* ``interpolation``: ``d = w_other − w``, the straight line to another checkpoint (Goodfellow et
  al. 2015): ``x = 0`` is this checkpoint, ``x = 1`` the other, default range ``[-0.5, 1.5]``.
  Buffers (BatchNorm running statistics) stay those of this checkpoint, and a note says so when
  they differ. A 2-D interpolation surface adds a filter-normalised random ``y`` direction.

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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError
from ..estimators.lanczos import LanczosResult
from ..hdf5 import from_field_attrs, read_arrays, read_attrs, write_group
from ..options import name_problem
from ..problem.data import move_batch
from ..problem.objective import Objective
from .directions import eigen_directions, other_parameters, random_directions
from .run_info import RunInfo, json_number, json_numbers, merge_notes
from .settings import SurfaceSettings

Progress = Callable[[int, int], None]
StageProgress = Callable[[str, int, int], None]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float | None]

KINDS = ("random", "eigen", "interpolation")
#: A surface's notes are attributes of its report group, each named ``note_<key>``.
NOTE_PREFIX = "note_"
INTERPOLATION_RANGE = (-0.5, 1.5)
#: The datasets of a surface group shaped like its grid.
MAPS = ("loss", "accuracy", "quadratic_model")


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
    if s.name is not None and (problem := name_problem(s.name)) is not None:
        raise ValueError(f"`name={s.name!r:.60}`: {problem}")
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
        merge_notes(out, self.notes)
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
        dims = int(a["dims"])
        if dims not in (1, 2):
            raise ValueError(f"attribute dims of {group.name} is {dims}, expected 1 or 2")
        grid = ("x",) if dims == 1 else ("y", "x")
        shapes = {"x": ("x",), "y": ("y",), "direction_norms": ("d",), "slopes": ("d",)}
        shapes |= {**dict.fromkeys(MAPS, grid), "eigenvalues": ("eigenvalues",)}
        optional = ("accuracy", "quadratic_model", "eigenvalues") + ("y",) * (dims == 1)
        arrays = read_arrays(group, shapes, {"d": dims}, optional=optional)
        return cls(
            info=RunInfo.from_hdf5(group),
            name=group.name.rsplit("/", 1)[-1],
            kind=str(a["kind"]),
            dims=dims,
            xs=arrays["x"],
            ys=arrays.get("y"),
            losses=arrays["loss"],
            accuracies=arrays.get("accuracy"),
            direction_norms=tuple(arrays["direction_norms"].tolist()),
            slopes=tuple(arrays["slopes"].tolist()),
            weight_norm=a["weight_norm"],
            filter_normalize=a["filter_normalize"],
            ignore_bn_and_bias=a["ignore_bn_and_bias"],
            orthogonalize=a["orthogonalize"],
            seed=a["seed"],
            settings=from_field_attrs(SurfaceSettings, a),
            cosine=a.get("cosine"),
            eigenvalues=arrays.get("eigenvalues"),
            quadratic_model=arrays.get("quadratic_model"),
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
        InputError: a bad setting (named), or the ``to`` checkpoint is missing, corrupt or does
            not fit the model.
        NumericalError: Lanczos broke down on non-finite numbers.
    """
    s = settings or SurfaceSettings()
    try:
        kind = validate_settings(s)
    except ValueError as exc:
        raise InputError(f"surface settings: {exc}") from None
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
        flat, differing = other_parameters(objective, other.state_dict, f"checkpoint {s.to}")
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
