"""Matplotlib figures of the analyses, drawn without pyplot (``Figure`` + ``savefig``).

Each ``plot_*`` function takes plain arrays (so a notebook user can call it on anything) and
returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it in the format its
suffix names (``.png``, ``.svg``, ``.pdf``). No global state: nothing leaks across a long run.
``figures_for_*`` helpers turn result dataclasses into named figures with predictable names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..analyses.registry import ANALYSES
from ..files import atomic_file
from ..operators.curvature_names import curvature_name

FORMATS = ("png", "svg", "pdf")
DPI = 150


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path``; the format comes from the suffix (png, svg or pdf). Written
    through :func:`~landscape_cli.files.atomic_file`: a figure is complete or absent."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(
            f"unsupported figure format '{path.suffix}'; use one of {', '.join(FORMATS)}"
        )
    with atomic_file(path) as file:
        figure.savefig(file, format=suffix, dpi=DPI, bbox_inches="tight")
    return path


def _axes(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (6.4, 4.2)):
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return figure, ax


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend of the labelled artists, if any were drawn (matplotlib warns of an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def plot_density(
    grid: np.ndarray,
    values: np.ndarray,
    *,
    top_eigenvalues: Sequence[float] = (),
    lambda_min: float | None = None,
    sigma: float | None = None,
    title: str = "Hessian spectral density (SLQ)",
) -> Figure:
    """The spectral density on a log scale, with the top eigenvalues (and λ_min) marked."""
    grid, values = np.asarray(grid, float), np.asarray(values, float)
    figure, ax = _axes(title, "eigenvalue λ", "density (log scale)")
    positive = values[values > 0]
    floor = max(
        positive.min() if positive.size else 1e-12,
        values.max() * 1e-8 if values.max() > 0 else 1e-12,
    )
    ax.semilogy(grid, np.maximum(values, floor), color="tab:blue", lw=1.4, label="SLQ density")
    ax.set_ylim(bottom=floor)
    for i, lam in enumerate(top_eigenvalues):
        ax.axvline(
            lam,
            color="tab:red",
            lw=0.9,
            ls="--",
            alpha=0.8,
            label="top eigenvalues (Lanczos)" if i == 0 else None,
        )
    if lambda_min is not None:
        ax.axvline(lambda_min, color="tab:purple", lw=0.9, ls=":", label="λ_min")
    if sigma is not None:
        ax.text(
            0.99, 0.97, f"σ = {sigma:.3g}", transform=ax.transAxes, ha="right", va="top", fontsize=8
        )
    _legend(ax, loc="upper center", fontsize=8)
    return figure


def plot_ritz_convergence(
    ritz_history: Sequence[np.ndarray], *, exact: Sequence[float] = ()
) -> Figure:
    """Ritz values after each Lanczos step (``ritz_history[j]`` = values after ``j + 1`` steps)."""
    figure, ax = _axes("Lanczos: Ritz values per iteration", "iteration", "Ritz value")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for j, values in enumerate(ritz_history, start=1):
        values = np.asarray(values, float)
        ax.plot(np.full(values.shape, j), values, "o", ms=2.5, color="tab:blue", alpha=0.6)
    if len(ritz_history):
        top = [np.max(v) for v in ritz_history]
        bottom = [np.min(v) for v in ritz_history]
        steps = np.arange(1, len(ritz_history) + 1)
        ax.plot(steps, top, color="tab:red", lw=1.2, label="largest")
        ax.plot(steps, bottom, color="tab:purple", lw=1.2, label="smallest")
    for i, lam in enumerate(exact):
        ax.axhline(lam, color="grey", lw=0.7, ls="--", label="exact" if i == 0 else None)
    _legend(ax, fontsize=8)
    return figure


def plot_sharpness(
    rho: Sequence[float],
    curves: dict[str, Sequence[float | None]],
    *,
    halfwidth: Sequence[float | None] | None = None,
    adaptive: bool = False,
) -> Figure:
    """Sharpness measures against ρ on log-log axes (``None`` entries are skipped); the average
    case with its interval ``± halfwidth`` as a band (the 95 % Student-t interval,
    :meth:`~landscape_cli.analyses.sharpness.SharpnessResult.average_case_halfwidth`)."""
    kind = "adaptive (ASAM) " if adaptive else ""
    figure, ax = _axes(f"{kind}sharpness  L(w+ε) − L(w)", "radius ρ", "loss increase")
    rho = np.asarray(rho, float)
    order = np.argsort(rho)
    styles = {"worst_case": "o-", "one_step": "s-", "average_case": "^-", "second_order": "--"}
    labels = {
        "worst_case": "worst case (ascent, lower bound)",
        "one_step": "one-step SAM",
        "average_case": "average case (Gaussian)",
        "second_order": "ρ‖g‖ + ½ρ²λ_max",
    }
    for name, values in curves.items():
        y = np.array([np.nan if v is None else v for v in values], float)[order]
        mask = np.isfinite(y) & (y > 0)
        if not mask.any():
            continue
        (line,) = ax.loglog(
            rho[order][mask], y[mask], styles.get(name, "-"), ms=4, label=labels.get(name, name)
        )
        if name == "average_case" and halfwidth is not None:
            err = np.array([np.nan if v is None else v for v in halfwidth], float)[order][mask]
            low = np.maximum(y[mask] - err, y[mask] * 1e-3)  # log axes: keep the band positive
            ax.fill_between(
                rho[order][mask],
                low,
                y[mask] + err,
                alpha=0.2,
                color=line.get_color(),
                label="95 % interval (Student t)",
            )
    if not ax.lines:  # at a maximum every measure is <= 0: nothing to draw on log axes
        ax.text(0.5, 0.5, "no measure is positive: nothing to draw on log axes",
                transform=ax.transAxes, ha="center", va="center")  # fmt: skip
    _legend(ax, fontsize=8)
    return figure


def plot_curve_1d(
    t: np.ndarray,
    losses: np.ndarray,
    *,
    model: np.ndarray | None = None,
    accuracy: np.ndarray | None = None,
    xlabel: str = "step t along the direction",
    title: str = "1-D loss surface",
) -> Figure:
    """Loss along a line, with the second-order Taylor model (and accuracy) when given."""
    figure, ax = _axes(title, xlabel, "loss")
    ax.plot(t, losses, "o-", ms=3, color="tab:blue", label="loss")
    if model is not None:
        ax.plot(t, model, "--", color="tab:red", label="quadratic model L + t·gᵀv + ½λt²")
    if accuracy is not None:
        twin = ax.twinx()
        twin.plot(t, accuracy, color="tab:green", lw=1, alpha=0.7, label="accuracy")
        twin.set_ylabel("accuracy")
    _legend(ax, fontsize=8, loc="best")
    return figure


def plot_contour_2d(
    xs: np.ndarray, ys: np.ndarray, losses: np.ndarray, *, title: str = "2-D loss surface"
) -> Figure:
    """Filled contours of ``losses[j, i]`` at ``(xs[i], ys[j])``, the checkpoint marked at (0, 0)."""
    figure, ax = _axes(title, "direction 1", "direction 2", size=(5.6, 4.8))
    X, Y = np.meshgrid(xs, ys)
    z = np.asarray(losses, float)
    levels = np.linspace(np.nanmin(z), np.nanmax(z), 30) if np.nanmax(z) > np.nanmin(z) else 10
    filled = ax.contourf(X, Y, z, levels=levels, cmap="viridis")
    ax.contour(X, Y, z, levels=levels, colors="white", linewidths=0.3, alpha=0.5)
    figure.colorbar(filled, ax=ax, label="loss")
    ax.plot([0], [0], marker="*", color="red", ms=10, label="checkpoint")
    _legend(ax, fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="box")
    return figure


def plot_surface_3d(
    xs: np.ndarray, ys: np.ndarray, losses: np.ndarray, *, title: str = "Loss surface"
) -> Figure:
    """A 3-D view of the 2-D loss surface."""
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = figure.add_subplot(projection="3d")
    X, Y = np.meshgrid(xs, ys)
    ax.plot_surface(X, Y, np.asarray(losses, float), cmap="viridis", linewidth=0, antialiased=True)
    ax.set_title(title)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel("loss")
    return figure


def plot_track(step: np.ndarray, lambda_max: np.ndarray, *, lr: np.ndarray | None = None) -> Figure:
    """λ_max against the training step, with the gradient-descent bound 2/η where η is known."""
    figure, ax = _axes("curvature along training", "step", "λ_max")
    order = np.argsort(step)
    ax.plot(step[order], lambda_max[order], "o-", ms=4, color="tab:blue", label="λ_max")
    if lr is not None and np.isfinite(lr).any():
        bound = 2.0 / lr[order]
        ax.plot(step[order], bound, "--", color="tab:red", label="2/η (GD stability bound)")
    _legend(ax, fontsize=8)
    return figure


def plot_layer_jacobians(
    names: Sequence[str],
    sigma_max: np.ndarray,
    *,
    input_output: np.ndarray | None = None,
    title: str = "layer Jacobians along the forward pass",
) -> Figure:
    """``log₁₀ σ_max`` of each layer's Jacobian (rows of ``sigma_max``, one column per sample):
    the median with the 10–90 % and 25–75 % quantile bands; ``input_output`` (per-sample σ_max of
    the whole network) is drawn as its median and band at the right. 0 marks a layer that
    neither grows nor shrinks the largest gradient direction."""
    sigma = np.asarray(sigma_max, dtype=float).reshape(len(names), -1)
    figure, ax = _axes(title, "layer (execution order)", "log₁₀ σ_max of ∂(out)/∂(in)")
    with np.errstate(divide="ignore"):
        logs = np.log10(np.where(sigma > 0, sigma, np.nan))
    x = np.arange(len(names))
    if len(names):
        q = np.nanquantile(logs, [0.10, 0.25, 0.50, 0.75, 0.90], axis=1) if logs.size else None
        if q is not None:
            ax.fill_between(x, q[0], q[4], color="tab:blue", alpha=0.15, label="10–90 %")
            ax.fill_between(x, q[1], q[3], color="tab:blue", alpha=0.3, label="25–75 %")
            ax.plot(x, q[2], "o-", color="tab:blue", ms=4, label="median over samples")
    labels = list(names)
    if input_output is not None and np.size(input_output):
        io = np.log10(np.asarray(input_output, dtype=float)[np.asarray(input_output) > 0])
        if io.size:
            pos = len(names) + 0.5
            lo, q1, med, q3, hi = np.quantile(io, [0.10, 0.25, 0.5, 0.75, 0.90])
            ax.errorbar([pos], [med], yerr=[[med - lo], [hi - med]], fmt="s", color="tab:red",
                        capsize=4, label="input–output (10–90 %)")  # fmt: skip
            ax.vlines([pos], q1, q3, color="tab:red", lw=4, alpha=0.5)
            x = np.append(x, pos)
            labels.append("input→output")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center", fontsize=8)  # fmt: skip
    _legend(ax, fontsize=8)
    return figure


def plot_kfac_fit(
    grid: np.ndarray,
    ggn: np.ndarray,
    kfac: np.ndarray,
    *,
    sigma: float,
    error: float,
    stderr: float,
) -> Figure:
    """The GGN's (SLQ) and K-FAC's (exact) spectral densities on one log-scale axis."""
    figure, ax = _axes("GGN and its K-FAC approximation", "eigenvalue λ", "density (log scale)")
    values = np.concatenate([ggn, kfac])
    positive = values[values > 0]
    floor = max(positive.min() if positive.size else 1e-12, values.max() * 1e-8)
    ax.semilogy(grid, np.maximum(ggn, floor), color="tab:blue", lw=1.4, label="GGN (SLQ)")
    ax.semilogy(
        grid, np.maximum(kfac, floor), color="tab:orange", lw=1.2, ls="--", label="K-FAC (exact)"
    )
    ax.set_ylim(bottom=floor)
    ax.text(
        0.99,
        0.97,
        f"‖GGN − K‖_F / ‖GGN‖_F = {error:.3g} ± {stderr:.2g}\nσ = {sigma:.3g}",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
    )
    _legend(ax, loc="upper center", fontsize=8)
    return figure


def _kfac_figures(kfac: Any, sigma: float | None) -> dict[str, Figure]:
    if kfac.ggn_density is None or kfac.kfac_density is None:
        return {}
    o = kfac.overall
    return {
        "kfac": plot_kfac_fit(
            kfac.ggn_density.grid,
            kfac.ggn_density.values,
            kfac.kfac_density.values,
            sigma=kfac.ggn_density.sigma,
            error=o.frobenius_error,
            stderr=o.frobenius_stderr,
        )
    }


def _density_title(spectrum: Any) -> str:
    """``"Hessian spectral density (SLQ)"``, or the curvature and parameter block analysed."""
    curvature = getattr(spectrum, "curvature", "hessian")
    title = f"{curvature_name(curvature).label} spectral density (SLQ)"
    params = getattr(spectrum, "params", ())
    return title + (f", block {' '.join(params)}" if params else "")


def _spectrum_figures(spectrum: Any, sigma: float | None) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    density = spectrum.density_estimate
    if spectrum.slq is not None and (sigma is not None or density is None):
        density = spectrum.slq.density(sigma=sigma)
    if density is not None:
        figures["density"] = plot_density(
            density.grid,
            density.values,
            top_eigenvalues=list(spectrum.top_eigenvalues),
            lambda_min=spectrum.lambda_min,
            sigma=density.sigma,
            title=_density_title(spectrum),
        )
    lz = spectrum.lanczos
    if lz is not None and lz.steps > 0:
        history = [lz.ritz_values_at(j) for j in range(1, lz.steps + 1)]
        exact = [] if spectrum.exact is None else [spectrum.exact.eigenvalues[-1]]
        figures["ritz"] = plot_ritz_convergence(history, exact=exact)
    return figures


def _sharpness_figures(sharpness: Any, sigma: float | None) -> dict[str, Figure]:
    curves = ("worst_case", "one_step", "average_case", "second_order")
    return {
        "sharpness": plot_sharpness(
            sharpness.rho,
            {name: getattr(sharpness, name) for name in curves},
            halfwidth=sharpness.average_case_halfwidth(0.95),
            adaptive=sharpness.adaptive,
        )
    }


def _classify_figures(classify: Any, sigma: float | None) -> dict[str, Figure]:
    e = classify.escape
    if e is None:
        return {}
    t = np.concatenate([-e.steps[::-1], [0.0], e.steps])
    base = classify.info.loss
    losses = np.concatenate([e.loss_minus[::-1], [base], e.loss_plus])
    model = np.concatenate([e.model_minus[::-1], [base], e.model_plus])
    return {
        "escape": plot_curve_1d(
            t,
            losses,
            model=model,
            xlabel="t along the λ_min eigenvector",
            title=f"escape direction (λ_min = {e.eigenvalue:.4g})",
        )
    }


def _jacobian_figures(jacobian: Any, sigma: float | None) -> dict[str, Figure]:
    layers = jacobian.layers
    if not (layers or len(jacobian.sigma_max)):
        return {}
    return {
        "jacobian": plot_layer_jacobians(
            [f"{layer.name}\n{layer.type}" for layer in layers],
            np.array([layer.sigma_max for layer in layers]).reshape(len(layers), -1),
            input_output=jacobian.sigma_max,
        )
    }


def _track_figures(track: Any, sigma: float | None) -> dict[str, Figure]:
    arrays = track.arrays()
    return {"track": plot_track(arrays["step"], arrays["lambda_max"], lr=arrays["lr"])}


def _surface_figures(surfaces: Any, sigma: float | None) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for name, surface in surfaces.items():
        if surface.dims == 1:
            figures[f"surface-{name}"] = plot_curve_1d(
                surface.xs,
                surface.losses,
                model=surface.quadratic_model,
                accuracy=surface.accuracies,
                title=f"1-D loss surface ({surface.kind} direction)",
            )
        else:
            figures[f"surface-{name}"] = plot_contour_2d(
                surface.xs, surface.ys, surface.losses, title=f"2-D loss surface ({surface.kind})"
            )
            figures[f"surface3d-{name}"] = plot_surface_3d(
                surface.xs, surface.ys, surface.losses, title=f"loss surface ({surface.kind})"
            )
    return figures


#: The figures of each registered analysis, from what the report holds of it and the density's
#: width ``sigma`` (``None``: the stored one), in the order they are drawn.
FIGURES: dict[str, Callable[[Any, float | None], dict[str, Figure]]] = {
    "spectrum": _spectrum_figures,
    "sharpness": _sharpness_figures,
    "classify": _classify_figures,
    "jacobian": _jacobian_figures,
    "kfac": _kfac_figures,
    "track": _track_figures,
    "surface": _surface_figures,
}


def report_figures(report: object, *, sigma: float | None = None) -> dict[str, Figure]:
    """Every figure a :class:`~landscape_cli.io.report_file.Report` has the material for, by name:
    ``density`` (re-broadened with ``sigma`` when given), ``ritz``, ``sharpness``, ``escape``,
    ``jacobian`` (log σ_max per layer), ``track``, ``surface-<name>`` (a curve, or contours plus
    ``surface3d-<name>``). Needs nothing but the file: no checkpoint, no HVPs."""
    figures: dict[str, Figure] = {}
    for name, draw in FIGURES.items():
        stored = getattr(report, ANALYSES[name].report_field, None)
        if stored is not None:
            figures.update(draw(stored, sigma))
    return figures
