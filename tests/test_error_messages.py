"""Library errors name parameters (`` `dtype=float64` ``), never command-line flags; the command
line shows each parameter reference that names an option as its flag (``--dtype float64``).

The scan walks every module outside ``landscape_cli/cli`` and reads the text of each error the
library raises or builds; it is shown to catch a planted violation.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.cli.options import parameters_as_flags

PACKAGE = Path(__file__).resolve().parents[1] / "landscape_cli"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Flags of other programs a library message may name: ``torchrun --standalone``.
OTHER_PROGRAMS_FLAGS = {"--standalone"}


def _strings(node: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _is_text(node: ast.AST) -> bool:
    """Whether ``node`` builds a string: a literal, an f-string, or a ``+`` / ``a if c else b``
    of them (a call such as ``option(...)`` is no message text)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):
        return _is_text(node.left) or _is_text(node.right)
    if isinstance(node, ast.IfExp):
        return _is_text(node.body) or _is_text(node.orelse)
    return isinstance(node, ast.JoinedStr)


def _is_error_call(node: ast.AST) -> bool:
    """A call of an exception class (``InputError(...)``, ``ValueError(...)``, ``Unsupported``)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name.endswith(("Error", "Exception")) or name == "Unsupported"


def error_texts(source: str, attributes: dict[str, list[str]]) -> list[tuple[int, str]]:
    """``(line, text)`` of every string an error raised or built in ``source`` may show: the
    literals of the call's arguments, and the values assigned in the module to the names (and, from
    ``attributes``, the class attributes) those arguments read."""
    tree = ast.parse(source)
    assigned: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value and _is_text(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).extend(_strings(node.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            arguments: list[ast.AST] = [node.exc]
        elif _is_error_call(node):
            arguments = [node]
        else:
            continue
        for argument in arguments:
            for text in _strings(argument):
                out.append((node.lineno, text))
            for inner in ast.walk(argument):
                if isinstance(inner, ast.Name):
                    out += [(node.lineno, text) for text in assigned.get(inner.id, [])]
                elif isinstance(inner, ast.Attribute):
                    out += [(node.lineno, text) for text in attributes.get(inner.attr, [])]
    return out


def class_attributes(sources: list[str]) -> dict[str, list[str]]:
    """The texts assigned to class attributes in ``sources`` (``non_finite_hint = "..."``)."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    value = getattr(statement, "value", None)
                    if (
                        isinstance(statement, ast.Assign | ast.AnnAssign)
                        and value
                        and _is_text(value)
                    ):
                        targets = (
                            statement.targets
                            if isinstance(statement, ast.Assign)
                            else [statement.target]
                        )
                        for target in targets:
                            if isinstance(target, ast.Name):
                                out.setdefault(target.id, []).extend(_strings(statement.value))
    return out


def flags_in_errors(sources: dict[str, str]) -> list[str]:
    """``module:line: flag`` for every command-line flag in a library error's text."""
    attributes = class_attributes(list(sources.values()))
    found = []
    for module, source in sources.items():
        for line, text in error_texts(source, attributes):
            for flag in FLAG.findall(text):
                if flag not in OTHER_PROGRAMS_FLAGS:
                    found.append(f"{module}:{line}: {flag}")
    return sorted(set(found))


def library_sources() -> dict[str, str]:
    cli = PACKAGE / "cli"
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
        if cli not in path.parents
    }


# ------------------------------------------------------------------ the library names parameters
def test_library_errors_name_no_command_line_flag():
    sources = library_sources()
    assert len(sources) > 40 and "errors.py" in sources
    assert flags_in_errors(sources) == []


def test_the_scan_catches_a_flag_in_an_error():
    planted = {
        "raised.py": 'raise InputError("bad", hint="try --dtype float64")\n',
        "built.py": 'def f(x):\n    return ValueError(f"--top-k {x} is too large")\n',
        "constant.py": 'FIX = "pass --lr"\ndef f():\n    raise InputError("no rate", hint=FIX)\n',
        "attribute.py": (
            'class Op:\n    non_finite_hint = "use --hvp-mode streaming"\n'
            "def f(op):\n    raise NumericalError('not finite', hint=op.non_finite_hint)\n"
        ),
        "clean.py": 'raise InputError("bad", hint="try `dtype=float64`; see torchrun --standalone")\n',
        "note.py": 'notes = {"trace": "not requested (--no-trace)"}\n',
    }
    assert flags_in_errors(planted) == [
        "attribute.py:4: --hvp-mode",
        "built.py:2: --top-k",
        "constant.py:3: --lr",
        "raised.py:1: --dtype",
    ]


# ------------------------------------------------------------------ the command line maps them
@pytest.mark.parametrize(
    ("library", "command_line"),
    [
        ("try `dtype=float64`", "try --dtype float64"),
        ("lower `batch_size`", "lower --batch-size"),
        ("use `hvp_mode=streaming`", "use --hvp-mode streaming"),
        ("or `density=False`", "or --no-density"),
        ("or `share_lanczos=True`", "or --share-lanczos"),
        ("use `ignore_bn_and_bias=False`", "use --include-bn-and-bias"),
        ("pass `trust_checkpoint=True`", "pass --trust-checkpoint"),
        ("raise `spectrum.max_iter`", "raise --max-iter"),
        ("raise `max_iter` to 12", "raise --max-iter to 12"),
        ("`spectrum.top_k=3`", "--top-k 3"),
        ("choose another `out` file", "choose another --out file"),
        ("`curvature=ggn` with `loss=nll`", "--curvature ggn with --loss nll"),
    ],
)
def test_parameter_references_become_flags(library, command_line):
    assert parameters_as_flags(library) == command_line


@pytest.mark.parametrize(
    "text",
    [
        "use `landscape spectrum` for other curvatures",  # a command, not an option
        "the `no_such_option` is unknown",
        "`spectrum.no_such_option=1`",
        "`model_kwargs` has no flag",  # a config-only option
        "`density=maybe` is no boolean",
        "plain text with `unclosed backtick",
    ],
)
def test_text_that_names_no_option_is_left_as_it_is(text):
    assert parameters_as_flags(text) == text


def test_an_error_shows_flags_on_the_command_line_and_parameters_in_python():
    from landscape_cli import (
        SpectrumSettings,
        analyze_spectrum,
        build_objective,
        resolve_run_config,
    )
    from landscape_cli.errors import InputError

    result = CliRunner().invoke(
        app, ["spectrum", "--slq-runs", "0", "--no-share-lanczos", "--max-iter", "10"]
    )
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert line.startswith("landscape: error: --slq-runs 0 with --no-share-lanczos"), line
    assert "--no-density" in line and "`" not in line

    objective = build_objective(resolve_run_config({}), determinism_check=False)
    settings = SpectrumSettings(slq_runs=0, share_lanczos=False, max_iter=10)
    with pytest.raises(InputError) as caught:
        analyze_spectrum(objective, settings)
    message = str(caught.value)
    assert message.startswith("`slq_runs=0` with `share_lanczos=False`"), message
    assert "`density=False`" in message and "--" not in message
