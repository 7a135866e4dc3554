"""How well K-FAC's Kronecker factors match this checkpoint's generalised Gauss-Newton matrix.

K-FAC (:mod:`landscape_cli.operators.kfac`) approximates each layer's GGN block ``B_l`` by
``K_l = G_l ⊗ A_l`` and drops the blocks between layers. Per covered layer, and overall (the
GGN of all covered parameters, off-diagonal blocks included, against the block-diagonal K):

* the relative Frobenius error ``‖B − K‖_F / ‖B‖_F`` from ``probes`` Rademacher probes, with its
  standard error (:func:`~landscape_cli.estimators.frobenius.relative_frobenius_error`); the
  GGN's products with the probes come from the same pass over the data as the factors;
* the traces, both exact: ``tr(G) tr(A)`` and ``tr(B) = (1/N) Σ_n Σ_c ‖M_nc‖²``;
* ``λ_max`` of both (K's from the factors, the GGN's by Lanczos on its block) and
  ``|cos ∠(u_B, u_K)|`` between their top eigenvectors;
* the spectral densities of both on one grid: SLQ on the GGN of the covered parameters and
  K-FAC's exact eigenvalues ``μ_i ν_j`` broadened with the same Gaussian;
* the preconditioned sharpness ``λ_max((K + δI)⁻¹H)`` on the covered parameters
  (:class:`~landscape_cli.operators.kfac.KFACPreconditioned`), and with a learning rate ``η``
  the product ``η λ_max`` against 2, the bound of a preconditioned gradient step on a quadratic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import numerical_errors
from ..estimators.density import SpectralDensity, default_sigma, gaussian_broadening, slq_density
from ..estimators.frobenius import relative_frobenius_error
from ..estimators.lanczos import lanczos
from ..hdf5 import (
    field_attrs,
    from_field_attrs,
    optional_group,
    read_arrays,
    read_attrs,
    set_attrs,
    write_datasets,
)
from ..operators.curvature import split_loss
from ..operators.ggn import GGNOperator
from ..operators.hessian import HessianOperator
from ..operators.kfac import (
    KFACPreconditioned,
    KroneckerFactors,
    covered_layers,
    kronecker_factors,
)
from ..problem.seeding import derive_seed
from ..progress import StageProgress, stage
from .run_info import (
    RunInfo,
    json_number,
    merge_notes,
    notes_from_hdf5,
    notes_to_hdf5,
    settings_from_hdf5,
    settings_to_hdf5,
)
from .settings import KFACSettings

__all__ = ["KFACResult", "KFACSettings", "LayerFit", "analyze_kfac"]

#: The name of the row comparing all covered parameters at once.
OVERALL = "all covered"
#: Histogram bins of K-FAC's eigenvalues before broadening (their count can be the model's size).
EIGENVALUE_BINS = 1 << 16


@dataclass(frozen=True)
class LayerFit:
    """One row of the comparison (module docstring): a covered layer, or :data:`OVERALL`.

    ``ggn_lambda_max``, its Lanczos bound and ``top_cosine`` are NaN without ``lambda_max``."""

    module: str
    layer_type: str
    parameters: int
    frobenius_error: float
    frobenius_stderr: float
    kfac_trace: float
    ggn_trace: float
    kfac_lambda_max: float
    ggn_lambda_max: float = math.nan
    ggn_lambda_max_bound: float = math.nan
    top_cosine: float = math.nan

    @property
    def trace_ratio(self) -> float:
        """``tr(K) / tr(GGN)``."""
        return self.kfac_trace / self.ggn_trace if self.ggn_trace > 0 else math.nan

    @property
    def lambda_max_ratio(self) -> float:
        """``λ_max(K) / λ_max(GGN)`` (NaN without the GGN's)."""
        g = self.ggn_lambda_max
        return self.kfac_lambda_max / g if g > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "type": self.layer_type,
            "parameters": self.parameters,
            "frobenius_error": json_number(self.frobenius_error),
            "frobenius_stderr": json_number(self.frobenius_stderr),
            "kfac_trace": json_number(self.kfac_trace),
            "ggn_trace": json_number(self.ggn_trace),
            "trace_ratio": json_number(self.trace_ratio),
            "kfac_lambda_max": json_number(self.kfac_lambda_max),
            "ggn_lambda_max": json_number(self.ggn_lambda_max),
            "ggn_lambda_max_bound": json_number(self.ggn_lambda_max_bound),
            "lambda_max_ratio": json_number(self.lambda_max_ratio),
            "top_cosine": json_number(self.top_cosine),
        }


_NUMBERS = (
    "parameters",
    "frobenius_error",
    "frobenius_stderr",
    "kfac_trace",
    "ggn_trace",
    "kfac_lambda_max",
    "ggn_lambda_max",
    "ggn_lambda_max_bound",
    "top_cosine",
)


@dataclass(frozen=True)
class Preconditioned:
    """``λ_max((K + δI)⁻¹H)`` with its Lanczos bound and HVPs, and ``lr`` (``None``: not given)."""

    damping: float
    lambda_max: float
    bound: float
    hvps: int
    lr: float | None = None

    @property
    def lr_times_lambda_max(self) -> float | None:
        return None if self.lr is None else self.lr * self.lambda_max

    def to_dict(self) -> dict[str, Any]:
        return {
            "damping": self.damping,
            "lambda_max": json_number(self.lambda_max),
            "error_bound": json_number(self.bound),
            "hvps": self.hvps,
            "lr": self.lr,
            "lr_times_lambda_max": json_number(self.lr_times_lambda_max),
            "threshold": 2.0,
        }


@dataclass(frozen=True)
class KFACResult:
    """Outcome of :func:`analyze_kfac`: the rows sorted by Frobenius error (largest first), the
    overall row, what K-FAC does not cover, the two densities and the preconditioned
    sharpness."""

    info: RunInfo
    settings: KFACSettings
    layers: tuple[LayerFit, ...]
    overall: LayerFit
    uncovered: tuple[str, ...] = ()
    uncovered_parameters: int = 0
    kfac_density: SpectralDensity | None = None
    ggn_density: SpectralDensity | None = None
    preconditioned: Preconditioned | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = self.info.to_dict()
        out.update(
            {
                "kind": self.settings.kind,
                "probes": self.settings.probes,
                "overall": self.overall.to_dict(),
                "layers": [row.to_dict() for row in self.layers],
                "uncovered": list(self.uncovered),
                "uncovered_parameters": self.uncovered_parameters,
                "kfac_density": None if self.kfac_density is None else self.kfac_density.to_dict(),
                "ggn_density": None if self.ggn_density is None else self.ggn_density.to_dict(),
                "preconditioned": None
                if self.preconditioned is None
                else self.preconditioned.to_dict(),
            }
        )
        merge_notes(out, self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/kfac``: one dataset per column of the rows (the overall row first), module names
        and types as attributes; the densities' grids and values; ``settings``, ``notes``."""
        rows = (self.overall, *self.layers)
        arrays = {name: np.asarray([getattr(r, name) for r in rows]) for name in _NUMBERS}
        for name, density in (("kfac", self.kfac_density), ("ggn", self.ggn_density)):
            if density is not None:
                arrays[f"{name}_density_grid"] = density.grid
                arrays[f"{name}_density_values"] = density.values
        write_datasets(group, arrays)
        self.info.to_hdf5(group)
        set_attrs(
            group,
            {
                "modules": [r.module for r in rows],
                "layer_types": [r.layer_type for r in rows],
                "uncovered": list(self.uncovered),
                "uncovered_parameters": self.uncovered_parameters,
                "kfac_sigma": None if self.kfac_density is None else self.kfac_density.sigma,
                "ggn_sigma": None if self.ggn_density is None else self.ggn_density.sigma,
            },
        )
        if self.preconditioned is not None:
            set_attrs(group.create_group("preconditioned"), field_attrs(self.preconditioned))
        settings_to_hdf5(group, self.settings)
        notes_to_hdf5(group, self.notes)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> KFACResult:
        """The result of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        arrays = read_arrays(group, dict.fromkeys(_NUMBERS, ("rows",)))
        modules = list(np.atleast_1d(a["modules"]))
        types = list(np.atleast_1d(a["layer_types"]))
        rows = [
            LayerFit(
                module=str(modules[k]),
                layer_type=str(types[k]),
                **{
                    name: (int(arrays[name][k]) if name == "parameters" else float(arrays[name][k]))
                    for name in _NUMBERS
                },
            )
            for k in range(len(modules))
        ]
        densities = {}
        for name in ("kfac", "ggn"):
            if f"{name}_density_grid" in group:
                pair = read_arrays(
                    group,
                    {f"{name}_density_grid": ("grid",), f"{name}_density_values": ("grid",)},
                )
                densities[name] = SpectralDensity(
                    pair[f"{name}_density_grid"],
                    pair[f"{name}_density_values"],
                    float(a[f"{name}_sigma"]),
                )
        uncovered = a.get("uncovered", [])
        return cls(
            info=RunInfo.from_hdf5(group),
            settings=settings_from_hdf5(group, KFACSettings),
            layers=tuple(rows[1:]),
            overall=rows[0],
            uncovered=tuple(str(x) for x in np.atleast_1d(uncovered)) if len(uncovered) else (),
            uncovered_parameters=int(a["uncovered_parameters"]),
            kfac_density=densities.get("kfac"),
            ggn_density=densities.get("ggn"),
            preconditioned=optional_group(
                group,
                "preconditioned",
                lambda g: from_field_attrs(Preconditioned, read_attrs(g)),
            ),
            notes=notes_from_hdf5(group),
        )


def _rademacher(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """±1 entries drawn on the CPU (so the probes do not depend on the device)."""
    return (torch.randint(0, 2, shape, generator=gen, dtype=torch.int8) * 2 - 1).to(dtype)


def _squares(M: torch.Tensor) -> np.ndarray:
    """``‖M_i‖²`` of each probe's matrix (the first dimension), accumulated in float64."""
    norms = torch.linalg.vector_norm(M.flatten(1), dim=1, dtype=torch.float64)
    return (norms**2).cpu().numpy()


#: K-FAC's top eigenvalue counts as repeated, and its eigenvector as undefined, when the second
#: is within this relative distance of it.
REPEATED = 1e-6
#: Lanczos relative tolerance of the factors' two largest eigenpairs.
FACTOR_TOL = 1e-10


@dataclass(frozen=True)
class _TopPair:
    """K-FAC's largest eigenvalue on a layer, ``μ_1 ν_1``, its unit eigenvector ``u_G u_Aᵀ``
    (an ``(out, d)`` matrix) and the second largest, ``max(μ_1 ν_2, μ_2 ν_1)``."""

    value: float
    vector: torch.Tensor
    second: float

    @property
    def repeated(self) -> bool:
        return self.value - self.second <= REPEATED * self.value


def _top_pair(layer: KroneckerFactors, tol: float) -> _TopPair:
    """A layer's :class:`_TopPair`: EK-FAC's from its eigenvalues on the factors' eigenbasis;
    K-FAC's from the two largest eigenpairs of each factor, by Lanczos on the dense factor in
    float64 (a full eigendecomposition of a 4608 × 4608 factor takes seconds; LAPACK's through
    torch may not converge on such rank-deficient factors at all)."""
    if layer.corrections is not None:
        grid = layer.eigenvalue_grid()
        order = torch.argsort(grid.reshape(-1), descending=True)
        i, j = divmod(int(order[0]), grid.shape[1])
        _, U, _, W = layer._eigen
        second = float(grid.reshape(-1)[order[1]]) if order.numel() > 1 else 0.0
        return _TopPair(float(grid[i, j]), torch.outer(U[:, i], W[:, j]), second)
    ends = []
    for factor in (layer.G, layer.A):
        M = factor.detach().double()
        k = min(2, M.shape[0])
        lz = lanczos(M, top_k=k, tol=tol, max_iter=M.shape[0], return_vectors=True)
        values = np.clip(lz.top(k), 0.0, None)
        ends.append((values, lz.top_vectors[:, 0]))
    (g, u), (a, w) = ends
    second = max(g[0] * a[1] if a.size > 1 else 0.0, g[1] * a[0] if g.size > 1 else 0.0)
    vector = torch.outer(u, w).to(dtype=layer.G.dtype, device=layer.G.device)
    return _TopPair(float(g[0] * a[0]), vector, float(second))


def _top_cosine(
    pair: _TopPair, layer: KroneckerFactors, ggn_vector: torch.Tensor, offset: int
) -> float:
    """``|⟨u_GGN, u_K⟩|`` for the GGN block's Ritz vector, K-FAC's top eigenvector being the
    layer's (at ``offset`` in the block's coordinates) and zero elsewhere; NaN when K-FAC's top
    eigenvalue is repeated (its eigenvector is not unique)."""
    if pair.repeated:
        return math.nan
    u = pair.vector
    part = layer.to_matrix(ggn_vector[offset : offset + layer.size].reshape(-1, 1))[0]
    norm = max(float(ggn_vector.double().norm()), 1e-300)
    return float(abs((part.double() * u.double()).sum())) / norm


def analyze_kfac(
    objective: Any,
    settings: KFACSettings | None = None,
    *,
    seed: int = 0,
    lr: float | None = None,
    progress: StageProgress | None = None,
) -> KFACResult:
    """The comparison of K-FAC with the GGN at the objective's point (module docstring).

    Costs one pass over the data with ``C`` backward passes per batch (``C`` outputs) for the
    factors and the probes' products, plus, with ``settings.lambda_max``, a Lanczos run of GGN
    products on each layer's block and on all covered parameters, and with ``settings.density``
    ``slq_runs × slq_steps`` GGN products, and with ``settings.preconditioned`` a Lanczos run
    of HVPs (``hvp_count`` counts both kinds of product). ``lr`` is the learning rate ``η`` of
    ``η λ_max((K + δI)⁻¹H)``."""
    s = settings or KFACSettings()
    start = time.perf_counter()
    split = split_loss(objective, "kfac")
    shapes, _ = covered_layers(objective.model, set(objective.parameter_names))
    gen = torch.Generator().manual_seed(derive_seed(seed, "kfac/probes"))
    probes = [
        _rademacher(
            (s.probes, m.weight.shape[0], m.weight[0].numel() + (len(names) == 2)),
            gen,
            objective.dtype,
        )
        for _, m, names in shapes
    ]
    with numerical_errors("the K-FAC factors"):
        layers, uncovered, products = kronecker_factors(
            objective, split, "type-2", probes=probes, corrected=s.kind == "ekfac"
        )
        if s.kind == "empirical":
            layers, _, _ = kronecker_factors(objective, split, s.kind)
    assert products is not None
    notes: dict[str, str] = {}
    if s.kind == "empirical":
        notes["kind"] = "empirical K-FAC (per-sample loss gradients) compared with the GGN"
    ggn = GGNOperator(objective, split)
    rows: list[LayerFit] = []
    e_all = np.zeros(s.probes)
    g_all = np.zeros(s.probes)
    pairs = [_top_pair(layer, FACTOR_TOL) for layer in layers]
    top_layer = max(range(len(layers)), key=lambda i: pairs[i].value)
    repeated = []
    for i, layer in enumerate(layers):
        KZ = layer.apply(probes[i].to(layer.G))
        e = _squares(products.own[i] - KZ)
        g = _squares(products.own[i])
        e_all += _squares(products.joint[i] - KZ)
        g_all += _squares(products.joint[i])
        error, stderr = relative_frobenius_error(e, g)
        k_max = pairs[i].value
        if s.lambda_max and pairs[i].repeated:
            repeated.append(layer.module or "(model)")
        fit = LayerFit(
            module=layer.module,
            layer_type=layer.layer_type,
            parameters=layer.size,
            frobenius_error=error,
            frobenius_stderr=stderr,
            kfac_trace=layer.trace(),
            ggn_trace=products.traces[i],
            kfac_lambda_max=k_max,
        )
        if s.lambda_max:
            fit = _with_lambda_max(
                fit, pairs[i], layer, ggn.block(layer.indices), s, seed, progress
            )
        rows.append(fit)
    covered = torch.cat([layer.indices for layer in layers])
    error, stderr = relative_frobenius_error(e_all, g_all)
    overall = LayerFit(
        module=OVERALL,
        layer_type="",
        parameters=int(covered.numel()),
        frobenius_error=error,
        frobenius_stderr=stderr,
        kfac_trace=sum(layer.trace() for layer in layers),
        ggn_trace=sum(products.traces),
        kfac_lambda_max=pairs[top_layer].value,
    )
    block = ggn.block(covered)
    if s.lambda_max:
        start_at = sum(layer.size for layer in layers[:top_layer])
        overall = _with_lambda_max(
            overall, pairs[top_layer], layers[top_layer], block, s, seed, progress, offset=start_at
        )
    if repeated:
        notes["top_cosine"] = (
            f"K-FAC's top eigenvalue is repeated in {', '.join(repeated)}: its eigenvector is not "
            "unique, so no cosine is reported there"
        )
    kfac_density = ggn_density = None
    if s.density:
        kfac_density, ggn_density = _densities(layers, block, s, seed, progress)
    preconditioned = None
    if s.preconditioned:
        preconditioned = _preconditioned(objective, layers, s, seed, lr, progress)
    rows.sort(key=lambda r: -r.frobenius_error)
    matvecs = ggn.matvecs + (preconditioned.hvps if preconditioned is not None else 0)
    info = RunInfo.from_objective(objective, "kfac", seed, matvecs, time.perf_counter() - start)
    return KFACResult(
        info=info,
        settings=s,
        layers=tuple(rows),
        overall=overall,
        uncovered=tuple(uncovered),
        uncovered_parameters=int(objective.num_parameters - covered.numel()),
        kfac_density=kfac_density,
        ggn_density=ggn_density,
        preconditioned=preconditioned,
        notes=notes,
    )


def _preconditioned(
    objective: Any,
    layers: list[KroneckerFactors],
    s: KFACSettings,
    seed: int,
    lr: float | None,
    progress: StageProgress | None,
) -> Preconditioned:
    """``λ_max((K + δI)⁻¹H)`` on the covered parameters by Lanczos to ``s.tol``."""
    operator = KFACPreconditioned(HessianOperator(objective), layers, s.damping)
    with numerical_errors("the Lanczos iteration on the K-FAC-preconditioned Hessian"):
        lz = lanczos(
            operator,
            seed=derive_seed(seed, "kfac/preconditioned"),
            tol=s.tol,
            max_iter=s.max_iter,
            top_k=1,
            progress=stage(progress, "lanczos"),
        )
    top = lz.top_index()
    return Preconditioned(
        s.damping, float(lz.ritz_values[top]), float(lz.error_bounds[top]), lz.matvecs, lr
    )


def _with_lambda_max(
    fit: LayerFit,
    pair: _TopPair,
    layer: KroneckerFactors,
    block: Any,
    s: KFACSettings,
    seed: int,
    progress: StageProgress | None,
    offset: int = 0,
) -> LayerFit:
    """``fit`` with the GGN block's λ_max, its bound and the cosine of its top eigenvector with
    K-FAC's (``layer``'s, at ``offset`` in the block's coordinates)."""
    with numerical_errors(f"the Lanczos iteration on the GGN block of '{fit.module}'"):
        lz = lanczos(
            block,
            seed=derive_seed(seed, f"kfac/lanczos/{fit.module}"),
            tol=s.tol,
            max_iter=s.max_iter,
            top_k=1,
            return_vectors=True,
            progress=stage(progress, "lanczos"),
        )
    top = lz.top_index()
    return replace(
        fit,
        ggn_lambda_max=float(lz.ritz_values[top]),
        ggn_lambda_max_bound=float(lz.error_bounds[top]),
        top_cosine=_top_cosine(pair, layer, lz.top_vectors[:, 0], offset),
    )


def _densities(
    layers: list[KroneckerFactors],
    block: Any,
    s: KFACSettings,
    seed: int,
    progress: StageProgress | None,
) -> tuple[SpectralDensity, SpectralDensity]:
    """K-FAC's exact eigenvalues and the GGN block's SLQ nodes, broadened on one grid with one
    Gaussian width (the default for all nodes together)."""
    with numerical_errors("the SLQ density of the GGN"):
        slq = slq_density(
            block,
            runs=s.slq_runs,
            steps=s.slq_steps,
            seed=derive_seed(seed, "kfac/density"),
            progress=stage(progress, "density"),
        )
    eigenvalues = np.concatenate([layer.eigenvalues() for layer in layers])
    lo = min(float(eigenvalues.min()), float(np.nanmin(slq.nodes)))
    hi = max(float(eigenvalues.max()), float(np.nanmax(slq.nodes)))
    sigma = default_sigma(np.array([lo, hi]))
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, s.grid)
    counts, edges = np.histogram(eigenvalues, bins=EIGENVALUE_BINS, range=(lo, hi))
    keep = counts > 0
    centres = ((edges[:-1] + edges[1:]) / 2)[keep]
    kfac = gaussian_broadening(centres, counts[keep] / eigenvalues.size, grid, sigma)
    return SpectralDensity(grid, kfac, sigma), slq.density(sigma=sigma, grid=grid)
