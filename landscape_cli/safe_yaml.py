"""YAML read as plain data: ``yaml.safe_load``'s types only (no tag builds an object), and a key
written twice in one mapping is an error instead of silently keeping the last value."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import InputError


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> Any:
    """The plain data of YAML ``text``; an :class:`InputError` names ``where`` for invalid YAML
    (with its line and column), a duplicated key (with both lines) or absurd nesting."""
    try:
        return yaml.load(text, Loader=_UniqueKeySafeLoader)
    except _DuplicateKey as exc:
        raise InputError(
            f"{where}: key '{exc.key}' is given twice (lines {exc.first} and {exc.second}); "
            "one value would silently replace the other",
            hint="keep one of them",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise InputError(
            f"{where}: invalid YAML{at}" + (f": {problem}" if problem else "")
        ) from None
    except RecursionError:
        raise InputError(f"{where}: the YAML is nested too deeply to read") from None
