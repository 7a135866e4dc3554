"""The synthetic benchmark workloads shared by ``run.py`` and ``peers.py`` (not a test).

Two models at their seeded initialisation on seeded Gaussian inputs with uniform random labels
(mean cross-entropy):

* ``mlp-784`` (W2): 784-128-64-10 ReLU MLP, 109 386 parameters, 2 048 inputs of size 784;
* ``cnn3-cifar`` (W3): 3-conv ReLU CNN, 94 538 parameters, 512 inputs of shape 3x32x32.

The model factories take no required arguments, so the CLI can build them from this file:
``landscape spectrum ckpt.pt --model benchmarks/workloads.py:cnn3 --data data.pt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def cnn3(width: int = 32, num_classes: int = 10) -> nn.Module:
    """3-conv ReLU CNN for 3x32x32 inputs: conv(3->w), pool, conv(w->2w), pool, conv(2w->4w),
    global average pool, linear (94 538 parameters for w = 32)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def mlp_784() -> nn.Module:
    """784-128-64-10 ReLU MLP (109 386 parameters)."""
    return nn.Sequential(
        nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic workload: model factory (name in this file), input shape, sample counts."""

    name: str
    factory: str  # attribute of this module, for ``--model benchmarks/workloads.py:NAME``
    input_shape: tuple[int, ...]
    samples: int
    quick_samples: int
    num_classes: int = 10

    @property
    def model_fn(self) -> Callable[[], nn.Module]:
        return globals()[self.factory]


SYNTHETIC = {
    "cnn3-cifar": SyntheticSpec("cnn3-cifar", "cnn3", (3, 32, 32), 512, 128),
    "mlp-784": SyntheticSpec("mlp-784", "mlp_784", (784,), 2048, 512),
}


def synthetic(
    model_fn: Callable[[], nn.Module],
    x_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, x, y)``: the model at its initialisation under ``torch.manual_seed(seed)``
    (global RNG state restored afterwards), ``x`` standard Gaussian of shape ``x_shape`` and ``y``
    uniform in ``[0, num_classes)``, both from ``torch.Generator().manual_seed(seed + 1)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_fn()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(x_shape, generator=gen)
    y = torch.randint(0, num_classes, (x_shape[0],), generator=gen)
    return model, x, y


def build_synthetic(
    name: str, seed: int = 0, quick: bool = False
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The workload ``name`` of :data:`SYNTHETIC` (``quick``: its smaller sample count)."""
    spec = SYNTHETIC[name]
    n = spec.quick_samples if quick else spec.samples
    return synthetic(spec.model_fn, (n, *spec.input_shape), spec.num_classes, seed)
