"""A Hugging Face model directory as the checkpoint: the architecture from its ``config.json``,
the weights from its files, the loss from its architecture.

A directory written by ``save_pretrained`` holds ``config.json`` and the weights as
``model.safetensors``, as shards listed in ``model.safetensors.index.json``, or as
``pytorch_model.bin`` (shards: ``pytorch_model.bin.index.json``). The model is built by the
``transformers`` Auto class that fits ``config.architectures`` (``…ForSequenceClassification``:
``AutoModelForSequenceClassification``, ``…ForCausalLM``/``…LMHeadModel``:
``AutoModelForCausalLM``, …) with ``from_pretrained``, which restores tied weights (GPT-2's
``lm_head`` is its token embedding, stored once). Nothing runs code from the directory:
``local_files_only=True``, safetensors are read without pickle, a ``.bin`` only weights-only, and
``trust_remote_code`` (a model class shipped in the directory) only with ``trust=True``.
``transformers`` is imported here only, when a directory is loaded: it is the optional extra
``hf``.

The default loss follows the architecture's task (:func:`default_loss`): ``sequence_classification``
for a sequence classifier, ``lm`` (next-token cross-entropy) for a causal language model.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, is_out_of_memory
from ..streams import stdout_to_stderr
from .loading import Checkpoint

CONFIG_FILE = "config.json"
EXTRA_HINT = 'install the Hugging Face extra: pip install "landscape-cli[hf]"'

#: architecture-name suffix → (transformers Auto class, default loss or None)
_TASKS = (
    ("ForSequenceClassification", "AutoModelForSequenceClassification", "sequence_classification"),
    ("ForCausalLM", "AutoModelForCausalLM", "lm"),
    ("LMHeadModel", "AutoModelForCausalLM", "lm"),
    ("ForMaskedLM", "AutoModelForMaskedLM", None),
    ("ForTokenClassification", "AutoModelForTokenClassification", None),
    ("ForImageClassification", "AutoModelForImageClassification", None),
)

#: safetensors dtype codes → torch names, for the note on the stored precision
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass(frozen=True)
class HuggingFaceModel:
    """What a Hugging Face directory gives an objective: the model (in eval mode, in the
    analysis dtype), the checkpoint's provenance, the loss its architecture implies (``None``:
    no built-in loss fits it) and notes on what loading did."""

    model: nn.Module
    checkpoint: Checkpoint
    default_loss: str | None
    notes: dict[str, str]


def is_huggingface_directory(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a ``config.json`` (the ``save_pretrained``
    layout)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def check_directory(path: str | Path, model: str | None) -> bool:
    """Whether the checkpoint ``path`` is a Hugging Face directory to load (no ``model``
    given); :class:`InputError` for another directory, or for one given with a ``model``."""
    if not Path(path).is_dir():
        return False
    if not is_huggingface_directory(path):
        raise InputError(
            f"checkpoint {path}: is a directory, expected a file or a Hugging Face model "
            f"directory (it holds no {CONFIG_FILE})",
            hint="give a checkpoint file, or a directory written by save_pretrained",
        )
    if model is not None:
        raise InputError(
            f"checkpoint {path}: is a Hugging Face model directory, whose {CONFIG_FILE} names "
            "the architecture, and `model` names one too",
            hint="give no `model` for a Hugging Face directory",
        )
    return True


def default_loss(architecture: str) -> str | None:
    """The built-in loss of an architecture's task: ``sequence_classification`` for
    ``…ForSequenceClassification``, ``lm`` for ``…ForCausalLM`` and ``…LMHeadModel``; ``None``
    for the others."""
    for suffix, _, loss in _TASKS:
        if architecture.endswith(suffix):
            return loss
    return None


def weight_files(directory: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads, sorted by name: the safetensors files when
    there are any, else the ``pytorch_model*.bin`` files."""
    safetensors = sorted(directory.glob("*.safetensors"))
    return safetensors or sorted(directory.glob("pytorch_model*.bin"))


def weights_sha256(files: list[Path]) -> str:
    """SHA-256 over the bytes of ``files`` in order (for one file, that file's SHA-256)."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def stored_dtypes(files: list[Path]) -> set[str]:
    """The floating-point dtypes of the tensors in safetensors ``files``, from their JSON
    headers (8-byte length, then the header; no tensor data is read); empty for ``.bin``."""
    found: set[str] = set()
    for path in files:
        if path.suffix != ".safetensors":
            continue
        with contextlib.suppress(OSError, ValueError, struct.error), open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100 << 20)))
            for entry in header.values():
                if isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPES:
                    found.add(_SAFETENSORS_DTYPES[entry["dtype"]])
    return found


@contextlib.contextmanager
def _quiet_transformers(transformers: object) -> Iterator[None]:
    """transformers' progress bars and warnings off while loading (stderr carries our own
    progress), its prints away from stdout (which carries the JSON), both restored after."""
    utils = transformers.utils.logging  # type: ignore[attr-defined]
    verbosity = utils.get_verbosity()
    bars = utils.is_progress_bar_enabled()
    utils.set_verbosity_error()
    utils.disable_progress_bar()
    try:
        with stdout_to_stderr():
            yield
    finally:
        utils.set_verbosity(verbosity)
        if bars:
            utils.enable_progress_bar()


def _import_transformers(where: str) -> object:
    try:
        import transformers
    except ImportError:
        raise InputError(
            f"{where}: is a Hugging Face model directory, and loading one needs the "
            "transformers package, which is not installed",
            hint=EXTRA_HINT,
        ) from None
    return transformers


def load_huggingface(
    path: str | Path, *, dtype: torch.dtype = torch.float32, trust: bool = False
) -> HuggingFaceModel:
    """Build the model of a Hugging Face directory with its weights, in ``dtype``.

    Raises :class:`InputError` (one line) when transformers is missing (naming the extra), the
    directory holds no weights, its config names no known architecture, it needs remote code
    without ``trust``, or weights are missing for some of the model's parameters.
    """
    directory = Path(path)
    where = f"checkpoint {directory}"
    transformers = _import_transformers(where)
    files = weight_files(directory)
    if not files:
        raise InputError(
            f"{where}: a Hugging Face directory without weights (no *.safetensors, no "
            "pytorch_model*.bin next to config.json)",
            hint="save the model with model.save_pretrained(directory)",
        )
    with _quiet_transformers(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(  # type: ignore[attr-defined]
                str(directory), local_files_only=True, trust_remote_code=trust
            )
        except Exception as exc:
            raise InputError(
                f"{where}: {CONFIG_FILE} cannot be read ({_first(exc)})", hint=_remote(exc)
            ) from None
        architectures = list(getattr(config, "architectures", None) or [])
        if not architectures:
            raise InputError(
                f"{where}: {CONFIG_FILE} names no architecture ('architectures' is empty)",
                hint="save the model with save_pretrained, which records its class",
            )
        architecture = str(architectures[0])
        model_class = _model_class(transformers, architecture, config, where)
        try:
            model, info = model_class.from_pretrained(
                str(directory),
                config=config,
                local_files_only=True,
                trust_remote_code=trust,
                use_safetensors=files[0].suffix == ".safetensors",
                output_loading_info=True,
                **_version_kwargs(transformers, dtype),
            )
        except Exception as exc:
            if isinstance(exc, InputError) or is_out_of_memory(exc):
                raise
            raise InputError(
                f"{where}: {architecture} cannot be loaded from it ({_first(exc)})",
                hint=_remote(exc) or "check that the weight files match config.json",
            ) from None
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(
        str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or ()
    )
    if missing or mismatched:
        names = missing or mismatched
        shown = ", ".join(f"'{k}'" for k in names[:5]) + (
            f" and {len(names) - 5} more" if len(names) > 5 else ""
        )
        problem = "has no weights for" if missing else "has weights of the wrong shape for"
        raise InputError(
            f"{where}: {problem} {shown} of {architecture} (they would be random)",
            hint="save the trained model itself with save_pretrained",
        )
    model.eval()
    notes: dict[str, str] = {}
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        notes["checkpoint_keys"] = (
            f"{len(unexpected)} tensor(s) of the weight files are not used by {architecture} "
            f"(the first: {unexpected[0]})"
        )
    stored = stored_dtypes(files) & {"float16", "bfloat16"}
    if stored:  # half precision in the files, exactly representable in the analysis dtype
        notes["precision"] = (
            f"weights stored in {', '.join(sorted(stored))}, analysed in "
            f"{str(dtype).replace('torch.', '')}"
        )
    attention = getattr(model.config, "_attn_implementation", None)
    if attention == "sdpa":
        notes["attention"] = (
            "scaled_dot_product_attention computed by its math backend, whose backward is "
            "differentiable (the fused CPU/flash kernels have no double backward)"
        )
    checkpoint = Checkpoint(
        str(directory), dict(model.state_dict()), "huggingface", weights_sha256(files)
    )
    return HuggingFaceModel(model, checkpoint, default_loss(architecture), notes)


def _model_class(transformers: object, architecture: str, config: object, where: str) -> object:
    """The Auto class of the architecture's task (it also resolves a model class shipped with
    the directory), else the architecture's own class in transformers."""
    for suffix, auto, _ in _TASKS:
        if architecture.endswith(suffix):
            return getattr(transformers, auto)
    own = getattr(transformers, architecture, None)
    if own is not None:
        return own
    if getattr(config, "auto_map", None):
        return transformers.AutoModel  # type: ignore[attr-defined]
    raise InputError(
        f"{where}: {CONFIG_FILE} names the architecture {architecture}, which transformers "
        f"{getattr(transformers, '__version__', '')} does not know",
        hint="upgrade transformers, or build the model with `model=package.module:callable`",
    )


def _version_kwargs(transformers: object, dtype: torch.dtype) -> dict[str, object]:
    """The dtype under the name this transformers takes (``dtype`` from 4.56, ``torch_dtype``
    before), and ``weights_only=True`` where ``from_pretrained`` has the parameter (before it,
    transformers' own ``torch.load`` of a ``.bin`` is always weights-only)."""
    version = str(getattr(transformers, "__version__", "0"))
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
    kwargs: dict[str, object] = {"dtype" if parts >= (4, 56) else "torch_dtype": dtype}
    loader = transformers.PreTrainedModel.from_pretrained  # type: ignore[attr-defined]
    if "weights_only" in inspect.signature(loader).parameters:
        kwargs["weights_only"] = True
    return kwargs


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _remote(exc: BaseException) -> str | None:
    """The hint for a directory whose model class is code shipped in it."""
    if "trust_remote_code" in str(exc):
        return "its model class is code stored in the directory; pass `trust_checkpoint=True` if you trust its source"
    return None
