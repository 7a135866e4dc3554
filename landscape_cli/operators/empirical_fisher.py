"""The empirical Fisher matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.func import functional_call, grad, vmap

from ..errors import InputError, NumericalError
from ..problem.data import Batch
from ..problem.losses import SplitLoss
from ..problem.objective import Objective
from .base import CurvatureOperator


class EmpiricalFisherOperator(CurvatureOperator):
    """The empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` of per-sample gradients (module docstring).

    Parameters
    ----------
    objective, split:
        The objective (eval mode) and its :class:`~landscape_cli.problem.losses.SplitLoss`.
    chunk_size:
        Samples per ``vmap`` call (memory: ``chunk_size × n`` numbers plus activations).
    cache:
        Keep the per-sample gradients between products (``None``: when ``N × n`` numbers fit in
        half of ``objective.memory_budget``).
    """

    def __init__(
        self,
        objective: Objective,
        split: SplitLoss,
        *,
        chunk_size: int = 64,
        cache: bool | None = None,
    ) -> None:
        super().__init__(objective)
        self.split = split
        self.chunk_size = int(chunk_size)
        size = objective.num_samples * objective.num_parameters * objective.gradient.element_size()
        self.cache = size <= objective.memory_budget // 2 if cache is None else bool(cache)
        # {"rows": [(G_b, 1/N), ...]} once a full pass has kept them; a dict, so that fresh()
        # twins share it (and release() empties it for all)
        self._kept: dict[str, list[tuple[torch.Tensor, float]]] = {}
        self._sample_grad: Callable[..., dict[str, torch.Tensor]] | None = None

    def release(self) -> None:
        self._kept.clear()

    def _per_sample_function(self) -> Callable[..., dict[str, torch.Tensor]]:
        obj = self.objective
        model, split = obj.model, self.split
        constants = {k[len("model.") :]: v for k, v in obj._constants.items()}

        def sample_loss(params: dict[str, torch.Tensor], sample: tuple[torch.Tensor, ...]):
            batch = tuple(t.unsqueeze(0) for t in sample)
            out = functional_call(model, {**constants, **params}, (batch[0],), strict=False)
            return split.loss(out, batch)

        return vmap(grad(sample_loss), in_dims=(None, 0))

    def per_sample_gradients(self, batch: Batch, index: int) -> torch.Tensor:
        """The ``(n_b, n)`` matrix of the per-sample gradients ``g_i`` of one batch."""
        obj = self.objective
        if self._sample_grad is None:
            self._sample_grad = self._per_sample_function()
        params = {n: p.detach() for n, p in zip(obj.parameter_names, obj._params, strict=True)}
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        rows = []
        size = int(batch[0].shape[0])
        for start in range(0, size, self.chunk_size):
            chunk = tuple(t[start : start + self.chunk_size] for t in batch)
            try:
                with obj._evaluation_context(index):
                    grads = self._sample_grad(params, chunk)
            except (RuntimeError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise InputError(
                    f"`curvature=ef`: per-sample gradients (torch.func.vmap over the model) "
                    f"failed on batch {index}: {first}",
                    hint="the model's forward must be vmap-compatible (no .item(), no in-place "
                    "ops on inputs, no data-dependent Python control flow); or use `curvature=ggn`",
                ) from None
            count = int(chunk[0].shape[0])
            rows.append(
                torch.cat([grads[n].reshape(count, -1) for n in obj.parameter_names], dim=1)
            )
        return torch.cat(rows, dim=0)

    def _batches(self) -> Iterator[tuple[torch.Tensor, float]]:
        if "rows" in self._kept:
            yield from self._kept["rows"]
            return
        keep: list[tuple[torch.Tensor, float]] = []
        for index, batch, weight in self.objective._batches_on_device():
            G = self.per_sample_gradients(batch, index)
            if not bool(torch.isfinite(G).all()):
                raise NumericalError(f"a per-sample gradient is not finite (batch {index})")
            scale = weight / G.shape[0]  # w_b / n_b = 1 / N
            if self.cache:
                keep.append((G, scale))
            yield G, scale
        if self.cache:
            self._kept["rows"] = keep

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(V)
        with self.objective.collect_failure() as failure:
            for G, scale in self._batches():
                total += scale * (G.T @ (G @ V))
        return self.objective.reduce_sum(total, failure)
