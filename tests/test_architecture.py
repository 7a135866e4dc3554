"""The package's layers: problem -> operators -> estimators -> analyses -> io -> render -> cli.

A module imports only from its own layer, the layers before it, and the foundation modules
(errors, progress, streams, signals, files, options, safe_yaml, hdf5, linear_operator). The estimators import
nothing of the package but the errors, the operator protocol and base class (linear_operator) and
each other; nothing below the CLI imports typer, and nothing below rendering imports rich.

No module is longer than :data:`MAX_LINES` lines unless its module docstring says why it is one
module, in a sentence starting with the marker :data:`ONE_MODULE_MARKER` ("Kept as one module:").

Each rule is checked on the real package and shown to catch a planted violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "landscape_cli"
FOUNDATION = {
    "errors",
    "progress",
    "streams",
    "signals",
    "files",
    "options",
    "linear_operator",
    "safe_yaml",
    "hdf5",
    "__init__",
    "sample_models",
}
# the public API, `python -m` and the console script: they may import anything
ENTRY_POINTS = {"__init__", "__main__", "console"}
LAYERS = ("problem", "operators", "estimators", "analyses", "io", "render", "cli")
ESTIMATOR_MAY_IMPORT = {"errors", "linear_operator", "estimators"}
THIRD_PARTY_FROM = {"typer": "cli", "click": "cli", "rich": "render"}
MAX_LINES = 600
ONE_MODULE_MARKER = "Kept as one module:"


def layer_of(module: str) -> str:
    """``'analyses'`` for ``analyses.spectrum``; the module itself for a foundation module."""
    return module.split(".")[0]


def rank(layer: str) -> int:
    return -1 if layer in FOUNDATION else LAYERS.index(layer)


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, target)`` for every import in ``source`` (at any depth, lazy ones included):
    package modules as dotted names relative to the package, others as ``'<ext>:name'``."""
    package = module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                if name == "landscape_cli" or name.startswith("landscape_cli."):
                    out.append((node.lineno, name.removeprefix("landscape_cli").lstrip(".")))
                else:
                    out.append((node.lineno, f"<ext>:{name.split('.')[0]}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
                if name == "landscape_cli" or name.startswith("landscape_cli."):
                    base = name.removeprefix("landscape_cli").lstrip(".")
                    out.extend(
                        (node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names
                    )
                else:
                    out.append((node.lineno, f"<ext>:{name.split('.')[0]}"))
            else:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
                if node.module is None:  # from . import x: each name is a module or an attribute
                    out.extend((node.lineno, f"{base}.{a.name}".lstrip(".")) for a in node.names)
                else:
                    out.append((node.lineno, base))
    return out


def violations(sources: dict[str, str]) -> list[str]:
    """Every import that breaks a layering rule, as ``module:line: text``."""
    found = []
    for module, source in sources.items():
        own = layer_of(module)
        if module in ENTRY_POINTS:
            continue
        for line, target in imported_modules(source, module):
            where = f"{module}:{line}"
            if target.startswith("<ext>:"):
                external = target.removeprefix("<ext>:")
                allowed_from = THIRD_PARTY_FROM.get(external)
                if allowed_from is not None and (
                    own in FOUNDATION or rank(own) < rank(allowed_from)
                ):
                    found.append(f"{where}: imports {external} (only {allowed_from} and above may)")
                continue
            target_layer = layer_of(target) if target else "__init__"
            if target_layer in ("__version__",):
                continue
            if own == "estimators" and target_layer not in ESTIMATOR_MAY_IMPORT:
                found.append(f"{where}: an estimator imports {target}")
            elif own in FOUNDATION and target_layer not in FOUNDATION:
                found.append(f"{where}: a foundation module imports {target}")
            elif own not in FOUNDATION and rank(target_layer) > rank(own):
                found.append(f"{where}: {own} imports {target}, a later layer")
    return found


def package_sources() -> dict[str, str]:
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = (*parts[:-1], "__init__")
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    folders |= {p.stem for p in PACKAGE.glob("*.py")}
    assert folders <= set(LAYERS) | FOUNDATION | ENTRY_POINTS, folders - set(LAYERS) - FOUNDATION


def test_imports_only_go_down_the_layers():
    assert violations(package_sources()) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("problem.loading", "from ..analyses.spectrum import analyze_spectrum\n", "a later layer"),
        ("operators.ggn", "def f():\n    from ..cli import app\n", "a later layer"),
        ("estimators.lanczos", "from ..problem.objective import Objective\n", "an estimator"),
        ("estimators.trace", "from ..operators.hessian import HessianOperator\n", "an estimator"),
        ("linear_operator", "from .operators.base import CurvatureOperator\n", "a foundation"),
        ("analyses.spectrum", "from landscape_cli.io.report_file import write_report\n", "later"),
        ("analyses.spectrum", "import typer\n", "imports typer"),
        ("io.report_file", "from rich.console import Console\n", "imports rich"),
        ("errors", "from .analyses import spectrum\n", "a foundation module"),
    ],
)
def test_a_planted_upward_import_is_caught(module, source, expected):
    found = violations({module: source})
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_are_not_flagged():
    sources = {
        "cli.app": "from ..analyses.spectrum import analyze_spectrum\nimport typer\n",
        "render.terminal": "from rich.table import Table\nfrom ..analyses.jacobian import J\n",
        "analyses.spectrum": "from ..estimators.lanczos import lanczos\nfrom ..errors import E\n",
        "estimators.trace": "from .lanczos import checked_product\nimport torch\n",
        "estimators.lanczos": "from ..linear_operator import OperatorLike\n",
        "operators.base": "from ..linear_operator import SymmetricOperator\n",
    }
    assert violations(sources) == []


def long_modules_without_reason(root: Path) -> list[str]:
    """Every module under ``root`` longer than :data:`MAX_LINES` lines whose module docstring
    lacks :data:`ONE_MODULE_MARKER`, as ``path: N lines``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(source)) or ""
        if ONE_MODULE_MARKER not in docstring:
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_every_long_module_says_why_it_is_one_module():
    assert long_modules_without_reason(PACKAGE) == []


def test_a_planted_long_module_without_a_reason_is_caught(tmp_path):
    body = "x = 1\n" * MAX_LINES
    (tmp_path / "long.py").write_text('"""A long module."""\n' + body, encoding="utf-8")
    (tmp_path / "kept.py").write_text(
        f'"""A long module.\n\n{ONE_MODULE_MARKER} it must be."""\n' + body, encoding="utf-8"
    )
    (tmp_path / "short.py").write_text('"""A short module."""\n' + body[6:], encoding="utf-8")
    (tmp_path / "marker_in_code.py").write_text(f"# {ONE_MODULE_MARKER}\n" + body, encoding="utf-8")
    assert long_modules_without_reason(tmp_path) == [
        f"long.py: {MAX_LINES + 1} lines",
        f"marker_in_code.py: {MAX_LINES + 1} lines",
    ]
