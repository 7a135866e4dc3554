"""The README's Python examples run as written, and its option tables cover the CLI."""

from __future__ import annotations

import re
from pathlib import Path

from landscape_cli.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_every_option_of_every_command_is_documented():
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help", "--json", "--quiet", "--debug"):
                    flag = opt.split("/")[0]
                    assert flag in README, f"{name} {flag} is not in README.md"


def test_every_image_the_readme_shows_exists():
    root = Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert len(images) >= 7
    for image in images:
        assert (root / image).is_file(), image
