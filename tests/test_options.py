"""Options declared once: a settings field is the command-line flag, its help and default, the
config key and its validation, and the line of configs/reference.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.cli.options import RunArgs, analysis_command, default_note
from landscape_cli.errors import InputError
from landscape_cli.io.config import COMMON, SECTIONS, reference_yaml
from landscape_cli.options import coerce_value, option, option_specs

runner = CliRunner()


@dataclass(frozen=True)
class MadeUpSettings:
    """Options of a made-up analysis."""

    made_up_steps: int = option(7, "A made-up number of steps.", minimum=1)
    made_up_switch: bool = option(False, "A made-up switch.")
    made_up_radii: tuple[float, ...] = option((0.5, 1.0), "Made-up radii.", minimum=0.0)


def made_up_app(seen: list[RunArgs]) -> typer.Typer:
    toy_app = typer.Typer(rich_markup_mode=None)

    @toy_app.command()
    @analysis_command(("made_up", MadeUpSettings))
    def made_up(run: RunArgs) -> None:
        seen.append(run)

    @toy_app.command()
    def other() -> None:  # a second command, so that Typer keeps command names
        pass

    return toy_app


def test_a_new_settings_field_is_a_flag_with_its_help_and_default():
    seen: list[RunArgs] = []
    app_ = made_up_app(seen)
    shown = runner.invoke(app_, ["made-up", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "--made-up-steps" in shown.output and "A made-up number of steps. [default: 7]" in (
        " ".join(shown.output.split())
    )
    assert "--made-up-switch / --no-made-up-switch" in shown.output
    given = runner.invoke(app_, ["made-up", "--made-up-steps", "3", "--made-up-radii", "0.1,0.2"])
    assert given.exit_code == 0, given.output
    flags = seen[-1].flags
    assert flags["made_up.made_up_steps"] == 3 and flags["made_up.made_up_radii"] == "0.1,0.2"
    assert flags["made_up.made_up_switch"] is None  # not given: the config file may set it


def test_a_new_settings_field_is_in_the_reference_config():
    text = reference_yaml({"made_up": MadeUpSettings})
    assert "\nmade_up:\n" in text
    assert "  made_up_steps: 7" in text and "# A made-up number of steps." in text
    assert "  made_up_radii: [0.5, 1.0]" in text


def test_a_new_settings_field_is_validated_by_its_bounds():
    spec = option_specs(MadeUpSettings)[0]
    assert coerce_value("made_up.made_up_steps", spec, "4", "config x.yaml") == 4
    with pytest.raises(InputError, match=r"config x.yaml: 'made_up.made_up_steps' is 0; it must"):
        coerce_value("made_up.made_up_steps", spec, 0, "config x.yaml")


def test_every_generated_flag_states_its_field_default_in_help():
    specs = {spec.flag_name: spec for spec in COMMON.values() if spec.flag_name}
    group = get_command(app)
    checked = 0
    for name, command in group.commands.items():
        section = SECTIONS.get(name, {})
        own = {spec.flag_name: spec for spec in section.values() if spec.flag_name}
        for param in command.params:
            flag = next((o for o in param.opts if o.startswith("--")), None)
            spec = own.get(flag) or specs.get(flag)
            if spec is None:
                continue
            note = default_note(spec)
            assert param.help.endswith(f"[{note}]" if note else spec.help), (name, flag)
            checked += 1
    assert checked > 100


def test_every_option_of_a_section_is_offered_by_its_command():
    group = get_command(app)
    for section, specs in SECTIONS.items():
        flags = {o for p in group.commands[section].params for o in p.opts}
        for spec in specs.values():
            assert spec.flag_name in flags, f"{section} lacks {spec.flag_name}"


def test_a_new_settings_field_without_a_docs_row_fails_the_docs_check():
    from options_table import option_table_problems

    from landscape_cli.analyses.settings import SECTIONS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()
    assert option_table_problems(docs, SECTIONS) == []
    problems = option_table_problems(docs, {**SECTIONS, "made_up": MadeUpSettings})
    assert problems == [
        "made_up.made_up_steps: no row",
        "made_up.made_up_switch: no row",
        "made_up.made_up_radii: no row",
    ]
    row = "| `--made-up-steps N` | `made_up.made_up_steps` | `7` | a made-up number of steps |\n"
    assert "made_up.made_up_steps: no row" not in option_table_problems(
        docs + row, {**SECTIONS, "made_up": MadeUpSettings}
    )
    wrong = row.replace("`7`", "`8`")
    assert "made_up.made_up_steps: documented default `8`, the field's is 7" in (
        option_table_problems(docs + wrong, {**SECTIONS, "made_up": MadeUpSettings})
    )
