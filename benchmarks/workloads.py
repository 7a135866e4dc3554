"""The synthetic benchmark workloads shared by ``run.py`` and ``peers.py`` (not a test).

Two models at their seeded initialisation on seeded Gaussian inputs with uniform random labels
(mean cross-entropy):

* ``mlp-784`` (W2): 784-128-64-10 ReLU MLP, 109 386 parameters, 2 048 inputs of size 784;
* ``cnn3-cifar`` (W3): 3-conv ReLU CNN, 94 538 parameters, 512 inputs of shape 3x32x32.

:func:`resnet18` is torchvision's ResNet-18 architecture, for ``scale.py`` where torchvision does
not import (PyPI's torchvision for a CPU-only torch is a CUDA build).

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


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (He et al. 2016)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18`` layout and parameter names (7x7 stride-2 stem, max-pool, four
    stages of two basic blocks, global average pool, linear): 11 181 642 parameters for 10
    classes, the count of ``torchvision.models.resnet18(num_classes=10)``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for index, planes in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            layer = nn.Sequential(
                _BasicBlock(inplanes, planes, stride), _BasicBlock(planes, planes)
            )
            setattr(self, f"layer{index}", layer)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 when torchvision imports, else :class:`ResNet18` (same layout)."""
    try:
        from torchvision.models import resnet18 as torchvision_resnet18
    except Exception:  # absent, or a build that does not match this torch
        return ResNet18(num_classes)
    return torchvision_resnet18(num_classes=num_classes)


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
