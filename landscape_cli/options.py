"""Options declared once: a settings dataclass field made by :func:`option` carries its default,
help, bounds and choices, and the command line, config files, the reference config and the
documentation's option tables are all derived from it.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class ToySettings:
...     steps: int = option(10, "iterations", minimum=1)
>>> spec = option_specs(ToySettings)[0]
>>> spec.key, spec.flag, spec.default_text
('steps', '--steps', '10')
>>> coerce_value("steps", spec, "12", "command line")
12
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError

KINDS = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}
KINDS.update({tuple: "a list of numbers", list: "a list of strings"})


@dataclass(frozen=True)
class OptionMeta:
    """What :func:`option` stores in a field's metadata (see its parameters)."""

    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    positive: bool = False
    flag: str | None = ""
    commands: tuple[str, ...] | None = None
    default_text: str | None = None
    name: bool = False


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    flag: str | bool = True,
    commands: tuple[str, ...] | None = None,
    default_text: str | None = None,
    name: bool = False,
) -> Any:
    """A settings field declaring one option.

    ``help`` is the one sentence every surface shows; ``choices``, ``minimum`` (inclusive) and
    ``positive`` (strictly greater than 0, finite) are checked on every value however it
    arrives. ``flag``: ``True`` for the command-line flag derived from the name (``--top-k``,
    ``--trace/--no-trace`` for a boolean), a Typer declaration to override it
    (``"--ignore-bn-and-bias/--include-bn-and-bias"``), ``False`` for a config-only option.
    ``commands`` names the commands offering the flag when they are not the settings' own.
    ``default_text`` is what ``[default: …]`` says when the default is ``None`` (e.g. ``"all"``).
    ``name``: the value names something in a file (a report group), see :func:`name_problem`.
    """
    meta = OptionMeta(
        help=help,
        choices=choices,
        minimum=minimum,
        positive=positive,
        flag=None if flag is False else ("" if flag is True else str(flag)),
        commands=commands,
        default_text=default_text,
        name=name,
    )
    if isinstance(default, (dict, list)):
        frozen = dict(default) if isinstance(default, dict) else tuple(default)
        return dataclasses.field(
            default_factory=lambda: type(default)(frozen), metadata={"option": meta}
        )
    return dataclasses.field(default=default, metadata={"option": meta})


@dataclass(frozen=True)
class OptionSpec:
    """One option as every surface sees it: ``key`` in its settings class, the value ``kind``
    (``bool``, ``int``, ``float``, ``str``, ``dict``; ``tuple`` for a list of numbers, ``list``
    for a list of strings, both stored as tuples), whether ``None`` is allowed, its default and
    the :class:`OptionMeta`."""

    key: str
    kind: type
    nullable: bool
    default: Any
    meta: OptionMeta

    @property
    def help(self) -> str:
        return self.meta.help

    @property
    def flag(self) -> str | None:
        """The Typer flag declaration (``--top-k``, ``--trace/--no-trace``), or ``None`` for a
        config-only option."""
        if self.meta.flag is None:
            return None
        if self.meta.flag:
            return self.meta.flag
        name = "--" + self.key.replace("_", "-")
        return f"{name}/--no-{self.key.replace('_', '-')}" if self.kind is bool else name

    @property
    def flag_name(self) -> str | None:
        """The flag as a user types it to set a value (the first of a ``--x/--no-x`` pair)."""
        return None if self.flag is None else self.flag.split("/")[0]

    @property
    def default_text(self) -> str:
        """The default as ``[default: …]`` shows it."""
        if self.meta.default_text is not None:
            return self.meta.default_text
        value = self.default
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ",".join(format_number(v) for v in value) if value else "none"
        if isinstance(value, float):
            return format_number(value)
        return "none" if value is None else str(value)


def format_number(value: Any) -> str:
    """``1e-4`` rather than ``0.0001``; ``1.0`` stays ``1.0``."""
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(value) if isinstance(value, float) else str(value)


def _kind(annotation: Any) -> tuple[type, bool]:
    """``(kind, nullable)`` of a field's resolved annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        kind, _ = _kind(inner[0])
        return kind, len(inner) < len(args)
    if origin is tuple:
        return (list if args and args[0] is str else tuple), False
    if origin in (Mapping, dict) or annotation in (dict, Mapping):
        return dict, False
    if annotation in (bool, int, float, str):
        return annotation, False
    raise TypeError(f"unsupported option type {annotation!r}")


def option_specs(settings: type) -> list[OptionSpec]:
    """The options of a settings dataclass, in field order (fields without :func:`option`
    metadata are not options)."""
    hints = typing.get_type_hints(settings)
    specs = []
    for f in dataclasses.fields(settings):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        kind, nullable = _kind(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        specs.append(OptionSpec(f.name, kind, nullable, default, meta))
    return specs


#: The longest name :func:`name_problem` accepts.
MAX_NAME_LENGTH = 100


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a group of a report (``/surface/<name>``), or ``None`` when it
    can: a name is non-empty, printable, at most :data:`MAX_NAME_LENGTH` characters, holds no
    ``/`` and is not ``.`` or ``..``."""
    if not value:
        return "a name must not be empty"
    if "/" in value:
        return "a name must not contain '/'"
    if value in (".", ".."):
        return "a name must not be '.' or '..'"
    if not value.isprintable():
        return "a name must hold printable characters only"
    if len(value) > MAX_NAME_LENGTH:
        return f"a name must be at most {MAX_NAME_LENGTH} characters long"
    return None


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters so a 400-digit number stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce_value(key: str, spec: OptionSpec, value: Any, where: str) -> Any:
    """Check and convert one value of option ``spec``; an :class:`InputError` names ``key`` and
    ``where`` the value came from."""
    if value is None:
        if spec.nullable:
            return None
        raise InputError(f"{where}: '{key}' must not be empty", hint=spec.help)
    kind = spec.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                out = True
            elif isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                out = False
            else:
                raise TypeError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            out = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        elif kind is tuple:  # a list of positive finite numbers: YAML list, "a,b" or one number
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (int, float)) and not isinstance(items, bool):
                items = [items]
            if not isinstance(items, (list, tuple)) or not items:
                raise TypeError
            out = tuple(float(item) for item in items)
            floor = spec.meta.minimum or 0.0
            bad = [v for v in out if not (math.isfinite(v) and v > floor)]
            if bad:
                raise InputError(
                    f"{where}: '{key}' holds {bad[0]!r}; every value must be a finite number > "
                    f"{floor:g}"
                )
            return out
        elif kind is list:  # a list of strings: YAML list or one string (kept as a tuple)
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise TypeError
            return tuple(items)
        elif kind is dict:
            if not isinstance(value, Mapping):
                raise TypeError
            out = {str(k): v for k, v in value.items()}
        else:
            if isinstance(value, (Mapping, list)):
                raise TypeError
            out = str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        raise InputError(
            f"{where}: '{key}' should be {KINDS[kind]}, got {shown(value)}", hint=spec.help
        ) from None
    meta = spec.meta
    if meta.choices is not None and out not in meta.choices:
        raise InputError(f"{where}: '{key}' is {out!r}; choose one of {', '.join(meta.choices)}")
    if meta.name and (problem := name_problem(out)) is not None:
        raise InputError(f"{where}: '{key}' is {shown(out)}; {problem}")
    if kind is float and not math.isfinite(out):
        raise InputError(f"{where}: '{key}' is {out!r}; give a finite number")
    if meta.minimum is not None and out < meta.minimum:
        raise InputError(f"{where}: '{key}' is {out!r}; it must be at least {meta.minimum}")
    if meta.positive and not out > 0:
        raise InputError(f"{where}: '{key}' is {out!r}; it must be greater than 0")
    return out
