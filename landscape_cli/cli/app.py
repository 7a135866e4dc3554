"""The ``landscape`` command line: parse -> call the library -> emit -> exit code. No maths here.

Results go to stdout (a rich table, or one JSON object with ``--json``); progress bars, logs and
errors go to stderr. Errors are one line, with the exit codes of :mod:`landscape_cli.errors`;
``--debug`` shows the traceback. Heavy imports (torch) happen inside the commands, so
``landscape --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect as pyinspect
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_type_hints

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_NUMERICAL, LandscapeError

try:  # typer >= 0.22 ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - a typer that depends on click
    from click.exceptions import UsageError

EXIT_INTERNAL = 70  # a bug in landscape: please report it with the --debug traceback
OUT_OF_MEMORY = (
    "landscape: error: the device ran out of memory (try a smaller --batch-size, --max-samples "
    "or --hvp-mode streaming)"
)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    """A usage error (unknown option or command, a value that is not a number, a missing
    required option) as one line on stderr and exit code 2, like every other error; click would
    print the usage block and a hint over several lines."""
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `landscape`: the help text
            raise
        command = exc.ctx.command_path if exc.ctx is not None else "landscape"
        message = " ".join(exc.format_message().split())
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

# ---------------------------------------------------------------- shared options
CheckpointArg = Annotated[
    str | None,
    typer.Argument(
        help="Checkpoint (.pt/.pth/.bin state_dict or training checkpoint, .safetensors, "
        "TorchScript) or sample:NAME. Default: the bundled sample (sample:mlp).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="Model factory: package.module:callable or path/file.py:callable."
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Data: .pt/.npz/.h5 file with x and y, package.module:callable, or sample:NAME.",
    ),
]
LossOpt = Annotated[
    str | None,
    typer.Option(
        "--loss",
        help="cross_entropy (default), mse, bce_with_logits, nll, or package.module:callable(model, batch).",
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="YAML file with the same keys as the flags; flags win."),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Samples per forward pass [default: 256].")
]
MaxSamplesOpt = Annotated[
    int | None,
    typer.Option("--max-samples", help="Average the loss over the first N samples [default: all]."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of every random choice [default: 0].")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:INDEX [default: auto].")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch [default: torch's choice]; 1 helps on a busy machine.",
    ),
]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="float32 or float64 [default: float32].")
]
ModeOpt = Annotated[
    str | None,
    typer.Option("--mode", help="Module mode during analysis: eval or train [default: eval]."),
]
HvpModeOpt = Annotated[
    str | None,
    typer.Option(
        "--hvp-mode",
        help="auto, cached (keep one gradient graph) or streaming (batch by batch) [default: auto].",
    ),
]
HvpBlockOpt = Annotated[
    str | None,
    typer.Option(
        "--hvp-block",
        help="auto, batched (one vmapped backward per block of vectors) or loop [default: auto].",
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the loss for loss and gradient evaluations (surface, sharpness); "
        "pays on large models and grids after a one-off compile of seconds [default: off].",
    ),
]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Write (or add a section to) an HDF5 report, atomically."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on error.")]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        help="Learning rate for the edge-of-stability numbers [default: from the checkpoint's optimizer].",
    ),
]
CurvatureOpt = Annotated[
    str | None,
    typer.Option(
        "--curvature",
        help="hessian, ggn (generalised Gauss-Newton; the Fisher for cross-entropy/MSE) or ef "
        "(empirical Fisher) [default: hessian]. ggn/ef need a built-in --loss.",
    ),
]
ParamsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--params",
        help="Only the diagonal block of these parameters: a glob ('fc1.*') or re:REGEX; "
        "repeatable [default: all].",
    ),
]
DeterminismOpt = Annotated[
    bool | None,
    typer.Option(
        "--determinism-check/--no-determinism-check",
        help="First check that the loss and 2 products are reproducible; stop (exit 2) if not "
        "[default: on].",
    ),
]


def _curvature_flags(
    curvature: str | None, params: list[str] | None, determinism_check: bool | None
) -> dict[str, Any]:
    return {
        "spectrum.curvature": curvature,
        "spectrum.params": list(params) if params else None,
        "spectrum.determinism_check": determinism_check,
    }


TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Allow full pickles (torch.load weights_only=False) and TorchScript archives. Both can run code from the file.",
    ),
]


# The options every analysis command shares, in the order --help lists them: the checkpoint
# and what the loss is averaged over first, then (after the command's own options) the output
# switches. ``analysis_command`` adds them to a command's signature, so each is written once.
SHARED_INPUTS: list[tuple[str, Any]] = [
    ("checkpoint", CheckpointArg),
    ("model", ModelOpt),
    ("data", DataOpt),
    ("loss", LossOpt),
    ("config", ConfigOpt),
    ("batch_size", BatchSizeOpt),
    ("max_samples", MaxSamplesOpt),
    ("seed", SeedOpt),
    ("device", DeviceOpt),
    ("threads", ThreadsOpt),
    ("dtype", DtypeOpt),
    ("mode", ModeOpt),
    ("hvp_mode", HvpModeOpt),
    ("hvp_block", HvpBlockOpt),
    ("compile", CompileOpt),
]
SHARED_OUTPUTS: list[tuple[str, Any, bool]] = [
    ("trust_checkpoint", TrustOpt, False),
    ("json_output", JsonOpt, False),
    ("quiet", QuietOpt, False),
    ("debug", DebugOpt, False),
]


@dataclass(frozen=True)
class RunArgs:
    """The shared options of one analysis command as the user gave them (``None`` = not given)."""

    values: dict[str, Any]

    @property
    def config(self) -> str | None:
        return self.values["config"]

    @property
    def json(self) -> bool:
        return bool(self.values["json_output"])

    @property
    def quiet(self) -> bool:
        return bool(self.values["quiet"])

    @property
    def debug(self) -> bool:
        return bool(self.values["debug"])

    def flags(self, **extra: Any) -> dict[str, Any]:
        """Config-layer flags: the shared inputs plus ``extra``; an unset switch stays ``None``
        so that the config file may still set it."""
        flags = {
            k: v
            for k, v in self.values.items()
            if k not in ("config", "json_output", "quiet", "debug")
        }
        flags["trust_checkpoint"] = True if flags.get("trust_checkpoint") else None
        flags.update(extra)
        return flags


def analysis_command(function: Callable[..., None]) -> Callable[..., None]:
    """Give ``function(run: RunArgs, **own_options)`` the shared options in its signature."""
    own = list(pyinspect.signature(function).parameters.values())[1:]
    hints = {k: v for k, v in get_type_hints(function, include_extras=True).items() if k != "run"}
    keyword = pyinspect.Parameter.KEYWORD_ONLY
    shared_in = [
        pyinspect.Parameter(name, keyword, default=None, annotation=kind)
        for name, kind in SHARED_INPUTS
    ]
    shared_out = [
        pyinspect.Parameter(name, keyword, default=default, annotation=kind)
        for name, kind, default in SHARED_OUTPUTS
    ]
    own = [p.replace(kind=keyword, annotation=hints[p.name]) for p in own]
    names = {name for name, _ in SHARED_INPUTS} | {name for name, _, _ in SHARED_OUTPUTS}

    @functools.wraps(function)
    def wrapper(**kwargs: Any) -> None:
        shared = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        function(RunArgs(shared), **kwargs)

    wrapper.__signature__ = pyinspect.Signature([*shared_in, *own, *shared_out])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*shared_in, *own, *shared_out]}
    return wrapper


# ---------------------------------------------------------------- plumbing
def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Turn exceptions into one line on stderr and the documented exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except LandscapeError as exc:
        if debug:
            raise
        if _primary():  # under torchrun every rank raises the same error; rank 0 reports it
            typer.echo(f"landscape: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("landscape: interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except MemoryError:  # host memory
        if debug:
            raise
        typer.echo(OUT_OF_MEMORY.replace("the device", "the host"), err=True)
        raise typer.Exit(EXIT_NUMERICAL) from None
    except Exception as exc:
        if debug:
            raise
        text = str(exc).strip().splitlines()
        if _is_out_of_memory(exc, text[0] if text else ""):
            typer.echo(OUT_OF_MEMORY, err=True)
            raise typer.Exit(EXIT_NUMERICAL) from None
        typer.echo(
            f"landscape: internal error: {exc.__class__.__name__}: {text[0] if text else ''} "
            "(a bug; rerun with --debug and report the traceback)",
            err=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def _is_out_of_memory(exc: BaseException, first_line: str) -> bool:
    """``torch.OutOfMemoryError`` (CUDA, MPS, XPU), or a ``RuntimeError`` saying so (older torch,
    other backends). torch is looked up, not imported: ``--help`` must stay light."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in first_line.lower()


# Where results go while an analysis runs: the original stdout, which user code cannot reach.
_results_streams: list[Any] = []


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """The analysis phase: a ``progress(stage, done, total)`` callback drawing rich bars on stderr
    (off when quiet or when stderr is not a terminal), with whatever user code prints (a model
    factory, a loss, a TorchScript archive) diverted from stdout to stderr."""
    from ..streams import stdout_to_stderr

    with stdout_to_stderr() as results:
        _results_streams.append(results)
        try:
            with _progress_bars(quiet) as update:
                yield update
        finally:
            _results_streams.pop()


@contextlib.contextmanager
def _progress_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _stderr_console()
    disabled = quiet or not console.is_terminal or not _primary()
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
    }
    with Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
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


def _primary() -> bool:
    """Whether this process writes output: always, except on ranks > 0 under ``torchrun``
    (read from the environment, so it is known before torch is imported)."""
    from ..problem.distributed import environment_rank

    return environment_rank() == 0


def _join_process_group(config: Any) -> None:
    """Under ``torchrun``, join the process group (gloo on CPU, nccl on CUDA) before the
    objective is built, so that it shards the batches across ranks."""
    from ..problem.distributed import init_from_environment, launched_by_torchrun

    if launched_by_torchrun():
        from ..problem.loading import resolve_device

        init_from_environment(resolve_device(config.device))


def _check_out(out: str | None) -> None:
    """Refuse an ``--out`` target that cannot be written (missing directory, a directory, a file
    that is not a landscape report) before any work is spent; nothing is created."""
    if out is not None:
        from ..io.report_file import check_report_target

        check_report_target(out)


def _write_out(out: str | None, section: str, result: Any, cfg: Any, objective: Any) -> None:
    """Add ``result`` as ``/<section>`` of the report at ``out`` (temp file + rename)."""
    if out is None or not _primary():
        return
    import shlex

    from ..io.report_file import objective_info, write_report

    write_report(
        out,
        {section: result},
        config=cfg,
        command_line=shlex.join(["landscape", *sys.argv[1:]]),
        objective_info=objective_info(objective, cfg.seed),
    )


def _emit_json(payload: dict[str, Any]) -> None:
    stream = _results_streams[-1] if _results_streams else sys.stdout
    stream.write(json.dumps(payload, allow_nan=False) + "\n")
    stream.flush()


def _load(
    flags: dict[str, Any], config_file: str | None, progress: Callable[[str, int, int], None]
):
    """Resolve the configuration and build the objective (the shared start of every analysis)."""
    from functools import partial

    from ..io.config import resolve_run_config
    from ..problem.loading import build_objective

    config = resolve_run_config(flags, config_file)
    _join_process_group(config)
    objective = build_objective(config, progress=partial(progress, "load"))
    return config, objective


def _run_analysis(
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
    with _errors(run.debug):
        if section is not None:
            _check_out(out)
        with _progress(run.quiet) as progress:
            cfg, objective = _load(flags, run.config, progress)
            result = analyze(objective, cfg, progress)
        if section is not None:
            _write_out(out, section, result, cfg, objective)
        for warning in getattr(result, "warnings", ()):
            typer.echo(f"landscape: warning: {warning}", err=True)
        if run.json:
            _emit_json(result.to_dict())
        else:
            from ..render import terminal

            getattr(terminal, printer)(result)


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
@analysis_command
def inspect(
    run: RunArgs,
) -> None:
    """Load and validate; show parameters, layers, loss, gradient norm and the data."""
    flags = run.flags()
    with _errors(run.debug):
        with _progress(run.quiet) as progress:
            cfg, objective = _load(flags, run.config, progress)
        from ..analyses.inspection import inspect_objective

        start = time.perf_counter()
        result = inspect_objective(objective, seed=cfg.seed, seconds=time.perf_counter() - start)
        if run.json:
            _emit_json(result.to_dict())
        else:
            from ..render.terminal import print_inspection

            print_inspection(result)


@app.command()
@analysis_command
def spectrum(
    run: RunArgs,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Largest eigenvalues to report [default: 5].")
    ] = None,
    bottom_k: Annotated[
        int | None, typer.Option("--bottom-k", help="Smallest eigenvalues to report [default: 1].")
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol", help="Relative error target of the reported eigenvalues [default: 1e-4]."
        ),
    ] = None,
    max_iter: Annotated[
        int | None, typer.Option("--max-iter", help="Maximum Lanczos iterations [default: 200].")
    ] = None,
    trace: Annotated[
        bool | None, typer.Option("--trace/--no-trace", help="Estimate the trace [default: on].")
    ] = None,
    trace_method: Annotated[
        str | None,
        typer.Option(
            "--trace-method",
            help="auto, hutch++, hutchinson or per-sample [default: auto: exact from "
            "per-sample gradient norms where that applies, else Hutchinson on the deflated "
            "remainder].",
        ),
    ] = None,
    trace_matvecs: Annotated[
        int | None, typer.Option("--trace-matvecs", help="HVPs for the trace [default: 60].")
    ] = None,
    deflate_trace: Annotated[
        bool | None,
        typer.Option(
            "--deflate-trace/--no-deflate-trace",
            help="Deflate the trace by the extremes' Lanczos basis [default: on].",
        ),
    ] = None,
    density: Annotated[
        bool | None,
        typer.Option("--density/--no-density", help="Estimate the spectral density [default: on]."),
    ] = None,
    share_lanczos: Annotated[
        bool | None,
        typer.Option(
            "--share-lanczos/--no-share-lanczos",
            help="Count the extremes' Lanczos run as one more SLQ run of the density "
            "[default: on].",
        ),
    ] = None,
    slq_runs: Annotated[
        int | None,
        typer.Option(
            "--slq-runs", help="SLQ random probes besides the shared Lanczos run [default: 2]."
        ),
    ] = None,
    slq_steps: Annotated[
        int | None, typer.Option("--slq-steps", help="Lanczos steps per SLQ probe [default: 30].")
    ] = None,
    sigma: Annotated[
        float | None,
        typer.Option("--sigma", help="Gaussian broadening of the density [default: auto]."),
    ] = None,
    grid: Annotated[
        int | None, typer.Option("--grid", help="Density grid points [default: 1000].")
    ] = None,
    exact: Annotated[
        bool | None,
        typer.Option(
            "--exact/--no-exact", help="Also compute the exact Hessian (at most 6000 parameters)."
        ),
    ] = None,
    save_eigenvectors: Annotated[
        bool | None,
        typer.Option(
            "--save-eigenvectors/--no-save-eigenvectors",
            help="Keep the top-k eigenvectors (stored in the --out report).",
        ),
    ] = None,
    curvature: CurvatureOpt = None,
    params: ParamsOpt = None,
    per_layer: Annotated[
        bool | None,
        typer.Option(
            "--per-layer/--no-per-layer",
            help="λ_max and trace of each module's diagonal block, sorted by λ_max [default: off].",
        ),
    ] = None,
    spread: Annotated[
        int | None,
        typer.Option(
            "--spread",
            help="λ_max and trace on K disjoint subsets of the data: mean ± std [default: off].",
        ),
    ] = None,
    determinism_check: DeterminismOpt = None,
    lr: LrOpt = None,
    out: OutOpt = None,
) -> None:
    """Top-k eigenvalues and lambda_min (Lanczos), trace (Hutch++) and spectral density (SLQ)."""
    flags = run.flags(lr=lr)
    flags.update(_curvature_flags(curvature, params, determinism_check))
    flags.update({"spectrum.per_layer": per_layer, "spectrum.spread": spread})
    flags.update(
        {
            "spectrum.top_k": top_k,
            "spectrum.bottom_k": bottom_k,
            "spectrum.tol": tol,
            "spectrum.max_iter": max_iter,
            "spectrum.trace": trace,
            "spectrum.trace_method": trace_method,
            "spectrum.trace_matvecs": trace_matvecs,
            "spectrum.deflate_trace": deflate_trace,
            "spectrum.density": density,
            "spectrum.share_lanczos": share_lanczos,
            "spectrum.slq_runs": slq_runs,
            "spectrum.slq_steps": slq_steps,
            "spectrum.sigma": sigma,
            "spectrum.grid": grid,
            "spectrum.exact": exact,
            "spectrum.save_eigenvectors": save_eigenvectors,
        }
    )

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.spectrum import analyze_spectrum

        return analyze_spectrum(
            objective, cfg.spectrum, seed=cfg.seed, lr=cfg.lr, progress=progress
        )

    _run_analysis(run, flags, analyze, "print_spectrum", out=out, section="spectrum")


@app.command()
@analysis_command
def classify(
    run: RunArgs,
    grad_tol: Annotated[
        float | None,
        typer.Option(
            "--grad-tol",
            help="Stationary when ‖g‖/|c| ≤ grad-tol·max(‖w‖,1), c = gᵀHg/‖g‖² clamped to "
            "[neg-tol·κ, κ] [default: 1e-3].",
        ),
    ] = None,
    neg_tol: Annotated[
        float | None,
        typer.Option(
            "--neg-tol", help="λ_min is negative below −(neg-tol·κ + error bound) [default: 1e-3]."
        ),
    ] = None,
    tol: Annotated[
        float | None, typer.Option("--tol", help="Lanczos relative error target [default: 1e-4].")
    ] = None,
    max_iter: Annotated[
        int | None, typer.Option("--max-iter", help="Maximum Lanczos iterations [default: 200].")
    ] = None,
    newton: Annotated[
        bool | None,
        typer.Option(
            "--newton/--no-newton", help="Newton decrement by conjugate gradient [default: on]."
        ),
    ] = None,
    lr: LrOpt = None,
    out: OutOpt = None,
) -> None:
    """Critical-point type (minimum, saddle, maximum, degenerate, not-critical) with its evidence."""
    flags = run.flags(lr=lr)
    flags.update(
        {
            "classify.grad_tol": grad_tol,
            "classify.neg_tol": neg_tol,
            "classify.tol": tol,
            "classify.max_iter": max_iter,
            "classify.newton": newton,
        }
    )

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.classify import classify_point

        return classify_point(objective, cfg.classify, seed=cfg.seed, lr=cfg.lr, progress=progress)

    _run_analysis(run, flags, analyze, "print_classification", out=out, section="classify")


@app.command()
@analysis_command
def sharpness(
    run: RunArgs,
    rho: Annotated[
        list[str] | None,
        typer.Option(
            "--rho",
            help="Radius, repeatable or comma-separated [default: 0.01,0.02,0.05,0.1,0.2].",
        ),
    ] = None,
    adaptive: Annotated[
        bool | None,
        typer.Option(
            "--adaptive/--no-adaptive", help="ASAM's scale-invariant ball [default: off]."
        ),
    ] = None,
    eta: Annotated[float | None, typer.Option("--eta", help="ASAM's η [default: 0.01].")] = None,
    m: Annotated[
        int | None,
        typer.Option("--m", help="m-sharpness: disjoint batches of m samples [default: off]."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Ascent steps per start (worst case) [default: 20]."),
    ] = None,
    restarts: Annotated[
        int | None, typer.Option("--restarts", help="Random restarts (worst case) [default: 2].")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="Monte Carlo pairs (average case) [default: 16]."),
    ] = None,
    out: OutOpt = None,
) -> None:
    """SAM sharpness over radii rho: worst case, one step, average case, second order."""
    flags = run.flags()
    flags.update(
        {
            "sharpness.rho": None if not rho else ",".join(rho),
            "sharpness.adaptive": adaptive,
            "sharpness.eta": eta,
            "sharpness.m": m,
            "sharpness.steps": steps,
            "sharpness.restarts": restarts,
            "sharpness.samples": samples,
        }
    )

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.sharpness import measure_sharpness

        return measure_sharpness(objective, cfg.sharpness, seed=cfg.seed, progress=progress)

    _run_analysis(run, flags, analyze, "print_sharpness", out=out, section="sharpness")


@app.command()
@analysis_command
def surface(
    run: RunArgs,
    dims: Annotated[
        int | None, typer.Option("--dims", help="1 (a curve) or 2 (a surface) [default: 2].")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="random (filter-normalised), eigen or interpolation [default: random]."
        ),
    ] = None,
    points: Annotated[
        int | None, typer.Option("--points", help="Grid points per axis [default: 21].")
    ] = None,
    span: Annotated[
        float | None, typer.Option("--span", help="Coordinates over [-span, span] [default: 1.0].")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Another checkpoint: the line w + t(w_to − w), t in [-0.5, 1.5]."
        ),
    ] = None,
    filter_normalize: Annotated[
        bool | None,
        typer.Option(
            "--filter-normalize/--no-filter-normalize",
            help="Li et al. filter normalisation [default: on].",
        ),
    ] = None,
    ignore_bn_and_bias: Annotated[
        bool | None,
        typer.Option(
            "--ignore-bn-and-bias/--include-bn-and-bias",
            help="Zero direction on biases and normalisation layers [default: ignore].",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Result name [default: <kind>-<dims>d].")
    ] = None,
    out: OutOpt = None,
) -> None:
    """1-D or 2-D loss surface along random, Hessian-eigenvector or interpolation directions."""
    flags = run.flags()
    flags.update(
        {
            "surface.dims": dims,
            "surface.kind": kind,
            "surface.points": points,
            "surface.span": span,
            "surface.to": to,
            "surface.filter_normalize": filter_normalize,
            "surface.ignore_bn_and_bias": ignore_bn_and_bias,
            "surface.name": name,
        }
    )

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.surface import analyze_surface, validate_settings
        from ..errors import InputError

        try:
            validate_settings(cfg.surface)
        except ValueError as exc:
            raise InputError(f"surface settings: {exc}") from None
        return analyze_surface(
            objective,
            cfg.surface,
            seed=cfg.seed,
            progress=progress,
            trust_checkpoint=cfg.trust_checkpoint,
        )

    _run_analysis(run, flags, analyze, "print_surface", out=out, section="surface")


@app.command()
@analysis_command
def jacobian(
    run: RunArgs,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            help="Per-sample Jacobians (and the NTK) of the first N samples [default: 32].",
        ),
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option("--tol", help="Lanczos relative error target of σ_max² [default: 1e-6]."),
    ] = None,
    max_iter: Annotated[
        int | None,
        typer.Option("--max-iter", help="Maximum Lanczos iterations per Jacobian [default: 100]."),
    ] = None,
    dense_max: Annotated[
        int | None,
        typer.Option(
            "--dense-max",
            help="All singular values (σ_min, condition) when min(input, output dim) ≤ this "
            "[default: 256].",
        ),
    ] = None,
    layers: Annotated[
        bool | None,
        typer.Option("--layers/--no-layers", help="σ_max of every layer's Jacobian [default: on]."),
    ] = None,
    layer_scope: Annotated[
        str | None,
        typer.Option(
            "--layer-scope", help="leaves (modules without children) or children [default: leaves]."
        ),
    ] = None,
    ntk: Annotated[
        bool | None,
        typer.Option("--ntk/--no-ntk", help="Top eigenvalues and trace of the NTK [default: on]."),
    ] = None,
    ntk_top_k: Annotated[
        int | None, typer.Option("--ntk-top-k", help="NTK eigenvalues to report [default: 5].")
    ] = None,
    out: OutOpt = None,
) -> None:
    """Input–output and per-layer Jacobian singular values, and the empirical NTK spectrum."""
    flags = run.flags()
    flags.update(
        {
            "jacobian.samples": samples,
            "jacobian.tol": tol,
            "jacobian.max_iter": max_iter,
            "jacobian.dense_max": dense_max,
            "jacobian.layers": layers,
            "jacobian.layer_scope": layer_scope,
            "jacobian.ntk": ntk,
            "jacobian.ntk_top_k": ntk_top_k,
        }
    )

    def analyze(objective: Any, cfg: Any, progress: Any) -> Any:
        from ..analyses.jacobian import analyze_jacobian

        return analyze_jacobian(objective, cfg.jacobian, seed=cfg.seed, progress=progress)

    _run_analysis(run, flags, analyze, "print_jacobian", out=out, section="jacobian")


@app.command()
@analysis_command
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
    lr: LrOpt = None,
) -> None:
    """Spectrum, classify, sharpness and a 2-D surface in one go, into one report (+ figures)."""
    flags = run.flags(lr=lr)
    with _errors(run.debug):
        from pathlib import Path

        from ..analyses.bundle import analyze_all
        from ..errors import InputError
        from ..io.report_file import objective_info, read_report, write_report
        from ..render.plots import FORMATS, report_figures, save_figure

        if fmt not in FORMATS:
            raise InputError(f"--format '{fmt}': choose one of {', '.join(FORMATS)}")
        _check_out(out)
        with _progress(run.quiet) as progress:
            cfg, objective = _load(flags, run.config, progress)
            try:
                results = analyze_all(objective, cfg, surface=surface, progress=progress)
            except ValueError as exc:
                raise InputError(f"report settings: {exc}") from None
        if not _primary():
            return
        import shlex

        path = write_report(
            out,
            results,
            config=cfg,
            command_line=shlex.join(["landscape", *sys.argv[1:]]),
            objective_info=objective_info(objective, cfg.seed),
        )
        files = [str(path)]
        if html:
            from ..render.html import write_html

            files.append(str(write_html(read_report(path), path.with_suffix(".html"))))
        if plots:
            loaded = read_report(path)
            for name, figure in report_figures(loaded).items():
                files.append(str(save_figure(figure, path.with_name(f"{path.stem}-{name}.{fmt}"))))
        summary = {name: result.to_dict() for name, result in results.items()}
        if run.json:
            _emit_json({"command": "report", "report": str(path), "files": files, **summary})
        else:
            from ..render.terminal import print_classification, print_sharpness, print_spectrum

            print_spectrum(results["spectrum"])
            print_classification(results["classify"])
            print_sharpness(results["sharpness"])
            typer.echo("written: " + ", ".join(Path(f).name for f in files))


@app.command()
@analysis_command
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
    curvature: CurvatureOpt = None,
    params: ParamsOpt = None,
    determinism_check: DeterminismOpt = None,
    lr: LrOpt = None,
) -> None:
    """CI gate: thresholds on a checkpoint (computes what they need) or a report (computes nothing).

    Exit 0 when every check passes, 1 when one fails, 2 for bad input."""
    flags = run.flags(lr=lr)
    flags.update(_curvature_flags(curvature, params, determinism_check))
    with _errors(run.debug):
        import math
        from pathlib import Path

        from ..analyses.check import (
            CheckResult,
            compute_metrics,
            evaluate,
            junit_xml,
            metrics_from_results,
            parse_flag,
            read_checks,
        )
        from ..errors import EXIT_CHECK_FAILED, InputError

        parsed, file_margin = read_checks(checks) if checks is not None else ([], None)
        parsed += [parse_flag(text, "max") for text in max_ or []]
        parsed += [parse_flag(text, "min") for text in min_ or []]
        if not parsed:
            raise InputError(
                "no checks given", hint="use --checks FILE.yaml or --max/--min METRIC=VALUE"
            )
        k = margin if margin is not None else (file_margin or 0.0)
        if not (math.isfinite(k) and k >= 0):
            raise InputError(f"--margin {k}: must be a finite number >= 0")
        target = flags.get("checkpoint")
        if target is not None and Path(target).suffix in (".h5", ".hdf5"):
            from ..io.report_file import read_report

            report = read_report(target)
            metrics = metrics_from_results(
                report.spectrum, report.classify, report.sharpness, report.jacobian
            )
            info = {
                "seed": report.attrs.get("seed"),
                "num_parameters": report.attrs.get("num_parameters"),
                "curvature": None if report.spectrum is None else report.spectrum.curvature,
                "params": None if report.spectrum is None else list(report.spectrum.params) or None,
            }
            result = CheckResult(evaluate(parsed, metrics, k), k, "report", str(target), info)
        else:
            with _progress(run.quiet) as progress:
                cfg, objective = _load(flags, run.config, progress)
                start = time.perf_counter()
                metrics = compute_metrics(objective, cfg, parsed, progress=progress)
            info = {
                "seed": cfg.seed,
                "num_parameters": objective.num_parameters,
                "loss": objective.loss_value,
                "grad_norm": objective.grad_norm,
                "seconds": round(time.perf_counter() - start, 6),
                "curvature": cfg.spectrum.curvature,
                "params": list(cfg.spectrum.params) or None,
            }
            source = objective.checkpoint.path if objective.checkpoint is not None else "model"
            result = CheckResult(evaluate(parsed, metrics, k), k, "checkpoint", source, info)
        if junit is not None and _primary():
            _write_text_atomic(Path(junit), junit_xml(result))
        if run.json:
            _emit_json(result.to_dict())
        else:
            from ..render.terminal import print_checks

            print_checks(result)
        if not result.passed:
            raise typer.Exit(EXIT_CHECK_FAILED)


def _write_text_atomic(path: Any, text: str) -> None:
    """Write ``text`` through a temporary file renamed into place."""
    from ..errors import InputError

    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@app.command()
@analysis_command
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
    curvature: CurvatureOpt = None,
    params: ParamsOpt = None,
    determinism_check: DeterminismOpt = None,
    lr: LrOpt = None,
    out: OutOpt = None,
) -> None:
    """Curvature along a series of checkpoints: lambda_max, trace, loss, grad norm, eta*lambda_max."""
    flags = run.flags(lr=lr)
    flags.update(_curvature_flags(curvature, params, determinism_check))
    first = flags.pop("checkpoint")
    with _errors(run.debug):
        from ..analyses.track import TrackResult, expand_checkpoints, track_series
        from ..problem.loading import build_objective

        _check_out(out)
        paths = expand_checkpoints([p for p in [first, *(more or [])] if p], from_dir)
        with _progress(run.quiet or jsonl) as progress:
            cfg = _config_only(flags, run.config)
            points = []
            for point in track_series(
                paths, cfg, build_objective, warm_start=warm_start, trace=trace, progress=progress
            ):
                points.append(point)
                if jsonl:
                    _emit_json(point.to_dict())
        result = TrackResult(points, cfg.seed, warm_start)
        if out is not None and _primary():
            import shlex

            from ..io.report_file import write_track

            write_track(
                out, result, config=cfg, command_line=shlex.join(["landscape", *sys.argv[1:]])
            )
        if run.json:
            _emit_json(result.to_dict())
        elif not jsonl:
            from ..render.terminal import print_track

            print_track(result)


def _config_only(flags: dict[str, Any], config_file: str | None) -> Any:
    """The run config without a checkpoint (track sets one per file)."""
    from ..io.config import resolve_run_config

    config = resolve_run_config({**flags, "checkpoint": None}, config_file)
    _join_process_group(config)
    return config


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
    with _errors(debug):
        from pathlib import Path

        from ..errors import InputError
        from ..io.report_file import read_report
        from ..render.plots import FORMATS, report_figures, save_figure

        if fmt not in FORMATS:
            raise InputError(f"--format '{fmt}': choose one of {', '.join(FORMATS)}")
        if sigma is not None and not sigma > 0:
            raise InputError(f"--sigma {sigma}: it must be greater than 0")
        path = Path(report)
        loaded = read_report(path)
        directory = Path(out_dir) if out_dir is not None else path.parent
        if not directory.is_dir():
            raise InputError(f"--out-dir {directory}: not a directory")
        written = []
        for name, figure in report_figures(loaded, sigma=sigma).items():
            written.append(str(save_figure(figure, directory / f"{path.stem}-{name}.{fmt}")))
        if html:
            from ..render.html import write_html

            written.append(str(write_html(loaded, directory / f"{path.stem}.html", sigma=sigma)))
        if json_output:
            _emit_json({"command": "plot", "report": str(path), "files": written})
        else:
            for file in written:
                typer.echo(file)
            if not written:
                typer.echo("the report holds nothing to plot", err=True)


def main() -> None:
    """Console-script entry point. Under ``torchrun``, ranks > 0 compute alongside rank 0 but
    print nothing on stdout and write no files (see :mod:`landscape_cli.problem.distributed`)."""
    if not _primary():
        sys.stdout = open(os.devnull, "w")  # kept open for the life of the process
    try:
        app()
    finally:
        if "torch" in sys.modules:
            from ..problem.distributed import shutdown

            shutdown()


if __name__ == "__main__":  # pragma: no cover
    main()
