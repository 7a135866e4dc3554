"""The Hessian of the objective, one Hessian-vector product per column."""

from __future__ import annotations

import torch

from .base import CurvatureOperator


class HessianOperator(CurvatureOperator):
    """The Hessian of an :class:`Objective`: each column costs one HVP (:meth:`Objective.hvp_block`)."""

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.objective.hvp_block(V)
