"""The files drawn from a report: its figures and its HTML summary, side by side.

Names follow the report's stem: ``<stem>-<figure>.<fmt>`` for each figure of
:func:`~landscape_cli.render.plots.report_figures` and ``<stem>.html`` for the summary.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import check_writable
from .plots import FORMATS


def check_figure_options(fmt: str, sigma: float | None = None) -> None:
    """Raise :class:`InputError` for a figure format other than :data:`FORMATS` or a density
    width ``sigma`` that is not greater than 0."""
    if fmt not in FORMATS:
        raise InputError(f"`fmt={fmt}`: choose one of {', '.join(FORMATS)}")
    if sigma is not None and not sigma > 0:
        raise InputError(f"`sigma={sigma}`: it must be greater than 0")


def check_figure_targets(
    directory: str | Path,
    stem: str,
    fmt: str = "png",
    *,
    sigma: float | None = None,
    html: bool = True,
    plots: bool = True,
) -> None:
    """Raise :class:`InputError` before any work unless :func:`write_figures_and_html` could
    write its files: the options are valid (:func:`check_figure_options`), the folder accepts new
    files, and no name a figure or the page would take is a folder."""
    check_figure_options(fmt, sigma)
    directory = Path(directory)
    if html:
        check_writable(directory / f"{stem}.html")
    if plots:
        check_writable(directory / f"{stem}-figure.{fmt}")
        for taken in directory.glob(f"{glob.escape(stem)}-*.{fmt}"):
            if taken.is_dir():
                raise InputError(f"{taken} is a directory where a figure would be written")


def write_figures_and_html(
    report: Any,
    directory: str | Path,
    stem: str,
    fmt: str = "png",
    *,
    sigma: float | None = None,
    html: bool = True,
    plots: bool = True,
) -> list[Path]:
    """Write into ``directory`` every figure ``report`` (a read
    :class:`~landscape_cli.io.report_file.Report`) has the material for, when ``plots``, then its
    HTML summary, when ``html``; the density is re-broadened with ``sigma`` when given. Returns
    the files written, in that order."""
    from .plots import report_figures, save_figure

    check_figure_options(fmt, sigma)
    directory = Path(directory)
    written = []
    if plots:
        for name, figure in report_figures(report, sigma=sigma).items():
            written.append(save_figure(figure, directory / f"{stem}-{name}.{fmt}"))
    if html:
        from .html import write_html

        written.append(write_html(report, directory / f"{stem}.html", sigma=sigma))
    return written
