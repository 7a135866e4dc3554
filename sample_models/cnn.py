"""The bundled CNN sample for 3x12x12 images, with BatchNorm.

Architecture (``w = width``)::

    conv3x3(3 -> w) -> BatchNorm2d(w) -> ReLU -> maxpool 2x2
    -> conv3x3(w -> 2w) -> BatchNorm2d(2w) -> ReLU -> global average pool -> Linear(2w -> classes)

The convolutions have no bias: a bias before BatchNorm is cancelled by the mean subtraction in
train mode and would only add exactly flat directions to the Hessian. With the defaults
(``width = 8``, 4 classes) there are
``27 w + 2 w + 18 w^2 + 4 w + (2 w + 1) * 4 = 216 + 16 + 1152 + 32 + 68 = 1484`` parameters.
The module's ``train``/``eval`` mode decides whether BatchNorm uses batch statistics or the
running statistics stored in the checkpoint.

Example:
    >>> import torch
    >>> build()(torch.zeros(2, 3, 12, 12)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from torch import nn

__all__ = ["build", "num_parameters"]


def num_parameters(num_classes: int = 4, width: int = 8) -> int:
    """Closed-form parameter count of :func:`build` (see the module docstring)."""
    w = width
    return 27 * w + 2 * w + 18 * w * w + 4 * w + (2 * w + 1) * num_classes


def build(num_classes: int = 4, width: int = 8) -> nn.Module:
    """The sample CNN (see the module docstring); default PyTorch initialisation."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return nn.Sequential(
        nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
