"""The empirical Fisher matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from ..errors import InputError, NumericalError
from ..problem.data import Batch, batch_size_of, slice_batch
from ..problem.losses import SplitLoss
from ..problem.objective import Objective
from .base import CurvatureOperator
from .ggn import OutputModule


def _sample(chunk: Any, i: int) -> Any:
    """Sample ``i`` of a chunk without its batch dimension (as ``vmap`` hands it over)."""
    if isinstance(chunk, Mapping):
        return {key: t[i] for key, t in chunk.items()}
    return tuple(t[i] for t in chunk)


def _one_sample(sample: Any) -> Any:
    """One sample (as ``vmap`` hands it over, without the batch dimension) as a batch of one."""
    if isinstance(sample, Mapping):
        return {key: t.unsqueeze(0) for key, t in sample.items()}
    return tuple(t.unsqueeze(0) for t in sample)


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
        self._vectorized = True

    def release(self) -> None:
        self._kept.clear()

    def _per_sample_function(
        self, vectorized: bool = True
    ) -> Callable[..., dict[str, torch.Tensor]]:
        """``grad(ℓ_i)`` for every sample of a chunk, ``ℓ_i = c_i · loss(sample i alone)``
        with the loss's per-sample factor ``c_i`` (:meth:`SplitLoss.sample_weights`; 1 for the
        losses that are means over samples), so that ``L_b = (1/n_b) Σ_i ℓ_i``: one
        ``vmap`` over the chunk, or (``vectorized=False``, for models whose forward ``vmap``
        cannot trace, e.g. data-dependent branches on the attention mask) one ``grad`` per
        sample."""
        obj = self.objective
        split = self.split
        module = OutputModule(obj.model, split)
        constants = dict(obj._constants)

        def sample_loss(params: dict[str, torch.Tensor], sample: Any, weight: torch.Tensor):
            batch = _one_sample(sample)
            out = functional_call(module, {**constants, **params}, (batch,), strict=False)
            return split.loss(out, batch) * weight

        if vectorized:
            return vmap(grad(sample_loss), in_dims=(None, 0, 0))
        one = grad(sample_loss)

        def looped(params: dict[str, torch.Tensor], chunk: Any, weights: torch.Tensor):
            rows = [one(params, _sample(chunk, i), weights[i]) for i in range(batch_size_of(chunk))]
            return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

        return looped

    def per_sample_gradients(self, batch: Batch, index: int) -> torch.Tensor:
        """The ``(n_b, n)`` matrix of the per-sample gradients ``g_i`` of one batch."""
        obj = self.objective
        if self._sample_grad is None:
            self._sample_grad = self._per_sample_function()
        params = {
            f"model.{n}": p.detach() for n, p in zip(obj.parameter_names, obj._params, strict=True)
        }
        if isinstance(batch, torch.Tensor):
            batch = (batch,)
        elif isinstance(batch, list):
            batch = tuple(batch)
        rows = []
        size = batch_size_of(batch)
        weights = self.split.sample_weights(batch)
        if weights is None:
            weights = torch.ones(size, dtype=torch.float64)
        weights = weights.to(device=obj.device, dtype=obj.dtype)
        for start in range(0, size, self.chunk_size):
            chunk = slice_batch(batch, start, start + self.chunk_size)
            try:
                with obj._evaluation_context(index):
                    try:
                        grads = self._sample_grad(
                            params, chunk, weights[start : start + self.chunk_size]
                        )
                    except RuntimeError as exc:
                        if self._vectorized and "vmap" in str(exc):
                            self._vectorized = False  # a sample at a time from now on
                            self._sample_grad = self._per_sample_function(vectorized=False)
                            grads = self._sample_grad(
                                params, chunk, weights[start : start + self.chunk_size]
                            )
                        else:
                            raise
            except (RuntimeError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                how = "torch.func.vmap over the model" if self._vectorized else "torch.func.grad"
                raise InputError(
                    f"`curvature=ef`: per-sample gradients ({how}) failed on batch {index}: {first}",
                    hint="the model's forward must be vmap-compatible (no .item(), no in-place "
                    "ops on inputs, no data-dependent Python control flow); or use `curvature=ggn`",
                ) from None
            count = batch_size_of(chunk)
            rows.append(
                torch.cat(
                    [grads[f"model.{n}"].reshape(count, -1) for n in obj.parameter_names], dim=1
                )
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
