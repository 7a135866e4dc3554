"""Jacobian diagnostics: input–output and layer-wise singular values, and the empirical NTK.

Kept as one module: the per-sample, per-layer and NTK parts are stages of one analysis that share
its samples, its network function, its product counts and its result.

Three matrix-free views of how signals and gradients travel through the network ``f(x; θ)`` of an
:class:`~landscape_cli.problem.objective.Objective`, all evaluated with :func:`torch.func.functional_call`
on the objective's copies of the parameters and buffers (the user's module is never mutated), in
the objective's module mode (``eval`` by default).

**Input–output Jacobian** (Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep
learning through dynamical isometry: theory and practice", NeurIPS 2017). For each of the first
``N`` samples ``x_i`` (``settings.samples`` of the samples the objective holds), ``J_i =
∂f(x_i)/∂x_i`` is a ``C × d`` matrix (``C`` outputs, ``d`` input entries per sample). Its largest
singular value is ``σ_max(J_i) = sqrt(λ_max(J_iᵀ J_i))``, found by Lanczos
(:func:`landscape_cli.estimators.lanczos.lanczos`) on the operator ``v ↦ J_iᵀ (J_i v)``: one JVP
(forward mode, :func:`torch.func.jvp`) and one VJP (reverse mode, :func:`torch.func.vjp`) per
step, no Jacobian materialised. ``JᵀJ`` has rank at most ``min(C, d)``, so Lanczos breaks down
(exactly) after at most ``min(C, d) + 1`` steps; ``settings.tol`` is the relative error target of
``σ_max²``. When ``min(C, d) ≤ settings.dense_max`` the whole (small) Jacobian is also formed
exactly, from ``C`` VJPs (rows ``e_cᵀ J``) if ``C ≤ d`` or from ``d`` JVPs (columns ``J e_j``)
otherwise, and all its singular values come from :func:`torch.linalg.svdvals` in float64. The
*smallest non-zero* singular value ``σ_min`` is the smallest one above ``max(C, d) · eps ·
σ_max`` (``eps`` of the analysis dtype; the rank threshold of ``numpy.linalg.matrix_rank``), the
rank is their number, and the condition number is ``σ_max / σ_min`` (``σ_max`` from Lanczos).
Dynamical isometry is ``σ`` concentrated near 1 (condition number near 1).

**Layer by layer.** Forward hooks on the layer modules (``layer_scope``: the leaf modules, i.e.
those without children, or the top-level children of the model) record each layer call's input
``z`` and output during one forward pass of the ``N`` samples, in execution order (a module called
twice gives two layers, ``name#1`` and ``name#2``). For each layer call and sample, ``σ_max`` of
``∂(layer output)/∂(layer input)`` is found by the same matrix-free Lanczos with JVPs and VJPs of
the module call. The median and the quantiles of ``log σ_max`` along the layers show where
gradients grow (``σ_max > 1``) or shrink. Only calls with one floating-point tensor argument (no
keyword arguments) and one tensor output, both with the batch as their first dimension, are
layers; others are listed in the notes. Functional operations between modules (``F.relu`` in a
``forward``) are not layers, so the product of the layer norms bounds the input–output norm only
when the modules chain.

**Empirical neural tangent kernel** (Jacot, Gabriel & Hongler, "Neural Tangent Kernel:
Convergence and Generalization in Neural Networks", NeurIPS 2018). With ``F(θ) ∈ R^{N·C}`` the
outputs of the ``N`` samples flattened (sample-major), ``J_θ = ∂F/∂θ`` (``N·C × P``) and
``K = J_θ J_θᵀ``. Products ``K v = J_θ (J_θᵀ v)`` are one VJP and one JVP through
``functional_call`` (the "NTK-vector products" of Novak, Sohl-Dickstein & Schoenholz, "Fast
Finite Width Neural Tangent Kernel", ICML 2022), so neither ``J_θ`` nor ``K`` is formed; Lanczos
gives the top eigenvalues. The trace ``tr K = ‖J_θ‖_F² = Σ_a ‖J_θᵀ e_a‖²`` is exact, from ``N·C``
VJPs (vectorised with :func:`torch.func.vmap` where possible).

**NTK and Gauss-Newton.** For the mean-reduced squared error ``L = (1/(N·C)) Σ_{i,c}
(f_c(x_i) − y_{ic})²`` (``--loss mse``) the generalised Gauss-Newton matrix is ``G = J_θᵀ (∇²_F L)
J_θ = (2/(N·C)) J_θᵀ J_θ``; since ``J_θᵀ J_θ`` and ``J_θ J_θᵀ`` share their non-zero
eigenvalues, the non-zero eigenvalues of ``G`` are ``2/(N·C)`` times those of ``K`` (computed on
the same ``N`` samples). For other losses ``∇²_F L`` is not a multiple of the identity and the two
spectra differ.

**Train mode.** In ``eval`` mode (default) a sample's Jacobian is that of the network applied to
that sample alone (a batch of one). In ``train`` mode samples interact (BatchNorm's batch
statistics), so the function of sample ``i`` is the network on all ``N`` samples with row ``i``
replaced, read at row ``i`` (the other rows held fixed); Dropout draws its masks from a random
state derived from the seed (the same masks in every product).

Every number is counted: ``jvp_count`` and ``vjp_count`` are the Jacobian products spent (no
Hessian-vector product is used, so the result's ``hvp_count`` is 0).

Example:
    >>> import torch
    >>> W = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    >>> s = jacobian_singular_values(lambda z: W @ z, torch.ones(2, dtype=torch.float64))
    >>> round(s.sigma_max, 12), round(s.sigma_min, 12), s.rank
    (3.0, 0.5, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError, NumericalError, numerical_errors
from ..estimators.lanczos import LanczosResult, lanczos
from ..hdf5 import (
    optional_group,
    read_array,
    read_arrays,
    read_attrs,
    set_attrs,
    write_datasets,
    write_group,
)
from ..operators.jacobian import (
    JacobianGram,
    LayerCall,
    ModuleForward,
    NetworkFunction,
    NTKOperator,
    capture_layers,
    row_function,
)
from ..problem.seeding import derive_seed
from ..progress import StageProgress, stage
from .estimator_groups import lanczos_from_hdf5, lanczos_to_hdf5
from .run_info import (
    RunInfo,
    json_number,
    json_numbers,
    merge_notes,
    notes_from_hdf5,
    notes_to_hdf5,
    settings_from_hdf5,
    settings_to_hdf5,
)
from .settings import JacobianSettings

__all__ = [
    "JacobianResult",
    "LayerJacobian",
    "NTKSpectrum",
    "SampleJacobian",
    "analyze_jacobian",
    "jacobian_singular_values",
    "summarize",
]

#: The quantiles every distribution is summarised by (name, level), with its min and max.
QUANTILES = (("q10", 0.10), ("q25", 0.25), ("median", 0.50), ("q75", 0.75), ("q90", 0.90))


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, float] | None:
    """``{"min", "q10", "q25", "median", "q75", "q90", "max"}`` of the finite values (linear
    interpolation between order statistics, numpy's default), or ``None`` when there are none."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    out = {"min": float(arr.min())}
    out.update({name: float(np.quantile(arr, q)) for name, q in QUANTILES})
    out["max"] = float(arr.max())
    return out


# ---------------------------------------------------------------------------- one Jacobian


@dataclass(frozen=True)
class SampleJacobian:
    """Singular values of one Jacobian: ``sigma_max`` (Lanczos) and, when the Jacobian was small
    enough to form, all singular values (descending), the smallest non-zero one and the rank."""

    sigma_max: float
    lanczos: LanczosResult
    input_dim: int
    output_dim: int
    singular_values: np.ndarray | None = None
    sigma_min: float | None = None
    rank: int | None = None
    jvps: int = 0
    vjps: int = 0

    @property
    def condition(self) -> float | None:
        """``σ_max / σ_min`` (``None`` when ``σ_min`` is unknown or the Jacobian is zero)."""
        if self.sigma_min is None or not self.sigma_min > 0:
            return None
        return self.sigma_max / self.sigma_min


def jacobian_singular_values(
    fn: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    seed: int = 0,
    dense_max: int = 256,
) -> SampleJacobian:
    """``σ_max`` of ``J = ∂fn/∂z`` at ``z0`` by Lanczos on ``JᵀJ`` (JVP + VJP per step), and,
    when ``min(m, d) ≤ dense_max``, every singular value of the exactly formed ``J``.

    ``σ_min`` is the smallest singular value above ``max(m, d) · eps(dtype) · s_1`` (``s_1`` the
    largest dense singular value), ``rank`` their number (module docstring).

    Raises:
        FloatingPointError: a product was not finite (from :func:`~landscape_cli.estimators.lanczos.lanczos`).
    """
    A = JacobianGram(fn, z0)
    lz = lanczos(A, seed=seed, max_iter=max_iter, tol=tol, top_k=1)
    sigma_max = math.sqrt(max(float(lz.top(1)[0]), 0.0))
    singular = sigma_min = rank = None
    if min(A.input_dim, A.output_dim) <= dense_max:
        J = A.dense()
        if not bool(torch.isfinite(J).all()):
            raise FloatingPointError("the Jacobian has non-finite entries")
        singular = torch.linalg.svdvals(J.to(torch.float64)).cpu().numpy()
        threshold = max(A.input_dim, A.output_dim) * torch.finfo(A.dtype).eps * singular[0]
        nonzero = singular[singular > threshold]
        rank = int(nonzero.size)
        sigma_min = float(nonzero[-1]) if rank else 0.0
    return SampleJacobian(
        sigma_max=sigma_max,
        lanczos=lz,
        input_dim=A.input_dim,
        output_dim=A.output_dim,
        singular_values=singular,
        sigma_min=sigma_min,
        rank=rank,
        jvps=A.jvps,
        vjps=A.vjps,
    )


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerJacobian:
    """``σ_max`` of one layer call's Jacobian for every sample (``sigma_max[i]``)."""

    name: str  # the module path ("" is the model itself: "(model)"), "#k" for the k-th call
    type: str  # the module's class name
    input_dim: int  # per sample
    output_dim: int
    sigma_max: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "sigma_max": summarize(self.sigma_max),
            "converged": bool(np.all(self.converged)),
        }


def layers_to_hdf5(group: h5py.Group, layers: Sequence[LayerJacobian], samples: int) -> None:
    """The layer calls in the ``/jacobian`` group: ``layer_sigma_max``, ``layer_iterations`` and
    ``layer_converged`` (layers × samples), names, types and dimensions as attributes."""
    columns = (
        ("layer_sigma_max", "sigma_max", np.float64),
        ("layer_iterations", "iterations", np.int64),
        ("layer_converged", "converged", bool),
    )
    write_datasets(
        group,
        {
            dataset: np.stack([np.asarray(getattr(x, name), dtype=dtype) for x in layers])
            if layers
            else np.zeros((0, samples), dtype=dtype)
            for dataset, name, dtype in columns
        },
    )
    set_attrs(
        group,
        {
            "layer_names": [x.name for x in layers],
            "layer_types": [x.type for x in layers],
            "layer_input_dims": np.asarray([x.input_dim for x in layers], dtype=np.int64),
            "layer_output_dims": np.asarray([x.output_dim for x in layers], dtype=np.int64),
        },
    )


def layers_from_hdf5(group: h5py.Group) -> tuple[LayerJacobian, ...]:
    """The layer calls of a ``/jacobian`` group written by :func:`layers_to_hdf5`."""
    a = read_attrs(group)
    names = ("layer_sigma_max", "layer_iterations", "layer_converged")
    arrays = read_arrays(group, dict.fromkeys(names, ("layers", "samples")))
    sigma, steps, converged = (arrays[name] for name in names)
    inputs = np.atleast_1d(a["layer_input_dims"])
    outputs = np.atleast_1d(a["layer_output_dims"])
    return tuple(
        LayerJacobian(
            name=str(name),
            type=str(kind),
            input_dim=int(inputs[k]),
            output_dim=int(outputs[k]),
            sigma_max=sigma[k],
            iterations=steps[k],
            converged=converged[k],
        )
        for k, (name, kind) in enumerate(
            zip(list(a["layer_names"]), list(a["layer_types"]), strict=True)
        )
    )


@dataclass(frozen=True)
class NTKSpectrum:
    """Top eigenvalues (descending) and the exact trace of the empirical NTK on ``samples``."""

    samples: int
    outputs: int  # N·C, the kernel's size
    top_eigenvalues: np.ndarray
    trace: float
    lanczos: LanczosResult
    tol: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "outputs": self.outputs,
            "top_eigenvalues": json_numbers(self.top_eigenvalues),
            "trace": json_number(self.trace),
            "lanczos": {**self.lanczos.summary(), "tol": self.tol},
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/jacobian/ntk``: the top eigenvalues, the kernel's size and trace, the Lanczos run."""
        write_group(
            group,
            {"top_eigenvalues": np.asarray(self.top_eigenvalues, dtype=np.float64)},
            {
                "samples": self.samples,
                "outputs": self.outputs,
                "trace": self.trace,
                "tol": self.tol,
            },
        )
        lanczos_to_hdf5(group.create_group("lanczos"), self.lanczos, tol=self.tol)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> NTKSpectrum:
        """The spectrum of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        return cls(
            samples=a["samples"],
            outputs=a["outputs"],
            top_eigenvalues=read_array(group, "top_eigenvalues"),
            trace=a["trace"],
            lanczos=lanczos_from_hdf5(group["lanczos"]),
            tol=a["tol"],
        )


@dataclass(frozen=True)
class JacobianResult:
    """Outcome of :func:`analyze_jacobian` (arrays are per sample, in data order).

    ``sigma_min``, ``rank`` and ``singular_values`` (``N × min(C, d)``, descending) are ``None``
    when the input–output Jacobian was too large to form (``min(C, d) > dense_max``).
    """

    info: RunInfo
    settings: JacobianSettings
    samples: int
    input_dim: int
    output_dim: int
    sigma_max: np.ndarray
    lanczos_iterations: np.ndarray
    lanczos_converged: np.ndarray
    sigma_min: np.ndarray | None = None
    rank: np.ndarray | None = None
    singular_values: np.ndarray | None = None
    layers: tuple[LayerJacobian, ...] = ()
    ntk: NTKSpectrum | None = None
    jvp_count: int = 0
    vjp_count: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def condition(self) -> np.ndarray | None:
        """Per-sample ``σ_max / σ_min`` (NaN where ``σ_min = 0``), or ``None``."""
        if self.sigma_min is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(self.sigma_max, float) / np.asarray(self.sigma_min, float)
        out[~(np.asarray(self.sigma_min, float) > 0)] = np.nan
        return out

    @property
    def sigma_max_median(self) -> float:
        """The median over samples of ``σ_max`` (the ``jacobian_sigma_max`` check metric)."""
        return float(np.median(self.sigma_max))

    @property
    def condition_median(self) -> float | None:
        """The median condition number (``jacobian_condition``), ``None`` when unknown."""
        cond = self.condition
        if cond is None or not np.isfinite(cond).any():
            return None
        return float(np.median(cond[np.isfinite(cond)]))

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        out = self.info.to_dict()
        cond = self.condition
        out.update(
            {
                "samples": self.samples,
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "jacobian_products": {"jvp": self.jvp_count, "vjp": self.vjp_count},
                "sigma_max": summarize(self.sigma_max),
                "sigma_min": None if self.sigma_min is None else summarize(self.sigma_min),
                "condition": None if cond is None else summarize(cond),
                "per_sample": {
                    "sigma_max": json_numbers(self.sigma_max),
                    "sigma_min": None if self.sigma_min is None else json_numbers(self.sigma_min),
                    "condition": None if cond is None else json_numbers(cond),
                    "rank": None if self.rank is None else [int(r) for r in self.rank],
                },
                "lanczos": {
                    "tol": s.tol,
                    "max_iter": s.max_iter,
                    "iterations": summarize(self.lanczos_iterations),
                    "converged": bool(np.all(self.lanczos_converged)),
                },
                "layers": [layer.to_dict() for layer in self.layers],
                "ntk": None if self.ntk is None else self.ntk.to_dict(),
            }
        )
        merge_notes(out, self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/jacobian``: per-sample arrays (length N; ``sigma_min``, ``condition``, ``rank`` and
        ``singular_values`` when formed, ``condition`` NaN where σ_min = 0), per-layer arrays
        (layers × N), the run and the medians as attributes; ``ntk``, ``settings``, ``notes``."""
        arrays: dict[str, Any] = {
            "sigma_max": np.asarray(self.sigma_max, dtype=np.float64),
            "lanczos_iterations": np.asarray(self.lanczos_iterations, dtype=np.int64),
            "lanczos_converged": np.asarray(self.lanczos_converged, dtype=bool),
        }
        if self.sigma_min is not None:
            arrays["sigma_min"] = np.asarray(self.sigma_min, dtype=np.float64)
            arrays["condition"] = np.asarray(self.condition, dtype=np.float64)
            arrays["rank"] = np.asarray(self.rank, dtype=np.int64)
            arrays["singular_values"] = np.asarray(self.singular_values, dtype=np.float64)
        write_datasets(group, arrays)
        layers_to_hdf5(group, self.layers, self.samples)
        self.info.to_hdf5(group)
        set_attrs(
            group,
            {
                "samples": self.samples,
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "jvp_count": self.jvp_count,
                "vjp_count": self.vjp_count,
                "sigma_max_median": self.sigma_max_median,
                "condition_median": self.condition_median,
            },
        )
        if self.ntk is not None:
            self.ntk.to_hdf5(group.create_group("ntk"))
        settings_to_hdf5(group, self.settings)
        notes_to_hdf5(group, self.notes)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> JacobianResult:
        """The result of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        per_sample = ("sigma_max", "lanczos_iterations", "lanczos_converged", "sigma_min", "rank")
        optional = ("sigma_min", "rank", "singular_values")
        shapes = {**dict.fromkeys(per_sample, ("samples",)), "singular_values": ("samples", "k")}
        arrays = read_arrays(group, shapes, optional=optional)
        return cls(
            info=RunInfo.from_hdf5(group),
            settings=settings_from_hdf5(group, JacobianSettings),
            samples=a["samples"],
            input_dim=a["input_dim"],
            output_dim=a["output_dim"],
            sigma_max=arrays["sigma_max"],
            lanczos_iterations=arrays["lanczos_iterations"],
            lanczos_converged=arrays["lanczos_converged"],
            sigma_min=arrays.get("sigma_min"),
            rank=arrays.get("rank"),
            singular_values=arrays.get("singular_values"),
            layers=layers_from_hdf5(group),
            ntk=optional_group(group, "ntk", NTKSpectrum.from_hdf5),
            jvp_count=a["jvp_count"],
            vjp_count=a["vjp_count"],
            notes=notes_from_hdf5(group),
        )


# ---------------------------------------------------------------------------- inputs


def _checked_output(out: Any, n: int, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise InputError(
            f"the Jacobian needs {what} to return one floating-point tensor, "
            f"got {type(out).__name__}",
            hint="wrap the model so that forward returns the output tensor",
        )
    if out.ndim == 0 or out.shape[0] != n:
        raise InputError(
            f"{what} returned shape {tuple(out.shape)} for {n} samples; the Jacobian needs the "
            "batch as the first dimension of the output"
        )
    return out


def _first_inputs(objective: Any, n: int) -> torch.Tensor:
    """The inputs ``x`` (first element of each batch) of the first ``n`` samples, on the device."""
    if objective.batches.source is None:
        raise InputError(
            "the Jacobian needs data: the objective has none (an analytic loss)",
            hint="give `data` (inputs x are the first element of each batch)",
        )
    parts: list[torch.Tensor] = []
    count = 0
    for _index, batch, _weight in objective._batches_on_device():
        if isinstance(batch, Mapping):
            raise InputError(
                "the input–output Jacobian needs one real-valued input x; the data are named "
                f"model inputs ({', '.join(batch)}), token ids rather than points to "
                "differentiate at",
                hint="for token models, differentiate with respect to an embedding instead",
            )
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise InputError(f"the batch's first element is a {type(x).__name__}, not a tensor")
        if not x.is_floating_point():
            raise InputError(
                f"the input–output Jacobian needs real-valued inputs; the data's x has dtype "
                f"{str(x.dtype).replace('torch.', '')} (token ids or labels?)",
                hint="for token models, differentiate with respect to an embedding instead",
            )
        parts.append(x[: n - count])
        count += parts[-1].shape[0]
        if count >= n:
            break
    return torch.cat(parts)


# ---------------------------------------------------------------------------- the analysis


def analyze_jacobian(
    objective: Any,
    settings: JacobianSettings | None = None,
    *,
    seed: int = 0,
    progress: StageProgress | None = None,
) -> JacobianResult:
    """Input–output Jacobian singular values per sample, per-layer ``σ_max`` and the NTK spectrum
    on the first ``settings.samples`` samples of ``objective`` (module docstring for the maths).

    Stages reported to ``progress``: ``jacobian`` (samples), ``layers`` (layer × sample),
    ``ntk`` (Lanczos steps), ``ntk-trace`` (VJPs).

    Raises:
        InputError: no data, integer inputs, or a model whose output is not one batch-first
            floating-point tensor.
        NumericalError: a non-finite Jacobian product.
    """
    settings = settings or JacobianSettings()
    start = time.perf_counter()
    network = NetworkFunction(objective)
    X = _first_inputs(objective, settings.samples)
    n = int(X.shape[0])
    alone = objective.mode == "eval"
    notes: dict[str, str] = {}
    jvps = vjps = 0

    def model_call(x: torch.Tensor) -> torch.Tensor:
        return _checked_output(network(x), x.shape[0], "the model")

    with torch.no_grad():
        model_call(X)  # shape checks before any product
    try:
        with numerical_errors("the input–output Jacobian"):
            per_sample: list[SampleJacobian] = []
            report = stage(progress, "jacobian")
            for i in range(n):
                sample = jacobian_singular_values(
                    row_function(model_call, X, i, alone),
                    X[i],
                    tol=settings.tol,
                    max_iter=settings.max_iter,
                    seed=derive_seed(seed, f"jacobian/{i}"),
                    dense_max=settings.dense_max,
                )
                per_sample.append(sample)
                jvps += sample.jvps
                vjps += sample.vjps
                if report is not None:
                    report(i + 1, n)
        first = per_sample[0]
        sigma_max = np.array([s.sigma_max for s in per_sample])
        iterations = np.array([s.lanczos.steps for s in per_sample])
        converged = np.array([s.lanczos.converged for s in per_sample])
        if not converged.all():
            notes["lanczos"] = (
                f"{int((~converged).sum())} of {n} input–output Lanczos runs stopped at "
                f"--max-iter {settings.max_iter} before reaching tol={settings.tol:g}"
            )
        sigma_min = rank = singular = None
        if first.singular_values is not None:
            sigma_min = np.array([s.sigma_min for s in per_sample], dtype=np.float64)
            rank = np.array([s.rank for s in per_sample], dtype=np.int64)
            singular = np.stack([s.singular_values for s in per_sample])
        else:
            notes["sigma_min"] = (
                f"not computed: min(input dim {first.input_dim}, output dim {first.output_dim}) "
                f"exceeds --dense-max {settings.dense_max}"
            )

        layers: list[LayerJacobian] = []
        if settings.layers:
            layers, skipped, lj, lv = _layer_jacobians(
                network, X, settings, seed, alone, stage(progress, "layers")
            )
            jvps += lj
            vjps += lv
            if skipped:
                notes["layers"] = "skipped module calls: " + ", ".join(skipped)
            if not layers:
                notes.setdefault("layers", "no module call qualified as a layer")
        else:
            notes["layers"] = "not requested (--no-layers)"

        ntk = None
        if settings.ntk:
            ntk, nj, nv = _ntk_spectrum(objective, network, X, settings, seed, progress)
            jvps += nj
            vjps += nv
        else:
            notes["ntk"] = "not requested (--no-ntk)"
    except NotImplementedError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InputError(
            f"the model uses an operation without forward-mode (JVP) support: {first_line}"
        ) from None

    info = RunInfo.from_objective(objective, "jacobian", seed, 0, time.perf_counter() - start)
    return JacobianResult(
        info=info,
        settings=settings,
        samples=n,
        input_dim=first.input_dim,
        output_dim=first.output_dim,
        sigma_max=sigma_max,
        lanczos_iterations=iterations,
        lanczos_converged=converged,
        sigma_min=sigma_min,
        rank=rank,
        singular_values=singular,
        layers=tuple(layers),
        ntk=ntk,
        jvp_count=jvps,
        vjp_count=vjps,
        notes=notes,
    )


def _layer_jacobians(
    network: NetworkFunction,
    X: torch.Tensor,
    settings: JacobianSettings,
    seed: int,
    alone: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[LayerJacobian], list[str], int, int]:
    calls, skipped = capture_layers(network, X, settings.layer_scope)
    n = X.shape[0]
    total = len(calls) * n
    done = jvps = vjps = 0
    layers = []
    for label, call in calls:
        wrapped = ModuleForward(call.module)

        def layer(
            z: torch.Tensor, call: LayerCall = call, wrapped: ModuleForward = wrapped
        ) -> torch.Tensor:
            return network.module_call(call.path, wrapped, z)

        sigmas, steps, converged = [], [], []
        for i in range(n):
            A = JacobianGram(row_function(layer, call.input, i, alone), call.input[i])
            lz = lanczos(
                A,
                seed=derive_seed(seed, f"jacobian/layer/{label}/{i}"),
                max_iter=settings.max_iter,
                tol=settings.tol,
                top_k=1,
            )
            sigmas.append(math.sqrt(max(float(lz.top(1)[0]), 0.0)))
            steps.append(lz.steps)
            converged.append(lz.converged)
            jvps += A.jvps
            vjps += A.vjps
            done += 1
            if progress is not None:
                progress(done, total)
        layers.append(
            LayerJacobian(
                name=label,
                type=type(call.module).__name__,
                input_dim=int(call.input[0].numel()),
                output_dim=call.output_dim,
                sigma_max=np.array(sigmas),
                iterations=np.array(steps),
                converged=np.array(converged),
            )
        )
    return layers, skipped, jvps, vjps


def _ntk_spectrum(
    objective: Any,
    network: NetworkFunction,
    X: torch.Tensor,
    settings: JacobianSettings,
    seed: int,
    progress: StageProgress | None,
) -> tuple[NTKSpectrum, int, int]:
    def outputs(*params: torch.Tensor) -> torch.Tensor:
        return network(X, params).reshape(-1)

    with numerical_errors("the NTK"):
        K = NTKOperator(outputs, objective._params)
        top_k = min(settings.ntk_top_k, K.shape[0])
        lz = lanczos(
            K,
            seed=derive_seed(seed, "jacobian/ntk"),
            max_iter=max(settings.max_iter, top_k),
            tol=settings.tol,
            top_k=top_k,
            progress=stage(progress, "ntk"),
        )
        trace = K.trace(progress=stage(progress, "ntk-trace"))
    if not math.isfinite(trace):
        raise NumericalError("the NTK trace is not finite")
    spectrum = NTKSpectrum(
        samples=int(X.shape[0]),
        outputs=K.shape[0],
        top_eigenvalues=lz.top(top_k),
        trace=trace,
        lanczos=lz,
        tol=settings.tol,
    )
    return spectrum, K.jvps, K.vjps
