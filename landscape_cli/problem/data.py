"""The samples a loss is averaged over, cut into batches with their weights.

The objective is the mean loss over all ``N`` selected samples,

    L(w) = (1/N) Σ_i ℓ(w; x_i, y_i) = Σ_b (n_b / N) · L_b(w),

where ``L_b`` is the mean loss of batch ``b`` holding ``n_b`` samples. Every batch is therefore
weighted by its sample count, so a short last batch counts exactly as much as its samples do (not
as a whole batch), and the result does not depend on ``batch_size``.

A batch is a tuple ``(x, y)`` of tensors, or a mapping of names to tensors (the named inputs of
a sequence model, ``input_ids``, ``attention_mask``, …, with its ``labels``); both share their
first dimension, the samples, and are sliced, moved and counted alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import InputError, is_out_of_memory

Batch = Any  # a tuple (x, y) of tensors, a mapping of named tensors, or None (no data)


def batch_size_of(batch: Batch) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor."""
    if batch is None:
        return 1
    if isinstance(batch, Mapping):
        batch = tuple(batch.values())
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        raise TypeError("a batch must be a tensor or a tuple of tensors with a batch dimension")
    return int(first.shape[0])


def nonfinite_samples(x: Any) -> torch.Tensor | None:
    """The boolean mask of the samples (first dimension) of floating-point inputs ``x`` holding
    NaN or Inf, or ``None`` when ``x`` is not a floating-point (or complex) tensor; for a
    mapping of named inputs, of the samples where any of its floating-point tensors does."""
    if isinstance(x, Mapping):
        masks = [m for m in map(nonfinite_samples, x.values()) if m is not None]
        return torch.stack(masks).any(dim=0) if masks else None
    if (
        not isinstance(x, torch.Tensor)
        or x.ndim < 1
        or not (x.is_floating_point() or x.is_complex())
    ):
        return None
    return ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


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
    if isinstance(batch, Mapping):
        return {key: move_batch(item, device, dtype) for key, item in batch.items()}
    raise TypeError(f"unsupported batch element of type {type(batch).__name__}")


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    """Samples ``start:stop`` of a tuple or mapping of tensors."""
    if isinstance(batch, Mapping):
        return {key: t[start:stop] for key, t in batch.items()}
    return tuple(t[start:stop] for t in batch)


@dataclass(frozen=True)
class Batches:
    """A re-iterable, fixed-order sequence of batches with per-batch weights ``n_b / N``.

    Build it with :func:`tensor_batches` (tensors held in memory), :func:`dataset_batches` (a
    map-style dataset read in order), :func:`loader_batches` (a ``DataLoader``'s own batches,
    sampler and ``collate_fn``) or :func:`no_data` (analytic objectives).
    """

    source: Any  # tuple or mapping of tensors, a Dataset, a LoaderSource, or None
    batch_size: int
    num_samples: int
    description: str
    rank: int = 0
    world_size: int = 1
    #: per-batch sample counts when batches are not cut at ``batch_size`` (a DataLoader's own)
    sizes: tuple[int, ...] | None = field(default=None)

    @property
    def num_batches(self) -> int:
        if self.source is None:
            return 1
        if self.sizes is not None:
            return len(self.sizes)
        return -(-self.num_samples // self.batch_size)

    @property
    def batch_size_bound(self) -> int:
        """No batch holds more samples than this: ``batch_size``, or the largest of a
        DataLoader's own batches."""
        return max(self.sizes) if self.sizes is not None else self.batch_size

    def reorders_between_passes(self) -> bool:
        """Whether two passes over the data visit the samples in different orders or batches:
        true for a ``DataLoader`` whose sampler shuffles; the other sources are read in index
        order and never do. Costs two passes over the sampler's indices, not over the data."""
        if isinstance(self.source, LoaderSource):
            return self.source.plan(self.description) != self.source.plan(self.description)
        return False

    def subset(self, first_batch: int, stop_batch: int) -> Batches:
        """Batches ``first_batch .. stop_batch - 1`` as their own :class:`Batches` (the same
        batches with the same samples, weighted by the subset's sample count)."""
        if not 0 <= first_batch < stop_batch <= len(self) or self.source is None:
            raise ValueError(
                f"invalid batch range {first_batch}..{stop_batch} of {len(self)} batches"
            )
        if isinstance(self.source, LoaderSource):
            sizes = self.sizes[first_batch:stop_batch]  # type: ignore[index]
            start = sum(self.sizes[:first_batch])  # type: ignore[index]
            stop = start + sum(sizes)
            source: Any = replace(
                self.source,
                first_batch=self.source.first_batch + first_batch,
                stop_batch=self.source.first_batch + stop_batch,
            )
            description = f"{self.description} [batches {first_batch}..{stop_batch - 1}]"
            return Batches(source, self.batch_size, stop - start, description, sizes=sizes)
        start = first_batch * self.batch_size
        stop = min(stop_batch * self.batch_size, self.num_samples)
        if isinstance(self.source, (tuple, Mapping)):
            source = slice_batch(self.source, start, stop)
        else:
            source = torch.utils.data.Subset(self.source, range(start, stop))
        description = f"{self.description} [samples {start}..{stop - 1}]"
        return Batches(source, self.batch_size, stop - start, description)

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
        if isinstance(self.source, LoaderSource):
            yield from self._loader_batches(indices)
            return
        for index in indices:
            start = index * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if isinstance(self.source, (tuple, Mapping)):
                batch: Batch = slice_batch(self.source, start, stop)
            else:
                batch = _read_items(self.source, start, stop, self.description)
            yield index, batch, (stop - start) / self.num_samples

    def _loader_batches(self, indices: range) -> Iterator[tuple[int, Batch, float]]:
        """One pass over the loader's batch sampler (a new order if it shuffles), reading the
        batches at ``indices`` in the main process through the loader's ``collate_fn``."""
        source: LoaderSource = self.source
        plan = source.plan(self.description)
        if tuple(len(b) for b in plan) != self.sizes:
            raise InputError(
                f"data {self.description}: the DataLoader's batches changed between passes "
                f"({len(plan)} batches now, {len(self.sizes or ())} before)",
                hint="use a batch sampler that yields the same batch sizes on every pass",
            )
        for index in indices:
            items = [_read_item(source.dataset, i, self.description) for i in plan[index]]
            try:
                batch = _as_batch(source.collate_fn(items))
            except InputError:
                raise
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise
                raise InputError(
                    f"data {self.description}: the DataLoader's collate_fn failed on batch "
                    f"{index} ({exc.__class__.__name__}: {exc})"
                ) from None
            yield index, batch, len(plan[index]) / self.num_samples


@dataclass(frozen=True)
class LoaderSource:
    """What :class:`Batches` needs of a ``torch.utils.data.DataLoader``: its map-style dataset,
    its batch sampler (which decides the order and the batch composition) and its ``collate_fn``.

    Items are read in the main process (the loader's workers are not used), in the order the
    batch sampler gives on each pass; ``max_samples`` cuts every pass after that many samples,
    and ``first_batch``/``stop_batch`` select a contiguous range of a pass's batches.
    """

    dataset: Any
    batch_sampler: Any
    collate_fn: Callable[[list[Any]], Any]
    max_samples: int | None = None
    first_batch: int = 0
    stop_batch: int | None = None

    def plan(self, description: str = "") -> list[list[int]]:
        """The sample indices of each batch of one pass over the batch sampler."""
        batches: list[list[int]] = []
        total = 0
        for indices in self.batch_sampler:
            try:
                indices = [int(i) for i in indices]
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"data {description}: the DataLoader's batch sampler yielded {indices!r:.60}, "
                    f"not a list of integer indices ({exc})",
                    hint="use a batch sampler over a map-style dataset's integer indices",
                ) from None
            if self.max_samples is not None:
                indices = indices[: self.max_samples - total]
            if indices:
                batches.append(indices)
                total += len(indices)
            if self.max_samples is not None and total >= self.max_samples:
                break
        return batches[self.first_batch : self.stop_batch]


def _as_batch(collated: Any) -> Batch:
    """A collated batch as a tuple of tensors or a mapping of named tensors: ``[x, y]`` lists
    become tuples, a mapping with keys ``x`` and ``y`` becomes ``(x, y)``, and another mapping
    of tensors (``input_ids``, ``attention_mask``, ``labels``, …) is kept as named inputs."""
    if isinstance(collated, Mapping):
        if "x" in collated and "y" in collated:
            collated = (collated["x"], collated["y"])
        elif collated and all(isinstance(t, torch.Tensor) for t in collated.values()):
            return dict(collated)
        else:
            raise InputError(
                f"a collated batch is a mapping with keys {sorted(collated)}, not all of them "
                "tensors; expected 'x' and 'y', or named model inputs such as 'input_ids'",
                hint="return (x, y) or a mapping of tensors from collate_fn",
            )
    if isinstance(collated, torch.Tensor):
        collated = (collated,)
    if not isinstance(collated, (tuple, list)) or not all(
        isinstance(t, torch.Tensor) for t in collated
    ):
        raise InputError(
            f"a collated batch is a {type(collated).__name__}, not a tuple of tensors",
            hint="return (x, y) tensors from the DataLoader's collate_fn",
        )
    return tuple(collated)


def _read_item(dataset: Any, index: int, description: str) -> Any:
    try:
        return dataset[index]
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise InputError(
            f"data {description}: reading item {index} failed: {exc.__class__.__name__}: {exc}"
        ) from None


def _read_items(dataset: Any, start: int, stop: int, description: str) -> Batch:
    """Items ``start:stop`` of a map-style dataset collated into a batch; a failing item is an
    input error naming its index."""
    items = [_read_item(dataset, index, description) for index in range(start, stop)]
    try:
        return _collate(items)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(
            f"data {description}: items {start}..{stop - 1} cannot be stacked into a batch ({exc})",
            hint="items must be tensors, (x, y) pairs, or mappings with keys x and y or "
            "named model inputs (input_ids, ...)",
        ) from None


def _collate(items: Sequence[Any]) -> Batch:
    first = items[0]
    if isinstance(first, Mapping):
        if "x" in first and "y" in first:
            return (_stack([item["x"] for item in items]), _stack([item["y"] for item in items]))
        return {key: _stack([item[key] for item in items]) for key in first}
    if isinstance(first, (tuple, list)):
        return tuple(_stack([item[k] for item in items]) for k in range(len(first)))
    return (_stack(list(items)),)


def _stack(values: list[Any]) -> torch.Tensor:
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    return torch.as_tensor(values)


def tensor_batches(
    tensors: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    batch_size: int,
    max_samples: int | None,
    description: str,
) -> Batches:
    """Batches over in-memory tensors sharing their first dimension: ``(x, y)``, or a mapping
    of named inputs (``{"input_ids": ..., "labels": ...}``)."""
    source = dict(tensors) if isinstance(tensors, Mapping) else tuple(tensors)
    total = batch_size_of(source)
    n = total if max_samples is None else min(total, max_samples)
    return Batches(slice_batch(source, 0, n), batch_size, n, description)


def dataset_batches(
    dataset: Any, batch_size: int, max_samples: int | None, description: str
) -> Batches:
    """Batches over a map-style dataset (``__len__`` and ``__getitem__``), read in index order."""
    total = len(dataset)
    n = total if max_samples is None else min(total, max_samples)
    return Batches(dataset, batch_size, n, description)


def loader_batches(loader: Any, max_samples: int | None, description: str) -> Batches:
    """Batches as a ``DataLoader`` makes them: its batch sampler's order and batch composition
    and its ``collate_fn`` (the loader's ``batch_size`` replaces ``--batch-size``), re-planned on
    every pass, so a shuffling loader gives a different order each time (which the determinism
    check refuses, :mod:`landscape_cli.problem.determinism`). Weights are ``n_b / N`` as for every source.
    """
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        raise InputError(
            f"data {description}: the DataLoader wraps an IterableDataset, which has no fixed "
            "length or order to average over",
            hint="return a map-style Dataset (__len__ and __getitem__), a DataLoader over one, "
            "or tensors (x, y)",
        )
    if loader.batch_sampler is None:
        raise InputError(
            f"data {description}: the DataLoader has batch_size=None and yields single items",
            hint="give the DataLoader a batch_size",
        )
    sampler = getattr(loader.batch_sampler, "sampler", None) or loader.sampler
    if isinstance(sampler, torch.utils.data.DistributedSampler) and sampler.num_replicas > 1:
        raise InputError(
            f"data {description}: the DataLoader's DistributedSampler reads only 1/"
            f"{sampler.num_replicas} of the dataset (rank {sampler.rank}'s share); landscape "
            "averages over every sample and shards them across torchrun ranks itself",
            hint="give the DataLoader no sampler (shuffle=False), or return the dataset",
        )
    source = LoaderSource(loader.dataset, loader.batch_sampler, loader.collate_fn, max_samples)
    sizes = tuple(len(b) for b in source.plan(description))
    if not sizes:
        raise InputError(f"data {description}: the DataLoader yields no samples")
    nominal = loader.batch_size if loader.batch_size is not None else max(sizes)
    return Batches(source, int(nominal), sum(sizes), description, sizes=sizes)


def no_data() -> Batches:
    """The single empty "batch" of an analytic objective ``fn(model, None)``."""
    return Batches(None, 1, 1, "no data (analytic objective)")
