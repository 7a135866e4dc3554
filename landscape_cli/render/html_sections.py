"""The HTML page's sections, one per registered analysis (:data:`SECTIONS`), and their helpers.

Each section tables what the report holds of its analysis, followed by the result's notes: the top
and bottom eigenvalues (Lanczos Ritz values with error bounds and residuals), the SAM sharpness per
radius ``ρ`` (Foret et al. 2021; Andriushchenko et al. 2023), the classification's evidence
(gradient test, Newton decrement ``δ² = gᵀH⁻¹g``, SLQ negative fraction, escape probe), the
input–output Jacobian (σ_max, σ_min, condition number and rank over the samples, σ_max per layer,
the NTK's top eigenvalues and trace), the loss surfaces and the checkpoints of a track. The page
around them is :mod:`landscape_cli.render.html`.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..operators.curvature_names import curvature_name

__all__ = ["SECTIONS", "basename", "escape", "format_number"]


# ---------------------------------------------------------------------------- formatting


def format_number(value: Any) -> str:
    """A number as the page prints it: ``%.6g`` for floats, ``str`` for ints and bools,
    ``"n/a"`` for ``None``, ``"NaN"``/``"inf"``/``"-inf"`` for non-finite floats.

    >>> format_number(34.655358144304856), format_number(None), format_number(3)
    ('34.6554', 'n/a', '3')
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):  # int and numpy integers
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def escape(value: Any) -> str:
    """``html.escape`` of ``str(value)`` (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], text_cols: int = 0) -> str:
    """An HTML table; cells are numbers (formatted) or strings (escaped); the first
    ``text_cols`` columns are left-aligned."""

    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="text"' if i < text_cols else ""
        if isinstance(v, str):
            return f"<{tag}{cls}>{escape(v)}</{tag}>"
        return f"<{tag}{cls}>{format_number(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def basename(path: str) -> str:
    """The last component of a POSIX or Windows path."""
    return PureWindowsPath(PurePosixPath(path).name).name or path


# ---------------------------------------------------------------------------- sections


def _notes(result: Any) -> str:
    info = getattr(result, "info", None)
    notes = {**getattr(info, "problem_notes", {}), **(getattr(result, "notes", None) or {})}
    if not notes:
        return ""
    items = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in notes.items())
    return f'<ul class="note">{items}</ul>'


def _curvature_note(spectrum: Any) -> str:
    """A line naming the matrix analysed when it is not the full Hessian (empty otherwise)."""
    curvature = getattr(spectrum, "curvature", "hessian")
    params = getattr(spectrum, "params", ())
    if curvature == "hessian" and not params:
        return ""
    text = f"Matrix analysed: the {escape(curvature_name(curvature).detail)}"
    if params:
        text += f", diagonal block of the parameters matching {escape(' '.join(params))}"
    return f'<p class="note">{text}; products are counted as Hessian-vector products.</p>'


def _spectrum_section(spectrum: Any) -> str:
    d = spectrum.to_dict()
    lz = d["lanczos"]
    top_rows = [
        (i + 1, v, b, r)
        for i, (v, b, r) in enumerate(
            zip(d["top_eigenvalues"], lz["top_error_bounds"], lz["top_residuals"], strict=False)
        )
    ]
    bottom_rows = [
        (i + 1, v, b, r)
        for i, (v, b, r) in enumerate(
            zip(
                d["bottom_eigenvalues"],
                lz["bottom_error_bounds"],
                lz["bottom_residuals"],
                strict=False,
            )
        )
    ]
    headers = ("#", "eigenvalue", "error bound", "residual ‖Hy − θy‖")
    parts = [
        '<section id="spectrum"><h2>Spectrum</h2>',
        _curvature_note(spectrum),
        f'<p class="note">Lanczos: {format_number(lz["iterations"])} iterations, converged '
        f"{format_number(lz['converged'])}, tolerance {format_number(lz['tol'])}; "
        f"{format_number(d['hvp_count'])} Hessian-vector products in "
        f"{format_number(d['seconds'])} s.</p>",
        "<h3>Top eigenvalues</h3>",
        _table(headers, top_rows),
    ]
    if bottom_rows:
        parts += ["<h3>Bottom eigenvalues</h3>", _table(headers, bottom_rows)]
    if d["trace"] is not None:
        t = d["trace"]
        parts.append(
            _table(
                ("trace method", "estimate", "stderr", "matvecs"),
                [(str(t["method"]), t["estimate"], t["stderr"], t["matvecs"])],
                text_cols=1,
            )
        )
    if d["density"] is not None:
        den = d["density"]
        shared = den.get("shared_runs", 0)
        lengths = den.get("run_steps") or [den["steps"]] * den["runs"]
        parts.append(
            f'<p class="note">Density: {format_number(den["runs"])} SLQ runs'
            + (" (the first is the extremes' Lanczos run)" if shared else "")
            + f" of {', '.join(format_number(k) for k in lengths)} steps, "
            f"σ = {format_number(den['sigma'])}.</p>"
        )
    if d.get("per_layer"):
        parts += [
            "<h3>Per layer (diagonal blocks)</h3>",
            _table(
                ("module", "parameters", "λ_max", "error bound", "trace", "stderr"),
                [
                    (str(r["name"]), r["size"], r["lambda_max"], r["lambda_max_error_bound"],
                     r["trace"], r["trace_stderr"])
                    for r in d["per_layer"]
                ],
                text_cols=1,
            ),
        ]  # fmt: skip
    if d.get("spread"):
        sp = d["spread"]
        rows = [
            ("λ_max", sp["lambda_max"]["full"], sp["lambda_max"]["mean"], sp["lambda_max"]["std"])
        ]
        if sp["trace"] is not None:
            tr = sp["trace"]
            rows.append(("trace", tr["full"], tr["mean"], tr["std"]))
        parts += [
            f"<h3>Spread over {format_number(sp['k'])} data subsets</h3>",
            _table(("quantity", "full data", "subset mean", "subset std"), rows, text_cols=1),
        ]
    for warning in d.get("warnings") or []:
        parts.append(f'<p class="note">Warning: {escape(warning)}</p>')
    parts += [_notes(spectrum), "</section>"]
    return "".join(parts)


def _sharpness_section(sharpness: Any) -> str:
    d = sharpness.to_dict()
    n = len(d["rho"])

    def col(name: str) -> list[Any]:
        values = d.get(name)
        return list(values) if values is not None else [None] * n

    rows = list(
        zip(
            d["rho"],
            col("worst_case"),
            col("worst_case_method"),
            col("one_step"),
            col("average_case"),
            col("average_case_stderr"),
            col("second_order"),
            strict=False,
        )
    )
    kind = "adaptive (ASAM)" if d["adaptive"] else "SAM"
    m = f", m = {format_number(d['m'])}" if d.get("m") is not None else ""
    return (
        '<section id="sharpness"><h2>Sharpness</h2>'
        f'<p class="note">{escape(kind)}{m}; worst case is a {escape(d.get("worst_case_bound", "lower"))} '
        f"bound; λ_max = {format_number(d.get('lambda_max'))}; the average case's standard error "
        f"has {format_number(d.get('average_case_dof'))} degrees of freedom.</p>"
        + _table(
            ("ρ", "worst case", "found by", "one step", "average case", "± stderr", "second order"),
            rows,
        )
        + _notes(sharpness)
        + "</section>"
    )


def _classify_section(classify: Any) -> str:
    d = classify.to_dict()
    rows: list[tuple[str, Any]] = [
        ("classification", str(d["classification"])),
        ("stationary", d["stationary"]),
        ("gradient norm ‖g‖", d["grad_norm"]),
        ("relative gradient ‖g‖/(κ·max(‖w‖,1))", d["relative_gradient"]),
        ("Cauchy step / max(‖w‖,1) (stationarity)", d.get("relative_step")),
        ("λ_max", d["lambda_max"]),
        ("λ_max error bound", d["lambda_max_error_bound"]),
        ("λ_min", d["lambda_min"]),
        ("λ_min error bound", d["lambda_min_error_bound"]),
        ("negative fraction (SLQ)", d["negative_fraction"]),
        ("its standard error over the SLQ runs", d.get("negative_fraction_stderr")),
        ("significant negative curvature", d["negative_curvature"]),
        ("significant positive curvature", d["positive_curvature"]),
        ("degenerate directions", d["degenerate_directions"]),
    ]
    newton = d.get("newton")
    if newton is not None:
        rows += [
            ("Newton decrement δ² = gᵀH⁻¹g", newton.get("decrement_squared")),
            ("predicted decrease δ²/2", newton.get("predicted_decrease")),
            ("Newton step norm", newton.get("step_norm")),
            ("CG iterations", newton.get("cg_iterations")),
            ("CG relative residual", newton.get("cg_relative_residual")),
        ]
    escape = d.get("escape")
    if escape is not None and "best_decrease" in escape:
        rows.append(("escape probe: best decrease", escape["best_decrease"]))
    return (
        '<section id="classify"><h2>Critical point</h2>'
        + _table(("quantity", "value"), rows, text_cols=1)
        + _notes(classify)
        + "</section>"
    )


def _jacobian_section(jacobian: Any) -> str:
    from ..analyses.jacobian import summarize

    d = jacobian.to_dict()
    columns = ("min", "q10", "median", "q90", "max")
    quantities = [("σ_max (Lanczos)", d["sigma_max"])]
    if d["sigma_min"] is not None:
        quantities += [
            ("σ_min (non-zero)", d["sigma_min"]),
            ("condition number σ_max/σ_min", d["condition"]),
            ("rank", summarize(jacobian.rank)),
        ]
    rows = [
        (name, *(None if stats is None else stats[c] for c in columns))
        for name, stats in quantities
    ]
    lz = d["lanczos"]
    parts = [
        '<section id="jacobian"><h2>Jacobian</h2>',
        f'<p class="note">Input–output Jacobian ({format_number(d["output_dim"])} outputs × '
        f"{format_number(d['input_dim'])} inputs) on {format_number(d['samples'])} samples: "
        f"{format_number(d['jacobian_products']['jvp'])} JVPs and "
        f"{format_number(d['jacobian_products']['vjp'])} VJPs; Lanczos tolerance "
        f"{format_number(lz['tol'])}, converged {format_number(lz['converged'])}.</p>",
        _table(("quantity", *columns), rows, text_cols=1),
    ]
    if jacobian.layers:
        layer_rows = []
        for layer in jacobian.layers:
            stats = summarize(layer.sigma_max)
            layer_rows.append(
                (
                    layer.name or "(model)",
                    layer.type,
                    f"{layer.input_dim}→{layer.output_dim}",
                    *(None if stats is None else stats[c] for c in ("q10", "median", "q90")),
                    bool(np.all(layer.converged)),
                )
            )
        parts += [
            "<h3>σ_max per layer (along the forward pass)</h3>",
            _table(
                ("layer", "type", "in→out", "q10", "median", "q90", "converged"),
                layer_rows,
                text_cols=2,
            ),
        ]
    ntk = d["ntk"]
    if ntk is not None:
        parts += [
            "<h3>Neural tangent kernel</h3>",
            _table(
                ("samples", "kernel size", "trace", "top eigenvalues"),
                [
                    (
                        ntk["samples"],
                        ntk["outputs"],
                        ntk["trace"],
                        ", ".join(format_number(v) for v in ntk["top_eigenvalues"]),
                    )
                ],
            ),
        ]
    parts += [_notes(jacobian), "</section>"]
    return "".join(parts)


def _kfac_section(kfac: Any) -> str:
    d = kfac.to_dict()
    rows = [
        (
            r["module"] or "(model)",
            r["type"],
            r["parameters"],
            r["frobenius_error"],
            r["frobenius_stderr"],
            r["trace_ratio"],
            r["lambda_max_ratio"],
            r["top_cosine"],
        )
        for r in (d["overall"], *d["layers"])
    ]
    headers = (
        "layer",
        "type",
        "parameters",
        "‖GGN − K‖_F / ‖GGN‖_F",
        "± s.e.",
        "tr K / tr GGN",
        "λ_max K / GGN",
        "|cos| top vectors",
    )
    uncovered = (
        f" Not covered: {format_number(d['uncovered_parameters'])} parameters "
        f"({escape(', '.join(d['uncovered']))})."
        if d["uncovered"]
        else ""
    )
    return (
        '<section id="kfac"><h2>K-FAC</h2>'
        f'<p class="note">{escape(d["kind"])} K-FAC against the generalised Gauss-Newton matrix, '
        f"{format_number(d['probes'])} probes; rows by Frobenius error.{uncovered}</p>"
        + _table(headers, rows, text_cols=2)
        + _preconditioned(d["preconditioned"])
        + _notes(kfac)
        + "</section>"
    )


def _preconditioned(p: Mapping[str, Any] | None) -> str:
    """The K-FAC-preconditioned sharpness, and η·λ_max against 2 when a learning rate is known."""
    if p is None:
        return ""
    text = (
        f"λ_max((K + {format_number(p['damping'])}·I)⁻¹H) = {format_number(p['lambda_max'])} "
        f"± {format_number(p['error_bound'])}"
    )
    if p["lr"] is not None:
        text += f"; η·λ_max = {format_number(p['lr_times_lambda_max'])} against 2"
    return f'<p class="note">{text}.</p>'


def _surface_section(surfaces: Mapping[str, Any]) -> str:
    rows = []
    for name, surface in surfaces.items():
        finite = surface.losses[np.isfinite(surface.losses)]
        rows.append(
            (
                name,
                surface.kind,
                " × ".join(str(len(a)) for a in (surface.xs, surface.ys) if a is not None),
                surface.info.loss,
                float(finite.min()) if finite.size else None,
                float(finite.max()) if finite.size else None,
            )
        )
    notes = "".join(_notes(surface) for surface in surfaces.values())
    return (
        '<section id="surface"><h2>Loss surfaces</h2>'
        + _table(("surface", "kind", "grid", "loss at w", "min loss", "max loss"), rows, 3)
        + notes
        + "</section>"
    )


def _track_section(track: Any) -> str:
    rows = [
        (
            basename(p.checkpoint),
            p.step,
            p.lambda_max,
            p.lambda_max_error_bound,
            p.trace,
            p.loss,
            p.grad_norm,
            p.lr_times_lambda_max,
        )
        for p in track.points
    ]
    headers = ("checkpoint", "step", "λ_max", "error bound", "trace", "loss", "‖g‖", "η·λ_max")
    return (
        '<section id="track"><h2>Track</h2>'
        f'<p class="note">{format_number(len(track.points))} checkpoints, warm start '
        f"{format_number(track.warm_start)}.</p>"
        + _table(headers, rows, text_cols=1)
        + _notes(track)
        + "</section>"
    )


#: The section of each registered analysis (title, renderer of what the report holds of it),
#: in page order.
SECTIONS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "spectrum": ("Spectrum", _spectrum_section),
    "classify": ("Critical point", _classify_section),
    "sharpness": ("Sharpness", _sharpness_section),
    "jacobian": ("Jacobian", _jacobian_section),
    "kfac": ("K-FAC", _kfac_section),
    "surface": ("Loss surfaces", _surface_section),
    "track": ("Track", _track_section),
}
