"""Reading the arrays ``x`` and ``y`` (or the named inputs of a sequence model: ``input_ids`` and
optionally ``attention_mask``, ``token_type_ids``, ``labels``, …) of ``.npz`` and HDF5 data files,
no more of them than a run uses: the declared shapes are checked first, and only the leading rows ``max_samples`` keeps are
read (HDF5 slicing; for ``.npz``, decompressing the start of each member), so a small file
declaring billions of samples costs no more than the rows kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError

#: the key that makes a data file hold named model inputs rather than ``x`` and ``y``
TOKEN_KEY = "input_ids"


def data_keys(names: list[str]) -> list[str] | None:
    """The arrays of a data file a run reads: ``x`` and ``y`` when both are present, else every
    array when ``input_ids`` is (named model inputs), else ``None``."""
    if "x" in names and "y" in names:
        return ["x", "y"]
    if TOKEN_KEY in names:
        return list(names)
    return None


def _rows_to_read(
    arrays: dict[str, tuple[tuple[int, ...] | None, int]], max_samples: int | None, where: str
) -> int:
    """How many leading rows of the arrays (each its declared shape and item size, by name) a
    run uses, checked before anything is read: ``max_samples`` bounds what is read, and rows
    that would take more than half the free memory are refused rather than allocated."""
    from .memory import available_memory

    for name, (shape, _) in arrays.items():
        if shape is None or len(shape) == 0:
            raise InputError(f"{where}: '{name}' is a scalar; expected a batch dimension")
    rows = {name: int(shape[0]) for name, (shape, _) in arrays.items()}  # type: ignore[index]
    (first, count), *others = rows.items()
    for name, other in others:
        if other != count:
            raise InputError(f"{where}: {first} has {count} samples but {name} has {other}")
    n = count if max_samples is None else min(count, max_samples)
    row_bytes = sum(
        int(np.prod(shape[1:], dtype=np.float64)) * size  # type: ignore[index]
        for shape, size in arrays.values()
    )
    free = available_memory(torch.device("cpu"))
    if n * row_bytes > free // 2:  # the tensors made of them take as much again
        raise InputError(
            f"{where}: {n} samples of {' and '.join(arrays)} take {n * row_bytes / 2**30:.1f} GiB, more than "
            f"half the {free / 2**30:.1f} GiB of free memory",
            hint="read fewer samples with `max_samples`",
        )
    return n


def _npz_header(archive: Any, key: str) -> tuple[tuple[int, ...], bool, Any, Any]:
    """The declared shape, Fortran order and dtype of array ``key`` of an open ``.npz``, and
    the member positioned after its header (nothing of the data is read)."""
    member = archive.zip.open(f"{key}.npy")
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        member.close()
        raise ValueError(f"'{key}' has an unsupported .npy format version {version}")
    return shape, fortran, dtype, member


def _npz_rows(archive: Any, key: str, rows: int) -> Any:
    """The first ``rows`` rows of array ``key`` of an open ``.npz``, decompressing no more of
    the member than they take (a Fortran-ordered array is read whole)."""
    shape, fortran, dtype, member = _npz_header(archive, key)
    with member:
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if fortran:
            return np.load(archive.zip.open(f"{key}.npy"), allow_pickle=False)[:rows]
        row_shape = tuple(shape[1:])
        count = rows * int(np.prod(row_shape, dtype=np.int64))
        data = member.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ValueError(f"'{key}' is truncated")
        return np.frombuffer(data, dtype=dtype).reshape((rows, *row_shape)).copy()


def read_npz(path: Path, max_samples: int | None, where: str) -> dict[str, Any]:
    """The rows of ``x`` and ``y`` (or of every array, when it holds ``input_ids``) a run uses,
    from an ``.npz`` file (without them: the names it holds, for the caller's message). Raises
    :class:`InputError` naming ``where``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            keys = data_keys(names)
            if keys is not None:
                headers = [_npz_header(archive, k) for k in keys]
                for header in headers:
                    header[3].close()
                arrays = {
                    k: (shape, dtype.itemsize)
                    for k, (shape, _, dtype, _) in zip(keys, headers, strict=True)
                }
                n = _rows_to_read(arrays, max_samples, where)
                if any(fortran for _, fortran, _, _ in headers):  # read whole: check it all
                    _rows_to_read(arrays, None, where)
                return {k: _npz_rows(archive, k, n) for k in keys}
            else:
                return dict.fromkeys(names)  # only the names, for the missing-key message
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: cannot be read as .npz ({exc})") from None


def read_h5(path: Path, max_samples: int | None, where: str) -> dict[str, Any]:
    """The rows of the datasets ``x`` and ``y`` (or of every top-level dataset, when it holds
    ``input_ids``) a run uses, from an HDF5 file. Raises :class:`InputError` naming ``where``."""
    try:
        with h5py.File(path, "r") as handle:
            names = [k for k in handle if isinstance(handle[k], h5py.Dataset)]
            keys = data_keys(names)
            if keys is None:
                found = ", ".join(handle.keys()) or "none"
                raise InputError(
                    f"{where}: needs datasets 'x' and 'y'; found {found}",
                    hint="store the inputs as 'x' and the targets as 'y', or token ids as "
                    "'input_ids' (with 'attention_mask', 'labels', ...)",
                )
            datasets = {k: handle[k] for k in keys}
            arrays = {k: (d.shape, d.dtype.itemsize) for k, d in datasets.items()}
            n = _rows_to_read(arrays, max_samples, where)
            return {k: d[:n] for k, d in datasets.items()}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: cannot be read as HDF5 ({exc})") from None
