"""What every command shares: errors as one line and an exit code, the analysis phase (progress bars, user code's stdout diverted), loading, JSON on stdout, writing --out."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer

from .. import signals
from ..errors import (
    EXIT_CLOSED_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NUMERICAL,
    EXIT_TERMINATED,
    LandscapeError,
    Terminated,
    is_host_out_of_memory,
    is_out_of_memory,
    printable,
)
from .options import RunArgs, parameters_as_flags

OUT_OF_MEMORY = (
    "landscape: error: the device ran out of memory (try a smaller --batch-size, --max-samples "
    "or --hvp-mode streaming)"
)


# ---------------------------------------------------------------- plumbing
def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def one_line_errors(debug: bool) -> Iterator[None]:
    """Turn exceptions into one line on stderr and the documented exit code; a library error's
    parameter references (`` `dtype=float64` ``) are shown as flags (``--dtype float64``)."""
    try:
        yield
        signals.raise_if_received()  # a signal whose exception was swallowed on the way
    except typer.Exit:
        raise
    except LandscapeError as exc:
        if debug:
            raise
        if is_primary():  # under torchrun every rank raises the same error; rank 0 reports it
            typer.echo(f"landscape: error: {parameters_as_flags(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except (KeyboardInterrupt, Terminated) as exc:
        raise_signal_exit(exc)
    except BrokenPipeError:
        exit_closed_pipe()
    except MemoryError:  # host memory
        if debug:
            raise
        typer.echo(OUT_OF_MEMORY.replace("the device", "the host"), err=True)
        raise typer.Exit(EXIT_NUMERICAL) from None
    except Exception as exc:
        if debug:
            raise
        text = str(exc).strip().splitlines()
        if is_out_of_memory(exc):
            typer.echo(_out_of_memory_line(exc), err=True)
            raise typer.Exit(EXIT_NUMERICAL) from None
        typer.echo(
            f"landscape: internal error: {exc.__class__.__name__}: "
            f"{printable(text[0]) if text else ''} "
            "(a bug; rerun with --debug and report the traceback)",
            err=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def raise_signal_exit(exc: BaseException) -> NoReturn:
    """End the command for SIGINT (``KeyboardInterrupt``, exit 130) or SIGTERM
    (:class:`~landscape_cli.errors.Terminated`, exit 143), with one line on stderr."""
    terminated = isinstance(exc, Terminated)
    typer.echo(f"landscape: {'terminated' if terminated else 'interrupted'}", err=True)
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


def exit_closed_pipe() -> NoReturn:
    """Stop quietly when the reader of stdout has gone (``landscape ... | head``), as Unix tools
    do: nothing on stderr, exit 141 (128 + SIGPIPE). stdout is pointed at ``/dev/null`` so that
    the final flush of what is still buffered cannot fail again."""
    from ..streams import stdout_to_devnull

    stdout_to_devnull()
    raise typer.Exit(EXIT_CLOSED_PIPE)


def _out_of_memory_line(exc: BaseException) -> str:
    """The advice for running out of memory, naming the host (CPU) or the device."""
    return (
        OUT_OF_MEMORY.replace("the device", "the host")
        if is_host_out_of_memory(exc)
        else OUT_OF_MEMORY
    )


# Where results go while an analysis runs: the original stdout, which user code cannot reach.
_results_streams: list[Any] = []


class Reporting:
    """What the library reports while it runs: ``reporting(stage, done, total)`` updates the
    progress bars, ``reporting.plan(plan)`` prints the plan line on stderr (not when quiet, and
    only on the primary process)."""

    def __init__(self, update: Callable[[str, int, int], None], quiet: bool) -> None:
        self._update = update
        self._quiet = quiet

    def __call__(self, stage: str, done: int, total: int) -> None:
        self._update(stage, done, total)

    def plan(self, plan: Any) -> None:
        if self._quiet or not is_primary():
            return
        from ..render.terminal import plan_line

        typer.echo(plan_line(plan), err=True)


@contextlib.contextmanager
def analysis_phase(quiet: bool) -> Iterator[Reporting]:
    """The analysis phase: a :class:`Reporting` drawing rich bars on stderr (off when quiet or
    when stderr is not a terminal) and printing an analysis's plan, with whatever user code
    prints (a model factory, a loss, a TorchScript archive) diverted from stdout to stderr."""
    from ..streams import stdout_to_stderr

    with stdout_to_stderr() as results:
        _results_streams.append(results)
        try:
            with _progress_bars(quiet) as update:
                yield Reporting(update, quiet)
        finally:
            _results_streams.pop()


@contextlib.contextmanager
def _progress_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = _stderr_console()
    disabled = quiet or not console.is_terminal or not is_primary()
    labels = {
        "load": "loss and gradient",
        "lanczos": "Lanczos (extremes)",
        "trace": "trace",
        "density": "SLQ density",
        "exact": "exact Hessian",
        "newton": "Newton decrement (CG)",
        "sharpness": "worst case (ascent)",
        "average": "average case",
        "surface": "surface grid points",
        "track": "checkpoints",
        "jacobian": "input–output Jacobian",
        "layers": "layer Jacobians",
        "ntk": "NTK (Lanczos)",
        "ntk-trace": "NTK trace",
        "per_layer": "per-layer blocks",
        "spread": "data subsets",
        "hvps": "HVPs planned",
    }
    with Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),  # of the planned HVPs on the "hvps" bar
        console=console,
        transient=True,
        disable=disabled,
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(labels.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def is_primary() -> bool:
    """Whether this process writes output: always, except on ranks > 0 under ``torchrun``
    (read from the environment, so it is known before torch is imported)."""
    from ..problem.distributed import environment_rank

    return environment_rank() == 0


def join_process_group(config: Any) -> None:
    """Under ``torchrun``, join the process group (gloo on CPU, nccl on CUDA) before the
    objective is built, so that it shards the batches across ranks."""
    from ..problem.distributed import init_from_environment, launched_by_torchrun

    if launched_by_torchrun():
        from ..problem.loading import resolve_device

        init_from_environment(resolve_device(config.device))


def check_out(out: str | None) -> None:
    """Refuse an ``--out`` target that cannot be written (missing directory, a directory, a file
    that is not a landscape report) before any work is spent; nothing is created."""
    if out is not None:
        from ..io.report_file import check_report_target

        check_report_target(out)


def command_line() -> str:
    """This process's command line, as stored in a report."""
    import shlex

    return shlex.join(["landscape", *sys.argv[1:]])


def write_sections(out: str, sections: dict[str, Any], cfg: Any, objective: Any) -> Any:
    """Add ``sections`` (``{name: result}``) to the report at ``out`` (temp file + rename);
    return its path."""
    from ..io.report_file import objective_info, write_report

    return write_report(
        out,
        sections,
        config=cfg,
        command_line=command_line(),
        objective_info=objective_info(objective, cfg.seed),
    )


def write_out(out: str | None, section: str, result: Any, cfg: Any, objective: Any) -> None:
    """Add ``result`` as ``/<section>`` of the report at ``out``, on the primary process."""
    if out is None or not is_primary():
        return
    write_sections(out, {section: result}, cfg, objective)


def emit_json(payload: dict[str, Any]) -> None:
    stream = _results_streams[-1] if _results_streams else sys.stdout
    stream.write(json.dumps(payload, allow_nan=False) + "\n")
    stream.flush()


def load(
    flags: dict[str, Any],
    config_file: str | None,
    progress: Callable[[str, int, int], None],
    out: str | None = None,
):
    """Resolve the configuration and build the objective (the shared start of every analysis);
    with ``out``, refuse a report of another checkpoint before any product is spent."""
    from functools import partial

    from ..io.config import resolve_run_config
    from ..io.report_file import check_report_fits, objective_info
    from ..problem.loading import build_objective

    config = resolve_run_config(flags, config_file)
    join_process_group(config)
    objective = build_objective(
        config,
        progress=partial(progress, "load"),
        determinism_check=config.spectrum.determinism_check,
    )
    if out is not None:
        check_report_fits(out, objective_info(objective, config.seed))
    return config, objective


def run_analysis(
    run: RunArgs,
    flags: dict[str, Any],
    analyze: Callable[[Any, Any, Callable[[str, int, int], None]], Any],
    printer: str,
    *,
    out: str | None = None,
    section: str | None = None,
) -> None:
    """The body every analysis command shares: load, ``analyze(objective, cfg, progress)``,
    add the result to the ``--out`` report, then JSON or the ``terminal.<printer>`` table."""
    with one_line_errors(run.debug):
        if section is not None:
            check_out(out)
        with analysis_phase(run.quiet) as progress:
            cfg, objective = load(flags, run.config, progress, out if section else None)
            result = analyze(objective, cfg, progress)
        if section is not None:
            write_out(out, section, result, cfg, objective)
        for warning in getattr(result, "warnings", ()):
            typer.echo(f"landscape: warning: {printable(warning)}", err=True)
        if run.json:
            emit_json(result.to_dict())
        else:
            from ..render import terminal

            getattr(terminal, printer)(result)


def config_without_checkpoint(
    flags: dict[str, Any], config_file: str | None, first: str | None = None
) -> Any:
    """The run config of a series of checkpoints starting with ``first``, without a checkpoint
    (track sets one per file): resolved as for ``first`` alone, so that a checkpoint without a
    model is the usual error rather than the bundled sample's model, and an archive that holds
    its model is its own model."""
    import dataclasses

    from ..io.config import resolve_run_config

    config = resolve_run_config({**flags, "checkpoint": first}, config_file)
    config = dataclasses.replace(config, checkpoint=None)
    join_process_group(config)
    return config
