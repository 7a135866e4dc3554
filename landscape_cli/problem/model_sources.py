"""Where the model comes from: a factory named by ``model`` (``package.module:callable``,
``path/file.py:callable``, ``timm:NAME``, a LightningModule class) called with its keyword
arguments, or, with no ``model``, the checkpoint itself when it holds code (a TorchScript
archive or a ``torch.export`` program; only with ``trust_checkpoint``).

:func:`load_model` returns the model with the checkpoint's weights in it and records what it did
in ``notes`` (topic → sentence), which every result reports.

Hessian-vector products need a second derivative through the model. A TorchScript module
supports it, but :func:`torch.func.functional_call` refuses a scripted module at the top, and
forward hooks cannot be added to one: :class:`ScriptedModel` holds it as a submodule, under which
``functional_call`` swaps its tensors like any other. An exported program's module refuses
``train()``/``eval()`` (its mode was fixed when it was exported) and its shape guards raise
``AssertionError``; :func:`exported_module` lifts both, and a double backward through its own
example inputs checks that the graph supports second derivatives before any data is read.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, NumericalError, is_out_of_memory
from ..options import shown
from ..safe_yaml import load_yaml
from .loading import (
    Checkpoint,
    apply_state_dict,
    check_file,
    file_sha256,
    is_exported_program,
    is_torchscript,
    load_checkpoint,
    load_exported_program,
    load_torchscript,
)
from .settings import ProblemSettings
from .torchvision_compat import VISION_PACKAGES  # their factories download weights when asked
from .user_code import import_object

TIMM_PREFIX = "timm:"
#: Keyword arguments with which those factories download weights (``None``/``False``: they don't).
DOWNLOADING_KWARGS = ("pretrained", "weights", "weights_backbone")
LOW_PRECISION = (torch.float16, torch.bfloat16)
_KEY = re.compile(r"[A-Za-z_]\w*")


class ScriptedModel(nn.Module):
    """A TorchScript module as an ordinary one: ``scripted`` holds it, so that
    :func:`torch.func.functional_call` (which refuses a scripted module at the top) swaps its
    parameters, and forward hooks can be added to the holder. Its ``state_dict`` is the scripted
    module's (no ``scripted.`` prefix), so another archive's weights load into it as they are."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.scripted(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.scripted.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return self.scripted.load_state_dict(state_dict, *args, **kwargs)


def model_kwargs(config: ProblemSettings) -> dict[str, Any]:
    """The factory's keyword arguments: ``model_kwargs`` with ``model_args`` (``KEY=VALUE``, the
    value read as YAML) over them."""
    kwargs = dict(config.model_kwargs or {})
    for item in config.model_args:
        key, sep, text = item.partition("=")
        key = key.strip()
        where = f"`model_args={item if len(item) <= 60 else item[:57] + '...'}`"
        if not sep or not _KEY.fullmatch(key):
            raise InputError(
                f"{where}: expected KEY=VALUE with KEY a Python identifier",
                hint="e.g. `model_args=num_classes=10`",
            )
        kwargs[key] = load_yaml(text, where) if text.strip() else None
    return kwargs


def load_model(
    config: ProblemSettings, notes: dict[str, str]
) -> tuple[nn.Module, Checkpoint | None]:
    """The model ``config`` names, with its checkpoint's weights loaded, and the checkpoint.

    Adds to ``notes`` what was done: a key prefix stripped (``checkpoint_keys``), the model
    taken from the archive (``model``), keyword arguments taken from a Lightning checkpoint
    (``model_kwargs``), low-precision weights analysed in ``config.dtype`` (``weights_dtype``).
    """
    kwargs = model_kwargs(config)
    if config.model is None:
        model, checkpoint = _archive_model(config, kwargs, notes)
    else:
        model, checkpoint = _factory_model(config, config.model, kwargs, notes)
    stored = checkpoint.state_dict.values() if checkpoint is not None else ()
    _note_low_precision([*stored, *model.parameters()], config.dtype, notes)
    return model, checkpoint


def _factory_model(
    config: ProblemSettings, spec: str, kwargs: dict[str, Any], notes: dict[str, str]
) -> tuple[nn.Module, Checkpoint | None]:
    """The model the factory ``spec`` builds, with the checkpoint's weights loaded into it."""
    checkpoint = None
    if config.checkpoint is not None:
        checkpoint = load_checkpoint(config.checkpoint, trust=config.trust_checkpoint)
    refuse_downloads(spec, kwargs)  # before anything is imported
    factory = resolve_factory(spec)
    if not kwargs and checkpoint is not None and _is_lightning_module(factory):
        kwargs = _lightning_kwargs(factory, checkpoint, notes)
    model = call_factory(spec, factory, kwargs)
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
                raise NumericalError(f"model '{spec}': tensor '{name}' is not finite")
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

        def create_model(**kwargs: Any) -> Any:  # pretrained=False unless given (and false)
            return timm.create_model(name, **{"pretrained": False, **kwargs})

        return create_model
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


# ---------------------------------------------------------------- archives as the model
def _archive_model(
    config: ProblemSettings, kwargs: Mapping[str, Any], notes: dict[str, str]
) -> tuple[nn.Module, Checkpoint]:
    """The module a TorchScript or ``torch.export`` archive holds (no ``model`` given)."""
    no_model = InputError(
        "no model given: a checkpoint holds weights, not the architecture",
        hint="pass `model=package.module:callable` or set model.spec in a config file; a "
        "TorchScript or torch.export archive is its own model with `trust_checkpoint=True`",
    )
    if config.checkpoint is None or config.checkpoint.startswith("sample:"):
        raise no_model
    path = Path(config.checkpoint)
    check_file(path, "checkpoint")
    scripted = is_torchscript(path)
    if not scripted and not is_exported_program(path):
        raise no_model
    where = f"checkpoint {path}"
    if kwargs:
        raise InputError(
            f"{where}: the archive is the model, so the model keyword arguments "
            f"{', '.join(map(repr, kwargs))} have nothing to go to",
            hint="drop `model_args` and model.kwargs, or pass `model` to build the model",
        )
    sha = file_sha256(path)
    if scripted:
        model: nn.Module = ScriptedModel(load_torchscript(path, trust=config.trust_checkpoint))
        fmt = "torchscript"
        notes["model"] = (
            "the TorchScript module stored in the archive (its parameters are named scripted.*)"
        )
    else:
        program = load_exported_program(path, trust=config.trust_checkpoint)
        model = exported_module(program, where)
        fmt = "torch.export"
        notes["model"] = (
            "the torch.export program stored in the archive; its train/eval behaviour was "
            "fixed when it was exported (`mode` does not change it)"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(
            f"{where}: the archive's module has no trainable parameters (a frozen module holds "
            "its weights as constants)",
            hint="save it without torch.jit.freeze, or pass `model` and load the weights into it",
        )
    checkpoint = Checkpoint(str(path), dict(model.state_dict()), fmt, sha)
    return model, checkpoint


def _guarded_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """An exported module's forward, with its shape guards' ``AssertionError`` as an
    :class:`InputError`."""
    try:
        return type(self).forward(self, *args, **kwargs)
    except AssertionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "a shape guard failed"
        raise InputError(
            f"the exported program does not take these inputs ({first})",
            hint="export it with a dynamic batch dimension (dynamic_shapes), or choose "
            "`batch_size` and `max_samples` so that every batch has the exported size",
        ) from None


def exported_module(program: Any, where: str) -> nn.Module:
    """The ``nn.Module`` of an exported program, usable by the objective: ``train()``/``eval()``
    only set flags (the graph's mode was fixed at export), a failed shape guard is an
    :class:`InputError`, and second derivatives are checked to go through the graph."""
    module = program.module()
    for name in ("train", "eval"):  # instance overrides that raise NotImplementedError
        module.__dict__.pop(name, None)
    module.forward = types.MethodType(_guarded_forward, module)
    check_second_order(module, program.example_inputs, where)
    return module


def check_second_order(module: nn.Module, example: Any, where: str) -> None:
    """Differentiate twice through ``module`` at its ``example`` inputs (``(args, kwargs)``),
    restoring any buffer the forward updates; an :class:`InputError` when autograd cannot."""
    if not example:
        return
    args, kwargs = example
    inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if torch.is_tensor(t)]
    if any(t.device.type != "cpu" for t in inputs):
        return  # exported on another device: the first batch will tell
    params = [p for p in module.parameters() if p.requires_grad]
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    try:
        out = module(*args, **kwargs)
        leaves = [
            t
            for t in torch.utils._pytree.tree_leaves(out)
            if torch.is_tensor(t) and t.is_floating_point() and t.requires_grad
        ]
        if not leaves or not params:
            return
        value = sum(t.square().sum() for t in leaves)
        grads = torch.autograd.grad(value, params, create_graph=True, allow_unused=True)
        used = [(g, p) for g, p in zip(grads, params, strict=True) if g is not None]
        if used and any(g.requires_grad for g, _ in used):
            torch.autograd.grad(
                sum(g.sum() for g, _ in used if g.requires_grad),
                [p for _, p in used],
                allow_unused=True,
            )
    except InputError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise InputError(
            f"{where}: second derivatives, which Hessian-vector products need, do not go "
            f"through the exported graph ({first})",
            hint="export the model in eval mode without run_decompositions(), or save "
            "torch.save(model.state_dict(), path) and pass `model`",
        ) from None
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
