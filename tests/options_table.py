"""The check behind docs/options.md: each option's row names its flag, config key and default as
the settings' field declares them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from landscape_cli.options import OptionSpec, option_specs
from landscape_cli.problem.settings import ProblemSettings


def table_rows(markdown: str) -> Iterator[list[str]]:
    """The cells of the body rows of every table in ``markdown``."""
    for line in markdown.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cells and cells[0] != "option":
                yield cells


def parse_default(cell: str) -> Any:
    value = cell.strip().strip("`")
    if value == "null":
        return None
    if value in ("on", "off"):
        return value == "on"
    if value[:1] in "[{":
        return yaml.safe_load(value)
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def documented_specs(sections: Mapping[str, type]) -> dict[str, OptionSpec]:
    """The options docs/options.md must document: the problem's and those of ``sections``, by
    config key."""
    specs = {spec.key: spec for spec in option_specs(ProblemSettings)}
    for section, settings in sections.items():
        specs.update({f"{section}.{spec.key}": spec for spec in option_specs(settings)})
    return specs


def option_table_problems(markdown: str, sections: Mapping[str, type]) -> list[str]:
    """Every way the ``| option | config key | default | meaning |`` rows of ``markdown`` differ
    from the settings: a missing or doubled row, a stale one, a flag or default that is not the
    field's. Empty when the tables are right."""
    rows: dict[str, list[str]] = {}
    problems = []
    for row in table_rows(markdown):
        if len(row) == 4 and row[1] != "—":
            key = row[1].strip("`")
            if key in rows:
                problems.append(f"{key}: documented twice")
            rows[key] = row
    specs = documented_specs(sections)
    problems += [f"{key}: no row" for key in specs if key not in rows]
    problems += [f"{key}: a row for no option" for key in rows if key not in specs]
    for key, spec in specs.items():
        row = rows.get(key)
        if row is None:
            continue
        flags = re.findall(r"--[a-z0-9-]+", row[0])
        if spec.flag_name is None and key != "checkpoint" and flags:
            problems.append(f"{key}: a config-only option documented with {flags}")
        if spec.flag_name is not None and spec.flag_name not in flags:
            problems.append(f"{key}: its flag {spec.flag_name} is not in the row")
        if parse_default(row[2]) != _plain(spec.default):
            problems.append(f"{key}: documented default {row[2]}, the field's is {spec.default!r}")
    return problems
