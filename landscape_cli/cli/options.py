"""Command-line options generated from the settings' fields, and the options of the run itself.

Each settings field made by :func:`~landscape_cli.options.option` becomes a Typer option of the
commands that offer it (the settings' own command, every analysis command for the problem's
options, or the commands its ``commands`` names), with its help text and ``[default: …]``. A
value the user does not give stays ``None``, so the config file and the defaults still apply
(:func:`~landscape_cli.io.config.resolve_config` layers them).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_type_hints

import typer

from ..options import OptionSpec, option_specs

#: The commands that load a checkpoint and analyse it (``plot`` reads a report instead).
ANALYSIS_COMMANDS = (
    "inspect",
    "spectrum",
    "classify",
    "sharpness",
    "surface",
    "jacobian",
    "report",
    "check",
    "track",
)
#: Problem options listed after a command's own options in ``--help``.
LATE_KEYS = ("lr", "trust_checkpoint")

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on error.")]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="YAML file with the same keys as the flags; flags win."),
]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Write (or add a section to) an HDF5 report, atomically."),
]
#: Library parameters that are no settings field but a flag of some commands: the report path
#: (``write_report``'s file; ``--out``), ``expand_checkpoints``'s directory (``--from-dir``) and
#: a figure format (``write_figures_and_html``'s ``fmt``; ``--format``), and the thresholds of
#: ``gather_checks`` (``--checks``, ``--max``, ``--min``, ``--margin``).
PARAMETER_FLAGS = {
    "out": "--out",
    "from_dir": "--from-dir",
    "fmt": "--format",
    "checks_file": "--checks",
    "max_checks": "--max",
    "min_checks": "--min",
    "margin": "--margin",
}
#: A parameter reference of a library message: `` `key` `` or `` `key=value` ``, ``key`` bare
#: (``batch_size``) or qualified by its section (``spectrum.top_k``).
_REFERENCE = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)(?:=([^`]*))?`")


def offered(spec: OptionSpec, section: str | None, command: str) -> bool:
    """Whether ``command`` offers the flag of option ``spec`` of ``section`` (``None``: the
    problem's options)."""
    if spec.flag is None:
        return False
    if spec.meta.commands is not None:
        return command in spec.meta.commands
    return section is None or section == command


def _python_type(spec: OptionSpec) -> Any:
    if spec.kind in (tuple, list):
        return list[str] | None  # repeatable; numbers may also be comma-separated
    if spec.kind is bool and "/" not in (spec.flag or ""):
        return bool  # a switch that can only turn the option on
    return spec.kind | None


def typer_annotation(spec: OptionSpec) -> Any:
    """The ``Annotated[type, typer.Option(...)]`` of option ``spec``."""
    text = f"{spec.help} [{default_note(spec)}]" if default_note(spec) else spec.help
    return Annotated[_python_type(spec), typer.Option(spec.flag, help=text, show_default=False)]


def default_note(spec: OptionSpec) -> str:
    """``one of: a, b; default: a`` as ``--help`` shows it (empty for an option without a
    default worth stating, such as --model)."""
    parts = []
    if spec.meta.choices is not None:
        parts.append("one of: " + ", ".join(spec.meta.choices))
    if spec.default is not None or spec.meta.default_text is not None:
        parts.append(f"default: {spec.default_text}")
    return "; ".join(parts)


def flag_value(spec: OptionSpec, value: Any) -> Any:
    """A parsed command-line value as the config layer takes it (``None``: not given)."""
    if value is None or value == []:
        return None
    if spec.kind is bool and value is False and "/" not in (spec.flag or ""):
        return None  # an off switch left alone is "not given": a config file may still set it
    if spec.kind is tuple:
        return ",".join(value)
    if spec.kind is list:
        return list(value)
    return value


@dataclass(frozen=True)
class RunArgs:
    """The generated options of one command as the user gave them, by dotted config key
    (``batch_size``, ``spectrum.top_k``; ``None`` = not given), and the run's own switches."""

    flags: dict[str, Any]
    config: str | None
    json: bool
    quiet: bool
    debug: bool


@dataclass(frozen=True)
class _Generated:
    parameter: str  # Python name in the signature
    key: str  # dotted config key
    spec: OptionSpec


def _generated(command: str, sections: tuple[tuple[str, type], ...]) -> list[_Generated]:
    from ..problem.settings import ProblemSettings

    out = []
    for section, settings in ((None, ProblemSettings), *sections):
        for spec in option_specs(settings):
            if offered(spec, section, command):
                key = spec.key if section is None else f"{section}.{spec.key}"
                out.append(_Generated(key.replace(".", "__"), key, spec))
    return out


def analysis_command(
    *sections: tuple[str, type],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give ``function(run: RunArgs, **own_options)`` the CHECKPOINT argument and the generated
    options its command offers: the problem's, those of ``sections`` (``(name, SettingsClass)``
    pairs), ``--config`` and the output switches. The command is named after ``function``."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        from ..problem.settings import ProblemSettings

        command = function.__name__
        generated = _generated(command, sections)
        early = [g for g in generated if g.key not in LATE_KEYS]
        late = [g for g in generated if g.key in LATE_KEYS]
        checkpoint_help = next(
            s.help for s in option_specs(ProblemSettings) if s.key == "checkpoint"
        )
        hints = get_type_hints(function, include_extras=True)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
            for p in list(inspect.signature(function).parameters.values())[1:]
        ]
        keyword = inspect.Parameter.KEYWORD_ONLY

        def param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
            return inspect.Parameter(name, keyword, default=default, annotation=annotation)

        checkpoint = Annotated[str | None, typer.Argument(help=checkpoint_help, show_default=False)]
        # --config right after what it usually names: the model (and its arguments), data, loss
        head = 1 + next((i for i, g in enumerate(early) if g.key == "loss"), 2)
        parameters = [
            param("checkpoint", checkpoint),
            *(param(g.parameter, typer_annotation(g.spec), _default(g.spec)) for g in early[:head]),
            param("config", ConfigOpt),
            *(param(g.parameter, typer_annotation(g.spec), _default(g.spec)) for g in early[head:]),
            *own,
            *(param(g.parameter, typer_annotation(g.spec), _default(g.spec)) for g in late),
            param("json_output", JsonOpt, False),
            param("quiet", QuietOpt, False),
            param("debug", DebugOpt, False),
        ]
        own_names = {p.name for p in own}

        @functools.wraps(function)
        def wrapper(**kwargs: Any) -> None:
            flags = {"checkpoint": kwargs.pop("checkpoint")}
            for g in generated:
                flags[g.key] = flag_value(g.spec, kwargs.pop(g.parameter))
            run = RunArgs(
                flags=flags,
                config=kwargs.pop("config"),
                json=bool(kwargs.pop("json_output")),
                quiet=bool(kwargs.pop("quiet")),
                debug=bool(kwargs.pop("debug")),
            )
            assert set(kwargs) == own_names, set(kwargs) ^ own_names
            function(run, **kwargs)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _default(spec: OptionSpec) -> Any:
    return False if _python_type(spec) is bool else None


@functools.cache
def _flag_declarations() -> dict[str, tuple[str, bool]]:
    """``(flag declaration, is a boolean)`` of every option that has a flag, by dotted key and,
    where every section declaring the key gives it the same flag, by bare key."""
    from ..analyses.settings import all_option_specs

    out: dict[str, tuple[str, bool]] = {}
    by_bare: dict[str, set[tuple[str | None, bool]]] = {}
    for key, spec in all_option_specs().items():
        declared = (spec.flag, spec.kind is bool)
        by_bare.setdefault(spec.key, set()).add(declared)
        if spec.flag is not None:
            out[key] = (spec.flag, spec.kind is bool)
    for key, declared in by_bare.items():
        (flag, boolean), *others = declared
        if not others and flag is not None:
            out[key] = (flag, boolean)
    out.update({key: (flag, False) for key, flag in PARAMETER_FLAGS.items() if key not in out})
    return out


def _as_flag(match: re.Match[str]) -> str:
    key, value = match.group(1), match.group(2)
    declared = _flag_declarations().get(key)
    if declared is None:
        return match.group(0)
    flag, boolean = declared
    on, _, off = flag.partition("/")
    if value is None:
        return on
    if boolean:
        if value == "True":
            return on
        if value == "False" and off:
            return off
        return match.group(0)
    return f"{on} {value}"


def parameters_as_flags(text: str) -> str:
    """``text`` with every parameter reference that names an option (see
    :mod:`landscape_cli.errors`) written as the command line spells it: `` `dtype=float64` `` as
    ``--dtype float64``, `` `batch_size` `` as ``--batch-size``, `` `density=False` `` as
    ``--no-density``, `` `spectrum.top_k` `` as ``--top-k``. Backticked text that names no option
    (a config-only key, a key whose flag differs between sections, a command) is left as it is."""
    return _REFERENCE.sub(_as_flag, text)
