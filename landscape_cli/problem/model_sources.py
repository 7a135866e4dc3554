"""Where the model comes from: a factory named by ``model`` (``package.module:callable``,
``path/file.py:callable``, ``timm:NAME``, a LightningModule class) called with its keyword
arguments (``model_kwargs`` with ``model_args`` over them; for a LightningModule, by default the
checkpoint's ``hyper_parameters``).

:func:`load_model` returns the model with the checkpoint's weights in it and records what it did
in ``notes`` (topic → sentence), which every result reports.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError, NumericalError, is_out_of_memory
from ..options import shown
from ..safe_yaml import load_yaml
from .loading import Checkpoint, apply_state_dict, load_checkpoint
from .settings import ProblemSettings
from .user_code import import_object

TIMM_PREFIX = "timm:"
#: Packages whose factories download weights when asked to; their builds must match torch.
VISION_PACKAGES = ("torchvision", "timm")
#: Keyword arguments with which those factories download weights (``None``/``False``: they don't).
DOWNLOADING_KWARGS = ("pretrained", "weights", "weights_backbone")
LOW_PRECISION = (torch.float16, torch.bfloat16)
_KEY = re.compile(r"[A-Za-z_]\w*")


def model_kwargs(config: ProblemSettings) -> dict[str, Any]:
    """The factory's keyword arguments: ``model_kwargs`` with ``model_args`` (``KEY=VALUE``, the
    value read as YAML) over them."""
    kwargs = dict(config.model_kwargs or {})
    for item in config.model_args:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise InputError(
                f"`model_args={item}`: expected KEY=VALUE with KEY a Python identifier",
                hint="e.g. `model_args=num_classes=10`",
            )
        kwargs[key] = load_yaml(text, f"`model_args={item}`") if text.strip() else None
    return kwargs


def load_model(
    config: ProblemSettings, notes: dict[str, str]
) -> tuple[nn.Module, Checkpoint | None]:
    """The model ``config`` names, with its checkpoint's weights loaded, and the checkpoint.

    Adds to ``notes`` what was done: a key prefix stripped (``checkpoint_keys``), keyword
    arguments taken from a Lightning checkpoint (``model_kwargs``), low-precision weights
    analysed in ``config.dtype`` (``weights_dtype``).
    """
    if config.model is None:
        raise InputError(
            "no model given: a checkpoint holds weights, not the architecture",
            hint="pass `model=package.module:callable`, or set model.spec in a config file",
        )
    kwargs = model_kwargs(config)
    checkpoint = None
    if config.checkpoint is not None:
        checkpoint = load_checkpoint(config.checkpoint, trust=config.trust_checkpoint)
    refuse_downloads(config.model, kwargs)  # before anything is imported
    factory = resolve_factory(config.model)
    if not kwargs and checkpoint is not None and _is_lightning_module(factory):
        kwargs = _lightning_kwargs(factory, checkpoint, notes)
    model = call_factory(config.model, factory, kwargs)
    if checkpoint is not None:
        prefix = apply_state_dict(model, checkpoint.state_dict, f"checkpoint {config.checkpoint}")
        if prefix:
            notes["checkpoint_keys"] = (
                f"stripped the prefix '{prefix}' from every key to fit the model"
            )
            checkpoint = dataclasses.replace(checkpoint, key_prefix=prefix)
    else:
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NumericalError(f"model '{config.model}': tensor '{name}' is not finite")
    stored = checkpoint.state_dict.values() if checkpoint is not None else ()
    _note_low_precision([*stored, *model.parameters()], config.dtype, notes)
    return model, checkpoint


def _note_low_precision(tensors: Any, dtype: str, notes: dict[str, str]) -> None:
    """Note half-precision weights (``bfloat16``, ``float16``) that are analysed in ``dtype``."""
    stored = sorted(
        {str(t.dtype).replace("torch.", "") for t in tensors if t.dtype in LOW_PRECISION}
    )
    if stored:
        notes["weights_dtype"] = f"weights stored in {' and '.join(stored)}, analysed in {dtype}"


# ---------------------------------------------------------------- factories
def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` names: ``timm:NAME`` (``timm.create_model(NAME, pretrained=False,
    **kwargs)``), ``package.module:callable`` or ``path/file.py:callable``."""
    if spec.startswith(TIMM_PREFIX):
        name = spec[len(TIMM_PREFIX) :]
        if not name:
            raise InputError(f"model '{spec}': name a timm model, e.g. timm:resnet18")
        timm = _import_vision_package("timm", spec)
        return functools.partial(timm.create_model, name, pretrained=False)
    top = spec.partition(":")[0].split(".")[0]
    if top in VISION_PACKAGES:
        _import_vision_package(top, spec)
    factory = import_object(spec, "model")
    if not callable(factory):
        raise InputError(f"model '{spec}': is not callable")
    return factory


def _import_vision_package(name: str, spec: str) -> Any:
    """Import torchvision or timm, naming the usual cause when it fails: a build that does not
    match the installed torch (timm imports torchvision)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"model '{spec}': module '{exc.name}' not found",
            hint=f"pip install 'landscape-cli[{name}]'",
        ) from None
    except Exception as exc:
        raise InputError(
            f"model '{spec}': importing {name} failed: {exc.__class__.__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="install the torchvision build made for this torch; for a CPU-only torch, the one "
            "on PyTorch's index https://download.pytorch.org/whl/cpu",
        ) from None


def refuse_downloads(spec: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments with which a torchvision or timm factory would download
    pretrained weights (``pretrained=True``, ``weights=...``): nothing is ever downloaded."""
    top = spec.partition(":")[0].split(".")[0]
    if top not in VISION_PACKAGES:
        return
    for key in DOWNLOADING_KWARGS:
        value = kwargs.get(key)
        if value is not None and value is not False:
            raise InputError(
                f"model '{spec}': `{key}={value}` would download pretrained weights, and "
                "landscape never downloads",
                hint="analyse your own weights: pass the checkpoint and leave "
                f"{key} unset (the architecture alone is built)",
            )


def build_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the model factory named by ``spec`` with ``kwargs``; it must return an ``nn.Module``
    (see :func:`resolve_factory` for the forms of ``spec``)."""
    kwargs = dict(kwargs or {})
    refuse_downloads(spec, kwargs)
    return call_factory(spec, resolve_factory(spec), kwargs)


def call_factory(spec: str, factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> nn.Module:
    """``factory(**kwargs)``, whose bad keyword arguments, failure or non-module result is an
    :class:`InputError` naming ``spec``."""
    try:
        inspect.signature(factory).bind(**dict(kwargs))
    except TypeError as exc:
        raise InputError(
            f"model '{spec}': bad keyword arguments: {exc}",
            hint="check `model_args` and model.kwargs",
        ) from None
    except ValueError:  # no signature available (some builtins): let the call decide
        pass
    try:
        model = factory(**dict(kwargs))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise InputError(f"model '{spec}': the factory raised {exc!r}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model '{spec}': returned {type(model).__name__}, expected an nn.Module")
    return model


def _is_lightning_module(factory: Any) -> bool:
    """Whether ``factory`` is a LightningModule class (found by name, so that lightning is not
    imported for other models)."""
    if not isinstance(factory, type):
        return False
    return any(
        base.__name__ == "LightningModule"
        and base.__module__.split(".")[0] in ("lightning", "pytorch_lightning")
        for base in factory.__mro__
    )


def _lightning_kwargs(
    factory: type, checkpoint: Checkpoint, notes: dict[str, str]
) -> dict[str, Any]:
    """The keyword arguments of a LightningModule class: the checkpoint's ``hyper_parameters``
    (what ``save_hyperparameters()`` stored), those the constructor takes."""
    hyper = checkpoint.extra.get("hyper_parameters")
    if not isinstance(hyper, Mapping) or not hyper:
        return {}
    parameters = inspect.signature(factory).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    names = {p.name for p in parameters}
    kwargs = {str(k): v for k, v in hyper.items() if takes_any or str(k) in names}
    if kwargs:
        listed = ", ".join(f"{k}={shown(v)}" for k, v in list(kwargs.items())[:6])
        more = f" and {len(kwargs) - 6} more" if len(kwargs) > 6 else ""
        notes["model_kwargs"] = (
            f"built {factory.__name__} with the checkpoint's hyper_parameters ({listed}{more})"
        )
    return kwargs
