"""A Hugging Face ``datasets`` directory (``Dataset.save_to_disk``) as data: its numeric columns as
named inputs (``input_ids``, ``attention_mask``, ``labels``, …) or as ``x`` and ``y``.

Reading one runs no code from it: ``datasets.load_from_disk`` reads Arrow tables and JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .data_files import TOKEN_KEY, data_keys

DATASET_STATE = "state.json"
DATASET_DICT = "dataset_dict.json"
#: Fill values where a sequence column is padded to the longest kept sample: ``-100`` is the
#: index cross-entropy ignores; an ``attention_mask`` of 0 hides the padded positions.
PAD_VALUES = {"labels": -100, "attention_mask": 0}


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / DATASET_STATE).is_file() or (path / DATASET_DICT).is_file())


def read_saved_dataset(path: Path, max_samples: int | None, where: str) -> dict[str, Any]:
    """The arrays a run reads from the saved dataset at ``path``, no more rows than it keeps.

    A ``DatasetDict`` directory with one split reads that split; with several, the split is
    named by its folder (``DIR/train``). The conventions of transformers' data collators apply:
    a ``label`` column is ``labels``; columns of text are left out; sequence columns of unequal
    lengths are padded at the end to the longest kept sample (``labels`` with -100, everything
    else with 0), with an ``attention_mask`` of ones over the real tokens made when there is
    none. The columns kept follow :func:`~landscape_cli.problem.data_files.data_keys`.
    """
    path = _split_folder(path, where)
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{where}: a saved Hugging Face dataset needs the `datasets` package",
            hint="pip install 'landscape-cli[datasets]'",
        ) from None
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # stderr carries landscape's own progress and errors
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"{where}: cannot be read as a saved dataset ({first})") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    if len(dataset) == 0:
        raise InputError(f"{where}: holds no samples")
    rows = dataset.with_format("numpy")[0 : len(dataset)]  # column name → array
    columns = {name: value for name, value in rows.items() if _numeric(value)}
    if "label" in columns and "labels" not in columns:
        columns["labels"] = columns.pop("label")
    keys = data_keys(list(columns))
    if keys is None:
        raise InputError(
            f"{where}: no numeric column 'input_ids', nor 'x' and 'y'; found "
            f"{', '.join(dataset.column_names) or 'none'}",
            hint="tokenize the text into 'input_ids' (with 'attention_mask', 'labels', ...) "
            "before save_to_disk",
        )
    return _padded({name: columns[name] for name in keys}, where)


def _split_folder(path: Path, where: str) -> Path:
    if not (path / DATASET_DICT).is_file():
        return path
    try:
        splits = json.loads((path / DATASET_DICT).read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{where}: {DATASET_DICT} does not list the splits") from None
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise InputError(f"{where}: {DATASET_DICT} does not list the splits")
    if len(splits) > 1:
        raise InputError(
            f"{where}: holds the splits {', '.join(splits)}; name one",
            hint=f"give the split's folder as `data`, e.g. {path / splits[0]}",
        )
    return path / splits[0]


def _numeric(value: Any) -> bool:
    """Whether a column is numbers: an array of a numeric dtype, or ragged rows of them."""
    if value.dtype != object:
        return value.dtype.kind in "biuf"
    return len(value) > 0 and all(
        isinstance(row, np.ndarray) and row.dtype.kind in "biuf" for row in value
    )


def _padded(columns: dict[str, Any], where: str) -> dict[str, Any]:
    ragged = [name for name, value in columns.items() if value.dtype == object]
    if not ragged:
        return columns
    rows = columns[ragged[0]]
    lengths = np.array([len(row) for row in rows])
    for name in ragged:
        if any(row.ndim != 1 for row in columns[name]):
            raise InputError(f"{where}: column '{name}' has rows of more than one dimension")
        if not np.array_equal([len(row) for row in columns[name]], lengths):
            raise InputError(
                f"{where}: columns '{ragged[0]}' and '{name}' differ in length on some samples"
            )
    width = int(lengths.max())
    real = np.arange(width)[None, :] < lengths[:, None]
    if TOKEN_KEY in ragged and "attention_mask" not in columns:
        columns["attention_mask"] = real.astype(np.int64)
    for name in ragged:
        dtype = np.result_type(*[row.dtype for row in columns[name]])
        padded = np.full((len(lengths), width), PAD_VALUES.get(name, 0), dtype=dtype)
        padded[real] = np.concatenate(list(columns[name]))
        columns[name] = padded
    return columns
