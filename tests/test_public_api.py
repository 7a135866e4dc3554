"""The names ``landscape_cli`` exports: each resolves, lazily, and the package docs list them."""

from __future__ import annotations

import inspect
import subprocess
import sys

import landscape_cli


def test_every_exported_name_resolves():
    for name in landscape_cli.__all__:
        assert getattr(landscape_cli, name) is not None, name
    assert sorted(dir(landscape_cli)) == sorted(landscape_cli.__all__)


def test_lanczos_is_the_function_not_its_module():
    from landscape_cli import lanczos
    from landscape_cli.estimators.lanczos import lanczos as function

    assert lanczos is function and inspect.isfunction(lanczos)


def test_every_analysis_entry_point_and_settings_class_is_exported():
    from landscape_cli.analyses.registry import ANALYSES
    from landscape_cli.analyses.settings import SECTIONS

    exported = set(landscape_cli.__all__)
    assert {entry.result.__name__ for entry in ANALYSES.values()} <= exported
    assert {cls.__name__ for cls in SECTIONS.values()} <= exported


def test_importing_the_package_does_not_import_torch():
    code = "import sys, landscape_cli; landscape_cli.InputError; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
