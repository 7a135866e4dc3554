"""The samples a loss is averaged over, cut into batches with their weights.

The objective is the mean loss over all ``N`` selected samples,

    L(w) = (1/N) Σ_i ℓ(w; x_i, y_i) = Σ_b (n_b / N) · L_b(w),

where ``L_b`` is the mean loss of batch ``b`` holding ``n_b`` samples. Every batch is therefore
weighted by its sample count, so a short last batch counts exactly as much as its samples do (not
as a whole batch), and the result does not depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .errors import InputError

Batch = Any  # a tuple (x, y) of tensors, or None for an analytic objective with no data


def batch_size_of(batch: Batch) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor."""
    if batch is None:
        return 1
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        raise TypeError("a batch must be a tensor or a tuple of tensors with a batch dimension")
    return int(first.shape[0])


def move_batch(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move a batch to ``device``; floating-point tensors are cast to ``dtype``, others kept."""
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device=device)
    if isinstance(batch, (tuple, list)):
        return tuple(move_batch(item, device, dtype) for item in batch)
    raise TypeError(f"unsupported batch element of type {type(batch).__name__}")


@dataclass(frozen=True)
class Batches:
    """A re-iterable, fixed-order sequence of batches with per-batch weights ``n_b / N``.

    Build it with :func:`tensor_batches` (tensors held in memory), :func:`dataset_batches` (a
    map-style dataset read in order) or :func:`no_data` (analytic objectives).
    """

    source: Any  # tuple of tensors, a Dataset, or None
    batch_size: int
    num_samples: int
    description: str
    rank: int = 0
    world_size: int = 1

    @property
    def num_batches(self) -> int:
        if self.source is None:
            return 1
        return -(-self.num_samples // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Batch, float]]:
        """Yield ``(batch, weight)`` for every batch of the data set (all shards); the weights
        sum to one."""
        for _, batch, weight in self._batches(range(self.num_batches)):
            yield batch, weight

    def shard(self, rank: int, world_size: int) -> Batches:
        """The same batches, of which :meth:`local` yields only every ``world_size``-th one
        starting at ``rank`` (round robin by batch index); weights stay ``n_b / N`` of the whole
        data set, so the sum over all ranks of a weighted per-rank total is the full-data mean."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        return replace(self, rank=rank, world_size=world_size)

    @property
    def local_indices(self) -> range:
        """The global indices of this shard's batches (all of them in a single process); the
        analytic objective's one empty batch belongs to rank 0."""
        return range(self.rank, self.num_batches, self.world_size)

    def local(self) -> Iterator[tuple[int, Batch, float]]:
        """Yield ``(global batch index, batch, weight)`` for this shard's batches only."""
        yield from self._batches(self.local_indices)

    def _batches(self, indices: range) -> Iterator[tuple[int, Batch, float]]:
        if self.source is None:
            if 0 in indices:
                yield 0, None, 1.0
            return
        for index in indices:
            start = index * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if isinstance(self.source, tuple):
                batch: Batch = tuple(t[start:stop] for t in self.source)
            else:
                batch = _read_items(self.source, start, stop, self.description)
            yield index, batch, (stop - start) / self.num_samples


def _read_items(dataset: Any, start: int, stop: int, description: str) -> Batch:
    """Items ``start:stop`` of a map-style dataset collated into a batch; a failing item is an
    input error naming its index."""
    items = []
    for index in range(start, stop):
        try:
            items.append(dataset[index])
        except Exception as exc:
            raise InputError(
                f"data {description}: reading item {index} failed: {exc.__class__.__name__}: {exc}"
            ) from None
    try:
        return _collate(items)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(
            f"data {description}: items {start}..{stop - 1} cannot be stacked into a batch ({exc})",
            hint="items must be tensors, (x, y) pairs or mappings with keys x and y",
        ) from None


def _collate(items: Sequence[Any]) -> Batch:
    first = items[0]
    if isinstance(first, Mapping):
        return (_stack([item["x"] for item in items]), _stack([item["y"] for item in items]))
    if isinstance(first, (tuple, list)):
        return tuple(_stack([item[k] for item in items]) for k in range(len(first)))
    return (_stack(list(items)),)


def _stack(values: list[Any]) -> torch.Tensor:
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    return torch.as_tensor(values)


def tensor_batches(
    tensors: Sequence[torch.Tensor], batch_size: int, max_samples: int | None, description: str
) -> Batches:
    """Batches over in-memory tensors sharing their first dimension (e.g. ``(x, y)``)."""
    tensors = tuple(tensors)
    total = int(tensors[0].shape[0])
    n = total if max_samples is None else min(total, max_samples)
    return Batches(tuple(t[:n] for t in tensors), batch_size, n, description)


def dataset_batches(
    dataset: Any, batch_size: int, max_samples: int | None, description: str
) -> Batches:
    """Batches over a map-style dataset (``__len__`` and ``__getitem__``), read in index order."""
    total = len(dataset)
    n = total if max_samples is None else min(total, max_samples)
    return Batches(dataset, batch_size, n, description)


def no_data() -> Batches:
    """The single empty "batch" of an analytic objective ``fn(model, None)``."""
    return Batches(None, 1, 1, "no data (analytic objective)")
