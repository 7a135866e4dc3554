"""The HDF5 groups of the estimators' results, written and read by the analyses that store them.

The estimators import nothing of the package but the errors, so :class:`LanczosResult`,
:class:`SLQResult`, :class:`TraceEstimate`, :class:`SpectralDensity` and :class:`ExactSpectrum`
cannot use :mod:`landscape_cli.hdf5` themselves; each has a ``*_to_hdf5`` / ``*_from_hdf5`` pair
here, in the layout of the report (``/spectrum/lanczos``, ``/spectrum/slq`` ...). Like the
results' own ``to_hdf5``, each writer fills the new, empty group it is given.
"""

from __future__ import annotations

import h5py
import numpy as np
import torch

from ..estimators.density import SLQResult, SpectralDensity
from ..estimators.exact import ExactSpectrum
from ..estimators.lanczos import LanczosResult
from ..estimators.trace import TraceEstimate
from ..hdf5 import read_arrays, read_attrs, write_group

#: The datasets of a Lanczos group, one entry per Ritz value (``first_components``: their first
#: components, whose squares are the quadrature weights).
LANCZOS_ARRAYS = (
    "alphas",
    "betas",
    "ritz_values",
    "ritz_residuals",
    "error_bounds",
    "first_components",
)


def lanczos_to_hdf5(
    group: h5py.Group, lz: LanczosResult, *, tol: float, vectors: bool = False
) -> None:
    """A Lanczos run (``/spectrum/lanczos``): ``T_m`` and its Ritz values; with ``vectors``, also
    the top Ritz vectors the run kept (``top_vectors``: ``(n, k)`` columns, largest first, in the
    dtype of the analysis). ``tol`` is the stopping tolerance the run was given.

    Only the section that owns the vectors (the spectrum, with ``--save-eigenvectors``) passes
    ``vectors``: the runs other sections share or make for their own use keep ``T_m`` alone, so
    a report holds each ``n``-sized array once."""
    arrays = {name: getattr(lz, name) for name in LANCZOS_ARRAYS}
    arrays["resolved"] = np.asarray(lz.resolved, dtype=np.uint8)
    arrays["block_starts"] = np.asarray(lz.block_starts, dtype=np.int64)
    if lz.couplings is not None:
        arrays["couplings"] = lz.couplings
    stored = vectors and lz.top_vectors is not None
    if stored:
        arrays["top_vectors"] = lz.top_vectors.detach().cpu().numpy()
    write_group(
        group,
        arrays,
        {
            "iterations": lz.steps,
            "matvecs": lz.matvecs,
            "converged": bool(lz.converged),
            "breakdown": bool(lz.breakdown),
            "start_vector_norm": lz.start_vector_norm,
            "rounding_floor": lz.rounding_floor,
            "asymmetry": lz.asymmetry,
            "multiplicity_checked": bool(lz.multiplicity_checked),
            "ritz_vectors_stored": stored,
            "tol": tol,
        },
    )


def lanczos_from_hdf5(group: h5py.Group, *, vectors: bool = False) -> LanczosResult:
    """The :class:`LanczosResult` of a group written by :func:`lanczos_to_hdf5`; its stored Ritz
    vectors are read only with ``vectors`` (they are ``n × k``: plots and checks never need
    them)."""
    a = read_attrs(group)
    sizes: dict[str, int] = {}
    arrays = read_arrays(group, dict.fromkeys(LANCZOS_ARRAYS, ("steps",)), sizes)
    blocks = read_arrays(
        group,
        {"resolved": ("steps",), "block_starts": ("blocks",), "couplings": ("ends", "steps")},
        sizes,
        optional=("resolved", "block_starts", "couplings"),
    )
    top_vectors = None
    if vectors and "top_vectors" in group:
        stored = read_arrays(group, {"top_vectors": ("n", "k")})["top_vectors"]
        top_vectors = torch.from_numpy(stored)
    return LanczosResult(
        **arrays,
        converged=a["converged"],
        breakdown=a["breakdown"],
        matvecs=a["matvecs"],
        start_vector_norm=a["start_vector_norm"],
        top_vectors=top_vectors,
        block_starts=tuple(int(b) for b in blocks.get("block_starts", (0,))),
        couplings=blocks.get("couplings"),
        rounding_floor=a.get("rounding_floor", 0.0),
        asymmetry=a.get("asymmetry", 0.0),
        multiplicity_checked=a.get("multiplicity_checked", False),
        resolved=None if "resolved" not in blocks else blocks["resolved"].astype(bool),
    )


def slq_to_hdf5(group: h5py.Group, slq: SLQResult) -> None:
    """An SLQ run set (``/spectrum/slq``): the quadrature nodes and weights of every run (NaN-padded rows)."""
    write_group(
        group,
        {"nodes": slq.nodes, "weights": slq.weights, "run_steps": slq.run_steps},
        {
            "runs": int(slq.nodes.shape[0]),
            "steps": int(slq.nodes.shape[1]),
            "shared_runs": int(slq.shared_runs),
            "matvecs": slq.matvecs,
            "padding": "nodes NaN, weights 0 after a run's last step (run_steps)",
        },
    )


def slq_from_hdf5(group: h5py.Group) -> SLQResult:
    """The :class:`SLQResult` of a group written by :func:`slq_to_hdf5` (``shared_runs`` is 0
    in reports written before runs were shared)."""
    a = read_attrs(group)
    arrays = read_arrays(group, {"nodes": ("runs", "steps"), "weights": ("runs", "steps")})
    return SLQResult(
        nodes=arrays["nodes"],
        weights=arrays["weights"],
        matvecs=a["matvecs"],
        shared_runs=int(a.get("shared_runs", 0)),
    )


def trace_to_hdf5(group: h5py.Group, t: TraceEstimate) -> None:
    """A trace estimate (``/spectrum/trace``): the estimate, its standard error and the per-probe samples."""
    write_group(
        group,
        {"samples": np.asarray(t.samples, dtype=np.float64)},
        {
            "estimate": t.estimate,
            "stderr": t.stderr,
            "method": t.method,
            "matvecs": t.matvecs,
            "deflation_rank": t.deflation_rank,
            "deflation_trace": t.deflation_trace,
            **_predicted_stderr_attrs(t.predicted_stderrs),
        },
    )


def _predicted_stderr_attrs(predicted: tuple[float, float] | None) -> dict[str, float]:
    """The standard errors ``auto`` predicted for each method, as attributes (none if not auto)."""
    if predicted is None:
        return {}
    return {"predicted_stderr_hutchinson": predicted[0], "predicted_stderr_hutchpp": predicted[1]}


def trace_from_hdf5(group: h5py.Group) -> TraceEstimate:
    """The :class:`TraceEstimate` of a group written by :func:`trace_to_hdf5`."""
    a = read_attrs(group)
    return TraceEstimate(
        estimate=a["estimate"],
        stderr=a["stderr"],
        method=a["method"],
        matvecs=a["matvecs"],
        samples=read_arrays(group, {"samples": ("probes",)})["samples"],
        deflation_rank=int(a.get("deflation_rank", 0)),
        deflation_trace=float(a.get("deflation_trace", 0.0)),
        predicted_stderrs=(
            (float(a["predicted_stderr_hutchinson"]), float(a["predicted_stderr_hutchpp"]))
            if "predicted_stderr_hutchpp" in a
            else None
        ),
    )


def density_to_hdf5(group: h5py.Group, d: SpectralDensity) -> None:
    """A spectral density (``/spectrum/density``): the broadened density, its grid as the dimension scale."""
    write_group(
        group,
        {"grid": d.grid, "values": d.values},
        {"sigma": d.sigma},
        dims={"values": ("grid",)},
    )


def density_from_hdf5(group: h5py.Group) -> SpectralDensity:
    """The :class:`SpectralDensity` of a group written by :func:`density_to_hdf5`."""
    arrays = read_arrays(group, {"grid": ("points",), "values": ("points",)})
    return SpectralDensity(
        grid=arrays["grid"],
        values=arrays["values"],
        sigma=float(group.attrs["sigma"]),
    )


def exact_to_hdf5(group: h5py.Group, e: ExactSpectrum) -> None:
    """The exact spectrum (``/spectrum/exact``): every eigenvalue of the dense matrix."""
    write_group(
        group,
        {"eigenvalues": e.eigenvalues},
        {"asymmetry": e.asymmetry, "matvecs": e.matvecs},
    )


def exact_from_hdf5(group: h5py.Group) -> ExactSpectrum:
    """The :class:`ExactSpectrum` of a group written by :func:`exact_to_hdf5`."""
    a = read_attrs(group)
    eigenvalues = read_arrays(group, {"eigenvalues": ("n",)})["eigenvalues"]
    return ExactSpectrum(eigenvalues, a["asymmetry"], a["matvecs"])
