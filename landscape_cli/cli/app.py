"""The ``landscape`` command line: parse -> call the library -> emit -> exit code. No maths here.

Results go to stdout (a rich table, or one JSON object with ``--json``); progress bars, logs and
errors go to stderr. Errors are one line, with the exit codes of :mod:`landscape_cli.errors`;
``--debug`` shows the traceback. Heavy imports (torch) happen inside the commands, so
``landscape --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..analyses.settings import (
    ClassifySettings,
    JacobianSettings,
    KFACSettings,
    SharpnessSettings,
    SpectrumSettings,
    SurfaceSettings,
)
from ..errors import EXIT_INPUT, Terminated, printable
from .options import DebugOpt, JsonOpt, OutOpt, QuietOpt, RunArgs, analysis_command
from .run import (
    analysis_phase,
    check_out,
    command_line,
    config_without_checkpoint,
    emit_json,
    is_primary,
    load,
    one_line_errors,
    raise_signal_exit,
    run_analysis,
    write_sections,
)

try:  # typer >= 0.22 ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - a typer that depends on click
    from click.exceptions import UsageError


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    """A usage error (unknown option or command, a value that is not a number, a missing
    required option) as one line on stderr and exit code 2, like every other error; click would
    print the usage block and a hint over several lines."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as exc:  # while parsing or importing
        raise_signal_exit(exc)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `landscape`: the help text
            raise
        command = exc.ctx.command_path if exc.ctx is not None else "landscape"
        message = printable(" ".join(exc.format_message().split()))
        typer.echo(f"landscape: error: {message} (see '{command} --help')", err=True)
        raise typer.Exit(EXIT_INPUT) from None


class _OneLineUsageGroup(TyperGroup):
    """The ``landscape`` group: parses the command line with :func:`_one_line_usage`."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_OneLineUsageGroup,
    name="landscape",
    help="Loss-landscape analysis of a trained PyTorch checkpoint, from Hessian-vector products.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ---------------------------------------------------------------- commands
def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"landscape {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Loss-landscape analysis of a trained PyTorch checkpoint, from Hessian-vector products."""


@app.command()
@analysis_command()
def inspect(run: RunArgs) -> None:
    """Load and validate; show parameters, layers, loss, gradient norm and the data."""
    flags = run.flags
    with one_line_errors(run.debug):
        with analysis_phase(run.quiet) as progress:
            cfg, objective = load(flags, run.config, progress)
        from ..analyses.inspection import inspect_objective

        start = time.perf_counter()
        result = inspect_objective(objective, seed=cfg.seed, seconds=time.perf_counter() - start)
        if run.json:
            emit_json(result.to_dict())
        else:
            from ..render.terminal import print_inspection

            print_inspection(result)


@app.command()
@analysis_command(("spectrum", SpectrumSettings))
def spectrum(run: RunArgs, out: OutOpt = None) -> None:
    """Top-k eigenvalues and lambda_min (Lanczos), trace (Hutch++) and spectral density (SLQ)."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.spectrum import analyze_spectrum

        return analyze_spectrum(
            objective, cfg.spectrum, seed=cfg.seed, lr=cfg.lr, progress=progress, plan=progress.plan
        )

    run_analysis(run, flags, analyze, "print_spectrum", out=out, section="spectrum")


@app.command()
@analysis_command(("classify", ClassifySettings))
def classify(run: RunArgs, out: OutOpt = None) -> None:
    """Critical-point type (minimum, saddle, maximum, degenerate, not-critical) with its evidence."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.classify import classify_point

        return classify_point(objective, cfg.classify, seed=cfg.seed, lr=cfg.lr, progress=progress)

    run_analysis(run, flags, analyze, "print_classification", out=out, section="classify")


@app.command()
@analysis_command(("sharpness", SharpnessSettings))
def sharpness(run: RunArgs, out: OutOpt = None) -> None:
    """SAM sharpness over radii rho: worst case, one step, average case, second order."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.sharpness import measure_sharpness

        return measure_sharpness(objective, cfg.sharpness, seed=cfg.seed, progress=progress)

    run_analysis(run, flags, analyze, "print_sharpness", out=out, section="sharpness")


@app.command()
@analysis_command(("surface", SurfaceSettings))
def surface(run: RunArgs, out: OutOpt = None) -> None:
    """1-D or 2-D loss surface along random, Hessian-eigenvector or interpolation directions."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.surface import analyze_surface

        return analyze_surface(
            objective,
            cfg.surface,
            seed=cfg.seed,
            progress=progress,
            trust_checkpoint=cfg.trust_checkpoint,
        )

    run_analysis(run, flags, analyze, "print_surface", out=out, section="surface")


@app.command()
@analysis_command(("jacobian", JacobianSettings))
def jacobian(run: RunArgs, out: OutOpt = None) -> None:
    """Input–output and per-layer Jacobian singular values, and the empirical NTK spectrum."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.jacobian import analyze_jacobian

        return analyze_jacobian(objective, cfg.jacobian, seed=cfg.seed, progress=progress)

    run_analysis(run, flags, analyze, "print_jacobian", out=out, section="jacobian")


@app.command()
@analysis_command(("kfac", KFACSettings))
def kfac(run: RunArgs, out: OutOpt = None) -> None:
    """How well K-FAC's Kronecker factors fit the GGN, per layer: Frobenius error, traces, λ_max."""
    flags = run.flags

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.kfac import analyze_kfac

        return analyze_kfac(objective, cfg.kfac, seed=cfg.seed, lr=cfg.lr, progress=progress)

    run_analysis(run, flags, analyze, "print_kfac", out=out, section="kfac")


@app.command()
@analysis_command()
def report(
    run: RunArgs,
    out: Annotated[str, typer.Option("--out", help="The HDF5 report to write (required).")],
    surface: Annotated[
        bool, typer.Option("--surface/--no-surface", help="Include the default 2-D surface.")
    ] = True,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write the figures beside the report.")
    ] = True,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf.")] = "png",
    html: Annotated[
        bool,
        typer.Option("--html/--no-html", help="Write a self-contained HTML summary beside it."),
    ] = True,
) -> None:
    """Spectrum, classify, sharpness and a 2-D surface in one go, into one report (+ figures)."""
    flags = run.flags
    with one_line_errors(run.debug):
        from pathlib import Path

        from ..analyses.bundle import analyze_all
        from ..io.report_file import read_report
        from ..render.files import check_figure_targets, write_figures_and_html

        check_out(out)
        target = Path(out)
        check_figure_targets(target.parent, target.stem, fmt, html=html, plots=plots)
        with analysis_phase(run.quiet) as progress:
            cfg, objective = load(flags, run.config, progress, out)
            results = analyze_all(objective, cfg, surface=surface, progress=progress)
        if not is_primary():
            return
        path = write_sections(out, results, cfg, objective)
        files = [path]
        if html or plots:  # the file may hold other sections too: draw what it holds
            files += write_figures_and_html(
                read_report(path, vectors=False),
                path.parent,
                path.stem,
                fmt,
                html=html,
                plots=plots,
            )
        if run.json:
            from ..analyses.bundle import bundle_run_info

            summary = {name: result.to_dict() for name, result in results.items()}
            envelope = bundle_run_info(objective, results, cfg.seed).to_dict()
            names = [str(f) for f in files]
            emit_json({**envelope, "report": str(path), "files": names, **summary})
        else:
            from ..render.terminal import print_classification, print_sharpness, print_spectrum

            print_spectrum(results["spectrum"])
            print_classification(results["classify"])
            print_sharpness(results["sharpness"])
            typer.echo("written: " + ", ".join(printable(Path(f).name) for f in files))


@app.command()
@analysis_command(("spectrum", SpectrumSettings))
def check(
    run: RunArgs,
    checks: Annotated[
        str | None,
        typer.Option(
            "--checks", help="YAML thresholds (max:, min:, equals:, margin:); - reads stdin."
        ),
    ] = None,
    max_: Annotated[
        list[str] | None, typer.Option("--max", help="METRIC=VALUE upper bound, repeatable.")
    ] = None,
    min_: Annotated[
        list[str] | None, typer.Option("--min", help="METRIC=VALUE lower bound, repeatable.")
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option("--margin", help="Fail only beyond this many uncertainties [default: 0]."),
    ] = None,
    junit: Annotated[
        str | None, typer.Option("--junit", help="Also write the outcomes as JUnit XML.")
    ] = None,
) -> None:
    """CI gate: thresholds on a checkpoint (computes what they need) or a report (computes nothing).

    Exit 0 when every check passes, 1 when one fails, 2 for bad input."""
    flags = run.flags
    with one_line_errors(run.debug):
        from ..analyses.check import (
            check_objective,
            check_report,
            gather_checks,
            is_report_path,
            junit_xml,
        )
        from ..errors import EXIT_CHECK_FAILED

        parsed, k = gather_checks(checks, max_ or [], min_ or [], margin)
        if junit is not None:
            from ..files import check_writable

            check_writable(junit)
        target = flags.get("checkpoint")
        if is_report_path(target):
            from ..io.report_file import read_report

            result = check_report(read_report(target, vectors=False), parsed, k, target=str(target))
        else:
            with analysis_phase(run.quiet) as progress:
                cfg, objective = load(flags, run.config, progress)
                result = check_objective(objective, cfg, parsed, k, progress=progress)
        if junit is not None and is_primary():
            from ..files import write_text

            write_text(junit, junit_xml(result))
        if run.json:
            emit_json(result.to_dict())
        else:
            from ..render.terminal import print_checks

            print_checks(result)
        if not result.passed:
            raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@analysis_command(("spectrum", SpectrumSettings))
def track(
    run: RunArgs,
    more: Annotated[
        list[str] | None,
        typer.Argument(
            help="More checkpoints (or glob patterns) after the first.", show_default=False
        ),
    ] = None,
    from_dir: Annotated[
        str | None, typer.Option("--from-dir", help="Every checkpoint file in this directory.")
    ] = None,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="One JSON line per checkpoint on stdout, as each finishes."),
    ] = False,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start/--cold-start",
            help="Start each Lanczos run from the previous top eigenvector.",
        ),
    ] = True,
    trace: Annotated[
        bool, typer.Option("--trace/--no-trace", help="Estimate the trace too.")
    ] = True,
    out: OutOpt = None,
) -> None:
    """Curvature along a series of checkpoints: lambda_max, trace, loss, grad norm, eta*lambda_max."""
    flags = run.flags
    first = flags.pop("checkpoint")
    with one_line_errors(run.debug):
        from ..analyses.track import analyze_track, expand_checkpoints

        check_out(out)
        paths = expand_checkpoints([p for p in [first, *(more or [])] if p], from_dir)
        with analysis_phase(run.quiet or jsonl) as progress:
            cfg = config_without_checkpoint(flags, run.config, paths[0] if paths else None)
            result = analyze_track(
                paths,
                cfg,
                warm_start=warm_start,
                trace=trace,
                progress=progress,
                on_point=(lambda point: emit_json(point.to_dict())) if jsonl else None,
            )
        if out is not None and is_primary():
            from ..io.report_file import write_track

            write_track(out, result, config=cfg, command_line=command_line())
        if run.json:
            emit_json(result.to_dict())
        elif not jsonl:
            from ..render.terminal import print_track

            print_track(result)


@app.command()
def plot(
    report: Annotated[str, typer.Argument(help="An HDF5 report written with --out.")],
    fmt: Annotated[str, typer.Option("--format", help="png, svg or pdf [default: png].")] = "png",
    out_dir: Annotated[
        str | None,
        typer.Option("--out-dir", help="Directory for the figures [default: beside the report]."),
    ] = None,
    sigma: Annotated[
        float | None,
        typer.Option("--sigma", help="Re-broaden the density with this width (no HVPs needed)."),
    ] = None,
    html: Annotated[
        bool, typer.Option("--html", help="Also write <report>.html, a self-contained summary.")
    ] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Render the figures of a report from the file alone (no checkpoint)."""
    with one_line_errors(debug):
        from pathlib import Path

        from ..errors import InputError
        from ..io.report_file import read_report
        from ..render.files import (
            check_figure_options,
            check_figure_targets,
            write_figures_and_html,
        )

        start = time.perf_counter()
        check_figure_options(fmt, sigma)
        path = Path(report)
        loaded = read_report(path, vectors=False)
        directory = Path(out_dir) if out_dir is not None else path.parent
        if not directory.is_dir():
            raise InputError(f"--out-dir {directory}: not a directory")
        check_figure_targets(directory, path.stem, fmt, sigma=sigma, html=html)
        files = write_figures_and_html(loaded, directory, path.stem, fmt, sigma=sigma, html=html)
        written = [str(f) for f in files]
        if json_output:
            from ..analyses.run_info import RunInfo

            envelope = RunInfo.from_report(loaded, "plot", time.perf_counter() - start).to_dict()
            emit_json({**envelope, "report": str(path), "files": written})
        else:
            for file in written:
                typer.echo(printable(str(file)))
            if not written:
                typer.echo("the report holds nothing to plot", err=True)


def main() -> None:
    """Run the app (the console script is :func:`landscape_cli.console.main`). Under
    ``torchrun``, ranks > 0 compute alongside rank 0 but print nothing on stdout and write no
    files (see :mod:`landscape_cli.problem.distributed`)."""
    if not is_primary():
        sys.stdout = open(os.devnull, "w")  # kept open for the life of the process
    try:
        app()
    finally:
        if "torch" in sys.modules:
            from ..problem.distributed import shutdown

            shutdown()


if __name__ == "__main__":  # pragma: no cover
    main()
