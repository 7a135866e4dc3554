"""Hostile files for the tests: archives that try to run code or write files when loaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

PAYLOAD = b"PWNED!!!"  # what the archive writes over the first bytes of its target
BANNER = "torchscript code ran"  # what it prints while it does


class _WritesOnLoad(nn.Module):
    """A bias-free ``Linear(4, 3)`` whose TorchScript ``__setstate__`` prints and overwrites the
    first bytes of ``target`` with :data:`PAYLOAD` (``torch.from_file(shared=True)`` maps the
    file and the copy writes through), which is what ``torch.jit.load`` runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]
        print("torchscript code ran")
        payload = torch.tensor([80, 87, 78, 69, 68, 33, 33, 33], dtype=torch.uint8)
        mapped = torch.from_file(self.target, True, 8, dtype=torch.uint8)
        mapped.copy_(payload)
        print(mapped.sum())


def torchscript_that_writes(path: Path, target: Path) -> Path:
    """Save a TorchScript archive at ``path`` that, when loaded, prints :data:`BANNER` and writes
    :data:`PAYLOAD` over the first bytes of ``target`` (which must exist with >= 8 bytes). Its
    weights fit ``nn.Linear(4, 3, bias=False)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13
        torch.jit.save(torch.jit.script(_WritesOnLoad(str(target))), str(path))
    return path


LINEAR_FACTORY = """\
from torch import nn


def build():
    return nn.Linear(4, 3, bias=False)
"""


def linear_problem(folder: Path) -> tuple[Path, Path, Path]:
    """A model file (``linear.py:build``), a data file and a plain state_dict that fit the
    archive of :func:`torchscript_that_writes`."""
    model = folder / "linear.py"
    model.write_text(LINEAR_FACTORY)
    generator = torch.Generator().manual_seed(1)
    data = folder / "data.pt"
    torch.save({"x": torch.randn(16, 4, generator=generator), "y": torch.arange(16) % 3}, data)
    state = folder / "plain.pt"
    torch.save({"weight": torch.randn(3, 4, generator=generator)}, state)
    return model, data, state
