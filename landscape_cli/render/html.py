"""A report as one self-contained HTML page: for a browser and for a CI artifact.

:func:`render_html` turns a :class:`~landscape_cli.io.report_file.Report` (read back with
:func:`~landscape_cli.io.report_file.read_report`) into one HTML5 document with no external reference at
all: no CDN, stylesheet, script or font; every figure is embedded as a ``data:image/png;base64``
URI and every link is an in-page ``#anchor``. The page holds

* a header: checkpoint (basename and the first 12 hex digits of its SHA-256), date, tool version,
  command line, torch version, device, dtype, seed, number of parameters;
* a headline block: ``λ_max``, ``λ_min``, the trace ``estimate ± stderr`` (Hutch++, Meyer et al.
  2021, or Hutchinson 1989), the critical-point classification with its evidence sentence
  coloured by kind (minimum green, saddle amber, maximum and not-critical red, degenerate grey),
  and the edge-of-stability numbers when a learning rate was known: ``η·λ_max`` against ``2``
  for gradient descent and ``2(1+β)`` with momentum, and for Adam the preconditioned sharpness
  ``λ_max(P⁻¹H)`` against its threshold ``(2+2β₁)/((1−β₁)η)`` (Cohen et al. 2021, 2022);
* tables: the top and bottom eigenvalues (Lanczos Ritz values with error bounds and residuals),
  the SAM sharpness per radius ``ρ`` (Foret et al. 2021; Andriushchenko et al. 2023), the
  classification's evidence (gradient test, Newton decrement ``δ² = gᵀH⁻¹g``, SLQ negative
  fraction, escape probe), the input–output Jacobian (σ_max, σ_min, condition number and rank
  over the samples, σ_max per layer, the NTK's top eigenvalues and trace), the loss surfaces
  and the checkpoints of a track: one section per registered analysis (:data:`SECTIONS`);
* every figure of :func:`~landscape_cli.render.plots.report_figures`, each with a caption;
* the resolved configuration in a ``<details><pre>`` block.

Every string that comes from the report (paths, command line, configuration, evidence, notes) is
passed through :func:`html.escape`. Numbers are printed with :func:`format_number` (``%.6g``).

:func:`write_html` writes the page atomically (:mod:`landscape_cli.files`): on any exception or
signal an existing page is left as it was.

Example:
    >>> from landscape_cli.io.report_file import read_report  # doctest: +SKIP
    >>> write_html(read_report("R.h5"), "R.html")  # doctest: +SKIP
    PosixPath('R.html')
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..analyses.registry import ANALYSES
from ..files import write_text

__all__ = ["CAPTIONS", "SECTIONS", "format_number", "render_html", "write_html"]

#: Caption of each figure :func:`~landscape_cli.render.plots.report_figures` can return; other names
#: are captioned with their name.
CAPTIONS: dict[str, str] = {
    "density": (
        "Spectral density of the Hessian from stochastic Lanczos quadrature (Lin, Saad & Yang "
        "2016; Ghorbani et al. 2019) with Gaussian broadening; markers: the Lanczos extremes."
    ),
    "ritz": (
        "Convergence of the Ritz values with the Lanczos iteration (full reorthogonalisation, "
        "Golub & Van Loan ch. 10)."
    ),
    "sharpness": (
        "SAM sharpness against the radius ρ: worst case (projected ascent, a lower bound), one "
        "step, average case over random directions, and the second-order model ½ρ²λ_max."
    ),
    "escape": (
        "Escape probe: the loss along the most negative curvature direction against its "
        "quadratic model."
    ),
}

#: CSS class of the evidence block for each classification.
_KIND_CLASS = {
    "minimum": "ok",
    "saddle": "warn",
    "maximum": "bad",
    "not-critical": "bad",
    "degenerate": "neutral",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:60rem;padding:1rem 1.5rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin-top:1.8rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0;word-break:break-all}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:.6rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem;min-width:9rem}
.card .label{font-size:.8rem;color:#555}.card .value{font-size:1.25rem;font-weight:600}
.evidence{border-left:6px solid;padding:.5rem .8rem;border-radius:4px;margin:.6rem 0}
.evidence.ok{background:#e6f4ea;border-color:#1e8e3e}
.evidence.warn{background:#fef3e0;border-color:#e8a200}
.evidence.bad{background:#fce8e6;border-color:#d93025}
.evidence.neutral{background:#f1f3f4;border-color:#80868b}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f6f8fa}td.text,th.text{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444}.note{color:#555;font-size:.9rem}
nav a{margin-right:.8rem}
"""


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


def _e(value: Any) -> str:
    """``html.escape`` of ``str(value)`` (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], text_cols: int = 0) -> str:
    """An HTML table; cells are numbers (formatted) or strings (escaped); the first
    ``text_cols`` columns are left-aligned."""

    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="text"' if i < text_cols else ""
        if isinstance(v, str):
            return f"<{tag}{cls}>{_e(v)}</{tag}>"
        return f"<{tag}{cls}>{format_number(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(label: str, value: str, ident: str) -> str:
    """A headline number; ``value`` must already be escaped/formatted."""
    return (
        f'<div class="card" id="{ident}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{value}</div></div>'
    )


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _basename(path: str) -> str:
    """The last component of a POSIX or Windows path."""
    return PureWindowsPath(PurePosixPath(path).name).name or path


def _checkpoint_path(report: Any) -> str | None:
    """The checkpoint path: from a section's run info, else the ``checkpoint:`` of the config."""
    for name in ("spectrum", "classify", "sharpness"):
        result = getattr(report, name, None)
        info = getattr(result, "info", None)
        path = getattr(info, "checkpoint", None)
        if path:
            return str(path)
    config = str(report.attrs.get("config_yaml") or "")
    if config:
        try:
            import yaml

            loaded = yaml.safe_load(config)
        except Exception:  # a malformed config is shown verbatim, not interpreted
            loaded = None
        if isinstance(loaded, Mapping) and loaded.get("checkpoint"):
            return str(loaded["checkpoint"])
    return None


# ---------------------------------------------------------------------------- sections


def _header(report: Any) -> str:
    attrs = report.attrs
    path = _checkpoint_path(report)
    sha = str(attrs.get("checkpoint_sha256") or "")
    if path is not None:
        checkpoint = f'<code title="{_e(path)}">{_e(_basename(path))}</code>'
    else:
        checkpoint = "(no checkpoint file: bundled or analytic objective)"
    sha_text = f"<code>{_e(sha[:12])}</code>" if sha else "n/a"
    rows = [
        ("checkpoint", checkpoint),
        ("sha256", sha_text),
        ("date", _e(attrs.get("created", "n/a"))),
        ("landscape", _e(attrs.get("landscape_version", "n/a"))),
        ("torch", _e(attrs.get("torch_version", "n/a"))),
        ("command line", f"<code>{_e(attrs.get('command_line', ''))}</code>"),
        (
            "run",
            f"{format_number(attrs.get('num_parameters'))} parameters, seed "
            f"{format_number(attrs.get('seed'))}, device {_e(attrs.get('device', 'n/a'))}, "
            f"dtype {_e(attrs.get('dtype', 'n/a'))}",
        ),
    ]
    sections = getattr(report, "sections", None) or {}
    made = [
        f"<code>/{_e(name)}</code>: <code>{_e(a.get('command_line', ''))}</code> "
        f"({_e(a.get('created', ''))})"
        for name, a in sections.items()
        if isinstance(a, Mapping) and a.get("command_line")
    ]
    if made:
        rows.append(("sections", "<br>".join(made)))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<header id="header"><h1>Loss landscape report</h1><dl class="meta">{items}</dl></header>'
    )


def _stability_html(stability: Any) -> str:
    d = stability.to_dict()
    cards = [
        _card("learning rate η", f"{format_number(d['lr'])} ({_e(d['lr_source'])})", "eos-lr"),
        _card("η·λ_max (GD limit 2)", format_number(d["lr_times_lambda_max"]), "eos-lr-lmax"),
        _card("GD stable", format_number(d["gd_stable"]), "eos-stable"),
        _card(
            f"within the {d['optimizer']} bound", format_number(d.get("stable")), "eos-own-bound"
        ),
    ]
    if d.get("momentum"):
        cards.append(
            _card(
                f"momentum limit {stability.momentum_formula}",
                format_number(d["momentum_threshold"]),
                "eos-momentum",
            )
        )
    if "preconditioned_sharpness" in d:
        cards.append(
            _card(
                "λ_max(P⁻¹H) / threshold",
                f"{format_number(d['preconditioned_sharpness'])} / "
                f"{format_number(d['preconditioned_threshold'])}",
                "eos-adam",
            )
        )
    return (
        f'<h3>Edge of stability ({_e(d["optimizer"])})</h3><div class="cards">'
        + "".join(cards)
        + "</div>"
    )


def _headline(report: Any) -> str:
    spectrum, classify = report.spectrum, report.classify
    cards: list[str] = []
    if spectrum is not None:
        cards.append(_card("λ_max", format_number(spectrum.lambda_max), "lambda-max"))
        cards.append(_card("λ_min", format_number(spectrum.lambda_min), "lambda-min"))
        t = spectrum.trace_estimate
        if t is not None:
            cards.append(
                _card(
                    f"trace ({t.method})",
                    f"{format_number(t.estimate)} ± {format_number(t.stderr)}",
                    "trace",
                )
            )
        cards.append(_card("loss", format_number(spectrum.info.loss), "loss"))
        cards.append(_card("‖g‖", format_number(spectrum.info.grad_norm), "grad-norm"))
    elif classify is not None:
        cards.append(_card("λ_max", format_number(classify.lambda_max), "lambda-max"))
        cards.append(_card("λ_min", format_number(classify.lambda_min), "lambda-min"))
    parts = ['<section id="headline"><h2>Headline</h2>']
    if cards:
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
    if classify is not None:
        kind = classify.classification
        parts.append(
            f'<div class="evidence {_KIND_CLASS.get(kind, "neutral")}" id="classification">'
            f"<strong>{_e(kind)}</strong>: {_e(classify.evidence)}</div>"
        )
    stability = getattr(spectrum, "stability", None) or getattr(classify, "stability", None)
    if stability is not None:
        parts.append(_stability_html(stability))
    if spectrum is None and classify is None and report.sharpness is None:
        parts.append('<p class="note">The report holds no spectrum, classify or sharpness.</p>')
    parts.append("</section>")
    return "".join(parts)


def _notes(result: Any) -> str:
    notes = getattr(result, "notes", None) or {}
    if not notes:
        return ""
    items = "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in notes.items())
    return f'<ul class="note">{items}</ul>'


def _curvature_note(spectrum: Any) -> str:
    """A line naming the matrix analysed when it is not the full Hessian (empty otherwise)."""
    curvature = getattr(spectrum, "curvature", "hessian")
    params = getattr(spectrum, "params", ())
    if curvature == "hessian" and not params:
        return ""
    names = {"ggn": "generalised Gauss-Newton (Fisher)", "ef": "empirical Fisher"}
    text = f"Matrix analysed: the {_e(names.get(curvature, curvature))}"
    if curvature == "hessian":
        text = "Matrix analysed: the Hessian"
    if params:
        text += f", diagonal block of the parameters matching {_e(' '.join(params))}"
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
        parts.append(f'<p class="note">Warning: {_e(warning)}</p>')
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
        f'<p class="note">{_e(kind)}{m}; worst case is a {_e(d.get("worst_case_bound", "lower"))} '
        f"bound; λ_max = {format_number(d.get('lambda_max'))}.</p>"
        + _table(("ρ", "worst case", "one step", "average case", "± stderr", "second order"), rows)
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
            _basename(p.checkpoint),
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
    "surface": ("Loss surfaces", _surface_section),
    "track": ("Track", _track_section),
}


def _figures_section(figures: Mapping[str, Figure]) -> str:
    parts = ['<section id="figures"><h2>Figures</h2>']
    for name, figure in figures.items():
        data = base64.b64encode(_figure_png(figure)).decode("ascii")
        caption = CAPTIONS.get(name, name)
        parts.append(
            f'<figure id="figure-{_e(name)}"><img alt="{_e(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption><strong>{_e(name)}</strong>: '
            f"{_e(caption)}</figcaption></figure>"
        )
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------------- public API


def render_html(report: Any, figures: Mapping[str, Figure] | None = None) -> str:
    """The report as one self-contained HTML5 document (see the module docstring).

    Args:
        report: a :class:`~landscape_cli.io.report_file.Report`; missing sections are left out.
        figures: name -> matplotlib figure, embedded as PNG in this order; ``None`` draws
            :func:`~landscape_cli.render.plots.report_figures` of the report; ``{}`` embeds none.
    """
    if figures is None:
        from .plots import report_figures

        figures = report_figures(report)
    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    for name, (title, render) in SECTIONS.items():
        stored = getattr(report, ANALYSES[name].report_field, None)
        if stored:  # None, or no surface
            sections.append((name, title, render(stored)))
    if figures:
        sections.append(("figures", "Figures", _figures_section(figures)))
    config = str(report.attrs.get("config_yaml") or "")
    config_html = (
        '<section id="config"><h2>Configuration</h2><details><summary>resolved configuration '
        f"(YAML)</summary><pre>{_e(config)}</pre></details></section>"
        if config
        else ""
    )
    if config:
        sections.append(("config", "Configuration", config_html))
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in [("headline", "Headline", "")])
    nav += "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in sections)
    path = _checkpoint_path(report)
    title = "landscape report" + (f": {_basename(path)}" if path else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + _header(report)
        + f"<nav>{nav}</nav>"
        + _headline(report)
        + "".join(body for _, _, body in sections)
        + f'<footer class="note">Generated by landscape {_e(report.attrs.get("landscape_version", ""))}'
        " from the HDF5 report alone (no Hessian-vector products).</footer>" + "</body></html>\n"
    )


def write_html(report: Any, path: str | os.PathLike[str], *, sigma: float | None = None) -> Path:
    """Render ``report`` with its figures (density re-broadened with ``sigma`` when given) and
    write it to ``path`` with :func:`~landscape_cli.files.write_text` (a temporary file created
    exclusively, renamed into place; ``path`` is left as it was on any exception or signal)."""
    from .plots import report_figures

    return write_text(path, render_html(report, report_figures(report, sigma=sigma)))
