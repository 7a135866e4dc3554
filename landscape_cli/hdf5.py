"""Generic HDF5 encoding: attributes with None, arrays with None, compression.

A foundation module, so that each result class of :mod:`landscape_cli.analyses` writes and reads
its own group with it (``to_hdf5`` / ``from_hdf5``) while :mod:`landscape_cli.io.report_file`
keeps only the file: root attributes, schema, atomic writing. The estimators import nothing of the
package but the errors, so the groups of their results are written by the analyses that store
them (:mod:`landscape_cli.analyses.estimator_groups`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import h5py
import numpy as np

#: Datasets with more elements than this are compressed (gzip level 4 + shuffle).
COMPRESS_MIN_SIZE = 1024
#: A report dataset declaring more elements than this is refused as implausible.
MAX_DATASET_ELEMENTS = 100_000_000
#: Stored bytes expand at most this many times when read (gzip's limit is about 1032).
MAX_EXPANSION = 1100
#: Group attribute listing the attributes whose value is ``None`` (HDF5 has no ``None``).
NONE_ATTRIBUTES = "none_attributes"
#: Group attribute listing the datasets that hold ``None`` entries (stored as NaN).
NONE_DATASETS = "none_datasets"
#: Dataset attribute listing the positions of its ``None`` entries.
NONE_INDICES = "none_indices"

T = TypeVar("T")


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 (what HDF5 strings hold): the undecodable bytes of a non-UTF-8
    file name or command line (``os.fsdecode``'s surrogates) become ``\\xNN``."""
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _attr_value(name: str, value: Any) -> Any:
    """A Python value as an HDF5 attribute value (``None`` is handled by the caller)."""
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        # a str subclass (e.g. torch.__version__) has no HDF5 type of its own
        return utf8_text(str(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.array([utf8_text(v) for v in value], dtype=h5py.string_dtype())  # also []
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            return arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        if arr.dtype.kind == "U":
            return arr.astype(h5py.string_dtype())
    raise TypeError(f"attribute {name!r}: cannot store {type(value).__name__} {value!r} in HDF5")


def set_attrs(obj: h5py.Group | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``obj``; ``None`` values are listed in ``none_attributes`` instead."""
    missing = list(obj.attrs.get(NONE_ATTRIBUTES, []))
    missing = [m.decode() if isinstance(m, bytes) else str(m) for m in missing]
    for name, value in attrs.items():
        if name in obj.attrs:
            del obj.attrs[name]
        if value is None:
            if name not in missing:
                missing.append(name)
            continue
        if name in missing:
            missing.remove(name)
        obj.attrs[name] = _attr_value(name, value)
    if NONE_ATTRIBUTES in obj.attrs:
        del obj.attrs[NONE_ATTRIBUTES]
    if missing:
        obj.attrs[NONE_ATTRIBUTES] = np.array(missing, dtype=h5py.string_dtype())


def plain(value: Any) -> Any:
    """An attribute value as a plain Python value (``str``, ``bool``, ``int``, ``float``, a list
    of strings); numeric arrays are returned as they are."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [plain(v) for v in value.tolist()]
    return value


def read_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """The attributes of ``obj`` as plain Python values, with ``None`` for those listed in
    ``none_attributes`` (which itself is not returned)."""
    out = {name: plain(value) for name, value in obj.attrs.items()}
    for name in out.pop(NONE_ATTRIBUTES, []) or []:
        out[name] = None
    return out


def _as_array(name: str, value: Any) -> tuple[np.ndarray, list[int]]:
    """``value`` as an array; ``None`` entries of a list become NaN, their indices returned."""
    if isinstance(value, np.ndarray):
        return value, []
    if isinstance(value, (list, tuple)):
        none_idx = [i for i, v in enumerate(value) if v is None]
        if none_idx:
            return np.array([np.nan if v is None else v for v in value], dtype=np.float64), none_idx
        return np.asarray(value), []
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy(), []
    raise TypeError(f"dataset {name!r}: expected an array or list, got {type(value).__name__}")


def write_datasets(
    group: h5py.Group,
    arrays: Mapping[str, Any],
    dims: Mapping[str, Sequence[str | None]] | None = None,
) -> list[str]:
    """Create the datasets of ``arrays`` in ``group``; return the names of those holding ``None``."""
    none_datasets = []
    for key, value in arrays.items():
        arr, none_idx = _as_array(key, value)
        kwargs: dict[str, Any] = {}
        if arr.size > COMPRESS_MIN_SIZE:
            kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        if key in group:
            del group[key]
        dset = group.create_dataset(key, data=arr, **kwargs)
        if none_idx:
            dset.attrs[NONE_INDICES] = np.asarray(none_idx, dtype=np.int64)
            none_datasets.append(key)
    for target, axes in (dims or {}).items():
        for axis, scale_name in enumerate(axes):
            if scale_name is None:
                continue
            scale = group[scale_name]
            if not scale.is_scale:
                scale.make_scale(scale_name)
            group[target].dims[axis].attach_scale(scale)
    return none_datasets


def write_arrays(
    group: h5py.Group,
    name: str,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    *,
    dims: Mapping[str, Sequence[str | None]] | None = None,
) -> h5py.Group:
    """Write the subgroup ``group/name`` (replacing an existing one) with datasets and attributes.

    The building block of the sections' subgroups::

        write_arrays(f.require_group("surface"), "random-2d",
                     {"alpha": a, "beta": b, "loss": L},         # L: (len(a), len(b))
                     {"kind": "2d", "normalisation": "filter"},
                     dims={"loss": ("alpha", "beta")})

    Args:
        group: the parent group (``name`` may hold slashes: intermediate groups are created).
        arrays: dataset name -> array-like (numpy array, torch tensor, or a list that may hold
            ``None``: stored as NaN, the positions in the dataset attribute ``none_indices``, the
            name in the group attribute ``none_datasets``). Datasets of more than
            :data:`COMPRESS_MIN_SIZE` elements are gzip-compressed with the shuffle filter.
        attrs: attribute name -> bool, int, float, str or a list of numbers/strings; ``None`` is
            left out and listed in ``none_attributes``.
        dims: dataset name -> per-axis names of 1-D datasets in ``arrays`` to attach as HDF5
            dimension scales (``None`` for an axis without a scale).

    Returns:
        The new group.
    """
    sub = replace_group(group, name)
    write_group(sub, arrays, attrs, dims=dims)
    return sub


def write_group(
    group: h5py.Group,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    *,
    dims: Mapping[str, Sequence[str | None]] | None = None,
) -> None:
    """Write datasets and attributes into ``group`` as :func:`write_arrays` does into its new
    subgroup (the names of datasets holding ``None`` in the attribute ``none_datasets``)."""
    none_datasets = write_datasets(group, arrays, dims)
    attrs = dict(attrs or {})
    if none_datasets:
        attrs[NONE_DATASETS] = none_datasets
    set_attrs(group, attrs)


def replace_group(parent: h5py.Group, name: str) -> h5py.Group:
    """A new empty group ``parent/name``, replacing an existing one of that name."""
    if name in parent:
        del parent[name]
    return parent.create_group(name)


def field_attrs(obj: Any) -> dict[str, Any]:
    """Every field of the dataclass instance ``obj`` by name, to store as attributes."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def from_field_attrs(cls: type[T], attrs: Mapping[str, Any]) -> T:
    """The dataclass ``cls`` built from the attributes named after its fields. A field missing
    from ``attrs`` (a report written before the field existed) takes its default, or ``None``
    when it has none; a field whose default is a tuple is read back as a tuple."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = attrs.get(f.name)
        if f.name in attrs:
            if isinstance(f.default, tuple) and value is not None:
                value = tuple(value if isinstance(value, list) else np.atleast_1d(value).tolist())
            values[f.name] = value
        elif f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            values[f.name] = None
    return cls(**values)


def checked_dataset(group: h5py.Group, name: str) -> h5py.Dataset:
    """The dataset ``group/name``, checked before any of it is read: numeric (or boolean), its
    data in this file, at most :data:`MAX_DATASET_ELEMENTS` elements, and no larger than its
    stored bytes could expand to (:data:`MAX_EXPANSION` times, the most gzip reaches).

    Raises:
        KeyError: there is no ``group/name``.
        ValueError: it is not a dataset, or it fails a check (the message names it).
    """
    dset = group[name]
    if not isinstance(dset, h5py.Dataset):
        raise ValueError(f"{group.name.rstrip('/')}/{name} is not a dataset")
    where = f"dataset {dset.name}"
    if dset.is_virtual or dset.external:
        raise ValueError(f"{where} refers to data outside the file")
    if dset.dtype.kind not in "biuf":
        raise ValueError(f"{where} holds {dset.dtype} values, expected numbers")
    if dset.size > MAX_DATASET_ELEMENTS:
        raise ValueError(
            f"{where} declares shape {dset.shape}, more than {MAX_DATASET_ELEMENTS} elements"
        )
    declared = dset.size * dset.dtype.itemsize
    if declared > MAX_EXPANSION * dset.id.get_storage_size() + 1024:
        raise ValueError(
            f"{where} declares shape {dset.shape} ({declared} bytes), more than the "
            f"{dset.id.get_storage_size()} bytes stored for it could hold"
        )
    return dset


def read_array(group: h5py.Group, name: str) -> np.ndarray:
    """The dataset ``group/name`` as a numpy array, checked by :func:`checked_dataset`."""
    return np.asarray(checked_dataset(group, name)[()])


def read_arrays(
    group: h5py.Group,
    shapes: Mapping[str, Sequence[str]],
    sizes: dict[str, int] | None = None,
    *,
    optional: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """The datasets named in ``shapes`` (those in ``optional`` left out when absent), each read by
    :func:`read_array` and checked against its shape: one name per axis, and every axis of one
    name has the same length across the datasets (``{"grid": ("n",), "values": ("n",)}``).
    ``sizes`` holds lengths already known by name, and learns the new ones.

    Raises:
        KeyError: a dataset is missing.
        ValueError: a dataset fails :func:`checked_dataset`, or its shape does not fit (named).
    """
    known = sizes if sizes is not None else {}
    arrays = {}
    for name, axes in shapes.items():
        if name in optional and name not in group:
            continue
        dset = checked_dataset(group, name)
        if len(dset.shape) != len(axes):
            raise ValueError(
                f"dataset {dset.name} has shape {dset.shape}, expected {len(axes)} dimension(s)"
            )
        for axis, length in zip(axes, dset.shape, strict=True):
            if known.setdefault(axis, length) != length:
                raise ValueError(
                    f"dataset {dset.name} has shape {dset.shape}: its length {length} does not "
                    f"match the {known[axis]} of the datasets beside it"
                )
        arrays[name] = np.asarray(dset[()])
    return arrays


def optional_array(group: h5py.Group, name: str) -> np.ndarray | None:
    """The dataset ``group/name`` as a numpy array, or ``None`` when the group has none."""
    return read_array(group, name) if name in group else None


def optional_group(group: h5py.Group, name: str, read: Callable[[h5py.Group], T]) -> T | None:
    """``read(group[name])``, or ``None`` when ``group`` has no subgroup ``name``."""
    return read(group[name]) if name in group else None


def read_list(group: h5py.Group, name: str) -> list[float | None]:
    """A 1-D dataset as a list of floats, with ``None`` back at its ``none_indices``."""
    dset = checked_dataset(group, name)
    values: list[float | None] = [float(v) for v in np.atleast_1d(dset[()])]
    for i in np.atleast_1d(dset.attrs.get(NONE_INDICES, [])):
        if not 0 <= int(i) < len(values):
            raise ValueError(f"dataset {dset.name}: none_indices holds {i}, out of range")
        values[int(i)] = None
    return values
