"""Scaling of the gradient and HVP cost and of peak memory with model and data size (not a test).

Run from the repository root::

    python benchmarks/scaling.py            # full run, ~5 minutes (+ up to 10 s per configuration waiting for idle)
    python benchmarks/scaling.py --quick    # smoke run, under 2 minutes (3 smaller sizes per sweep)

Two model families, each swept twice:

* ``mlp``: the bundled tanh MLP shape (:func:`landscape_cli.sample_models.mlp.build`), 64 -> h -> h -> 10, on
  seeded Gaussian inputs with uniform labels (``benchmarks/run.py``'s synthetic workload, batches
  of 256), parameters ~10k -> 1M by the width ``h``;
* ``transformer``: the bundled transformer sample (:mod:`landscape_cli.sample_models.transformer`) scaled in
  width: ``d_model`` with 2 layers and 4 heads for the parameter sweep, the bundled 2252-parameter
  sample itself for the sample sweep, on :func:`landscape_cli.sample_models.data.tokens` sequences of 12 tokens
  (a *sample* is one sequence, 12 next-token predictions), batches of 256 sequences.

*Parameter sweep*: 5 log-spaced sizes at fixed samples; *sample sweep*: 512 -> 51 200 samples at
a fixed model. Each configuration runs in a fresh subprocess (so peak memory is its own), float32,
``--threads`` intra-op threads (default 1, for stable numbers on a shared machine):

1. *streaming*: :class:`~landscape_cli.problem.objective.Objective` with ``hvp_mode="streaming"`` (every
   HVP rebuilds each batch's gradient graph, Pearlmutter 1994); interleaved rounds of one
   gradient (``benchmarks/run.py``'s ``gradient_fn``: forward + ``autograd.grad`` per batch) and
   one HVP; the median of each.
2. *cached*: ``hvp_mode="auto"``, i.e. the cached ``create_graph=True`` graph unless it exceeds
   the memory budget (half the available memory), in which case the objective falls back to
   streaming and the table says so; the same timing.

Peak memory is the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``,
which counts torch's CPU allocations, unlike ``tracemalloc``), reset between the two phases by
writing ``5`` to ``/proc/self/clear_refs``; the tables give it above the baseline RSS of the
process after a warm-up on a tiny objective of the same family (torch imported, kernels loaded;
before the configuration's data and model exist), and the cached graph's size as
``Objective.graph_bytes`` (the bytes autograd saved, counted per saved tensor by a hook, so a
storage saved by several operations, or a broadcast mask, counts more than once: an upper bound).
Slopes are least-squares fits of ``log y = a + s log x`` (``numpy.polyfit``) over all sizes and
over the three largest (the asymptotic regime, where fixed per-operation overheads no longer
dominate): ``s = 1`` is linear scaling. Every row
reports the CPU *other* processes used meanwhile (``run.py``'s ``CpuMonitor``), in cores.

Timings belong in BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _status(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes (0 off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); ``False`` if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


BASELINE_RSS = _status("VmRSS")  # before torch: only the interpreter

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.run import (  # noqa: E402
    CpuMonitor,
    _cross_entropy,
    gradient_fn,
    log,
    machine_summary,
    time_rounds,
    wait_for_idle,
)
from landscape_cli.problem.data import tensor_batches  # noqa: E402
from landscape_cli.problem.objective import Objective  # noqa: E402

TORCH_RSS = _status("VmRSS")  # after importing torch and the library: the baseline of the tables

MLP_IN, MLP_CLASSES = 64, 10
TRANSFORMER_LAYERS, TRANSFORMER_HEADS = 2, 4
BATCH = 256


# ---------------------------------------------------------------------------------- workloads
def transformer_kwargs(d_model: int) -> dict[str, int]:
    """The width-scaled transformer; ``d_model=12`` is the bundled sample itself (1 layer, 2
    heads)."""
    if d_model == 12:
        return {"vocab": 8, "d_model": 12, "heads": 2, "layers": 1, "context": 12}
    return {
        "vocab": 8,
        "d_model": d_model,
        "heads": TRANSFORMER_HEADS,
        "layers": TRANSFORMER_LAYERS,
        "context": 12,
    }


def build_objective(spec: dict[str, Any], hvp_mode: str) -> Objective:
    """The objective of one configuration, float32 on CPU (seeded model and data)."""
    seed = spec["seed"]
    if spec["family"] == "mlp":
        from landscape_cli.sample_models import mlp

        from benchmarks.workloads import synthetic

        hidden = spec["size"]
        model, x, y = synthetic(
            lambda: mlp.build(MLP_IN, hidden, MLP_CLASSES),
            (spec["samples"], MLP_IN),
            MLP_CLASSES,
            seed,
        )
        return Objective(
            model,
            _cross_entropy,
            tensor_batches((x, y), BATCH, None, f"mlp-{hidden}"),
            device=spec["device"],
            dtype=torch.float32,
            hvp_mode=hvp_mode,
        )
    from landscape_cli.sample_models import data, transformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformer.build(**transformer_kwargs(spec["size"]))
    x, y = data.tokens(spec["samples"], seed=seed)
    batches = tensor_batches((x, y), BATCH, None, "tokens")
    return Objective(
        model,
        transformer.next_token_loss,
        batches,
        device=spec["device"],
        dtype=torch.float32,
        hvp_mode=hvp_mode,
    )


# ---------------------------------------------------------------------------------- worker
def _phase(spec: dict[str, Any], hvp_mode: str) -> dict[str, Any]:
    """Build the objective in ``hvp_mode`` and time gradient and HVP; peak RSS of the phase."""
    reset = _reset_peak()
    obj = build_objective(spec, hvp_mode)
    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    v = torch.randn(obj.num_parameters, generator=gen, dtype=torch.float64).to(torch.float32)
    fns = {"gradient": gradient_fn(obj), "hvp": functools.partial(obj.hvp, v)}
    medians, rounds, other = time_rounds(
        fns, obj.device, spec["warmup"], spec["repeats"], spec["budget"], spec["min_rounds"]
    )
    out = {
        "mode": obj.hvp_mode,
        "graph_bytes": int(obj.graph_bytes),
        "gradient_s": medians["gradient"],
        "hvp_s": medians["hvp"],
        "rounds": rounds,
        "other_cores": other,
        "peak_rss": _status("VmHWM"),
        "peak_reset": reset,
        "num_parameters": obj.num_parameters,
    }
    del obj, fns
    gc.collect()
    return out


def _warm_up(spec: dict[str, Any]) -> int:
    """Run a tiny objective of the same family in both modes (loads kernels, allocator pools),
    then return the resident set: the baseline the peaks are measured above."""
    small = dict(spec, size=12 if spec["family"] == "transformer" else 8, samples=16)
    for mode in ("streaming", "cached"):
        obj = build_objective(small, mode)
        obj.hvp(torch.ones(obj.num_parameters))
        gradient_fn(obj)()
        del obj
    gc.collect()
    return _status("VmRSS")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration: the streaming phase, then the cached (auto) phase."""
    torch.set_num_threads(spec["threads"])
    warm_rss = _warm_up(spec)
    streaming = _phase(spec, "streaming")
    cached = _phase(spec, "auto")
    return {
        "spec": spec,
        "baseline_rss": warm_rss,
        "torch_rss": TORCH_RSS,
        "interpreter_rss": BASELINE_RSS,
        "num_parameters": cached["num_parameters"],
        "streaming": streaming,
        "cached": cached,
    }


# ---------------------------------------------------------------------------------- driver
@dataclass
class Sweep:
    family: str
    axis: str  # "params" or "samples"
    sizes: list[int]  # MLP width or transformer d_model
    samples: list[int]


def sweeps(quick: bool) -> list[Sweep]:
    """The four sweeps; ``--quick`` runs 3 smaller sizes of each."""
    if quick:
        return [
            Sweep("mlp", "params", [70, 260, 970], [512]),
            Sweep("transformer", "params", [20, 64, 208], [64]),
            Sweep("mlp", "samples", [135], [512, 2048, 8192]),
            Sweep("transformer", "samples", [12], [512, 2048, 8192]),
        ]
    return [
        Sweep("mlp", "params", [70, 135, 260, 500, 970], [2048]),
        Sweep("transformer", "params", [20, 36, 64, 116, 208], [256]),
        Sweep("mlp", "samples", [135], [512, 1600, 5120, 16000, 51200]),
        Sweep("transformer", "samples", [12], [512, 1600, 5120, 16000, 51200]),
    ]


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh ``python benchmarks/scaling.py --worker`` process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed for {spec}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (nan with < 2 positive points)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a > 0 and b > 0]
    if len(pairs) < 2:
        return math.nan
    xs, ys = zip(*pairs, strict=True)
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _mb(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _model_name(family: str, size: int) -> str:
    if family == "mlp":
        return f"MLP 64-{size}-{size}-10"
    kwargs = transformer_kwargs(size)
    return f"transformer d={size}, {kwargs['layers']} layer(s)"


def table(sweep: Sweep, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table of one sweep, then its fitted slopes."""
    lines = [
        "| model | params | samples | gradient ms | cached HVP ms (mode) | streaming HVP ms | "
        "cached / grad | streaming / grad | graph MB | peak MB cached | peak MB streaming | "
        "other |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        c, s, spec = r["cached"], r["streaming"], r["spec"]
        grad = s["gradient_s"]
        mode = "" if c["mode"] == "cached" else f" ({c['mode']}: graph over budget)"
        lines.append(
            f"| {_model_name(spec['family'], spec['size'])} | {r['num_parameters']:,} | "
            f"{spec['samples']:,} | {1e3 * grad:.1f} | {1e3 * c['hvp_s']:.1f}{mode} | "
            f"{1e3 * s['hvp_s']:.1f} | {c['hvp_s'] / c['gradient_s']:.2f} | "
            f"{s['hvp_s'] / grad:.2f} | {_mb(c['graph_bytes'])} | "
            f"{_mb(c['peak_rss'] - r['baseline_rss'])} | {_mb(s['peak_rss'] - r['baseline_rss'])} | "
            f"{max(c['other_cores'], s['other_cores']):.2f} |"
        )
    x = [r["num_parameters"] if sweep.axis == "params" else r["spec"]["samples"] for r in rows]
    series = {
        "gradient": [r["streaming"]["gradient_s"] for r in rows],
        "cached HVP": [r["cached"]["hvp_s"] for r in rows],
        "streaming HVP": [r["streaming"]["hvp_s"] for r in rows],
        "graph bytes": [r["cached"]["graph_bytes"] for r in rows],
        "peak cached": [r["cached"]["peak_rss"] - r["baseline_rss"] for r in rows],
        "peak streaming": [r["streaming"]["peak_rss"] - r["baseline_rss"] for r in rows],
    }
    axis = "parameters" if sweep.axis == "params" else "samples"
    lines += [
        "",
        f"Slopes of log(y) against log({axis}), all sizes / three largest:",
        "",
        "| " + " | ".join(series) + " |",
        "|" + "--:|" * len(series),
        "| "
        + " | ".join(f"{slope(x, y):.2f} / {slope(x[-3:], y[-3:]):.2f}" for y in series.values())
        + " |",
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scaling of gradient/HVP cost and peak memory (see BENCHMARKS.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 2 minutes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per phase")
    parser.add_argument("--max-wait", type=float, default=10.0, help="seconds to wait for idle")
    parser.add_argument(
        "--only", default=None, help="comma-separated sweeps, e.g. mlp-params,transformer-samples"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.budget is None:
        args.budget = 1.0 if args.quick else 8.0
    if args.quick:
        args.max_wait = min(args.max_wait, 2.0)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    started = time.perf_counter()
    command = " ".join(
        ["python", "benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)]
    )
    threads = args.threads
    args.threads, args.warmup = [threads], 1  # machine_summary's conventions; its CPU lines only
    load = os.getloadavg()
    lines = [
        f"Command: {command}",
        "",
        "Machine:",
        "",
        *machine_summary(args)[:2],
        f"- threads: {threads} (torch.set_num_threads, OMP_NUM_THREADS); float32; batches of "
        f"{BATCH} (MLP rows or transformer sequences)",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- timing: median of up to {args.repeats} interleaved rounds (gradient, HVP) after one "
        f"warm-up round, cut to ~{args.budget:.0f} s per phase (at least "
        f"{1 if args.quick else 3} round(s)); one fresh process per configuration",
        "",
    ]
    wanted = {w.strip() for w in args.only.split(",")} if args.only else None
    other_max = 0.0
    for sweep in sweeps(args.quick):
        if wanted and f"{sweep.family}-{sweep.axis}" not in wanted:
            continue
        rows = []
        for size in sweep.sizes:
            for samples in sweep.samples:
                spec = {
                    "family": sweep.family,
                    "size": size,
                    "samples": samples,
                    "threads": threads,
                    "device": args.device,
                    "seed": args.seed,
                    "warmup": 1,
                    "repeats": args.repeats,
                    "budget": args.budget,
                    "min_rounds": 1 if args.quick else 3,
                }
                waited = wait_for_idle(args.max_wait)
                log(
                    f"[{sweep.family}-{sweep.axis}] size={size} samples={samples} "
                    f"(waited {waited:.0f} s for idle)"
                )
                monitor = CpuMonitor()
                rows.append(run_config(spec))
                log(f"    {monitor.finish().other_cores:.2f} other cores, {rows[-1]['cached']}")
                other_max = max(
                    other_max,
                    rows[-1]["cached"]["other_cores"],
                    rows[-1]["streaming"]["other_cores"],
                )
        what = "parameters at fixed samples" if sweep.axis == "params" else "samples at fixed model"
        lines += [f"### {sweep.family}: {what}", "", *table(sweep, rows), ""]
    busy = other_max > 0.3
    lines.append(
        f"Largest `other` CPU during a timing: {other_max:.2f} cores"
        + (" — the machine was BUSY: timings are inflated and noisy." if busy else ".")
    )
    lines.append(f"Total time: {time.perf_counter() - started:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
