"""Importing user code: only the objects a spec names (--model, --data, --loss)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` (only what the user names)."""
    if ":" not in spec:
        raise InputError(
            f"{what} '{spec}': expected package.module:callable or path/file.py:callable"
        )
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise InputError(
            f"{what} '{spec}': expected package.module:callable or path/file.py:callable"
        )
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        file = Path(module_part)
        if not file.is_file():
            raise InputError(f"{what} '{spec}': file {file} not found")
        name = f"landscape_user_{file.stem}_{abs(hash(str(file.resolve()))):x}"
        module_spec = importlib.util.spec_from_file_location(name, file)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"{what} '{spec}': cannot import {file}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise InputError(f"{what} '{spec}': importing {file} failed: {exc!r}") from None
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise InputError(
                f"{what} '{spec}': module '{exc.name}' not found",
                hint="install it, or check PYTHONPATH and the spelling",
            ) from None
        except Exception as exc:
            raise InputError(f"{what} '{spec}': importing {module_part} failed: {exc!r}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"{what} '{spec}': {module_part} has no attribute '{attr}'") from None
