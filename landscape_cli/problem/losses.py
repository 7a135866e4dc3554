"""The losses: the built-in ones split into model outputs and a loss on them, and user callables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .user_code import import_object

LossFn = Callable[[nn.Module, Any], torch.Tensor]


NAMED_LOSSES = ("cross_entropy", "mse", "bce_with_logits", "nll")


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
        """The model's output on the batch's inputs ``batch[0]``."""
        if batch is None:
            raise InputError(f"loss '{self.name}' needs data; give `data`")
        return model(batch[0])

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        """The mean loss of the batch given the model's outputs."""
        functional = torch.nn.functional
        y = batch[1]
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
            return torch.nn.functional.cross_entropy(outputs, batch[1])
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
