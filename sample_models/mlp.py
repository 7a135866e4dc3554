"""The bundled MLP sample: ``in_features -> hidden -> hidden -> num_classes`` with tanh.

tanh is smooth (infinitely differentiable), so the Hessian of the loss is well defined everywhere
and informative, unlike ReLU networks whose Hessian is piecewise constant in the
pre-activations. With the defaults (8 -> 32 -> 32 -> 4) the network has
``8*32 + 32 + 32*32 + 32 + 32*4 + 4 = 1476`` parameters, few enough for an exact dense Hessian.

Example:
    >>> model = build()
    >>> sum(p.numel() for p in model.parameters())
    1476
"""

from __future__ import annotations

from torch import nn

__all__ = ["build", "num_parameters"]


def num_parameters(in_features: int = 8, hidden: int = 32, num_classes: int = 4) -> int:
    """Closed-form parameter count ``(i + 1) h + (h + 1) h + (h + 1) c`` of :func:`build`."""
    return (in_features + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * num_classes


def build(in_features: int = 8, hidden: int = 32, num_classes: int = 4) -> nn.Module:
    """A 2-hidden-layer tanh MLP returning ``num_classes`` logits.

    ``f(x) = W_3 tanh(W_2 tanh(W_1 x + b_1) + b_2) + b_3``, with PyTorch's default
    (Kaiming-uniform) initialisation drawn from the global RNG; seed it with
    ``torch.manual_seed`` for a reproducible initialisation.
    """
    for name, value in (("in_features", in_features), ("hidden", hidden)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, num_classes),
    )
