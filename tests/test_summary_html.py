"""The self-contained HTML summary of a report (``landscape_cli.render.html``).

Every page is parsed with the standard library's :class:`html.parser.HTMLParser`, never searched
as a string only: the assertions are about the document a browser would build. Expected numbers
come from the result dataclasses read back from the HDF5 file, formatted with the page's
documented ``%.6g`` (exact string equality: formatting is deterministic, there is no tolerance).
Embedded images are decoded from base64 and read back with ``matplotlib.image.imread``; a PNG of
a real plot has pixel variance far above ``1e-4`` (a blank white image has exactly 0).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
from html.parser import HTMLParser
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest

from landscape_cli.analyses.classify import ClassifySettings, classify_point
from landscape_cli.analyses.sharpness import SharpnessSettings, measure_sharpness
from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.errors import OutputError
from landscape_cli.io import report_file as rep
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.loading import build_objective
from landscape_cli.render import html as summary_html
from landscape_cli.render.html import render_html, write_html
from landscape_cli.render.html_sections import format_number
from landscape_cli.render.plots import report_figures

SMALL_SPECTRUM = SpectrumSettings(
    top_k=3, bottom_k=2, max_iter=30, trace_matvecs=12, slq_runs=2, slq_steps=10, grid=400
)
VOID = {"img", "meta", "br", "hr", "link", "input", "source", "area", "base", "col", "wbr"}
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "data", "poster", "xlink:href", "formaction"}


class Page(HTMLParser):
    """Tags with their attributes, and the text inside every element that has an ``id``."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[tuple[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.classes: dict[str, list[str]] = {}
        self.pre: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}  # section id -> rows of cell texts
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in VOID:
            return
        self.stack.append((tag, a.get("id")))
        if a.get("id"):
            self.text[a["id"]] = ""
            self.classes[a["id"]] = (a.get("class") or "").split()
        if tag == "pre":
            self.pre.append("")
        if tag == "tr":
            section = next((i for t, i in reversed(self.stack) if t == "section" and i), "")
            self.rows.setdefault(section, []).append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            section = next((i for t, i in reversed(self.stack) if t == "section" and i), "")
            self.rows[section][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        for _, ident in self.stack:
            if ident:
                self.text[ident] += data
        if self.stack and self.stack[-1][0] == "pre":
            self.pre[-1] += data
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def results():
    config = resolve_run_config({})
    obj = build_objective(config)
    spectrum = analyze_spectrum(obj, SMALL_SPECTRUM, lr=0.05)
    classify = classify_point(obj, ClassifySettings(max_iter=40, cg_max_iter=20))
    sharpness = measure_sharpness(obj, SharpnessSettings(rho=(0.01, 0.1), samples=4, steps=4))
    return config, rep.objective_info(obj, config.seed), spectrum, classify, sharpness


@pytest.fixture(scope="module")
def full(results, tmp_path_factory):
    config, info, spectrum, classify, sharpness = results
    path = tmp_path_factory.mktemp("full") / "r.h5"
    sections = {"spectrum": spectrum, "classify": classify, "sharpness": sharpness}
    rep.write_report(
        path, sections, config=config, command_line="landscape report x", objective_info=info
    )
    report = rep.read_report(path)
    figures = report_figures(report)
    html_text = render_html(report, figures)
    return report, figures, html_text, Page(html_text)


def external_references(page: Page) -> list[str]:
    bad = []
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in URL_ATTRIBUTES and not (value or "").startswith(("data:", "#")):
                bad.append(f"<{tag} {name}={value!r}>")
    return bad


def test_format_number_closed_forms():
    assert format_number(34.655358144304856) == "34.6554"
    assert format_number(5.409003546157984e-06) == "5.409e-06"
    assert format_number(np.float32(2.5)) == "2.5"
    assert format_number(np.int64(1476)) == "1476"
    assert format_number(None) == "n/a"
    assert format_number(float("nan")) == "NaN"
    assert format_number(float("-inf")) == "-inf"
    assert format_number(True) == "yes"


def test_self_contained_no_external_reference(full):
    _, _, text, page = full
    assert external_references(page) == []
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    lowered = text.lower()
    assert "@import" not in lowered and "url(" not in lowered and "http" not in lowered
    # every in-page anchor points at an element of the page
    for tag, attrs in page.tags:
        if tag == "a":
            assert attrs["href"][1:] in page.text, attrs["href"]
    assert text.startswith("<!DOCTYPE html>")


def test_every_figure_is_an_embedded_png(full):
    _, figures, _, page = full
    images = [a for t, a in page.tags if t == "img"]
    assert len(figures) >= 3  # density, ritz, sharpness at least
    assert len(images) == len(figures)
    assert [a["alt"] for a in images] == list(figures)
    prefix = "data:image/png;base64,"
    for attrs in images:
        assert attrs["src"].startswith(prefix)
        raw = base64.b64decode(attrs["src"][len(prefix) :], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(io.BytesIO(raw), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert float(np.var(pixels[..., :3])) > 1e-4  # not blank
    # each figure has a caption inside its <figure>
    for name in figures:
        assert page.text[f"figure-{name}"].startswith(f"{name}: ")
        assert summary_html.CAPTIONS[name] in page.text[f"figure-{name}"]


def test_headline_numbers(full):
    report, _, _, page = full
    s, c = report.spectrum, report.classify
    assert page.text["lambda-max"].endswith(f"{s.lambda_max:.6g}")
    assert page.text["lambda-min"].endswith(f"{s.lambda_min:.6g}")
    t = s.trace_estimate
    assert page.text["trace"].endswith(f"{t.estimate:.6g} ± {t.stderr:.6g}")
    assert page.text["classification"] == f"{c.classification}: {c.evidence}"
    assert c.classification == "minimum"
    assert "ok" in page.classes["classification"]
    # edge of stability: η = 0.05 was passed, so η·λ_max is shown against 2
    assert page.text["eos-lr-lmax"].endswith(f"{0.05 * s.lambda_max:.6g}")
    assert page.text["eos-stable"].endswith("yes" if 0.05 * s.lambda_max < 2 else "no")


def test_header_and_config(full):
    report, _, _, page = full
    sha = report.attrs["checkpoint_sha256"]
    with h5py.File(report.path, "r") as f:  # read independently of read_report
        assert f.attrs["checkpoint_sha256"] == sha and len(sha) == 64
        config_yaml = f.attrs["config_yaml"]
    header = page.text["header"]
    assert sha[:12] in header and sha not in header
    assert Path(report.spectrum.info.checkpoint).name in header
    assert report.attrs["created"] in header and report.attrs["landscape_version"] in header
    assert "landscape report x" in header
    assert page.pre == [config_yaml]  # the parser unescapes: the YAML comes back verbatim


def test_tables(full):
    report, _, _, page = full
    s, sh, c = report.spectrum, report.sharpness, report.classify
    spectrum_rows = page.rows["spectrum"]
    values = [r[1] for r in spectrum_rows if r and r[0].isdigit()]
    expected = [f"{v:.6g}" for v in (*s.top_eigenvalues, *s.bottom_eigenvalues)]
    assert values == expected
    sharp = [r for r in page.rows["sharpness"] if r[0] != "ρ"]
    assert [r[0] for r in sharp] == [f"{r:.6g}" for r in sh.rho]
    assert [r[1] for r in sharp] == [format_number(v) for v in sh.worst_case]
    assert [r[2] for r in sharp] == sh.worst_case_method
    assert [r[4] for r in sharp] == [format_number(v) for v in sh.average_case]
    evidence = {r[0]: r[1] for r in page.rows["classify"]}
    assert evidence["negative fraction (SLQ)"] == format_number(c.negative_fraction)
    stderr = evidence["its standard error over the SLQ runs"]
    assert stderr == format_number(c.negative_fraction_stderr)
    assert c.newton is not None
    assert evidence["Newton decrement δ² = gᵀH⁻¹g"] == format_number(c.newton.decrement_squared)
    # the density note names the shared extremes' run and each run's length
    lengths = ", ".join(str(k) for k in [s.lanczos.steps, 10, 10])
    note = f"3 SLQ runs (the first is the extremes' Lanczos run) of {lengths} steps"
    assert note in html.unescape(full[2])


@pytest.mark.parametrize(
    ("kind", "css", "colour"),
    [
        ("minimum", "ok", "#1e8e3e"),
        ("saddle", "warn", "#e8a200"),
        ("maximum", "bad", "#d93025"),
        ("not-critical", "bad", "#d93025"),
        ("degenerate", "neutral", "#80868b"),
    ],
)
def test_classification_colour(full, kind, css, colour):
    report, _, _, _ = full
    c = report.classify
    changed = dataclasses.replace(c, decision=dataclasses.replace(c.decision, classification=kind))
    text = render_html(dataclasses.replace(report, classify=changed), {})
    page = Page(text)
    assert page.classes["classification"] == ["evidence", css]
    assert f".evidence.{css}{{" in text and colour in text.split(f".evidence.{css}{{")[1][:80]


def test_spectrum_only_report(results, tmp_path):
    config, info, spectrum, _, _ = results
    path = tmp_path / "s.h5"
    rep.write_report(
        path, {"spectrum": spectrum}, config=config, command_line="x", objective_info=info
    )
    report = rep.read_report(path)
    assert report.classify is None and report.sharpness is None
    figures = report_figures(report)
    page = Page(render_html(report, figures))
    assert "classify" not in page.text and "sharpness" not in page.text
    assert "classification" not in page.text
    assert "spectrum" in page.text and "lambda-max" in page.text
    assert len([t for t, _ in page.tags if t == "img"]) == len(figures) == 2
    # and a report with no section at all renders too
    empty = tmp_path / "e.h5"
    rep.write_report(empty, {}, config=None, command_line="x", objective_info=info)
    page = Page(render_html(rep.read_report(empty)))
    assert "headline" in page.text and not [t for t, _ in page.tags if t == "img"]


def test_user_strings_are_escaped(results, tmp_path):
    config, info, spectrum, classify, _ = results
    evil_dir = "<img src=x onerror=alert(1)>"
    evil = f"/data/{evil_dir}/<script>alert('x').pt"
    spectrum = dataclasses.replace(
        spectrum, info=dataclasses.replace(spectrum.info, checkpoint=evil)
    )
    path = tmp_path / "r.h5"
    rep.write_report(
        path,
        {"spectrum": spectrum, "classify": classify},
        config=config,
        command_line="landscape report '<script>alert(2)</script>'",
        objective_info=info,
    )
    report = rep.read_report(path)
    assert report.spectrum.info.checkpoint == evil
    text = render_html(report, {})
    page = Page(text)
    assert "<script" not in text.lower()
    assert not [t for t, _ in page.tags if t in ("script", "img")]
    assert external_references(page) == []
    assert "&lt;script&gt;alert(&#x27;x&#x27;).pt" in text
    assert "<script>alert('x').pt" in page.text["header"]  # the basename, shown as text
    assert [a["title"] for t, a in page.tags if t == "code" and "title" in a] == [evil]
    assert "landscape report '<script>alert(2)</script>'" in page.text["header"]


def test_write_html_writes_the_page(full, tmp_path):
    report, figures, _, _ = full
    out = write_html(report, tmp_path / "r.html")
    assert out == tmp_path / "r.html"
    page = Page(out.read_text(encoding="utf-8"))
    assert len([t for t, _ in page.tags if t == "img"]) == len(figures)
    assert os.listdir(tmp_path) == ["r.html"]


@pytest.mark.parametrize(
    ("target", "exc", "raised"),
    [("fsync", KeyboardInterrupt, KeyboardInterrupt), ("replace", OSError, OutputError)],
)
def test_write_html_is_atomic(full, tmp_path, monkeypatch, target, exc, raised):
    report, _, _, _ = full
    old = tmp_path / "old.html"
    old.write_bytes(b"previous page")

    def boom(*args, **kwargs):
        raise exc("injected")

    monkeypatch.setattr(summary_html.os, target, boom)
    with pytest.raises(raised):
        write_html(report, tmp_path / "r.html")
    with pytest.raises(raised):
        write_html(report, old)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["old.html"]  # no page, no temporary file
    assert old.read_bytes() == b"previous page"


def test_jacobian_section(results, tmp_path):
    """σ_max and the condition number over the samples, σ_max per layer and the NTK numbers,
    as the terminal prints them, from the result read back."""
    from landscape_cli.analyses.jacobian import analyze_jacobian, summarize
    from landscape_cli.analyses.settings import JacobianSettings

    config, info, *_ = results
    jacobian = analyze_jacobian(build_objective(config), JacobianSettings(samples=4))
    path = tmp_path / "j.h5"
    rep.write_report(
        path, {"jacobian": jacobian}, config=config, command_line="x", objective_info=info
    )
    j = rep.read_report(path).jacobian
    assert j is not None and j.layers and j.ntk is not None and j.sigma_min is not None
    page = Page(render_html(rep.read_report(path), {}))
    assert ("a", {"href": "#jacobian"}) in page.tags
    headers = {"quantity": "quantities", "layer": "layers", "samples": "ntk"}
    tables: dict[str, list[list[str]]] = {}
    for row in page.rows["jacobian"]:
        if row[0] in headers:
            current = tables.setdefault(headers[row[0]], [])
        current.append(row)
    columns = ["min", "q10", "median", "q90", "max"]
    quantities = {r[0]: r[1:] for r in tables["quantities"]}
    assert quantities["quantity"] == columns
    for name, values in (("σ_max (Lanczos)", j.sigma_max), ("σ_min (non-zero)", j.sigma_min)):
        assert quantities[name] == [format_number(summarize(values)[c]) for c in columns]
    assert quantities["condition number σ_max/σ_min"][2] == format_number(j.condition_median)
    expected = [
        [
            layer.name or "(model)",
            layer.type,
            f"{layer.input_dim}→{layer.output_dim}",
            *(format_number(summarize(layer.sigma_max)[c]) for c in ("q10", "median", "q90")),
        ]
        for layer in j.layers
    ]
    assert [r[:6] for r in tables["layers"][1:]] == expected
    top = ", ".join(format_number(v) for v in j.ntk.top_eigenvalues)
    ntk = [format_number(j.ntk.samples), format_number(j.ntk.outputs)]
    assert tables["ntk"][1] == [*ntk, format_number(j.ntk.trace), top]
