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
* one section per registered analysis (:data:`~landscape_cli.render.html_sections.SECTIONS`):
  tables of the eigenvalues, the sharpness, the critical-point evidence, the Jacobian, the loss
  surfaces and a track's checkpoints;
* every figure of :func:`~landscape_cli.render.plots.report_figures`, each with a caption;
* the resolved configuration in a ``<details><pre>`` block.

Every string that comes from the report (paths, command line, configuration, evidence, notes) is
passed through :func:`html.escape`. Numbers are printed with
:func:`~landscape_cli.render.html_sections.format_number` (``%.6g``).

:func:`write_html` writes the page atomically (:mod:`landscape_cli.files`): on any exception or
signal an existing page is left as it was.

Example:
    >>> from landscape_cli.io.report_file import read_report  # doctest: +SKIP
    >>> write_html(read_report("R.h5"), "R.html")  # doctest: +SKIP
    PosixPath('R.html')
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..analyses.registry import ANALYSES
from ..files import write_text
from .html_sections import SECTIONS, basename, escape, format_number

__all__ = ["CAPTIONS", "render_html", "write_html"]

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


def _card(label: str, value: str, ident: str) -> str:
    """A headline number; ``value`` must already be escaped/formatted."""
    return (
        f'<div class="card" id="{ident}"><div class="label">{escape(label)}</div>'
        f'<div class="value">{value}</div></div>'
    )


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


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


# ---------------------------------------------------------------------------- page parts


def _header(report: Any) -> str:
    attrs = report.attrs
    path = _checkpoint_path(report)
    sha = str(attrs.get("checkpoint_sha256") or "")
    if path is not None:
        checkpoint = f'<code title="{escape(path)}">{escape(basename(path))}</code>'
    else:
        checkpoint = "(no checkpoint file: bundled or analytic objective)"
    sha_text = f"<code>{escape(sha[:12])}</code>" if sha else "n/a"
    rows = [
        ("checkpoint", checkpoint),
        ("sha256", sha_text),
        ("date", escape(attrs.get("created", "n/a"))),
        ("landscape", escape(attrs.get("landscape_version", "n/a"))),
        ("torch", escape(attrs.get("torch_version", "n/a"))),
        ("command line", f"<code>{escape(attrs.get('command_line', ''))}</code>"),
        (
            "run",
            f"{format_number(attrs.get('num_parameters'))} parameters, seed "
            f"{format_number(attrs.get('seed'))}, device {escape(attrs.get('device', 'n/a'))}, "
            f"dtype {escape(attrs.get('dtype', 'n/a'))}",
        ),
    ]
    sections = getattr(report, "sections", None) or {}
    made = [
        f"<code>/{escape(name)}</code>: <code>{escape(a.get('command_line', ''))}</code> "
        f"({escape(a.get('created', ''))})"
        for name, a in sections.items()
        if isinstance(a, Mapping) and a.get("command_line")
    ]
    if made:
        rows.append(("sections", "<br>".join(made)))
    items = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<header id="header"><h1>Loss landscape report</h1><dl class="meta">{items}</dl></header>'
    )


def _stability_html(stability: Any) -> str:
    d = stability.to_dict()
    cards = [
        _card("learning rate η", f"{format_number(d['lr'])} ({escape(d['lr_source'])})", "eos-lr"),
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
        f'<h3>Edge of stability ({escape(d["optimizer"])})</h3><div class="cards">'
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
            f"<strong>{escape(kind)}</strong>: {escape(classify.evidence)}</div>"
        )
    stability = getattr(spectrum, "stability", None) or getattr(classify, "stability", None)
    if stability is not None:
        parts.append(_stability_html(stability))
    if spectrum is None and classify is None and report.sharpness is None:
        parts.append('<p class="note">The report holds no spectrum, classify or sharpness.</p>')
    parts.append("</section>")
    return "".join(parts)


def _figures_section(figures: Mapping[str, Figure]) -> str:
    parts = ['<section id="figures"><h2>Figures</h2>']
    for name, figure in figures.items():
        data = base64.b64encode(_figure_png(figure)).decode("ascii")
        caption = CAPTIONS.get(name, name)
        parts.append(
            f'<figure id="figure-{escape(name)}"><img alt="{escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption><strong>{escape(name)}</strong>: '
            f"{escape(caption)}</figcaption></figure>"
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
        f"(YAML)</summary><pre>{escape(config)}</pre></details></section>"
        if config
        else ""
    )
    if config:
        sections.append(("config", "Configuration", config_html))
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in [("headline", "Headline", "")])
    nav += "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    path = _checkpoint_path(report)
    title = "landscape report" + (f": {basename(path)}" if path else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + _header(report)
        + f"<nav>{nav}</nav>"
        + _headline(report)
        + "".join(body for _, _, body in sections)
        + f'<footer class="note">Generated by landscape {escape(report.attrs.get("landscape_version", ""))}'
        " from the HDF5 report alone (no Hessian-vector products).</footer>" + "</body></html>\n"
    )


def write_html(report: Any, path: str | os.PathLike[str], *, sigma: float | None = None) -> Path:
    """Render ``report`` with its figures (density re-broadened with ``sigma`` when given) and
    write it to ``path`` with :func:`~landscape_cli.files.write_text` (a temporary file created
    exclusively, renamed into place; ``path`` is left as it was on any exception or signal)."""
    from .plots import report_figures

    return write_text(path, render_html(report, report_figures(report, sigma=sigma)))
