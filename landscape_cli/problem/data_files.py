"""Reading the arrays ``x`` and ``y`` of ``.npz`` and HDF5 data files, no more of them than a run
uses: the declared shapes are checked first, and only the leading rows ``max_samples`` keeps are
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


def _rows_to_read(
    arrays: list[tuple[tuple[int, ...] | None, int]], max_samples: int | None, where: str
) -> int:
    """How many leading rows of the arrays ``x`` and ``y`` (each its declared shape and item
    size) a run uses, checked before anything is read: ``max_samples`` bounds what is read, and
    rows that would take more than half the free memory are refused rather than allocated."""
    from .objective import available_memory

    for name, (shape, _) in zip(("x", "y"), arrays, strict=True):
        if shape is None or len(shape) == 0:
            raise InputError(f"{where}: '{name}' is a scalar; expected a batch dimension")
    rows = [int(shape[0]) for shape, _ in arrays]  # type: ignore[index]
    if rows[0] != rows[1]:
        raise InputError(f"{where}: x has {rows[0]} samples but y has {rows[1]}")
    n = rows[0] if max_samples is None else min(rows[0], max_samples)
    row_bytes = sum(int(np.prod(shape[1:], dtype=np.float64)) * size for shape, size in arrays)  # type: ignore[index]
    free = available_memory(torch.device("cpu"))
    if n * row_bytes > free // 2:  # the tensors made of them take as much again
        raise InputError(
            f"{where}: {n} samples of x and y take {n * row_bytes / 2**30:.1f} GiB, more than "
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
    """The rows of ``x`` and ``y`` a run uses, from an ``.npz`` file (without ``x`` or ``y``:
    the names it holds, for the caller's message). Raises :class:`InputError` naming ``where``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" in names and "y" in names:
                headers = [_npz_header(archive, k) for k in ("x", "y")]
                for header in headers:
                    header[3].close()
                arrays = [(shape, dtype.itemsize) for shape, _, dtype, _ in headers]
                n = _rows_to_read(arrays, max_samples, where)
                if any(fortran for _, fortran, _, _ in headers):  # read whole: check it all
                    _rows_to_read(arrays, None, where)
                return {k: _npz_rows(archive, k, n) for k in ("x", "y")}
            else:
                return dict.fromkeys(names)  # only the names, for the missing-key message
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: cannot be read as .npz ({exc})") from None


def read_h5(path: Path, max_samples: int | None, where: str) -> dict[str, Any]:
    """The rows of the datasets ``x`` and ``y`` a run uses, from an HDF5 file. Raises
    :class:`InputError` naming ``where``."""
    try:
        with h5py.File(path, "r") as handle:
            if "x" not in handle or "y" not in handle:
                found = ", ".join(handle.keys()) or "none"
                raise InputError(
                    f"{where}: needs datasets 'x' and 'y'; found {found}",
                    hint="store the inputs as 'x' and the targets as 'y'",
                )
            datasets = [handle[k] for k in ("x", "y")]
            arrays = [(d.shape, d.dtype.itemsize) for d in datasets]
            n = _rows_to_read(arrays, max_samples, where)
            return {k: d[:n] for k, d in zip(("x", "y"), datasets, strict=True)}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: cannot be read as HDF5 ({exc})") from None
