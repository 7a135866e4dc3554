"""Benchmarks of the Hessian-vector product and of Lanczos convergence (not a test).

Run from the repository root::

    python benchmarks/run.py            # full run, 4-5 minutes on a quiet 2-core CPU
    python benchmarks/run.py --quick    # smoke run, under a minute (smaller big workloads)

Part 1, HVP cost. For each workload, in one process and on one objective, the median wall time of
a gradient of the mean loss over all samples (one forward + ``torch.autograd.grad`` per batch, no
``create_graph``) and of one HVP ``H v`` by three mechanisms (Pearlmutter 1994,
``H v = ∇(∇L · v)``):

* ``cached``: :class:`~landscape_cli.problem.objective.Objective` with ``hvp_mode="cached"``; one backward
  pass through the retained ``create_graph=True`` gradient graph;
* ``streaming``: ``hvp_mode="streaming"``; every HVP rebuilds each batch's gradient graph
  (a fresh double backward), memory of one batch;
* ``fwd-over-rev``: ``torch.func.jvp(torch.func.grad(loss), (w,), (v,))`` over ``functional_call``,
  implemented here as the baseline.

Timing rounds are interleaved (gradient, cached, streaming, fwd-over-rev, gradient, ...) after a
warm-up, so a change of machine load affects all mechanisms alike; each row reports the CPU that
*other* processes used meanwhile (column ``other``, in cores), because on a shared machine that is
what decides whether a row can be trusted. The block table times ``H V`` for ``k`` vectors:
``hvp_block`` of both modes (one backward per column), one batched backward through the cached
graph (``torch.autograd.grad(..., is_grads_batched=True)``), and ``torch.func.vmap`` of the
forward-over-reverse HVP.

Part 2, Lanczos convergence. How many HVPs Lanczos (Golub & Van Loan ch. 10) needs for
``lambda_max`` to a relative error of 1e-3 and 1e-4, read off one long run with
``LanczosResult.ritz_values_at(j)``, compared with the default stopping rule (``tol=1e-4``) and
with plain power iteration as in PyHessian (Yao et al. 2020) from the same start vector. The
reference is the exact ``lambda_max`` (dense Hessian, ``eigvalsh`` in float64) for the bundled
samples and a Lanczos run to ``tol=1e-10`` in float64 for the larger workloads.

Timings belong in BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, jvp, vmap

from landscape_cli.estimators.exact import exact_spectrum
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.io.config import resolve_run_config
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import tensor_batches
from landscape_cli.problem.loading import build_objective
from landscape_cli.problem.objective import Objective

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workloads import SYNTHETIC, build_synthetic  # benchmarks/ is not a package

MECHANISMS = ("cached", "streaming", "fwd-over-rev")
TOLERANCES = (1e-3, 1e-4)
PYHESSIAN_MAX_ITER = 100  # PyHessian's hessian.eigenvalues defaults: maxIter=100, tol=1e-3


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """An objective factory ``build(hvp_mode, dtype) -> Objective`` and what it is."""

    name: str
    description: str
    build: Callable[[str, torch.dtype], Objective]
    exact_reference: bool  # small enough for the dense Hessian
    num_samples: int
    block_size: int = 8  # k of the block table (smaller where one HVP is expensive)
    slow_in_float64: bool = False  # float64 convolutions are slow on CPU: skipped by --quick


def sample_workload(name: str, device: str, exact: bool = True) -> Workload:
    """A bundled sample (``sample:mlp``, ``sample:cnn``) through the library's own loading path."""
    from landscape_cli import sample_models

    x, _ = sample_models.load_dataset(sample_models.get_sample(name).data or "")

    def build(hvp_mode: str, dtype: torch.dtype) -> Objective:
        config = resolve_run_config(
            {
                "checkpoint": f"sample:{name}",
                "dtype": "float64" if dtype == torch.float64 else "float32",
                "hvp_mode": hvp_mode,
                "device": device,
            }
        )
        return build_objective(config)

    description = sample_models.get_sample(name).description
    return Workload(f"sample:{name}", description, build, exact, int(x.shape[0]))


def _cross_entropy(model: nn.Module, batch: Any) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _synthetic_workload(
    name: str,
    description: str,
    quick: bool,
    seed: int,
    device: str,
    block_size: int = 8,
    slow_in_float64: bool = False,
) -> Workload:
    """A model at its (seeded) initialisation on seeded Gaussian inputs and uniform labels
    (``workloads.build_synthetic``, shared with ``peers.py``)."""
    model, x, y = build_synthetic(name, seed, quick)

    def build(hvp_mode: str, dtype: torch.dtype) -> Objective:
        batches = tensor_batches((x, y), 256, None, name)
        return Objective(
            model, _cross_entropy, batches, device=device, dtype=dtype, hvp_mode=hvp_mode
        )

    return Workload(name, description, build, False, x.shape[0], block_size, slow_in_float64)


def workloads(quick: bool, seed: int, device: str) -> list[Workload]:
    """The four workloads; ``--quick`` shrinks the data of the two large ones."""
    n_cnn = SYNTHETIC["cnn3-cifar"].quick_samples if quick else SYNTHETIC["cnn3-cifar"].samples
    n_mlp = SYNTHETIC["mlp-784"].quick_samples if quick else SYNTHETIC["mlp-784"].samples
    return [
        sample_workload("mlp", device),
        sample_workload("cnn", device, exact=not quick),  # dense float64 CNN Hessian: ~35 s
        _synthetic_workload(
            "cnn3-cifar",
            f"3-conv ReLU CNN, 94 538 params, {n_cnn} random 3x32x32 inputs, 10 classes, at init",
            quick,
            seed,
            device,
            block_size=4,
            slow_in_float64=True,
        ),
        _synthetic_workload(
            "mlp-784",
            f"784-128-64-10 ReLU MLP, 109 386 params, {n_mlp} random inputs, 10 classes, at init",
            quick,
            seed,
            device,
        ),
    ]


# ---------------------------------------------------------------------------------- mechanisms
def gradient_fn(obj: Objective) -> Callable[[], torch.Tensor]:
    """One gradient of the mean loss over the same batches: forward + ``autograd.grad`` per batch."""

    def run() -> torch.Tensor:
        leaves = [p.detach().requires_grad_(True) for p in obj._params]
        total = [torch.zeros_like(p) for p in leaves]
        for _, batch, weight in obj._batches_on_device():
            loss = obj._call(leaves, batch)
            grads = torch.autograd.grad(loss * weight, leaves, allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc += g
        return obj.flatten(total)

    return run


def _batch_loss(obj: Objective, batch: Any) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    def loss(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return obj._call(list(params), batch)

    return loss


def forward_over_reverse(
    obj: Objective,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """``H v`` and ``H V`` by ``torch.func``: ``jvp(grad(L_b), (w,), (v,))`` summed over batches
    with weights ``n_b / N``; the block version maps the same function over columns with ``vmap``."""
    params = tuple(p.detach() for p in obj._params)
    batches = [(batch, weight) for _, batch, weight in obj._batches_on_device()]
    losses = [(_batch_loss(obj, batch), weight) for batch, weight in batches]
    numels = [p.numel() for p in params]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        tangents = tuple(obj.unflatten(v))
        total = torch.zeros_like(v)
        for loss, weight in losses:
            _, hv = jvp(grad(loss), (params,), (tangents,))
            total += weight * obj.flatten(hv)
        return total

    def hvp_block(V: torch.Tensor) -> torch.Tensor:
        k = V.shape[1]
        pieces = torch.split(V.mT, numels, dim=1)
        tangents = tuple(
            piece.reshape(k, *p.shape) for piece, p in zip(pieces, params, strict=True)
        )
        total = torch.zeros_like(V)
        for loss, weight in losses:

            def one(t: tuple[torch.Tensor, ...], loss=loss) -> tuple[torch.Tensor, ...]:
                return jvp(grad(loss), (params,), (t,))[1]

            hv = vmap(one)(tangents)
            total += weight * torch.cat([h.reshape(k, -1) for h in hv], dim=1).mT
        return total

    return hvp, hvp_block


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CpuMonitor:
    """CPU used by *other* processes during a measurement, in cores.

    Linux ``/proc/stat`` busy time of the whole machine (user, nice, system, irq, softirq, steal)
    minus this process's own CPU time (``os.times``), divided by the wall time. A value near 0
    means the timings had the machine to themselves; near 1 on a 2-core machine means another
    process took a whole core and the 2-thread figures are not trustworthy. ``nan`` off Linux.
    """

    def __init__(self) -> None:
        self.start = self._read()
        self.stop = self.start

    @staticmethod
    def _read() -> tuple[float, float, float]:
        wall = time.perf_counter()
        own = os.times()
        try:
            with open("/proc/stat") as handle:
                values = [int(x) for x in handle.readline().split()[1:9]]
            busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            busy = math.nan
        return wall, busy, own.user + own.system

    def finish(self) -> CpuMonitor:
        self.stop = self._read()
        return self

    @property
    def other_cores(self) -> float:
        wall = self.stop[0] - self.start[0]
        if wall <= 0:
            return math.nan
        other = (self.stop[1] - self.start[1]) - (self.stop[2] - self.start[2])
        return max(other, 0.0) / wall


def wait_for_idle(max_wait: float, threshold: float = 0.2) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` cores over
    one second; returns the seconds waited. Shared machines make timings meaningless otherwise."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        monitor = CpuMonitor()
        time.sleep(1.0)
        other = monitor.finish().other_cores
        if not other > threshold:  # also stops on nan (no /proc/stat)
            break
    return time.perf_counter() - start


def time_rounds(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    warmup: int,
    repeats: int,
    budget: float,
    min_rounds: int = 3,
) -> tuple[dict[str, float], int, float]:
    """Median seconds per function over interleaved rounds.

    ``warmup`` untimed rounds first (fewer if they take over ``budget / 4``); then ``repeats`` timed rounds, cut to what fits in ``budget``
    seconds (estimated from the last warm-up round) but never fewer than ``min_rounds``. Returns the
    medians, the number of timed rounds and the cores other processes used meanwhile.
    """
    per_round = 0.0
    warm_start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        for fn in fns.values():
            fn()
        _sync(device)
        per_round = time.perf_counter() - start
        if time.perf_counter() - warm_start > budget / 4:
            break  # one slow round is warm-up enough
    rounds = max(min_rounds, min(repeats, int(budget / max(per_round, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    monitor = CpuMonitor()
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
    other = monitor.finish().other_cores
    return {name: statistics.median(values) for name, values in samples.items()}, rounds, other


@dataclass
class HvpRow:
    workload: str
    threads: int
    num_parameters: int
    num_samples: int
    rounds: int
    other_cores: float
    gradient_ms: float
    hvp_ms: dict[str, float]
    graph_mb: float
    max_rel_diff: float  # between the three mechanisms' H v
    block_size: int = 0
    block_rounds: int = 0
    block_other_cores: float = math.nan
    block_gradient_ms: float = math.nan
    block: dict[str, float] = field(default_factory=dict)  # ms per column of H V


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float(torch.linalg.vector_norm(a64 - b64) / torch.linalg.vector_norm(b64))


def cached_batched_block(obj: Objective) -> Callable[[torch.Tensor], torch.Tensor]:
    """``H V`` through the retained graph in *one* backward call with
    ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward pass), as an
    alternative to :meth:`Objective.hvp_block`'s one backward per column."""
    grads, leaves = obj._graph_grads, obj._graph_leaves
    if grads is None or leaves is None:
        raise ValueError("cached_batched_block needs an objective in cached mode")
    live = [i for i, g in enumerate(grads) if g.requires_grad]

    def block(V: torch.Tensor) -> torch.Tensor:
        k = V.shape[1]
        pieces = torch.split(V.mT, obj._numels, dim=1)
        outputs = [
            piece.reshape(k, *shape)
            for piece, shape in zip(pieces, obj.parameter_shapes, strict=True)
        ]
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            leaves,
            grad_outputs=[outputs[i] for i in live],
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
        parts = [
            torch.zeros(k, p.numel(), dtype=V.dtype, device=V.device)
            if h is None
            else h.reshape(k, -1)
            for h, p in zip(hv, leaves, strict=True)
        ]
        return torch.cat(parts, dim=1).mT

    return block


BLOCK_MECHANISMS = ("cached", "cached-batched", "streaming", "fwd-over-rev")


def benchmark_hvp(work: Workload, threads: int, args: argparse.Namespace) -> HvpRow:
    """Part 1 for one workload at one thread count (see the module docstring)."""
    torch.set_num_threads(threads)
    cached = work.build("cached", torch.float32)
    streaming = work.build("streaming", torch.float32)
    device = cached.device
    n = cached.num_parameters
    gen = torch.Generator().manual_seed(args.seed)
    v = torch.randn(n, generator=gen, dtype=torch.float64).to(device=device, dtype=cached.dtype)
    fwd_rev, fwd_rev_block = forward_over_reverse(cached)

    # The mechanisms must agree (float32 rounding only) before their times mean anything.
    results = {"cached": cached.hvp(v), "streaming": streaming.hvp(v), "fwd-over-rev": fwd_rev(v)}
    diff = max(_rel(results[m], results["cached"]) for m in MECHANISMS[1:])
    diff_grad = _rel(gradient_fn(cached)(), cached.gradient)
    if diff > 1e-4 or diff_grad > 1e-5:
        raise RuntimeError(
            f"{work.name}: mechanisms disagree (HVP {diff:.1e}, grad {diff_grad:.1e})"
        )

    fns: dict[str, Callable[[], Any]] = {
        "gradient": gradient_fn(cached),
        "cached": lambda: cached.hvp(v),
        "streaming": lambda: streaming.hvp(v),
        "fwd-over-rev": lambda: fwd_rev(v),
    }
    waited = wait_for_idle(args.max_wait) if args.wait else 0.0
    if waited > 1.5:
        log(f"  waited {waited:.0f} s for other processes to go idle")
    medians, rounds, other = time_rounds(fns, device, args.warmup, args.repeats, args.budget)
    row = HvpRow(
        workload=work.name,
        threads=threads,
        num_parameters=n,
        num_samples=work.num_samples,
        rounds=rounds,
        other_cores=other,
        gradient_ms=1e3 * medians["gradient"],
        hvp_ms={m: 1e3 * medians[m] for m in MECHANISMS},
        graph_mb=cached.graph_bytes / 2**20,
        max_rel_diff=diff,
    )
    want_block = args.block and (
        args.block_all or work.exact_reference or threads == max(args.threads)
    )
    if want_block:
        k = work.block_size
        V = torch.randn(n, k, generator=gen, dtype=torch.float64).to(device=device, dtype=v.dtype)
        batched = cached_batched_block(cached)
        ref = cached.hvp_block(V)
        for name, out in (("cached-batched", batched(V)), ("fwd-over-rev", fwd_rev_block(V))):
            if _rel(out, ref) > 1e-4:
                raise RuntimeError(f"{work.name}: {name} block HVP differs from hvp_block")
        bfns: dict[str, Callable[[], Any]] = {
            "gradient": gradient_fn(cached),
            "cached": lambda: cached.hvp_block(V),
            "cached-batched": lambda: batched(V),
            "streaming": lambda: streaming.hvp_block(V),
            "fwd-over-rev": lambda: fwd_rev_block(V),
        }
        bmed, brounds, bother = time_rounds(
            bfns, device, 1, args.repeats, args.budget, min_rounds=2
        )
        row.block_size = k
        row.block_rounds = brounds
        row.block_other_cores = bother
        row.block_gradient_ms = 1e3 * bmed["gradient"]
        row.block = {m: 1e3 * bmed[m] / k for m in BLOCK_MECHANISMS}
    return row


# ---------------------------------------------------------------------------------- Lanczos
class RecordingOperator:
    """Wraps an operator and records every ``(v, A v)`` pair of a run."""

    def __init__(self, A: Any) -> None:
        self.A = A
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        w = self.A @ v
        self.pairs.append((v.detach().clone(), w.detach().clone()))
        return w


class ReplayOperator:
    """Answers the ``j``-th product from a recorded run when the vector is bitwise the same.

    A deterministic Lanczos run from the same start vector repeats the first steps of a longer run
    exactly, so those HVPs need not be paid twice. Any mismatch falls back to the real operator.
    """

    def __init__(self, A: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.A, self.pairs = A, pairs
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device
        self.calls = 0
        self.replayed = 0

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        j = self.calls
        self.calls += 1
        if j < len(self.pairs) and self.replayed == j and torch.equal(self.pairs[j][0], v):
            self.replayed += 1
            return self.pairs[j][1].clone()
        return self.A @ v


@dataclass
class PowerResult:
    estimates: list[float]  # Rayleigh quotient v_k^T H v_k after k + 1 HVPs
    pyhessian_stop: int | None  # HVPs when PyHessian's rule (rel. change < 1e-3) fired


def power_iteration(
    A: Any,
    start: torch.Tensor,
    max_iter: int,
    reference: float,
    stop_rel_change: float = 1e-3,
    target: float = min(TOLERANCES),
) -> PowerResult:
    """Plain power iteration as in PyHessian (``hessian.eigenvalues``): ``v <- H v / ||H v||``,
    estimate ``v^T H v``; PyHessian stops when ``|new - old| / (|old| + 1e-6) < 1e-3``.

    Runs until that rule has fired and the estimate is within ``target`` of ``reference``, or
    ``max_iter`` HVPs. It converges to the eigenvalue of largest *modulus*, at the rate
    ``(lambda_2 / lambda_1)^(2k)`` for the Rayleigh quotient.
    """
    v = start.to(device=A.device, dtype=A.dtype)
    v = v / torch.linalg.vector_norm(v)
    estimates: list[float] = []
    stop: int | None = None
    for k in range(max_iter):
        hv = A @ v
        value = float(torch.dot(hv, v))
        if estimates and stop is None:
            if abs(value - estimates[-1]) / (abs(estimates[-1]) + 1e-6) < stop_rel_change:
                stop = k + 1
        estimates.append(value)
        v = hv / torch.linalg.vector_norm(hv)
        if stop is not None and abs(value - reference) <= target * abs(reference):
            break
    return PowerResult(estimates, stop)


def _first_within(values: list[float], reference: float, tol: float) -> int | None:
    for j, value in enumerate(values, start=1):
        if abs(value - reference) <= tol * abs(reference):
            return j
    return None


@dataclass
class LanczosRow:
    workload: str
    num_parameters: int
    reference: float
    reference_kind: str
    bottom_note: str
    long_steps: int
    long_converged: bool
    lanczos_to: dict[float, int | None]
    default_matvecs: int
    default_error: float
    default_bound: float
    default_converged: bool
    replayed: int
    power_to: dict[float, int | None]
    power_cap: int
    pyhessian_hvps: int
    pyhessian_fired: bool
    pyhessian_error: float | None
    seconds: float


def benchmark_lanczos(work: Workload, args: argparse.Namespace) -> LanczosRow:
    """Part 2 for one workload (see the module docstring)."""
    t0 = time.perf_counter()
    obj = work.build("cached", torch.float64)
    H = HessianOperator(obj)
    n = obj.num_parameters
    recorder = RecordingOperator(H)
    long = lanczos(recorder, seed=args.seed, max_iter=args.long_iter, tol=1e-10, top_k=1)
    if work.exact_reference:
        eigenvalues = exact_spectrum(H).eigenvalues
        reference = float(eigenvalues[-1])
        kind = "exact lambda_max (dense Hessian, eigvalsh, float64)"
        bottom = f"lambda_min {float(eigenvalues[0]):.4g} (exact)"
        if abs(float(eigenvalues[0])) > abs(reference):
            bottom += "; |lambda_min| > lambda_max, so power iteration finds lambda_min"
    else:
        reference = float(long.top(1)[0])
        kind = f"top Ritz value of Lanczos run to tol=1e-10 ({long.steps} steps, float64)"
        bottom = f"smallest Ritz value {float(long.bottom(1)[0]):.4g} (not converged)"
    tops = [float(long.ritz_values_at(j)[-1]) for j in range(1, long.steps + 1)]
    lanczos_to = {tol: _first_within(tops, reference, tol) for tol in TOLERANCES}

    replay = ReplayOperator(H, recorder.pairs)
    default = lanczos(replay, seed=args.seed, tol=1e-4, top_k=1)
    theta = default.ritz_values
    scale = max(abs(float(theta[0])), abs(float(theta[-1])))
    default_error = abs(float(theta[-1]) - reference) / abs(reference)
    default_bound = float(default.error_bounds[-1]) / scale

    gen = torch.Generator().manual_seed(args.seed)
    start = torch.randn(n, generator=gen, dtype=torch.float64)  # lanczos's default start vector
    power = power_iteration(H, start, args.power_iter, reference)
    power_to = {tol: _first_within(power.estimates, reference, tol) for tol in TOLERANCES}
    # PyHessian stops at its rule or at maxIter=100, whichever comes first.
    stop = power.pyhessian_stop
    pyhessian_hvps = min(stop if stop is not None else PYHESSIAN_MAX_ITER, PYHESSIAN_MAX_ITER)
    pyhessian_error = None
    if pyhessian_hvps <= len(power.estimates):
        estimate = power.estimates[pyhessian_hvps - 1]
        pyhessian_error = abs(estimate - reference) / abs(reference)
    return LanczosRow(
        workload=work.name,
        num_parameters=n,
        reference=reference,
        reference_kind=kind,
        bottom_note=bottom,
        long_steps=long.steps,
        long_converged=long.converged,
        lanczos_to=lanczos_to,
        default_matvecs=default.matvecs,
        default_error=default_error,
        default_bound=default_bound,
        default_converged=default.converged,
        replayed=replay.replayed,
        power_to=power_to,
        power_cap=len(power.estimates),
        pyhessian_hvps=pyhessian_hvps,
        pyhessian_fired=stop is not None and stop <= PYHESSIAN_MAX_ITER,
        pyhessian_error=pyhessian_error,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------- reporting
def machine_summary(args: argparse.Namespace) -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return [
        f"- CPU: {cpu}; nproc = {os.cpu_count()}; device = {args.device}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- threads: {', '.join(str(t) for t in args.threads)} for the HVP timings "
        f"(torch.set_num_threads); {max(args.threads)} for the Lanczos part",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- timing: median of up to {args.repeats} interleaved rounds after {args.warmup} "
        f"warm-up round(s), cut to ~{args.budget:.0f} s per workload and thread count (at least "
        "3 rounds; 2 for blocks)",
    ]


def _fmt_count(value: int | None, cap: int) -> str:
    return f">{cap}" if value is None else str(value)


def hvp_tables(rows: list[HvpRow]) -> list[str]:
    out = [
        "HVP cost (float32): median ms per product, (ratio to the median gradient of the same "
        "rounds). 'other' = CPU cores used by other processes meanwhile (0 = quiet machine).",
        "",
        "| workload | params | samples | threads | rounds | other | gradient ms "
        "| cached ms (x) | streaming ms (x) | fwd-over-rev ms (x) | graph MB | max rel diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [f"{r.hvp_ms[m]:.2f} ({r.hvp_ms[m] / r.gradient_ms:.2f}x)" for m in MECHANISMS]
        out.append(
            f"| {r.workload} | {r.num_parameters} | {r.num_samples} | {r.threads} | {r.rounds} "
            f"| {r.other_cores:.2f} | {r.gradient_ms:.2f} | {' | '.join(cells)} "
            f"| {r.graph_mb:.1f} | {r.max_rel_diff:.1e} |"
        )
    block_rows = [r for r in rows if r.block]
    if block_rows:
        out += [
            "",
            "Block H V of k columns: median ms per column, (ratio to one gradient timed in the "
            "same rounds)",
            "",
            "| workload | threads | k | rounds | other | gradient ms | cached hvp_block (x) "
            "| cached is_grads_batched (x) | streaming hvp_block (x) | vmap fwd-over-rev (x) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in block_rows:
            g = r.block_gradient_ms
            cells = [f"{r.block[m]:.2f} ({r.block[m] / g:.2f}x)" for m in BLOCK_MECHANISMS]
            out.append(
                f"| {r.workload} | {r.threads} | {r.block_size} | {r.block_rounds} "
                f"| {r.block_other_cores:.2f} | {g:.2f} | {' | '.join(cells)} |"
            )
    return out


def ratio_summary(rows: list[HvpRow]) -> list[str]:
    """Per thread count, the geometric mean over workloads of each mechanism's ratio."""
    out = ["", "Geometric mean over the workloads of HVP time / gradient time:", ""]
    for threads in sorted({r.threads for r in rows}):
        sub = [r for r in rows if r.threads == threads]
        parts = []
        for m in MECHANISMS:
            logs = [math.log(r.hvp_ms[m] / r.gradient_ms) for r in sub]
            parts.append(f"{m} {math.exp(sum(logs) / len(logs)):.2f}x")
        out.append(f"- {threads} thread(s): " + ", ".join(parts))
    return out


def lanczos_tables(rows: list[LanczosRow]) -> list[str]:
    out = [
        "HVPs for lambda_max (float64, cached HVP; Lanczos and power iteration start from the "
        "same seed-0 Gaussian vector). 'to 1e-3' = first step whose estimate has relative error "
        "<= 1e-3 against the reference.",
        "",
        "| workload | params | lambda_max (reference) | Lanczos to 1e-3 | Lanczos to 1e-4 "
        "| default tol=1e-4: HVPs | its rel. error | its error estimate "
        "| power to 1e-3 | power to 1e-4 | PyHessian rule: HVPs | its rel. error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ph = f"{r.pyhessian_hvps}{'' if r.pyhessian_fired else ' (maxIter)'}"
        ph_err = "-" if r.pyhessian_error is None else f"{r.pyhessian_error:.1e}"
        default = f"{r.default_matvecs}{'' if r.default_converged else ' (not converged)'}"
        out.append(
            f"| {r.workload} | {r.num_parameters} | {r.reference:.6g} "
            f"| {_fmt_count(r.lanczos_to[1e-3], r.long_steps)} "
            f"| {_fmt_count(r.lanczos_to[1e-4], r.long_steps)} "
            f"| {default} | {r.default_error:.1e} | {r.default_bound:.1e} "
            f"| {_fmt_count(r.power_to[1e-3], r.power_cap)} "
            f"| {_fmt_count(r.power_to[1e-4], r.power_cap)} | {ph} | {ph_err} |"
        )
    out += ["", "Reference and bookkeeping:", ""]
    for r in rows:
        out.append(
            f"- {r.workload}: reference = {r.reference_kind}; {r.bottom_note}; "
            f"long run {r.long_steps} steps (converged={r.long_converged}); the default run "
            f"replayed {r.replayed} of its HVPs from the long run; power iteration ran "
            f"{r.power_cap} HVPs; {r.seconds:.1f} s"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HVP cost and Lanczos convergence benchmarks (see BENCHMARKS.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds (default 2)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds of timed rounds per workload/threads"
    )
    parser.add_argument("--no-block", dest="block", action="store_false", help="skip H V blocks")
    parser.add_argument(
        "--block-all", action="store_true", help="block table for every workload and thread count"
    )
    parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not wait for other processes to go idle before timing",
    )
    parser.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for idle")
    parser.add_argument("--part", choices=("all", "hvp", "lanczos"), default="all")
    parser.add_argument("--only", default=None, help="comma-separated workload names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.budget is None:
        args.budget = 1.0 if args.quick else 15.0
    if args.quick:
        args.max_wait = min(args.max_wait, 3.0)
    args.long_iter = 60 if args.quick else 150
    args.power_iter = 100 if args.quick else 300
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    works = workloads(args.quick, args.seed, args.device)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        works = [w for w in works if w.name in wanted]
    command = " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"Command: {command}", "", "Machine:", "", *machine_summary(args), ""]
    if args.part in ("all", "hvp"):
        hvp_rows = []
        for threads in args.threads:
            for work in works:
                log(f"[hvp] {work.name} threads={threads}")
                hvp_rows.append(benchmark_hvp(work, threads, args))
        lines += [*hvp_tables(hvp_rows), *ratio_summary(hvp_rows), ""]
    if args.part in ("all", "lanczos"):
        torch.set_num_threads(max(args.threads))
        lanczos_rows = []
        skipped = [w.name for w in works if args.quick and w.slow_in_float64]
        for work in works:
            if work.name in skipped:
                continue
            log(f"[lanczos] {work.name}")
            if args.wait:
                wait_for_idle(args.max_wait)  # counts do not depend on load, the run time does
            lanczos_rows.append(benchmark_lanczos(work, args))
        lines += [*lanczos_tables(lanczos_rows), ""]
        if skipped:
            lines += [f"(--quick: Lanczos part skipped for {', '.join(skipped)})", ""]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    lines.append(
        f"Total wall time {time.perf_counter() - started:.0f} s; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
