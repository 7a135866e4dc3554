"""The README and the pages in docs/ tell the truth about the code, and keep telling it.

* the ```python blocks of README.md and of every docs page run as written; the README's use only
  names that ``landscape_cli`` exports, and docs/library.md lists every exported name;
* the README stays a front page: short, with CI's two marked commands and a table of every command;
* every option of every command is in docs/options.md, with a config key and default that match
  the settings, and nothing there is stale;
* every JSON key the commands emit is in docs/json.md, and every group, dataset and attribute a
  written report holds is in docs/report.md (the commands are run on the bundled samples);
* every exit code is in docs/reliability.md;
* every image shown exists, and every relative link points to an existing file and heading.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from options_table import option_table_problems, table_rows
from typer.main import get_command
from typer.testing import CliRunner

from landscape_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
CHECKPOINTS = ROOT / "sample_models" / "checkpoints"
# Files the pages link to that other work adds; checked once they exist.
PENDING_FILES: set[str] = set()
# Attributes h5py adds for dimension scales: not part of the report's own schema.
H5PY_ATTRIBUTES = {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST"}


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text(page), flags=re.S)


def commands() -> dict[str, Any]:
    return dict(get_command(app).commands)


# ---------------------------------------------------------------- runnable examples
@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the examples are small; a busy machine's threads only wait
    try:
        for number, block in enumerate(python_blocks(page)):
            exec(compile(block, f"{page.name}, python block {number}", "exec"), {})
    finally:
        torch.set_num_threads(threads)


def test_the_readme_example_uses_only_exported_names():
    import landscape_cli

    blocks = python_blocks(README)
    assert blocks, "the README shows the library in a notebook"
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("landscape_cli"):
                assert node.module == "landscape_cli", f"README imports from {node.module}"
                names = {alias.name for alias in node.names}
                assert names <= set(landscape_cli.__all__), names - set(landscape_cli.__all__)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("landscape_cli."), alias.name


def test_the_library_page_lists_every_exported_name_and_no_other():
    import landscape_cli

    table = text(DOCS / "library.md").split("| group | names |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`(\w+)`", table))
    assert listed == set(landscape_cli.__all__) - {"__version__"}


# ---------------------------------------------------------------- the README as a front page
def test_the_readme_is_a_front_page_with_the_ci_commands():
    readme = text(README)
    assert len(readme.splitlines()) < 250
    lines = readme.splitlines()
    for marker, command in [
        ("<!-- ci: first -->", 'pip install "torch==2.13.0" . && landscape spectrum'),
        ("<!-- ci: test -->", 'pip install "torch==2.13.0" -e ".[test]" && python -m pytest -q'),
    ]:
        at = lines.index(marker)
        assert lines[at + 1].startswith("```") and lines[at + 2] == command, marker


def test_every_command_is_in_the_readme_table_and_has_help():
    rows = re.findall(r"^\| \[`landscape (\w+)`\]\(docs/commands\.md#(\w+)\)", text(README), re.M)
    assert {name for name, _ in rows} == set(commands())
    assert all(name == anchor for name, anchor in rows)
    headings = set(re.findall(r"^## (\w+)$", text(DOCS / "commands.md"), flags=re.M))
    runner = CliRunner()
    for name in commands():
        assert name in headings, f"docs/commands.md has no section '## {name}'"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout, name


# ---------------------------------------------------------------- options
def options_sections() -> dict[str, str]:
    """docs/options.md by ``## `` heading (backticks stripped)."""
    parts = re.split(r"^## (.+)$", text(DOCS / "options.md"), flags=re.M)
    return {title.strip("` "): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


SHARED_SECTIONS = ("Shared options", "Options of several commands")


def flags_in(section: str) -> set[str]:
    return {flag for row in table_rows(section) for flag in re.findall(r"--[a-z0-9-]+", row[0])}


def command_flags(command: Any) -> set[str]:
    return {
        opt
        for param in command.params
        for opt in [*param.opts, *param.secondary_opts]
        if opt.startswith("--") and opt != "--help"
    }


def test_every_option_of_every_command_is_in_options_md():
    sections = options_sections()
    shared = set().union(*(flags_in(sections[name]) for name in SHARED_SECTIONS))
    for name, command in commands().items():
        own = flags_in(sections.get(name, ""))
        missing = command_flags(command) - own - shared
        assert not missing, f"{name}: {sorted(missing)} not in docs/options.md"
        stale = own - command_flags(command)
        assert not stale, (
            f"docs/options.md lists {sorted(stale)} under {name}, which has no such option"
        )
    everywhere = set().union(*(command_flags(c) for c in commands().values()))
    assert shared <= everywhere, sorted(shared - everywhere)


def test_config_keys_flags_and_defaults_in_options_md_match_the_settings():
    from landscape_cli.analyses.settings import SECTIONS

    assert option_table_problems(text(DOCS / "options.md"), SECTIONS) == []


# ---------------------------------------------------------------- JSON keys and the HDF5 schema
@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Any]:
    """Run the commands cheaply on the bundled samples, with --json and --out: their JSON objects
    and the reports they wrote."""
    from landscape_cli.sample_models import load_dataset, mlp

    tmp = tmp_path_factory.mktemp("docs")
    # an Adam checkpoint, for the preconditioned edge-of-stability numbers
    model = mlp.build(in_features=8, hidden=32, num_classes=4)
    model.load_state_dict(torch.load(CHECKPOINTS / "mlp.pt", weights_only=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = load_dataset("blobs")
    torch.nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
    optimizer.step()
    adam = tmp / "adam_step_7.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, adam)

    training = str(CHECKPOINTS / "mlp_training.pt")
    a, b, c, d = (str(tmp / f"{name}.h5") for name in "abcd")
    mlp_data = "--model landscape_cli.sample_models.mlp:build --data sample:blobs"
    small = "--max-samples 64 --batch-size 16"
    lanczos = "--max-iter 20 --trace-matvecs 8"
    runs = {  # name: the command line, split on spaces (no path holds one: tmp_path's do not)
        "inspect": f"inspect {small}",
        "spectrum": f"spectrum {small} --out {a} {lanczos} --slq-runs 1 --slq-steps 5 "
        "--per-layer --spread 2 --save-eigenvectors",
        "classify": f"classify {small} --out {a}",
        "sharpness": f"sharpness {small} --out {a} --rho 0.05 --steps 2 --restarts 0 --samples 2",
        "surface-eigen": f"surface {small} --out {a} --dims 1 --points 3 --kind eigen",
        "surface-to": f"surface {small} --out {a} --points 3 --to {training}",
        "jacobian": f"jacobian {small} --out {a} --samples 2",
        "spectrum-exact": f"spectrum sample:saddle --out {b} --exact",
        "classify-saddle": f"classify sample:saddle --out {b}",
        "spectrum-adam": f"spectrum {adam} {mlp_data} {small} --out {c} --no-density {lanczos}",
        "classify-sgd": f"classify {training} {mlp_data} {small}",
        "check": "check sample:saddle --max lambda_max=100 --min loss=-1",
        "check-report": f"check {b} --max lambda_max=100 --max sharpness@0.1=1",
        "track": f"track {training} {adam} {mlp_data} {small} --out {d} --no-trace",
        "plot": f"plot {b} --out-dir {tmp}",
    }
    runner = CliRunner()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    payloads = {}
    try:
        for name, argv in runs.items():
            extra = ["--json"] if name == "plot" else ["--json", "--quiet", "--threads", "1"]
            result = runner.invoke(app, [*argv.split(), *extra])
            assert result.exit_code in (0, 1), f"{name}: {result.output}"
            payloads[name] = json.loads(result.stdout)
    finally:
        torch.set_num_threads(threads)
    return {"json": payloads, "reports": [Path(p) for p in (a, b, c, d)]}


def json_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from json_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from json_keys(inner)


def test_every_json_key_the_commands_emit_is_in_json_md(outputs):
    page = text(DOCS / "json.md")
    emitted = {key for payload in outputs["json"].values() for key in json_keys(payload)}
    assert {"preconditioned_sharpness_ratio", "escape", "per_layer", "spread", "exact"} <= emitted
    missing = sorted(key for key in emitted if f"`{key}`" not in page)
    assert not missing, f"keys not in docs/json.md: {missing}"


def report_contents(paths: list[Path]) -> dict[str, tuple[bool, set[str]]]:
    """Every object of the reports: its path -> (is a group, its attribute names)."""
    import h5py

    contents: dict[str, tuple[bool, set[str]]] = {}

    def add(path: str, item: Any) -> None:
        _, attrs = contents.setdefault(path, (isinstance(item, h5py.Group), set()))
        attrs.update(set(item.attrs) - H5PY_ATTRIBUTES)

    for path in paths:
        with h5py.File(path, "r") as f:
            add("/", f)
            f.visititems(lambda name, item: add("/" + name, item))
    return contents


def test_every_name_a_report_holds_is_in_report_md(outputs):
    """Groups by their path, datasets and attributes by name; a section's ``settings`` are the
    command's config keys (docs/options.md); ``notes`` hold one free-form string per topic."""
    page = text(DOCS / "report.md")
    config_keys = {
        row[1].strip("`") for section in options_sections().values() for row in table_rows(section)
    }
    contents = report_contents(outputs["reports"])
    names: set[str] = set()
    for path, (is_group, attrs) in sorted(contents.items()):
        parts = path.strip("/").split("/")
        if is_group and path != "/":
            if parts[0] == "surface" and len(parts) > 1:
                parts[1] = "<name>"
            candidates = ["/" + "/".join(parts), "/<section>/" + "/".join(parts[1:])]
            assert any(f"`{c}`" in page for c in candidates), f"group {path} not in docs/report.md"
        elif not is_group:
            names.add(parts[-1])
        if parts[-1] == "settings":
            undocumented = {a for a in attrs if f"{parts[0]}.{a}" not in config_keys}
            assert undocumented <= {"source", "none_attributes"}, (path, undocumented)
        elif parts[-1] != "notes":
            names.update(attrs)
    assert {"top_vectors", "preconditioned_matvecs", "t", "sigma_max", "step", "y"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in page)
    assert not missing, f"names not in docs/report.md: {missing}"


# ---------------------------------------------------------------- exit codes
def test_every_exit_code_is_in_reliability_md_and_the_readme():
    from landscape_cli import errors

    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    for page in (DOCS / "reliability.md", README):
        table = set(map(int, re.findall(r"^\| (\d+) \|", text(page), flags=re.M)))
        assert codes <= table, f"{page.name} lacks exit codes {sorted(codes - table)}"


# ---------------------------------------------------------------- images and links
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = re.sub(r"^```.*?^```", "", text(page), flags=re.S | re.M)  # no headings in code
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", body, flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[str]:
    body = re.sub(r"^```.*?^```", "", text(page), flags=re.S | re.M)
    return re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", body)


def test_every_image_shown_exists():
    shown = 0
    for page in PAGES:
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text(page)):
            shown += 1
            assert (page.parent / image).is_file(), f"{page.name}: {image}"
    assert shown >= 8
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text(README)), "the README shows a figure"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading(page):
    for link in links(page):
        if re.match(r"^[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists() and path.name in PENDING_FILES:
            continue
        assert path.exists(), f"{page.name}: {link} points to no file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: {link}: no such heading"
