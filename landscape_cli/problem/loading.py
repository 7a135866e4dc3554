"""Checkpoint, model factory, data and loss: from user specs to an :class:`~landscape_cli.problem.objective.Objective`.

Every failure a user can cause raises :class:`~landscape_cli.errors.InputError` (exit code 2)
with a one-line message naming the culprit, or :class:`~landscape_cli.errors.NumericalError`
(exit code 3) for non-finite weights. Checkpoints are loaded with ``torch.load(weights_only=True)``
unless the caller passes ``trust=True`` (the CLI's ``--trust-checkpoint``): a full pickle, a
TorchScript archive and a ``torch.export`` program can run arbitrary code, so the archives are
refused without it.

Kept as one module: checkpoint formats, data and the loss meet here, each checked against the
others (keys against the model, data against its inputs) before the objective is built; the
file-format readers of data live in :mod:`.data_files`, and where the model comes from (a
factory, timm, a LightningModule, the archive itself) in :mod:`.model_sources`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import InputError, NumericalError, is_out_of_memory
from ..files import refuse_special_file
from ..streams import stdout_to_stderr
from .data import (
    Batches,
    dataset_batches,
    loader_batches,
    no_data,
    nonfinite_samples,
    tensor_batches,
)
from .data_files import TOKEN_KEY, data_keys, read_h5, read_npz
from .distributed import launched_by_torchrun
from .hf_datasets import DATASET_DICT, DATASET_STATE, is_saved_dataset, read_saved_dataset
from .losses import LossFn, load_loss
from .modes import mode_note
from .settings import ProblemSettings
from .user_code import import_object

if TYPE_CHECKING:
    from .objective import Objective

NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
STRIPPABLE_PREFIXES = ("module.", "model.", "_orig_mod.")
SAMPLE_PREFIX = "sample:"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its tensors, the rest of a training checkpoint, and provenance."""

    path: str
    state_dict: dict[str, torch.Tensor]
    format: str  # "state_dict", "nested:<key>", "safetensors", "torchscript", "torch.export"
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. optimizer state, epoch
    #: the prefix stripped from every key to fit the model (``"net."``), "" when none was
    key_prefix: str = ""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} {path}: file not found", hint="check the path")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory, expected a file")
    refuse_special_file(path, f"{what} {path}")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if size == 0:
        raise InputError(f"{what} {path}: the file is empty")


def check_plain_tensors(tensors: Mapping[str, Any], where: str) -> None:
    """Raise :class:`InputError` naming the first tensor that is not a plain one: dense
    (strided layout), with its data present (not on the ``meta`` device), not quantized."""
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        if tensor.layout != torch.strided:
            problem = f"is a {str(tensor.layout).replace('torch.', '')} tensor, not a dense one"
        elif tensor.is_meta:
            problem = "is a meta tensor: it has a shape but no data"
        elif tensor.is_quantized:
            problem = "is a quantized tensor"
        else:
            continue
        raise InputError(
            f"{where}: '{key}' {problem}",
            hint="save dense tensors with their values (tensor.to_dense(), a real device)",
        )


def _zip_names(path: Path) -> list[str]:
    """The member names of a zip archive; none for any other file."""
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding ``constants.pkl`` (the test
    ``torch.load`` applies) or serialised ``code/``, at any depth."""
    return any(
        name.rsplit("/", 1)[-1] == "constants.pkl" or name.startswith("code/") or "/code/" in name
        for name in _zip_names(path)
    )


def is_exported_program(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (``.pt2``): a zip holding an
    ``archive_format`` record and the serialised program under ``models/``."""
    names = _zip_names(path)
    leaves = {name.rsplit("/", 1)[-1] for name in names}
    return "archive_format" in leaves and any("models/" in name for name in names)


def load_torchscript(path: str | Path, *, trust: bool = False) -> torch.jit.ScriptModule:
    """The module of a TorchScript archive; loading one runs the code it holds, so it is refused
    unless ``trust`` (what it prints goes to stderr)."""
    where = f"checkpoint {path}"
    if not trust:
        raise InputError(
            f"{where}: is a TorchScript archive, and loading one runs code stored in the file "
            "(which can write files)",
            hint="pass `trust_checkpoint=True` if you trust its source, or re-save the weights "
            "with torch.save(model.state_dict(), path)",
        )
    try:
        with warnings.catch_warnings(), stdout_to_stderr():  # its print() is not our output
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates it
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InputError(f"{where}: TorchScript archive cannot be loaded ({exc})") from None


def load_exported_program(path: str | Path, *, trust: bool = False) -> Any:
    """The :class:`torch.export.ExportedProgram` of a ``.pt2`` archive; refused unless ``trust``,
    since deserialising a program can run code the file names."""
    where = f"checkpoint {path}"
    if not trust:
        raise InputError(
            f"{where}: is a torch.export program, and loading one can run code the file names",
            hint="pass `trust_checkpoint=True` if you trust its source, or re-save the weights "
            "with torch.save(model.state_dict(), path)",
        )
    try:
        with warnings.catch_warnings(), stdout_to_stderr():
            warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch
            return torch.export.load(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: torch.export program cannot be loaded ({first})") from None


def _torch_load(path: Path, trust: bool) -> Any:
    where = f"checkpoint {path}"
    with open(path, "rb") as handle:
        head = handle.read(4)
    corrupt = InputError(
        f"{where}: the file is truncated or corrupt",
        hint="re-copy or re-save the checkpoint",
    )
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise corrupt  # a zip archive (torch.save's format) without its central directory
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        raise InputError(
            f"{where}: not a PyTorch checkpoint (it does not start like a torch.save file)",
            hint="expected a file written by torch.save, a .safetensors file or a TorchScript archive",
        )
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on stderr
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported operand" in text:  # not a pickle stream torch.save writes
            raise InputError(
                f"{where}: not a torch.save file, or it is corrupt (the weights-only unpickler "
                "met a pickle opcode torch.save never writes)",
                hint="re-save it with torch.save(model.state_dict(), path)",
            ) from None
        if "Weights only load failed" in text or "weights_only" in text:
            raise InputError(
                f"{where}: holds Python objects beyond plain tensors and containers, and loading "
                "them would run code from the file",
                hint="re-save it as a state_dict, or pass `trust_checkpoint=True` if you trust its source",
            ) from None
        raise corrupt from None
    except (ImportError, AttributeError) as exc:  # trusted full pickle of an unavailable class
        raise InputError(f"{where}: cannot rebuild a pickled object ({exc})") from None
    except Exception:  # the unpicklers raise many types on damaged bytes
        raise corrupt from None


def _unnest(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Find the parameter tensors in a plain or nested training checkpoint."""
    if isinstance(obj, nn.Module):  # a full pickled module (only with --trust-checkpoint)
        return dict(obj.state_dict()), "module", {}
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{where}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}, "state_dict", {}
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping) and inner:
            tensors = {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
            if tensors:
                extra = {str(k): v for k, v in obj.items() if k != key}
                return tensors, f"nested:{key}", extra
    tensor_keys = [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    if tensor_keys:
        others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise InputError(
            f"{where}: mixes tensors with non-tensor entries ({', '.join(others[:5])})",
            hint=f"store the weights under one of the keys {', '.join(NESTED_KEYS[:3])}",
        )
    raise InputError(
        f"{where}: no tensors found; top-level keys are {', '.join(map(str, list(obj)[:8])) or 'none'}",
        hint=f"store the weights under one of the keys {', '.join(NESTED_KEYS[:3])}",
    )


def load_checkpoint(path: str | Path, *, trust: bool = False) -> Checkpoint:
    """Load the parameter tensors of a checkpoint file.

    Accepts a plain ``state_dict``, a nested training checkpoint (weights under ``state_dict``,
    ``model_state_dict``, ``model``, …; the other entries are kept in :attr:`Checkpoint.extra`),
    a ``.safetensors`` file, a TorchScript archive or a ``torch.export`` program (``.pt2``; their
    ``state_dict``, only with ``trust``, since loading one runs code from the file). Prefixes
    such as ``module.`` (DDP), ``model.`` or ``net.`` (a LightningModule's attribute) are
    stripped when matching a model, see :func:`apply_state_dict`.
    """
    path = Path(path)
    where = f"checkpoint {path}"
    check_file(path, "checkpoint")
    sha = file_sha256(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - safetensors is a dependency
            raise InputError(
                f"{where}: reading .safetensors needs the safetensors package"
            ) from None
        try:
            tensors = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise InputError(f"{where}: not a valid safetensors file ({exc})") from None
        check_plain_tensors(tensors, where)
        return Checkpoint(str(path), dict(tensors), "safetensors", sha)
    if is_torchscript(path):
        scripted = load_torchscript(path, trust=trust)
        return Checkpoint(str(path), dict(scripted.state_dict()), "torchscript", sha)
    if is_exported_program(path):
        module = load_exported_program(path, trust=trust).module()
        return Checkpoint(str(path), dict(module.state_dict()), "torch.export", sha)
    obj = _torch_load(path, trust)
    state, fmt, extra = _unnest(obj, where)
    check_plain_tensors(state, where)
    return Checkpoint(str(path), state, fmt, sha, extra)


def _attribute_prefix(state: Mapping[str, Any], expected: set[str], where: str) -> str | None:
    """The one first key component ``X.`` under which every key of the model is found (a
    LightningModule's ``self.net = ...`` saves ``net.0.weight``), or ``None``."""
    candidates = sorted({key.split(".", 1)[0] + "." for key in state if "." in key})
    fitting = []
    for prefix in candidates:
        inner = {key[len(prefix) :] for key in state if key.startswith(prefix)}
        if expected <= inner and not inner & {k for k in state if not k.startswith(prefix)}:
            fitting.append(prefix)
    if len(fitting) > 1:
        raise InputError(
            f"{where}: every key of the model is found under each of the prefixes "
            f"{_names(fitting)}, so which network to load is ambiguous",
            hint="save the state_dict of the one network to analyse",
        )
    return fitting[0] if fitting else None


def _strip_to_match(
    state: Mapping[str, torch.Tensor], expected: set[str], where: str
) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` with the prefixes stripped that make it fit the model's keys ``expected``, and
    those prefixes.

    Wrapper prefixes (``module.``, ``model.``, ``_orig_mod.``) are stripped while every key
    carries one and stripping improves the match. Then, when the checkpoint holds more keys than
    the model, a single first component ``X.`` is stripped if every key of the model is found
    among the keys starting with it; keys without it are kept, and so are unexpected (strict).
    """
    current = dict(state)
    stripped = ""
    while True:
        overlap = len(expected & set(current))
        if overlap == len(current):
            return current, stripped
        for prefix in STRIPPABLE_PREFIXES:
            if current and all(k.startswith(prefix) for k in current):
                candidate = {k[len(prefix) :]: v for k, v in current.items()}
                if len(expected & set(candidate)) > overlap:
                    current, stripped = candidate, stripped + prefix
                    break
        else:
            prefix = _attribute_prefix(current, expected, where)
            if prefix is None:
                return current, stripped
            return {
                (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in current.items()
            }, stripped + prefix


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> str:
    """Load ``state`` into ``model`` strictly, naming missing/unexpected keys and shape mismatches;
    return the prefix stripped from the keys to fit (``"net."``; ``""`` when none was).

    Floating-point weights of any precision (``bfloat16``, ``float16``) load into the model's
    own dtype. Raises :class:`NumericalError` when a floating-point tensor holds NaN or Inf
    (named).
    """
    expected = model.state_dict()
    state, stripped = _strip_to_match(state, set(expected), where)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_names(unexpected)}")
        raise InputError(
            f"{where}: does not fit the model: {'; '.join(parts)}",
            hint="check `model` and its kwargs match the architecture that wrote the checkpoint",
        )
    mismatched = [
        f"'{k}' {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise InputError(
            f"{where}: shape mismatch: {'; '.join(mismatched[:3])}"
            + (f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""),
            hint="check the model kwargs (layer widths, number of classes)",
        )
    wrong_dtype = [
        f"'{k}' is {state[k].dtype}"
        for k, v in expected.items()
        if v.is_floating_point() and not state[k].is_floating_point()
    ]
    if wrong_dtype:  # integer, bool or complex weights would be cast silently (or lossily)
        raise InputError(
            f"{where}: wrong dtype: {'; '.join(wrong_dtype[:3])}"
            + (f" and {len(wrong_dtype) - 3} more" if len(wrong_dtype) > 3 else "")
            + ", the model expects floating point",
            hint="re-save the floating-point weights the model was trained with",
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NumericalError(
                f"{where}: tensor '{key}' holds {bad} non-finite value(s) (NaN or Inf)",
                hint="the checkpoint was saved after training diverged; use an earlier one",
            )
    model.load_state_dict(dict(state), strict=True)
    return stripped


def _as_tensor(value: Any, name: str, where: str) -> torch.Tensor:
    check_plain_tensors({name: value}, where)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{where}: '{name}' is not an array ({exc})") from None
    if tensor.ndim == 0:
        raise InputError(f"{where}: '{name}' is a scalar; expected a batch dimension")
    return tensor


def _as_named(obj: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """The named model inputs of a data file or callable (``input_ids`` and what goes with it),
    sharing their first dimension, the samples; integer tensors keep their dtype."""
    tensors = {str(k): _as_tensor(v, str(k), where) for k, v in obj.items()}
    count = int(tensors[TOKEN_KEY].shape[0])
    for name, tensor in tensors.items():
        if int(tensor.shape[0]) != count:
            raise InputError(
                f"{where}: {TOKEN_KEY} has {count} samples but {name} has {tensor.shape[0]}"
            )
    if count == 0:
        raise InputError(f"{where}: holds no samples")
    return tensors


def _as_samples(obj: Any, where: str) -> tuple[torch.Tensor, ...] | dict[str, torch.Tensor]:
    """``(x, y)`` from a pair or a mapping with keys ``x`` and ``y``, or the named inputs of a
    mapping holding ``input_ids`` without ``x`` and ``y``."""
    if isinstance(obj, Mapping) and data_keys(list(map(str, obj))) not in (None, ["x", "y"]):
        return _as_named(obj, where)
    return _as_xy(obj, where)


def _as_xy(obj: Any, where: str) -> tuple[torch.Tensor, ...]:
    if isinstance(obj, Mapping):
        missing = [k for k in ("x", "y") if k not in obj]
        if missing:
            raise InputError(
                f"{where}: missing key(s) {', '.join(missing)}; found {', '.join(map(str, obj)) or 'none'}",
                hint="store the inputs as 'x' and the targets as 'y', or token ids as "
                "'input_ids' (with 'attention_mask', 'labels', ...)",
            )
        obj = (obj["x"], obj["y"])
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise InputError(f"{where}: expected {{'x': ..., 'y': ...}} or a pair (x, y)")
    tensors = [_as_tensor(value, name, where) for name, value in zip(("x", "y"), obj, strict=True)]
    if tensors[0].shape[0] != tensors[1].shape[0]:
        raise InputError(
            f"{where}: x has {tensors[0].shape[0]} samples but y has {tensors[1].shape[0]}"
        )
    if tensors[0].shape[0] == 0:
        raise InputError(f"{where}: holds no samples")
    return tuple(tensors)


def _finite_inputs(batches: Batches, where: str) -> Batches:
    """Raise :class:`NumericalError` naming the first sample (and its batch) whose floating-point
    inputs (``x``, or the named inputs but ``labels``) hold NaN or Inf, among the samples the
    run uses."""
    source = batches.source
    if isinstance(source, Mapping):
        inputs: Any = {k: v for k, v in source.items() if k != "labels"}
        name = "the named inputs hold"
    else:
        inputs, name = source[0], "'x' holds"
    bad = nonfinite_samples(inputs)
    if bad is not None and bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise NumericalError(
            f"{where}: {name} NaN or Inf values ({int(bad.sum())} sample(s); the first is "
            f"sample {first}, in batch {first // batches.batch_size} of {len(batches)})",
            hint="clean the data or select other samples with `max_samples`",
        )
    return batches


def load_data(spec: str | None, batch_size: int, max_samples: int | None) -> Batches:
    """Load the samples named by ``spec`` into :class:`~landscape_cli.problem.data.Batches`.

    ``spec`` is a ``.pt``/``.pth`` file holding ``{"x", "y"}`` or ``(x, y)`` (weights-only load),
    an ``.npz`` with arrays ``x`` and ``y``, an ``.h5``/``.hdf5`` file with datasets ``x`` and ``y``,
    a folder written by a Hugging Face ``Dataset.save_to_disk`` (:mod:`~landscape_cli.problem.hf_datasets`),
    ``package.module:callable`` returning a Dataset (read in index order), a DataLoader (its own
    batches, sampler order and ``collate_fn``; ``batch_size`` is the loader's) or ``(x, y)``, or
    ``sample:NAME`` for bundled data; ``None`` means no data (analytic objective).

    In place of ``x`` and ``y``, a file, a callable's mapping or a Dataset's items may hold the
    named inputs of a sequence model: ``input_ids`` and optionally ``attention_mask``,
    ``token_type_ids``, ``labels`` (every array of the file, sharing the first dimension). Batches
    are then mappings; the built-in losses call the model with the inputs its ``forward`` names
    (:meth:`~landscape_cli.problem.losses.SplitLoss.outputs`); integer tensors keep their dtype.
    """
    if spec is None:
        return no_data()
    if spec.startswith(SAMPLE_PREFIX):
        name = spec[len(SAMPLE_PREFIX) :]
        from .. import sample_models

        try:
            x, y = sample_models.load_dataset(name)
        except ValueError as exc:
            raise InputError(f"data '{spec}': {exc}") from None
        return tensor_batches((x, y), batch_size, max_samples, spec)
    path = Path(spec)
    suffix = path.suffix.lower()
    where = f"data {spec}"
    if is_saved_dataset(path):
        obj = read_saved_dataset(path, max_samples, where)
        return _finite_inputs(
            tensor_batches(_as_samples(obj, where), batch_size, max_samples, spec), where
        )
    if path.is_dir():
        raise InputError(
            f"{where}: is a folder but not a saved dataset (no {DATASET_STATE} or {DATASET_DICT})",
            hint="give a .pt, .npz or .h5 file, or a folder written by Dataset.save_to_disk",
        )
    if suffix in (".pt", ".pth"):
        check_file(path, "data")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
                raise InputError(
                    f"{where}: cannot be read as a tensor file: it holds Python objects beyond "
                    "plain tensors and containers, and loading them would run code from the file "
                    "(data files are only read weights-only)",
                    hint="re-save x and y as plain tensors, or, if you trust its source, load it "
                    "in a module:callable given as `data`",
                ) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise InputError(f"{where}: cannot be read as a tensor file ({first})") from None
        return _finite_inputs(
            tensor_batches(_as_samples(obj, where), batch_size, max_samples, spec), where
        )
    if suffix == ".npz":
        check_file(path, "data")
        obj = read_npz(path, max_samples, where)
        return _finite_inputs(
            tensor_batches(_as_samples(obj, where), batch_size, max_samples, spec), where
        )
    if suffix in (".h5", ".hdf5"):
        check_file(path, "data")
        obj = read_h5(path, max_samples, where)
        return _finite_inputs(
            tensor_batches(_as_samples(obj, where), batch_size, max_samples, spec), where
        )
    if ":" in spec:
        factory = import_object(spec, "data")
        try:
            obj = factory() if callable(factory) else factory
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise InputError(f"{where}: the data callable raised {exc!r}") from None
        if isinstance(obj, torch.utils.data.DataLoader):
            return loader_batches(obj, max_samples, spec)
        if isinstance(obj, (tuple, list, Mapping)):
            return _finite_inputs(
                tensor_batches(_as_samples(obj, where), batch_size, max_samples, spec), where
            )
        if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
            if len(obj) == 0:
                raise InputError(f"{where}: the dataset is empty")
            return dataset_batches(obj, batch_size, max_samples, spec)
        raise InputError(
            f"{where}: returned {type(obj).__name__}; expected a Dataset, DataLoader or (x, y)"
        )
    raise InputError(
        f"{where}: unknown data format '{suffix or spec}'",
        hint="use a .pt, .npz or .h5 file, a saved dataset folder, package.module:callable, "
        "or sample:NAME",
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; an unavailable device is an input error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(
            f"`device={name}`: not a device; use auto, cpu, cuda or cuda:INDEX"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"`device={name}`: CUDA is not available on this machine", hint="use `device=cpu`"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"`device={name}`: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        if device.index is None and launched_by_torchrun():  # one GPU per rank
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(
                f"`device={name}`: MPS is not available on this machine", hint="use `device=cpu`"
            )
    elif device.type != "cpu":
        raise InputError(f"`device={name}`: unsupported device type '{device.type}'")
    return device


def build_objective(
    config: ProblemSettings,
    progress: Callable[[int, int], None] | None = None,
    *,
    determinism_check: bool = True,
) -> Objective:
    """Load everything ``config`` names and return the :class:`~landscape_cli.problem.objective.Objective`.

    ``determinism_check`` first refuses a data source whose batches change between passes (a
    shuffling DataLoader), before any data is read in vain.

    The returned objective carries the checkpoint's provenance in ``objective.checkpoint``.
    """
    from .huggingface import check_directory, load_huggingface
    from .model_sources import load_model
    from .objective import Objective
    from .torchvision_compat import allow_torchvision_without_extension, torchvision_note

    allow_torchvision_without_extension()  # before any model, data or loss code is imported
    huggingface = config.checkpoint is not None and check_directory(config.checkpoint, config.model)
    device = resolve_device(config.device)
    if config.threads is not None:
        try:
            torch.set_num_threads(config.threads)
        except (ValueError, RuntimeError, OverflowError):
            raise InputError(
                f"`threads={config.threads}`: not a usable number of threads"
            ) from None
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    notes: dict[str, str] = {}  # what loading did to the model or checkpoint, by topic
    default_loss = "cross_entropy"
    if huggingface:  # its config.json names the architecture and implies the loss
        loaded = load_huggingface(config.checkpoint, dtype=dtype, trust=config.trust_checkpoint)
        model, checkpoint, notes = loaded.model, loaded.checkpoint, dict(loaded.notes)
        default_loss = loaded.default_loss or default_loss
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NumericalError(f"{config.checkpoint}: tensor '{name}' is not finite")
    else:
        model, checkpoint = load_model(config, notes)
    loss_fn = load_loss(config.loss or default_loss)
    batches = load_data(config.data, config.batch_size, config.max_samples)
    if (torchvision := torchvision_note(model)) is not None:
        notes["torchvision"] = torchvision
    if determinism_check:
        from .determinism import check_data_order

        check_data_order(batches)  # before the initial pass: no data is read twice in vain
    note = mode_note(model, config.mode)
    if note is not None:
        notes["mode"] = note
    return Objective(
        model,
        loss_fn,
        batches,
        device=device,
        dtype=dtype,
        mode=config.mode,
        hvp_mode=config.hvp_mode,
        hvp_block=config.hvp_block,
        compile=config.compile,
        checkpoint=checkpoint,
        seed=config.seed,
        progress=progress,
        notes=notes,
    )


def make_objective(
    model: nn.Module,
    data: Any = None,
    loss: str | LossFn = "cross_entropy",
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    mode: str = "eval",
    seed: int = 0,
    **options: Any,
) -> Objective:
    """The objective of ``model`` on in-memory data, in one call (the notebook route; the CLI
    builds its objective from files with :func:`build_objective`).

    ``data`` is a pair ``(x, y)`` of tensors (or arrays), a mapping of named inputs (``input_ids``,
    ``attention_mask``, ``labels``, …; see :func:`load_data`), a map-style ``Dataset`` (read in index
    order, in batches of ``batch_size``), a ``DataLoader`` (its own batches), or ``None`` for an
    analytic loss ``fn(model, None)``. ``loss`` is a built-in name (``cross_entropy``, ``mse``,
    ``bce_with_logits``, ``nll``: these also give the GGN and the empirical Fisher) or a callable
    ``fn(model, batch)`` returning the batch-mean loss. ``options`` go to
    :class:`~landscape_cli.problem.objective.Objective` (``hvp_mode``, ``hvp_block``, ...).

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    >>> objective = make_objective(model, (x, y), "cross_entropy", dtype=torch.float64)
    >>> objective.num_parameters
    8
    """
    from .objective import Objective

    if data is None:
        batches = no_data()
    elif isinstance(data, torch.utils.data.DataLoader):
        batches = loader_batches(data, max_samples, "a DataLoader")
    elif isinstance(data, (tuple, list, Mapping)):
        batches = tensor_batches(_as_samples(data, "data"), batch_size, max_samples, "tensors")
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        batches = dataset_batches(data, batch_size, max_samples, "a Dataset")
    else:
        raise InputError(
            f"data: got {type(data).__name__}; expected (x, y), a Dataset, a DataLoader or None"
        )
    loss_fn = load_loss(loss) if isinstance(loss, str) else loss
    return Objective(
        model, loss_fn, batches, device=device, dtype=dtype, mode=mode, seed=seed, **options
    )
