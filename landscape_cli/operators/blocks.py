"""Diagonal blocks of a curvature operator: a chosen set of parameters, or each layer in turn.

For a set ``B`` of parameter coordinates with the selection matrix ``P_B`` (rows of the identity),
the diagonal block of a symmetric operator ``A`` (Hessian, GGN or empirical Fisher) is

    A_BB = P_B A P_Bᵀ,        A_BB v_B = P_B (A (P_Bᵀ v_B)):

embed ``v_B`` into a zero vector of full length, apply the full operator, keep the ``B`` rows
(:class:`~landscape_cli.linear_operator.BlockOperator`, re-exported here). This is the curvature
of the loss in the ``B`` parameters *with all others held fixed* at their trained values, not the
curvature of a re-trained sub-model. By Cauchy's interlacing theorem
``λ_min(A) ≤ λ_min(A_BB) ≤ λ_max(A_BB) ≤ λ_max(A)``, and ``tr(A) = Σ_B tr(A_BB)`` over a
partition of the parameters. Each block product costs one full product.

Parameters are selected by name: glob patterns (:func:`fnmatch.fnmatchcase`, e.g. ``"fc2.*"``)
or regular expressions prefixed with ``re:`` (:func:`re.search`, e.g. ``"re:^conv[12]\\."``).
Per-layer blocks group the parameters by the name of the module that owns them (the name up to
the last dot).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence

import torch

from ..errors import InputError
from ..linear_operator import BlockOperator
from ..problem.objective import Objective

__all__ = [
    "TOP_LEVEL",
    "BlockOperator",
    "block_indices",
    "layer_groups",
    "parameter_offsets",
    "select_parameters",
]

TOP_LEVEL = "(top level)"


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def select_parameters(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The parameter names (in model order) matched by any of ``patterns``.

    Raises :class:`InputError` for an invalid regular expression or a pattern that matches
    nothing, listing the available names.
    """
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise InputError(
                    f"`params` pattern '{pattern}': invalid regular expression ({exc})"
                ) from None
        if not any(_matches(pattern, name) for name in names):
            shown = ", ".join(names[:20]) + (
                f" and {len(names) - 20} more" if len(names) > 20 else ""
            )
            raise InputError(
                f"`params` pattern '{pattern}' matches no trainable parameter; available: {shown}",
                hint="use a glob such as 'fc1.*' or a regex such as 're:^fc1\\.'",
            )
    return [name for name in names if any(_matches(p, name) for p in patterns)]


def parameter_offsets(objective: Objective) -> dict[str, tuple[int, int]]:
    """``{name: (start, stop)}``: each parameter's slice of the flat parameter vector."""
    offsets, start = {}, 0
    for name, shape in zip(objective.parameter_names, objective.parameter_shapes, strict=True):
        stop = start + math.prod(shape)
        offsets[name] = (start, stop)
        start = stop
    return offsets


def block_indices(objective: Objective, names: Sequence[str]) -> torch.Tensor:
    """Flat coordinates (ascending, on the objective's device) of the named parameters."""
    offsets = parameter_offsets(objective)
    ranges = [torch.arange(*offsets[name]) for name in names]
    return torch.cat(ranges).to(objective.device)


def layer_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Parameter names grouped by owning module (``"fc1.weight"`` → ``"fc1"``), in model order;
    parameters directly on the root module form the group ``"(top level)"``."""
    groups: dict[str, list[str]] = {}
    for name in names:
        module = name.rpartition(".")[0] or TOP_LEVEL
        groups.setdefault(module, []).append(name)
    return groups
