"""The losses: the built-in ones split into model outputs and a loss on them, and user callables."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .user_code import import_object

LossFn = Callable[[nn.Module, Any], torch.Tensor]


NAMED_LOSSES = ("cross_entropy", "mse", "bce_with_logits", "nll", "lm", "sequence_classification")
#: the losses of sequence models, on their logits
SEQUENCE_LOSSES = ("lm", "sequence_classification")
#: the key of the targets in a batch of named inputs; never passed to the model
LABELS = "labels"
#: the target value ``lm`` (and cross-entropy) leave out of the mean, as torch and transformers do
IGNORE_INDEX = -100


def model_logits(output: Any) -> torch.Tensor:
    """The tensor a loss is computed on from what a model returned: the tensor itself, the
    ``logits`` of a mapping (a transformers ``ModelOutput`` is one), or the first element of a
    tuple (the ``return_dict=False`` convention)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        logits = output.get("logits")
        if isinstance(logits, torch.Tensor):
            return logits
        keys = ", ".join(map(str, output)) or "none"
        raise InputError(
            f"the model returned a mapping without a 'logits' tensor (keys: {keys})",
            hint="return the logits, or a mapping or ModelOutput holding them as 'logits'",
        )
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputError(
        f"the model returned {type(output).__name__}; a built-in loss needs a tensor of outputs",
        hint="return the outputs (logits) as a tensor, a mapping with 'logits', or a tuple "
        "whose first element they are",
    )


@functools.lru_cache(maxsize=64)
def _forward_names(cls: type) -> frozenset[str] | None:
    """The parameter names of ``cls.forward`` (``None``: no inspectable signature)."""
    try:
        signature = inspect.signature(cls.forward)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(n for n, p in signature.parameters.items() if p.kind in kinds)


def model_inputs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The named inputs of ``batch`` the model is called with, ``model(**inputs)``: those its
    ``forward`` names as parameters, never ``labels`` (the built-in losses compute the loss
    from the logits themselves)."""
    names = _forward_names(type(model))
    inputs = {k: v for k, v in batch.items() if k != LABELS and (names is None or k in names)}
    if not inputs:
        offered = ", ".join(k for k in batch if k != LABELS) or "none"
        raise InputError(
            f"the model's forward takes none of the data's named inputs ({offered})",
            hint="name the data's arrays after the forward's parameters (input_ids, "
            "attention_mask, ...), or store 'x' and 'y'",
        )
    return inputs


class SplitLoss:
    """A built-in loss split into the model's output and a loss on that output.

    ``split(model, batch) == split.loss(split.outputs(model, batch), batch)``, the mean loss of the
    batch, so a :class:`SplitLoss` is used wherever a ``fn(model, batch)`` loss is. The split is
    what the generalised Gauss-Newton matrix and the per-sample losses of the empirical Fisher
    need (:mod:`landscape_cli.operators.curvature`): the Jacobian of :meth:`outputs` and the Hessian of
    :meth:`curvature_loss` with respect to the outputs. A custom ``module:fn`` loss is one opaque
    function and cannot be split.

    * ``cross_entropy``: outputs are logits ``z``; ``ℓ = -log softmax(z)_y``.
    * ``nll``: outputs are log-probabilities ``o``; ``ℓ = -o_y`` is linear in ``o`` (its Hessian
      is zero), so :meth:`curvature_loss` is the cross-entropy of ``o`` taken as logits, equal to
      ``-o_y`` wherever ``logsumexp(o) = 0``; its GGN is then the Fisher (Martens 2020, §9.2).
    * ``mse``: ``ℓ = mean((f - y)²)`` over the output elements.
    * ``bce_with_logits``: outputs are logits; ``ℓ = mean(BCE(σ(f), y))``.
    * ``sequence_classification``: outputs are class logits ``z`` of a sequence; ``ℓ = -log
      softmax(z)_y`` with ``y`` the batch's ``labels``: the cross-entropy of a sequence model.
    * ``lm``: next-token prediction of a causal language model. With logits ``z_{i,t}`` of
      sample ``i`` at position ``t``, targets ``y_{i,t+1}`` (``labels``, else the ``input_ids``),
      and ``C_b`` the positions counted (target not ``-100``, ``attention_mask`` not 0 there),
      the batch loss is the mean over its counted tokens,
      ``L_b = (1/|C_b|) Σ_{(i,t)∈C_b} -log softmax(z_{i,t})_{y_{i,t+1}}``,
      as in transformers' causal-LM loss. Sample ``i``'s share (:meth:`sample_weights`) is
      ``n_b |C_i| / |C_b|`` times the mean over its own counted tokens, so that the batch
      mean of the per-sample losses is ``L_b`` (the empirical Fisher needs them). Batches are
      weighted by their sample count (:mod:`landscape_cli.problem.data`): when the samples hold
      different numbers of counted tokens, the objective is a mean of batch token-means.

    Batches are ``(x, y)`` or mappings of named inputs (``input_ids``, ``attention_mask``, …,
    ``labels``); outputs are resolved to the logits (:func:`model_logits`), so a model returning
    a transformers ``ModelOutput`` or a tuple needs no wrapper.

    Example
    -------
    >>> import torch
    >>> split = SplitLoss("mse")
    >>> model = torch.nn.Linear(2, 1)
    >>> batch = (torch.randn(4, 2), torch.randn(4, 1))
    >>> bool(split(model, batch) == split.loss(split.outputs(model, batch), batch))
    True
    """

    def __init__(self, name: str) -> None:
        if name not in NAMED_LOSSES:
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(NAMED_LOSSES)}")
        self.name = name

    def __repr__(self) -> str:
        return f"SplitLoss({self.name!r})"

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The model's output (its logits, :func:`model_logits`) on the batch's inputs:
        ``model(batch[0])``, or ``model(**inputs)`` for named inputs (:func:`model_inputs`)."""
        if batch is None:
            raise InputError(f"loss '{self.name}' needs data; give `data`")
        if isinstance(batch, Mapping):
            return model_logits(model(**model_inputs(model, batch)))
        return model_logits(model(batch[0]))

    def targets(self, batch: Any) -> torch.Tensor:
        """The batch's targets: ``y`` of ``(x, y)``, or ``labels`` of named inputs (``lm``
        without them: the ``input_ids``, the sequence predicting itself)."""
        if not isinstance(batch, Mapping):
            return batch[1] if len(batch) > 1 or self.name != "lm" else batch[0]
        if LABELS in batch:
            return batch[LABELS]
        if self.name == "lm" and "input_ids" in batch:
            return batch["input_ids"]
        raise InputError(
            f"loss '{self.name}': the data hold no 'labels' (keys: {', '.join(batch)})",
            hint="store the targets as 'labels' next to 'input_ids'",
        )

    def _lm_targets(self, batch: Any) -> torch.Tensor:
        """The next-token targets ``y_{i,t+1}`` of positions ``t = 0 … T-2``, with
        ``IGNORE_INDEX`` where the ``attention_mask`` of the target is 0."""
        labels = self.targets(batch)[:, 1:].long()
        mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        if mask is not None:
            labels = labels.masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
        return labels

    def _lm_loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        labels = self._lm_targets(batch)
        if logits.ndim != 3 or tuple(logits.shape[:2]) != (labels.shape[0], labels.shape[1] + 1):
            raise InputError(
                f"loss 'lm': logits of shape {tuple(logits.shape)} do not fit tokens of shape "
                f"{(labels.shape[0], labels.shape[1] + 1)}",
                hint="`loss=lm` takes (batch, sequence, vocabulary) logits of a causal LM",
            )
        token = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return token / (labels != IGNORE_INDEX).sum().clamp_min(1)

    def sample_weights(self, batch: Any) -> torch.Tensor | None:
        """Per-sample factors ``c_i`` with ``L_b = (1/n_b) Σ_i c_i ℓ(sample i alone)``: for
        ``lm``, ``c_i = n_b |C_i| / |C_b|`` (class note); ``None`` (all ones) for the losses that
        are already means over samples."""
        if self.name != "lm":
            return None
        counts = (self._lm_targets(batch) != IGNORE_INDEX).sum(dim=1).to(torch.float64)
        return counts * counts.shape[0] / counts.sum().clamp_min(1)

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        """The mean loss of the batch given the model's outputs."""
        functional = torch.nn.functional
        if self.name == "lm":
            return self._lm_loss(outputs, batch)
        y = self.targets(batch)
        if self.name == "sequence_classification":
            return functional.cross_entropy(outputs, y.long() if not y.is_floating_point() else y)
        if self.name == "cross_entropy":
            return functional.cross_entropy(outputs, y)
        if self.name == "nll":
            return functional.nll_loss(outputs, y)
        y = y.to(outputs.dtype).reshape(outputs.shape)
        if self.name == "mse":
            return functional.mse_loss(outputs, y)
        return functional.binary_cross_entropy_with_logits(outputs, y)

    def curvature_loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        """The loss whose Hessian in the outputs defines the GGN: :meth:`loss`, except for
        ``nll``, where it is the cross-entropy of the log-probabilities (see the class note)."""
        if self.name == "nll":
            return torch.nn.functional.cross_entropy(outputs, self.targets(batch))
        return self.loss(outputs, batch)

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.loss(self.outputs(model, batch), batch)


def _named_loss(name: str) -> LossFn:
    return SplitLoss(name)


def load_loss(spec: str) -> LossFn:
    """A loss ``fn(model, batch) -> scalar`` (the batch mean) from a name or a callable spec."""
    name = spec.strip().replace("-", "_")
    if name in NAMED_LOSSES:
        return _named_loss(name)
    if ":" in spec:
        fn = import_object(spec, "loss")
        if not callable(fn):
            raise InputError(f"loss '{spec}': is not callable")
        return fn
    import difflib

    close = difflib.get_close_matches(name, NAMED_LOSSES, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "or give package.module:callable"
    raise InputError(f"loss '{spec}': unknown loss; known: {', '.join(NAMED_LOSSES)}", hint=hint)
