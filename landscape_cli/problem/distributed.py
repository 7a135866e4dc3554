"""Data-parallel analysis with :mod:`torch.distributed` (launched by ``torchrun``).

Every quantity the estimators use is a weighted sum over batches,

    L(w) = Σ_b (n_b / N) L_b(w),   ∇L = Σ_b (n_b / N) ∇L_b,   H v = Σ_b (n_b / N) H_b v,

so the batches can be split across processes ("ranks"): rank r evaluates the batches whose
index is ``r mod world_size`` (:meth:`landscape_cli.problem.data.Batches.shard`), and one all-reduce
(sum) per loss, gradient or block of HVPs gives every rank the full-data value. Everything
else — Lanczos, Hutch++, SLQ, sharpness ascent, surface directions — runs redundantly and
identically on every rank: random vectors are drawn on the CPU from generators seeded by the
command's ``--seed`` (:mod:`landscape_cli.problem.seeding`), and an all-reduce hands the same bits to
every rank, so the ranks take the same decisions without further communication. Only rank 0
writes output (stdout, ``--out``, figures).

The sum over ranks adds the per-rank partial sums in another order than a single process
does, so results agree with a single-process run to rounding (tested to 1e-6 relative in
float64), not bit for bit. This is the scheme of data-parallel training (Li et al., "PyTorch
Distributed: experiences on accelerating data parallel training", VLDB 2020), applied to
curvature; Goldstein's loss-landscape code distributes surface grid points with MPI instead.

Failures inside a data loop (a non-finite loss on one rank's batch, a shape error) must not
leave the other ranks waiting in a collective: each loop catches its error locally, the next
all-reduce carries a failure flag, and then every rank raises the same error
(:func:`all_reduce_sum`).

Backends: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per rank: ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import InputError, LandscapeError, NumericalError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: ``rank`` of ``world_size`` (0 of 1 without a process group)."""

    rank: int = 0
    world_size: int = 1

    @property
    def primary(self) -> bool:
        """Rank 0, the process that writes output."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Ranks:
    """The rank and world size of the default process group (0 of 1 when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Ranks()


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (``WORLD_SIZE`` > 1) is present."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def environment_rank() -> int:
    """``RANK`` from the environment (0 when not launched by ``torchrun``), readable before the
    process group exists: the CLI silences other ranks' output with it."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def init_from_environment(device: torch.device) -> Ranks:
    """Join the process group ``torchrun`` describes in the environment (idempotent).

    ``gloo`` for a CPU ``device``; ``nccl`` for CUDA, after selecting ``cuda:LOCAL_RANK`` as
    this process's current device. Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing
    happens and the result is rank 0 of 1.
    """
    if not launched_by_torchrun():
        return Ranks()
    if not torch.distributed.is_available():
        raise InputError("this torch build has no torch.distributed; run without torchrun")
    if torch.distributed.is_initialized():
        return current()
    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    try:
        torch.distributed.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InputError(
            f"could not join the torchrun process group ({backend}): {first}",
            hint="check MASTER_ADDR/MASTER_PORT, or launch with torchrun --standalone",
        ) from None
    return current()


def shutdown(timeout: float = 60.0) -> None:
    """Leave the process group, if this process joined one, after the other ranks are done.

    Destroying the group while another rank still talks to it can abort a process ("terminate
    called without an active exception" from gloo's threads, exit -6) after all its output is
    written. So the ranks first meet at a barrier; on gloo it is ``monitored_barrier`` with a ``timeout``, so a rank that
    failed alone cannot make the others wait forever (the failure is then ignored: the process
    is exiting anyway)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        if torch.distributed.get_backend() == "gloo":
            torch.distributed.monitored_barrier(timeout=timedelta(seconds=timeout))
        else:
            torch.distributed.barrier()
    except RuntimeError:
        pass
    torch.distributed.destroy_process_group()


@dataclass
class Failure:
    """An error caught inside one rank's data loop, to be raised on every rank together."""

    error: LandscapeError | None = None


@contextlib.contextmanager
def collect_failure(ranks: Ranks) -> Iterator[Failure]:
    """Catch a :class:`LandscapeError` raised in a data loop on a multi-rank run (in a single
    process it propagates at once); pass the :class:`Failure` to :func:`all_reduce_sum`."""
    failure = Failure()
    if not ranks.distributed:
        yield failure
        return
    try:
        yield failure
    except LandscapeError as exc:
        failure.error = exc


def all_reduce_sum(
    tensor: torch.Tensor, ranks: Ranks, failure: Failure | None = None
) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks, identical on every rank (identity on one rank).

    One collective: the tensor travels with a failure flag appended; when any rank failed,
    every rank raises the failure of the lowest failing rank (its message says which batch).
    """
    if not ranks.distributed:
        if failure is not None and failure.error is not None:
            raise failure.error
        return tensor
    failed = failure is not None and failure.error is not None
    flag = torch.tensor([1.0 if failed else 0.0], device=tensor.device, dtype=tensor.dtype)
    packed = torch.cat([tensor.reshape(-1), flag])
    torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
    if float(packed[-1]) > 0:
        _raise_together(failure)
    return packed[:-1].reshape(tensor.shape)


def _raise_together(failure: Failure | None) -> None:
    mine = None
    if failure is not None and failure.error is not None:
        error = failure.error
        mine = (type(error).__name__, error.message, error.hint)
    gathered: list[tuple[str, str, str | None] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    for rank, item in enumerate(gathered):
        if item is None:
            continue
        kind, message, hint = item
        cls = NumericalError if kind == NumericalError.__name__ else InputError
        suffix = "" if rank == 0 else f" (rank {rank})"
        raise cls(message + suffix, hint=hint)
