"""``inspect``: what was loaded (parameters by layer, the data, the loss and gradient at ``w``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..problem.objective import Objective
from .run_info import RunInfo, json_number


@dataclass(frozen=True)
class InspectionResult:
    """The loaded objective described: no HVPs are spent."""

    info: RunInfo
    parameters: list[dict[str, Any]]  # name, shape, numel, norm
    data: dict[str, Any]
    checkpoint_format: str | None
    graph_megabytes: float
    #: the prefix stripped from every checkpoint key to fit the model (``"net."``), or None
    checkpoint_prefix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.info.to_dict()
        out.update(
            {
                "parameters": self.parameters,
                "data": self.data,
                "checkpoint_format": self.checkpoint_format,
                "checkpoint_prefix": self.checkpoint_prefix,
                "graph_megabytes": self.graph_megabytes,
            }
        )
        return out


def _describe_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).replace("torch.", ""),
    }
    if not tensor.is_floating_point() and tensor.numel() and tensor.ndim == 1:
        values = torch.unique(tensor)
        if len(values) <= 1000:
            out["distinct_values"] = len(values)
    return out


def inspect_objective(
    objective: Objective, *, seed: int = 0, seconds: float = 0.0
) -> InspectionResult:
    """Describe ``objective``: per-parameter shapes and norms, data shapes, loss and gradient norm."""
    parameters = []
    for name, shape, tensor in zip(
        objective.parameter_names,
        objective.parameter_shapes,
        objective.unflatten(objective.flat_parameters()),
        strict=True,
    ):
        parameters.append(
            {
                "name": name,
                "shape": list(shape),
                "numel": int(tensor.numel()),
                "norm": json_number(torch.linalg.vector_norm(tensor)),
            }
        )
    batches = objective.batches
    data: dict[str, Any] = {
        "source": batches.description,
        "num_samples": objective.num_samples,
        "batch_size": batches.batch_size,
        "num_batches": len(batches),
    }
    first = next(iter(batches))[0]
    if isinstance(first, tuple):
        names = ("x", "y") if len(first) == 2 else tuple(f"item{i}" for i in range(len(first)))
        for name, tensor in zip(names, first, strict=True):
            described = _describe_tensor(tensor)
            described["shape"] = [objective.num_samples, *described["shape"][1:]]
            data[name] = described
    checkpoint = objective.checkpoint
    return InspectionResult(
        info=RunInfo.from_objective(objective, "inspect", seed, 0, seconds),
        parameters=parameters,
        data=data,
        checkpoint_format=None if checkpoint is None else checkpoint.format,
        graph_megabytes=round(objective.graph_bytes / 2**20, 3),
        checkpoint_prefix=getattr(checkpoint, "key_prefix", "") or None,
    )
