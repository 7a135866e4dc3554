"""landscape against its peers on the same checkpoints and data, in one run (not a test).

Run from the repository root, in an environment with the optional ``bench`` extra::

    python benchmarks/peers.py            # full run (see BENCHMARKS.md, section "Peers")
    python benchmarks/peers.py --quick    # smoke run, ~10 minutes (smaller data, fewer seeds)

Peers (each optional; a missing one makes its rows say "not installed"): PyHessian 0.1
(Yao et al. 2020), hessian-eigenthings 1.0.0a5 and curvlinops 3 (Dangel et al.). Workloads:
``mlp-784`` (W2) and ``cnn3-cifar`` (W3) from ``workloads.py``, and the bundled ``sample:mlp``
(1 476 parameters) for the spectral density, whose exact spectrum is the dense float64 Hessian.
Every checkpoint and data set is written once to a temporary directory and every tool reads the
same files.

Every measurement runs in its own child process (``python benchmarks/peers.py --worker JSON``),
so one crashing peer costs only its own row (the error is recorded), and the child's peak resident
memory (``os.wait4`` rusage, whole process including ``import torch``) and its extra memory above
the loaded model and data (``VmHWM`` after the task minus ``VmRSS`` before it, Linux) are its own.

What is measured (float32 unless stated; tools at their defaults unless stated):

* **HVP cost**: median time of one HVP over one gradient (forward + ``autograd.grad`` over the
  same 256-sample batches), interleaved rounds in one process.
* **lambda_max**: relative error against a float64 Lanczos run to ``tol=1e-10``; HVPs and seconds
  (setup + solve) of the default call, and of the best-tuned setting: for the iterative methods
  whose every step is an estimate (landscape Lanczos, PyHessian power iteration,
  hessian-eigenthings Lanczos) the first step within 1e-3 / 1e-4 (an oracle stop, a lower bound for
  any tolerance setting); for curvlinops (``scipy.sparse.linalg.eigsh`` on its operator) the
  cheapest of a sweep over ``ncv`` and ``tol``.
* **top-5**: the same for the five largest eigenvalues (max relative error over the five).
* **trace**: relative error against the exact trace at 99 HVPs over several seeds; the exact
  trace of a network that is piecewise linear in each single weight (ReLU, max-pool, average-pool,
  linear layers) is the trace of its Gauss-Newton matrix, ``(1/N) sum_n tr(J_n^T Lambda_n J_n)``
  with ``Lambda_n = diag(p_n) - p_n p_n^T`` for softmax cross-entropy, because the model's own
  second derivative has a zero diagonal; computed in float64 from per-sample Jacobians.
* **density**: stochastic Lanczos quadrature on ``sample:mlp``; Wasserstein-1 distance between
  the estimate and the exact spectrum (of the quadrature measure, and of the broadened density a
  tool returns).
* **whole process** (W3): ``landscape spectrum`` (defaults) as a subprocess against a PyHessian
  script doing top-5 (its defaults, ``tol=1e-3``), a 100-probe trace and a 100-step density.

HVP counting: landscape through a counting wrapper around its operator (columns of ``A @ V``);
PyHessian by replacing ``pyhessian.hessian.hessian_vector_product`` (one call = one HVP over the
full batch); hessian-eigenthings by wrapping ``operator.matvec``; curvlinops by wrapping the
operator's ``_matmat`` and counting columns. PyHessian 0.1's ``density()`` calls ``torch.eig``,
removed from torch; this script patches in an equivalent (``torch.linalg.eigh`` of the symmetric
tridiagonal matrix, eigenvalues with a zero imaginary column).

Timings belong in BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from landscape_cli.operators.hessian import HessianOperator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

PEERS = {
    "pyhessian": "pyhessian",
    "eigenthings": "hessian-eigenthings",
    "curvlinops": "curvlinops-for-pytorch",
}
TOOLS = ("landscape", *PEERS)
TOLERANCES = (1e-3, 1e-4)
BATCH = 256


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def installed(tool: str) -> str | None:
    """The installed version of ``tool`` (a key of :data:`TOOLS`), or ``None``."""
    dist = "landscape-cli" if tool == "landscape" else PEERS[tool]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        if tool == "landscape":
            return "source"
        return None


# =================================================================================== worker side
class Done(Exception):
    """Raised by a counting wrapper to end an oracle run once the target accuracy is reached."""


class Recorder:
    """HVP count, the time after each HVP and (optionally) an estimate per HVP."""

    def __init__(self) -> None:
        self.count = 0
        self.times: list[float] = []
        self.estimates: list[float] = []
        self.t0 = time.perf_counter()
        self.stop_when: Callable[[float], bool] | None = None

    def reset(self) -> None:
        self.count = 0
        self.times, self.estimates = [], []
        self.t0 = time.perf_counter()

    def add(self, columns: int = 1, estimate: float | None = None) -> None:
        self.count += columns
        self.times.append(time.perf_counter() - self.t0)
        if estimate is not None:
            self.estimates.append(estimate)
            if self.stop_when is not None and self.stop_when(estimate):
                raise Done


def _status_kb(field: str) -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return math.nan


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def load_workload(w: dict[str, Any], dtype: Any) -> tuple[Any, Any, Any]:
    """``(model, x, y)`` from the files the parent wrote (eval mode, ``dtype``)."""
    import torch

    from landscape_cli.problem.loading import apply_state_dict, load_checkpoint
    from landscape_cli.problem.model_sources import build_model

    model = build_model(w["model"], w.get("model_kwargs"))
    apply_state_dict(model, load_checkpoint(w["checkpoint"]).state_dict, w["checkpoint"])
    model = model.to(dtype).eval()
    data = torch.load(w["data"], weights_only=True)
    x = data["x"].to(dtype) if data["x"].is_floating_point() else data["x"]
    return model, x, data["y"]


def landscape_objective(w: dict[str, Any], dtype_name: str = "float32", **extra: Any) -> Any:
    """The objective exactly as the CLI builds it (``resolve_run_config`` + ``build_objective``)."""
    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.problem.loading import build_objective

    flags = {
        "checkpoint": w["checkpoint"],
        "model": w["model"],
        "data": w["data"],
        "dtype": dtype_name,
        "device": "cpu",
        **extra,
    }
    config = resolve_run_config(flags)
    if w.get("model_kwargs"):
        config = type(config)(**{**config.__dict__, "model_kwargs": w["model_kwargs"]})
    return build_objective(config)


class CountingOperator:
    """``A @ v`` / ``A @ V`` through ``A``, counting columns in a :class:`Recorder`."""

    def __init__(self, A: Any, rec: Recorder) -> None:
        self.A, self.rec = A, rec
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device

    def __matmul__(self, v: Any) -> Any:
        out = self.A @ v
        self.rec.add(1 if v.ndim == 1 else int(v.shape[1]))
        return out


def _batches(x: Any, y: Any) -> list[tuple[Any, Any]]:
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True))


def patch_torch_eig() -> None:
    """PyHessian 0.1's ``density()`` calls ``torch.eig(T, eigenvectors=True)``, removed in torch
    1.13. Equivalent for its symmetric tridiagonal ``T``: ``torch.linalg.eigh``, eigenvalues as an
    ``(n, 2)`` (real, imaginary = 0) tensor and eigenvectors as columns."""
    import torch

    def eig(T: Any, eigenvectors: bool = False) -> tuple[Any, Any]:
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], dim=1), V

    torch.eig = eig  # type: ignore[attr-defined]


IMPORTS = {
    "landscape": [
        f"landscape_cli.{m}"
        for m in (
            "problem.loading",
            "problem.objective",
            "problem.seeding",
            "estimators.lanczos",
            "estimators.trace",
            "estimators.density",
            "io.config",
        )
    ],
    "pyhessian": ["pyhessian.hessian"],
    "eigenthings": ["hessian_eigenthings", "hessian_eigenthings.algorithms.lanczos"],
    "curvlinops": ["curvlinops", "scipy.sparse.linalg"],
}


class Tool:
    """One tool's operator, built from the workload files, with counted HVPs.

    ``setup_s``: loading + building the operator (PyHessian: the ``create_graph`` backward;
    curvlinops: its determinism check; landscape: the cached gradient graph)."""

    def __init__(self, name: str, w: dict[str, Any], rec: Recorder) -> None:
        import torch
        import torch.nn.functional as F

        self.name, self.rec = name, rec
        for module in IMPORTS[
            name
        ]:  # imports are not setup: only the whole-process rows count them
            importlib.import_module(module)
        t0 = time.perf_counter()
        if name == "landscape":
            self.obj = landscape_objective(w)
            self.op = CountingOperator(HessianOperator(self.obj), rec)
            self.n = self.obj.num_parameters
        else:
            model, x, y = load_workload(w, torch.float32)
            self.model, self.x, self.y = model, x, y
            self.n = sum(p.numel() for p in model.parameters())
        if name == "pyhessian":
            ph = importlib.import_module("pyhessian.hessian")  # the package shadows the name
            original = ph.hessian_vector_product

            def counted(gradsH: Any, params: Any, v: Any) -> Any:
                hv = original(gradsH, params, v)
                norm2 = sum(float((a * a).sum()) for a in v)
                rq = sum(float((a * b).sum()) for a, b in zip(hv, v, strict=True)) / norm2
                rec.add(1, rq)
                return hv

            ph.hessian_vector_product = counted
            self.uncounted_hvp = original  # for the cost table: no bookkeeping in the timing
            self.hess = ph.hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        elif name == "eigenthings":
            import hessian_eigenthings as he

            op = he.HessianOperator(model, _batches(x, y), he.supervised_loss(F.cross_entropy))
            original_mv = op.matvec

            def matvec(v: Any) -> Any:
                out = original_mv(v)
                rec.add(1)
                return out

            op.matvec = matvec  # type: ignore[method-assign]
            self.op = op
        elif name == "curvlinops":
            from curvlinops import HessianLinearOperator

            params = [p for p in model.parameters() if p.requires_grad]
            H = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, _batches(x, y))
            original_mm = H._matmat

            def matmat(M: list[Any]) -> list[Any]:
                out = original_mm(M)
                rec.add(int(M[0].shape[-1]))
                return out

            H._matmat = matmat  # type: ignore[method-assign]
            self.op = H
        self.setup_s = time.perf_counter() - t0
        self.setup_hvps = rec.count
        rec.reset()


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _first_within(values: list[float], reference: float, tol: float) -> int | None:
    for j, value in enumerate(values, start=1):
        if _rel(value, reference) <= tol:
            return j
    return None


def _top_err(values: Any, reference: list[float]) -> float:
    vals = sorted((float(v) for v in values), reverse=True)[: len(reference)]
    if len(vals) < len(reference):
        return math.inf
    return max(_rel(a, b) for a, b in zip(vals, reference, strict=True))


def _oracle(rec_times: list[float], firsts: dict[float, int | None], setup: float) -> dict:
    out: dict[str, Any] = {}
    for tol, j in firsts.items():
        out[f"hvps_{tol:g}"] = j
        out[f"s_{tol:g}"] = None if j is None else setup + rec_times[j - 1]
    return out


def task_reference(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """float64 references: top-5 by Lanczos to tol 1e-10 (another seed than any run), the exact
    trace (piecewise-linear networks, see the module docstring), or the dense spectrum."""
    import torch

    from landscape_cli.estimators.lanczos import lanczos

    obj = landscape_objective(w, "float64", hvp_mode="cached")
    H = HessianOperator(obj)
    out: dict[str, Any] = {"n": obj.num_parameters}
    if w.get("exact"):
        from landscape_cli.estimators.exact import exact_spectrum

        eig = exact_spectrum(H).eigenvalues
        out["eigenvalues"] = [float(e) for e in eig]
        out["top5"] = [float(e) for e in eig[::-1][:5]]
        out["trace"] = float(sum(eig))
        return out
    t0 = time.perf_counter()
    lz = lanczos(H, seed=987_654, tol=1e-10, top_k=5, max_iter=args["ref_max_iter"])
    out["top5"] = [float(v) for v in lz.top(5)]
    out["lanczos_steps"], out["lanczos_converged"] = lz.steps, bool(lz.converged)
    out["lanczos_s"] = time.perf_counter() - t0
    model, x, y = load_workload(w, torch.float64)
    t0 = time.perf_counter()
    out["trace"] = exact_trace_piecewise_linear(model, x, y)
    out["trace_s"] = time.perf_counter() - t0
    return out


def exact_trace_piecewise_linear(model: Any, x: Any, y: Any, chunk: int = 16) -> float:
    """``tr(H)`` of the mean softmax cross-entropy of a network that is linear in each single
    parameter between activation-pattern changes (Linear, Conv, ReLU, max/avg pooling).

    ``H = (1/N) sum_n [J_n^T Lambda_n J_n + sum_c (dl/df_c) d^2 f_c]``; the second term has a
    zero diagonal (``f`` restricted to one coordinate is piecewise linear), so
    ``tr(H) = (1/N) sum_n sum_c p_c ||J_{n,c}||^2 - ||sum_c p_c J_{n,c}||^2`` with ``p = softmax``
    (Schraudolph 2002's Gauss-Newton; the same identity makes BackPACK's exact diagonal GGN equal
    the Hessian diagonal for ReLU networks). ``y`` does not enter."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    del y
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def logits(p: dict[str, Any], xi: Any) -> Any:
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    total = 0.0
    for xb in x.split(chunk):
        jac = vmap(jacrev(logits), in_dims=(None, 0))(params, xb)
        J = torch.cat([j.reshape(xb.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)
        with torch.no_grad():
            p = torch.softmax(model(xb), dim=1)
        term1 = (p * (J * J).sum(dim=2)).sum()
        pj = torch.einsum("bc,bcp->bp", p, J)
        total += float(term1 - (pj * pj).sum())
    return total / x.shape[0]


def task_cost(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Median ms of one gradient and of one HVP of each installed tool, interleaved rounds."""
    import torch
    from run import gradient_fn, time_rounds

    rec = Recorder()
    fns: dict[str, Callable[[], Any]] = {}
    errors: dict[str, str] = {}
    land = Tool("landscape", w, rec)
    fns["gradient"] = gradient_fn(land.obj)
    n = land.n
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(n, generator=gen)
    fns["landscape"] = lambda: land.op @ v
    mechanisms = {"landscape": f"hvp_mode={land.obj.hvp_mode}"}
    for name in PEERS:
        if installed(name) is None:
            continue
        try:
            tool = Tool(name, w, rec)
        except Exception as exc:  # a broken peer must not end the run
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        if name == "pyhessian":
            vs = [
                t.reshape(p.shape)
                for t, p in zip(
                    v.split([p.numel() for p in tool.hess.params]), tool.hess.params, strict=True
                )
            ]

            def ph_hvp(tool: Tool = tool, vs: list[Any] = vs) -> Any:
                return tool.uncounted_hvp(tool.hess.gradsH, tool.hess.params, vs)

            fns[name] = ph_hvp
            mechanisms[name] = "one create_graph backward over the full batch, reused"
        elif name == "eigenthings":
            fns[name] = lambda tool=tool: tool.op.matvec(v)
            mechanisms[name] = "fresh double backward per batch"
        else:
            fns[name] = lambda tool=tool: tool.op @ v
            mechanisms[name] = "vmap(jvp(jacrev)) per batch"
    medians, rounds, _ = time_rounds(
        fns, torch.device("cpu"), args["warmup"], args["repeats"], args["budget"]
    )
    return {
        "ms": {k: 1e3 * s for k, s in medians.items()},
        "rounds": rounds,
        "mechanisms": mechanisms,
        "errors": errors,
        "n": n,
    }


def task_lmax(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """lambda_max: the default call, then the best-tuned setting (see the module docstring)."""
    import torch

    tool_name, ref = args["tool"], args["lmax_ref"]
    rec = Recorder()
    tool = Tool(tool_name, w, rec)
    out: dict[str, Any] = {"setup_s": tool.setup_s, "setup_hvps": tool.setup_hvps}
    if tool_name == "landscape":
        from landscape_cli.estimators.lanczos import DEFAULT_MIN_ITER, lanczos
        from landscape_cli.problem.seeding import derive_seed

        res = lanczos(tool.op, seed=derive_seed(0, "lanczos"), top_k=1)
        out.update(default_setting=f"lanczos(top_k=1), tol=1e-4, min_iter={DEFAULT_MIN_ITER}")
        out.update(hvps=rec.count, s=tool.setup_s + rec.times[-1])
        out["value"] = float(res.top(1)[0])
        tops = [float(res.ritz_values_at(j)[-1]) for j in range(1, res.steps + 1)]
        firsts = {t: _first_within(tops, ref, t) for t in TOLERANCES}
        if firsts[min(TOLERANCES)] is None:  # default stopped short of 1e-4: look further
            rec.reset()
            longer = lanczos(tool.op, seed=derive_seed(0, "lanczos"), top_k=1, tol=1e-9)
            tops = [float(longer.ritz_values_at(j)[-1]) for j in range(1, longer.steps + 1)]
            firsts = {t: _first_within(tops, ref, t) for t in TOLERANCES}
        out.update(_oracle(rec.times, firsts, tool.setup_s))
        out["tuned_setting"] = "oracle stop of the same Lanczos run"
    elif tool_name == "pyhessian":
        torch.manual_seed(0)
        values, _ = tool.hess.eigenvalues(top_n=1)
        out.update(default_setting="eigenvalues(maxIter=100, tol=1e-3)")
        out.update(hvps=rec.count, s=tool.setup_s + rec.times[-1], value=float(values[0]))
        rec.reset()
        target = min(TOLERANCES)
        rec.stop_when = lambda est: _rel(est, ref) <= target
        torch.manual_seed(0)  # the same start vector: the default run is a prefix of this one
        with contextlib.suppress(Done):
            tool.hess.eigenvalues(maxIter=args["power_cap"], tol=0.0, top_n=1)
        firsts = {t: _first_within(rec.estimates, ref, t) for t in TOLERANCES}
        out.update(_oracle(rec.times, firsts, tool.setup_s))
        out["tuned_setting"] = f"oracle stop of power iteration (cap {args['power_cap']})"
    elif tool_name == "eigenthings":
        import hessian_eigenthings as he
        from hessian_eigenthings.algorithms.lanczos import lanczos_tridiagonal

        res = he.lanczos(tool.op, k=1, which="LA", seed=0)
        out.update(default_setting="lanczos(k=1, which='LA'): max_iter=2k=2")
        out.update(hvps=rec.count, s=tool.setup_s + rec.times[-1])
        out["value"] = float(res.eigenvalues[0])
        rec.reset()
        gen = torch.Generator(device="cpu").manual_seed(0)  # its lanczos's start vector
        v0 = torch.randn(tool.op.size, dtype=tool.op.dtype, generator=gen)
        td = lanczos_tridiagonal(tool.op, v0, args["lanczos_cap"], reorthogonalize=True)
        tops = []
        for j in range(1, td.iterations + 1):
            T = torch.diag(td.alphas[:j].double())
            if j > 1:
                off = td.betas[: j - 1].double()
                T = T + torch.diag(off, 1) + torch.diag(off, -1)
            tops.append(float(torch.linalg.eigvalsh(T)[-1]))
        firsts = {t: _first_within(tops, ref, t) for t in TOLERANCES}
        out.update(_oracle(rec.times, firsts, tool.setup_s))
        out["tuned_setting"] = f"lanczos(max_iter=m): the smallest m (cap {args['lanczos_cap']})"
        # its power iteration at defaults, for completeness
        rec.reset()
        pw = he.deflated_power_iteration(tool.op, k=1, seed=0)
        out["power"] = {
            "hvps": rec.count,
            "s": tool.setup_s + rec.times[-1],
            "value": float(pw.eigenvalues[0]),
        }
    else:
        from scipy.sparse.linalg import eigsh

        A = tool.op.to_scipy()
        vals = eigsh(A, k=1, which="LA", return_eigenvectors=False)
        out.update(default_setting="scipy eigsh(k=1, which='LA'): ncv=20, tol=0")
        out.update(hvps=rec.count, s=tool.setup_s + rec.times[-1], value=float(max(vals)))
        sweep = []
        for tol in (1e-2, 1e-3):
            for ncv in args["ncv_sweep"]:
                rec.reset()
                try:
                    vals = eigsh(A, k=1, which="LA", ncv=ncv, tol=tol, return_eigenvectors=False)
                except Exception as exc:  # ARPACK no convergence etc.
                    sweep.append({"ncv": ncv, "tol": tol, "error": str(exc)[:80]})
                    continue
                sweep.append(
                    {
                        "ncv": ncv,
                        "tol": tol,
                        "hvps": rec.count,
                        "s": tool.setup_s + rec.times[-1],
                        "err": _rel(float(max(vals)), ref),
                    }
                )
        out["sweep"] = sweep
        for t in TOLERANCES:
            ok = [r for r in sweep if "err" in r and r["err"] <= t]
            best = min(ok, key=lambda r: (r["hvps"], r["s"])) if ok else None
            out[f"hvps_{t:g}"] = None if best is None else best["hvps"]
            out[f"s_{t:g}"] = None if best is None else best["s"]
            out[f"setting_{t:g}"] = (
                None if best is None else f"ncv={best['ncv']}, tol={best['tol']:g}"
            )
        out["tuned_setting"] = f"eigsh sweep ncv in {args['ncv_sweep']}, tol in (1e-2, 1e-3)"
    out["err"] = _rel(out["value"], ref)
    return out


def task_top5(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Top-5 eigenvalues at each tool's defaults (landscape: the ``spectrum`` Lanczos run)."""
    import torch

    tool_name, ref = args["tool"], args["top5_ref"]
    rec = Recorder()
    tool = Tool(tool_name, w, rec)
    out: dict[str, Any] = {"setup_s": tool.setup_s, "setup_hvps": tool.setup_hvps}
    if tool_name == "landscape":
        from landscape_cli.analyses.spectrum import SpectrumSettings
        from landscape_cli.estimators.lanczos import lanczos
        from landscape_cli.problem.seeding import derive_seed

        s = SpectrumSettings()
        res = lanczos(
            tool.op,
            seed=derive_seed(0, "lanczos"),
            max_iter=s.max_iter,
            tol=s.tol,
            top_k=s.top_k,
            bottom_k=s.bottom_k,
        )
        values = res.top(5)
        out["setting"] = f"spectrum defaults: top_k={s.top_k}, bottom_k={s.bottom_k}, tol={s.tol:g}"
        errs = [
            _top_err(res.ritz_values_at(j)[-5:], ref) if j >= 5 else math.inf
            for j in range(1, res.steps + 1)
        ]
        first = next((j for j, e in enumerate(errs, 1) if e <= 1e-3), None)
        out["oracle_hvps_1e-3"] = first
    elif tool_name == "pyhessian":
        torch.manual_seed(0)
        values, _ = tool.hess.eigenvalues(top_n=5)
        out["setting"] = "eigenvalues(top_n=5, maxIter=100, tol=1e-3) (deflated power iteration)"
    elif tool_name == "eigenthings":
        import hessian_eigenthings as he

        values = he.lanczos(tool.op, k=5, which="LA", seed=0).eigenvalues.tolist()
        out["setting"] = "lanczos(k=5, which='LA'): max_iter=2k=10"
    else:
        from scipy.sparse.linalg import eigsh

        values = eigsh(tool.op.to_scipy(), k=5, which="LA", return_eigenvectors=False)
        out["setting"] = "scipy eigsh(k=5, which='LA'): ncv=20, tol=0"
    out.update(hvps=rec.count, s=tool.setup_s + (rec.times[-1] if rec.times else 0.0))
    out["values"] = sorted((float(v) for v in values), reverse=True)
    out["err"] = _top_err(values, ref)
    return out


def task_trace(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Trace at 99 HVPs for each seed: errors and seconds per estimate."""
    import numpy as np
    import torch

    tool_name, ref, m = args["tool"], args["trace_ref"], args["trace_matvecs"]
    rec = Recorder()
    tool = Tool(tool_name, w, rec)
    out: dict[str, Any] = {"setup_s": tool.setup_s, "setup_hvps": tool.setup_hvps}
    estimates, seconds, hvps = [], [], []
    for seed in args["seeds"]:
        rec.reset()
        t0 = time.perf_counter()
        if tool_name == "landscape" and args.get("landscape_trace") == "auto":
            from landscape_cli.analyses.curvature_trace import curvature_trace
            from landscape_cli.analyses.spectrum import SpectrumSettings
            from landscape_cli.problem.seeding import derive_seed

            defaults = SpectrumSettings()
            budget = defaults.trace_matvecs
            estimate, _, fallback = curvature_trace(
                tool.obj, tool.op, defaults, seed=derive_seed(seed, "trace")
            )
            est = estimate.estimate
            out["setting"] = f"spectrum's default (auto, {budget} HVPs): {estimate.method}" + (
                f" ({fallback})" if fallback else ""
            )
        elif tool_name == "landscape":
            from landscape_cli.estimators.trace import hutchpp_trace
            from landscape_cli.problem.seeding import derive_seed

            est = hutchpp_trace(tool.op, m, seed=derive_seed(seed, "trace")).estimate
            out["setting"] = f"hutchpp_trace({m}) (block_size 16)"
        elif tool_name == "pyhessian":
            torch.manual_seed(seed)
            # tol=-inf: its stopping test |mean - old| / (old + 1e-6) < tol is true for any tol >= 0
            # once the running mean is negative, which ends the run early (at tol=0 too)
            est = float(np.mean(tool.hess.trace(maxIter=m, tol=-math.inf)))
            out["setting"] = f"trace(maxIter={m}, tol=-inf): Hutchinson (its only estimator)"
        elif tool_name == "eigenthings":
            import hessian_eigenthings as he

            est = he.hutch_plus_plus(tool.op, num_matvecs=m, seed=seed).estimate
            out["setting"] = f"hutch_plus_plus(num_matvecs={m})"
        else:
            from curvlinops import hutchpp_trace as cl_hutchpp

            torch.manual_seed(seed)
            est = float(cl_hutchpp(tool.op, m))
            out["setting"] = f"hutchpp_trace(A, {m})"
        seconds.append(time.perf_counter() - t0)
        estimates.append(float(est))
        hvps.append(rec.count)
    errors = [_rel(e, ref) for e in estimates]
    out.update(
        estimates=estimates,
        errors=errors,
        median_err=statistics.median(errors),
        max_err=max(errors),
        median_s=statistics.median(seconds),
        hvps=statistics.median(hvps),
    )
    return out


def task_density(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Spectral density at each tool's defaults; W1 to the exact spectrum."""
    import numpy as np
    import torch
    from scipy.stats import wasserstein_distance

    from landscape_cli.estimators.density import wasserstein1

    tool_name, eig = args["tool"], np.asarray(args["eigenvalues"])
    rec = Recorder()
    tool = Tool(tool_name, w, rec)
    out: dict[str, Any] = {"setup_s": tool.setup_s, "setup_hvps": tool.setup_hvps}
    nodes = weights = grid = values = None
    if tool_name == "landscape":
        from landscape_cli.analyses.spectrum import SpectrumSettings
        from landscape_cli.estimators.density import slq_density
        from landscape_cli.problem.seeding import derive_seed

        s = SpectrumSettings()
        slq = slq_density(
            tool.op, runs=s.slq_runs, steps=s.slq_steps, seed=derive_seed(0, "density")
        )
        dens = slq.density(sigma=s.sigma, grid=s.grid)
        nodes, weights, grid, values = slq.nodes, slq.weights, dens.grid, dens.values
        out["setting"] = f"slq_density(runs={s.slq_runs}, steps={s.slq_steps}), default sigma"
    elif tool_name == "pyhessian":
        patch_torch_eig()
        torch.manual_seed(0)
        ev, wt = tool.hess.density()
        nodes, weights = np.asarray(ev), np.asarray(wt)
        out["setting"] = "density(iter=100, n_v=1), torch.eig patched (eigh)"
    elif tool_name == "eigenthings":
        import hessian_eigenthings as he

        res = he.spectral_density(tool.op, seed=0)
        nodes, weights = res.raw_eigenvalues.numpy(), res.raw_weights.numpy()
        grid, values = res.grid.numpy(), res.density.numpy()
        out["setting"] = "spectral_density(num_runs=10, lanczos_steps=80)"
    else:
        from curvlinops import LanczosApproximateSpectrumCached

        torch.manual_seed(0)
        bounds = args.get("boundaries")
        est = LanczosApproximateSpectrumCached(
            tool.op, ncv=80, boundaries=None if bounds is None else tuple(bounds)
        )
        g, d = est.approximate_spectrum(num_repeats=10)
        grid, values = g.numpy(), d.numpy()
        out["setting"] = "LanczosApproximateSpectrumCached(ncv=80).approximate_spectrum(10)" + (
            "" if bounds is None else ", boundaries = exact (lambda_min, lambda_max) given"
        )
    out.update(hvps=rec.count, s=tool.setup_s + rec.times[-1])
    if nodes is not None:
        mask = np.isfinite(nodes) & (weights > 0)
        out["w1_nodes"] = float(wasserstein_distance(nodes[mask], eig, u_weights=weights[mask]))
    if grid is not None:
        out["w1_density"] = wasserstein1(np.asarray(grid), np.asarray(values), eig)
    return out


def task_pyhessian_whole(w: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """The PyHessian side of the whole-process comparison: top-5 (its default tol=1e-3), a
    100-probe Hutchinson trace and a 100-step density, in one process."""
    import numpy as np
    import torch

    rec = Recorder()
    tool = Tool("pyhessian", w, rec)
    patch_torch_eig()
    torch.manual_seed(0)
    values, _ = tool.hess.eigenvalues(top_n=5)
    trace = float(np.mean(tool.hess.trace(maxIter=100, tol=-math.inf)))  # see task_trace
    tool.hess.density(iter=100, n_v=1)
    return {"top5": sorted(values, reverse=True), "trace": trace, "hvps": rec.count}


TASKS = {
    "reference": task_reference,
    "cost": task_cost,
    "lmax": task_lmax,
    "top5": task_top5,
    "trace": task_trace,
    "density": task_density,
    "pyhessian-whole": task_pyhessian_whole,
}


def worker(spec: str) -> None:
    """Child process: run one task, print its result as one JSON line on stdout."""
    import torch

    job = json.loads(spec)
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    rss0 = _status_kb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    try:
        result = TASKS[job["task"]](job["workload"], job["args"])
        result["ok"] = True
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    result["task_s"] = time.perf_counter() - t0
    result["extra_mb"] = (_status_kb("VmHWM") - rss0) / 1024
    print(json.dumps(result, default=float))


# =================================================================================== parent side
def run_child(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` (one at a time); its wall time, its own peak RSS (``ru_maxrss`` from
    ``os.wait4``, MB) and the cores *other* processes used meanwhile (machine busy time minus this
    process's and the child's CPU time)."""
    from run import CpuMonitor

    monitor = CpuMonitor()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        monitor.finish()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    busy = monitor.stop[1] - monitor.start[1]
    own = monitor.stop[2] - monitor.start[2]
    child_cpu = usage.ru_utime + usage.ru_stime
    return {
        "stdout": stdout,
        "stderr": stderr,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_s": wall,
        "peak_mb": usage.ru_maxrss / 1024,
        "other": max(busy - own - child_cpu, 0.0) / max(wall, 1e-9),
    }


def child_result(run: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The JSON object a child printed last (``run`` from :func:`run_child`), or why there is
    none; ``ok`` is the exit status when the child does not say, and the child's wall time, peak
    memory and the other processes' cores are added. A failure is logged."""
    result: dict[str, Any]
    try:
        result = json.loads(run["stdout"].strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (run["stderr"].strip().splitlines() or ["no output"])[-1]
        result = {"ok": False, "error": f"exit {run['returncode']}: {tail[:200]}"}
    if run["timed_out"]:
        result = {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    result.setdefault("ok", run["returncode"] == 0)
    result.update(wall_s=run["wall_s"], peak_mb=run["peak_mb"], other=run["other"])
    if not result["ok"]:
        log(f"  failed: {result.get('error')}")
    return result


def whole_label(data: dict[str, Any]) -> str:
    """What a default ``landscape spectrum`` run did, read from its JSON (not hard-coded, so the
    label follows the defaults): Lanczos HVPs, trace method and HVPs, SLQ runs x steps."""
    trace, density = data.get("trace") or {}, data.get("density") or {}
    return (
        f"`landscape spectrum` defaults: top-5 + lambda_min (Lanczos {data['lanczos']['matvecs']}), "
        f"trace {trace.get('method')} {trace.get('matvecs')}, "
        f"SLQ {density.get('runs')}x{density.get('steps')}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="landscape against its peers (BENCHMARKS.md).")
    parser.add_argument("--quick", action="store_true", help="smoke run, ~10 minutes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every child")
    parser.add_argument("--seeds", type=int, default=None, help="trace seeds (default 10; 3)")
    parser.add_argument(
        "--cnn-seeds", type=int, default=3, help="trace seeds on cnn3-cifar (its HVPs are slow)"
    )
    parser.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for idle")
    parser.add_argument("--no-wait", dest="wait", action="store_false")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child")
    parser.add_argument("--parts", default="cost,lmax,top5,trace,density,whole")
    parser.add_argument("--workloads", default="mlp-784,cnn3-cifar")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic workloads")
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    args.workloads = [w for w in args.workloads.split(",") if w]
    if args.seeds is None:
        args.seeds = 3 if args.quick else 10
    if args.timeout is None:
        args.timeout = 600.0 if args.quick else 3600.0
    if args.quick:
        args.max_wait = min(args.max_wait, 3.0)
    args.density_timeout = 20.0 if args.quick else 120.0
    args.task_args = {
        "warmup": 1 if args.quick else 2,
        "repeats": 3 if args.quick else 20,
        "budget": 1.0 if args.quick else 10.0,
        "power_cap": 100 if args.quick else 300,
        "lanczos_cap": 20 if args.quick else 30,
        "ncv_sweep": [6, 10, 20] if args.quick else [6, 8, 10, 12, 16],
        "ref_max_iter": 200 if args.quick else 300,
        "trace_matvecs": 99,
    }
    return args


def prepare(tmp: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Write each workload's checkpoint and data once; every tool reads these files."""
    import torch
    from workloads import SYNTHETIC, build_synthetic

    from landscape_cli import sample_models

    out: dict[str, dict[str, Any]] = {}
    for name in args.workloads:
        model, x, y = build_synthetic(name, args.seed, args.quick)
        ckpt, data = tmp / f"{name}.pt", tmp / f"{name}-data.pt"
        torch.save(model.state_dict(), ckpt)
        torch.save({"x": x, "y": y}, data)
        out[name] = {
            "name": name,
            "model": f"{HERE / 'workloads.py'}:{SYNTHETIC[name].factory}",
            "checkpoint": str(ckpt),
            "data": str(data),
            "samples": int(x.shape[0]),
        }
    sample = sample_models.get_sample("mlp")
    x, y = sample_models.load_dataset(sample.data or "")
    data = tmp / "sample-mlp-data.pt"
    torch.save({"x": x, "y": y}, data)
    out["sample:mlp"] = {
        "name": "sample:mlp",
        "model": sample.model,
        "model_kwargs": dict(sample.model_kwargs),
        "checkpoint": str(sample.checkpoint),
        "data": str(data),
        "samples": int(x.shape[0]),
        "exact": True,
    }
    return out


class Runner:
    """Runs children one at a time, after waiting for the machine to go idle."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log: list[str] = []

    def wait(self) -> None:
        from run import wait_for_idle

        if self.args.wait:
            wait_for_idle(self.args.max_wait)

    def task(
        self, task: str, w: dict[str, Any], timeout: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        tool = extra.get("tool", "")
        if tool and tool != "landscape" and installed(tool) is None:
            return {"ok": False, "error": "not installed", "missing": True}
        job = {
            "task": task,
            "workload": w,
            "threads": self.args.threads,
            "args": {**self.args.task_args, **extra},
        }
        label = f"[{task}] {w['name']} {tool}".strip()
        log(label)
        self.wait()
        run = run_child(
            [sys.executable, str(HERE / "peers.py"), "--worker", json.dumps(job)],
            timeout or self.args.timeout,
        )
        return child_result(run, timeout or self.args.timeout)


# ----------------------------------------------------------------------------------- formatting
def _f(value: Any, fmt: str = ".3g", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def _x(value: Any, base: Any) -> str:
    """``value / base`` as ``1.23x``."""
    if value is None or base is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _fail(result: dict[str, Any]) -> str | None:
    if result.get("ok"):
        return None
    return "not installed" if result.get("missing") else f"error: {result.get('error')}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---" if i == 0 or i == 1 else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def failed_row(w: str, tool: str, result: dict[str, Any], width: int) -> list[str]:
    return [w, tool, _fail(result) or "", *["-"] * (width - 3)]


def version_label(tool: str) -> str:
    return f"{tool} {installed(tool) or '(not installed)'}"


def main(argv: list[str] | None = None) -> None:
    from run import machine_summary

    args = parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="landscape-peers-"))
    runner = Runner(args)
    lines: list[str] = []
    summary: list[str] = []
    try:
        works = prepare(tmp, args)
        command = " ".join(
            ["python", "benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)]
        )
        margs = argparse.Namespace(
            device="cpu", threads=[args.threads], repeats=0, warmup=0, budget=0
        )
        machine = [m for m in machine_summary(margs) if not m.startswith("- timing")]
        lines += [f"Command: {command}", "", "Machine:", "", *machine]
        lines += [f"- tools: {', '.join(version_label(t) for t in TOOLS)}", ""]
        lines += [
            "Workloads (float32, mean cross-entropy, eval mode, batches of 256; PyHessian "
            "gets the whole set as one batch, its fast path):",
            "",
        ]
        for w in works.values():
            lines.append(
                f"- `{w['name']}`: {w['samples']} samples, model `{Path(w['model']).name if '/' in w['model'] else w['model']}`"
            )
        lines.append("")

        refs: dict[str, dict[str, Any]] = {}
        for name, w in works.items():
            if name == "sample:mlp" and "density" not in args.parts:
                continue
            refs[name] = runner.task("reference", w)
            if not refs[name].get("ok"):
                raise SystemExit(f"reference for {name} failed: {refs[name].get('error')}")
        lines += ["References (float64):", ""]
        for name, r in refs.items():
            if "eigenvalues" in r:
                lines.append(
                    f"- `{name}`: exact spectrum (dense Hessian, {r['n']} parameters); "
                    f"lambda_max {r['top5'][0]:.6g}, trace {r['trace']:.6g}; {r['wall_s']:.0f} s"
                )
            else:
                lines.append(
                    f"- `{name}`: {r['n']} parameters; top-5 {', '.join(f'{v:.6g}' for v in r['top5'])} "
                    f"(Lanczos tol 1e-10, {r['lanczos_steps']} steps, converged={r['lanczos_converged']}, "
                    f"{r['lanczos_s']:.0f} s); exact trace {r['trace']:.6g} ({r['trace_s']:.0f} s)"
                )
        lines.append("")
        synth = [n for n in args.workloads if n in works]

        # ------------------------------------------------------------------ HVP cost
        if "cost" in args.parts:
            rows = []
            for name in synth:
                r = runner.task("cost", works[name])
                if not r.get("ok"):
                    rows.append(failed_row(name, "all", r, 7))
                    continue
                g = r["ms"]["gradient"]
                base = r["ms"]["landscape"]
                for tool in TOOLS:
                    if tool not in r["ms"]:
                        err = r["errors"].get(tool, "not installed")
                        rows.append([name, tool, err, *["-"] * 4])
                        continue
                    ms = r["ms"][tool]
                    rows.append(
                        [
                            name,
                            tool,
                            r["mechanisms"][tool],
                            f"{ms:.1f}",
                            f"{ms / g:.2f}x",
                            _x(ms, base),
                            f"{r['other']:.2f}",
                        ]
                    )
                rows.append(
                    [
                        name,
                        "(gradient)",
                        "forward + autograd.grad",
                        f"{g:.1f}",
                        "1.00x",
                        "-",
                        f"{r['other']:.2f}",
                    ]
                )
            lines += [
                "## HVP cost over gradient cost",
                "",
                "Median ms of one HVP (interleaved rounds in one process); `/grad` = over one "
                "gradient of the same loss; `/landscape` = over landscape's HVP.",
                "",
            ]
            lines += table(
                ["workload", "tool", "mechanism", "HVP ms", "/grad", "/landscape", "other"], rows
            )
            lines.append("")

        # ------------------------------------------------------------------ lambda_max
        lmax: dict[tuple[str, str], dict[str, Any]] = {}
        if "lmax" in args.parts:
            rows = []
            for name in synth:
                ref = refs[name]["top5"][0]
                for tool in TOOLS:
                    lmax[name, tool] = runner.task("lmax", works[name], tool=tool, lmax_ref=ref)
                base = lmax[name, "landscape"]
                for tool in TOOLS:
                    r = lmax[name, tool]
                    if not r.get("ok"):
                        rows.append(failed_row(name, tool, r, 14))
                        continue
                    rows.append(
                        [
                            name,
                            tool,
                            r["default_setting"],
                            str(r["hvps"]),
                            _f(r["s"], ".2f"),
                            _f(r["err"], ".1e"),
                            _x(r["s"], base.get("s")),
                            _f(r.get("hvps_0.001"), "d"),
                            _f(r.get("s_0.001"), ".2f"),
                            _f(r.get("hvps_0.0001"), "d"),
                            _f(r.get("s_0.0001"), ".2f"),
                            f"{r['peak_mb']:.0f}",
                            f"{r['extra_mb']:.0f}",
                            f"{r['other']:.2f}",
                        ]
                    )
                    if tool == "eigenthings" and "power" in r:
                        p = r["power"]
                        rows.append(
                            [
                                name,
                                "eigenthings",
                                "deflated_power_iteration(k=1): tol=1e-4",
                                str(p["hvps"]),
                                _f(p["s"], ".2f"),
                                _f(_rel(p["value"], ref), ".1e"),
                                _x(p["s"], base.get("s")),
                                "",
                                "",
                                "",
                                "",
                                "",
                                "",
                                "",
                            ]
                        )
            lines += [
                "## lambda_max",
                "",
                "`default`: the tool's own call at its defaults (HVPs, seconds = setup + solve, "
                "relative error against the float64 reference). `tuned`: HVPs and seconds "
                "(setup + until that HVP) of the best-tuned setting that reaches 1e-3 / 1e-4 "
                "(see the module docstring; oracle stops are a lower bound for any tolerance "
                "setting). peak MB = whole child process; extra MB = above the loaded model and "
                "data.",
                "",
            ]
            lines += table(
                [
                    "workload",
                    "tool",
                    "default setting",
                    "HVPs",
                    "s",
                    "rel. error",
                    "s / landscape",
                    "tuned HVPs to 1e-3",
                    "s to 1e-3",
                    "tuned HVPs to 1e-4",
                    "s to 1e-4",
                    "peak MB",
                    "extra MB",
                    "other",
                ],
                rows,
            )
            sweeps = [
                (n, lmax[n, "curvlinops"])
                for n in synth
                if lmax.get((n, "curvlinops"), {}).get("ok")
            ]
            for name, r in sweeps:
                best = {t: r.get(f"setting_{t:g}") for t in TOLERANCES}
                lines += [
                    "",
                    f"curvlinops eigsh sweep on `{name}` (ncv, tol: HVPs, rel. error): "
                    + "; ".join(
                        f"{x['ncv']},{x['tol']:g}: {x.get('hvps', '-')}, "
                        f"{_f(x.get('err'), '.1e', x.get('error', '-'))}"
                        for x in r["sweep"]
                    )
                    + f". Best to 1e-3: {best[1e-3]}; to 1e-4: {best[1e-4]}.",
                ]
            lines.append("")
            for name in synth:
                base = lmax[name, "landscape"]
                peers_ok = [lmax[name, t] for t in PEERS if lmax[name, t].get("ok")]
                if not base.get("ok") or not peers_ok:
                    continue
                best_h = [p.get("hvps_0.001") for p in peers_ok if p.get("hvps_0.001") is not None]
                min_peer_h = min(best_h) if best_h else None
                peer_s = [p.get("s_0.001") for p in peers_ok if p.get("s_0.001") is not None]
                met_h = (
                    min_peer_h is not None and base["err"] <= 1e-3 and base["hvps"] <= min_peer_h
                )
                met_s = bool(peer_s) and base["err"] <= 1e-3 and base["s"] < min(peer_s)
                summary.append(
                    f"- lambda_max to 1e-3 at defaults on `{name}`: landscape {base['hvps']} HVPs "
                    f"(error {base['err']:.1e}), best-tuned peer {min_peer_h} HVPs -> "
                    f"{'MET' if met_h else 'NOT MET'}; landscape {base['s']:.2f} s vs fastest peer to "
                    f"1e-3 {min(peer_s) if peer_s else float('nan'):.2f} s -> {'MET' if met_s else 'NOT MET'}"
                )

        # ------------------------------------------------------------------ top-5
        if "top5" in args.parts:
            rows = []
            for name in synth:
                ref = refs[name]["top5"]
                res = {t: runner.task("top5", works[name], tool=t, top5_ref=ref) for t in TOOLS}
                base = res["landscape"]
                for tool in TOOLS:
                    r = res[tool]
                    if not r.get("ok"):
                        rows.append(failed_row(name, tool, r, 10))
                        continue
                    rows.append(
                        [
                            name,
                            tool,
                            r["setting"],
                            str(r["hvps"]),
                            _x(r["hvps"], base.get("hvps")),
                            _f(r["s"], ".2f"),
                            _x(r["s"], base.get("s")),
                            _f(r["err"], ".1e"),
                            f"{r['peak_mb']:.0f}",
                            f"{r['other']:.2f}",
                        ]
                    )
                cl = res["curvlinops"]
                if base.get("ok") and cl.get("ok"):
                    met = base["err"] <= 1e-3 and base["hvps"] < cl["hvps"] and base["s"] < cl["s"]
                    summary.append(
                        f"- top-5 to 1e-3 at defaults on `{name}`: landscape {base['hvps']} HVPs, "
                        f"{base['s']:.2f} s, error {base['err']:.1e}; curvlinops (eigsh defaults) "
                        f"{cl['hvps']} HVPs, {cl['s']:.2f} s, error {cl['err']:.1e} -> "
                        f"{'MET' if met else 'NOT MET'}"
                    )
            lines += [
                "## Top-5 eigenvalues",
                "",
                "Each tool's defaults; rel. error = max over the five of |estimate - reference| "
                "/ |reference|.",
                "",
            ]
            lines += table(
                [
                    "workload",
                    "tool",
                    "setting",
                    "HVPs",
                    "HVPs / landscape",
                    "s",
                    "s / landscape",
                    "rel. error",
                    "peak MB",
                    "other",
                ],
                rows,
            )
            lines.append("")

        # ------------------------------------------------------------------ trace
        if "trace" in args.parts:
            rows = []
            for name in synth:
                seeds = list(
                    range(min(args.seeds, args.cnn_seeds) if "cnn" in name else args.seeds)
                )
                ref = refs[name]["trace"]
                res = {
                    t: runner.task("trace", works[name], tool=t, trace_ref=ref, seeds=seeds)
                    for t in TOOLS
                }
                # landscape's default trace (what `landscape spectrum` reports): the exact
                # per-sample trace where it applies (both workloads are ReLU networks)
                res["landscape default"] = runner.task(
                    "trace",
                    works[name],
                    tool="landscape",
                    trace_ref=ref,
                    seeds=seeds,
                    landscape_trace="auto",
                )
                base = res["landscape default"]
                for tool in ("landscape default", *TOOLS):
                    r = res[tool]
                    if not r.get("ok"):
                        rows.append(failed_row(name, tool, r, 11))
                        continue
                    rows.append(
                        [
                            name,
                            tool,
                            r["setting"],
                            _f(r["median_err"], ".2e"),
                            _f(r["max_err"], ".2e"),
                            _f(r["median_s"], ".2f"),
                            _x(r["median_s"], base.get("median_s")),
                            f"{r['peak_mb']:.0f}",
                            f"{r['extra_mb']:.0f}",
                            _x(r["extra_mb"], base.get("extra_mb")),
                            f"{r['other']:.2f}",
                        ]
                    )
                cl = res["curvlinops"]
                if base.get("ok") and cl.get("ok"):
                    e_ok = base["median_err"] <= cl["median_err"]
                    t_ok = base["median_s"] <= cl["median_s"] / 3
                    m_ok = base["extra_mb"] <= cl["extra_mb"] / 3
                    summary.append(
                        f"- trace on `{name}` ({len(seeds)} seeds), landscape's default against "
                        "curvlinops' Hutch++ at 99 HVPs: median error landscape "
                        f"{base['median_err']:.2e} vs curvlinops Hutch++ {cl['median_err']:.2e} -> "
                        f"{'MET' if e_ok else 'NOT MET'}; time {base['median_s']:.2f} s vs "
                        f"{cl['median_s']:.2f} s (target <= 1/3) -> {'MET' if t_ok else 'NOT MET'}; "
                        f"extra memory {base['extra_mb']:.0f} MB vs {cl['extra_mb']:.0f} MB (peak RSS "
                        f"{base['peak_mb']:.0f} vs {cl['peak_mb']:.0f} MB) -> {'MET' if m_ok else 'NOT MET'}"
                    )
            lines += [
                "## Trace at 99 HVPs",
                "",
                f"Relative error against the exact trace over {args.seeds} seeds ({args.cnn_seeds} "
                "on cnn3-cifar; median and max); seconds = median per estimate (setup excluded). PyHessian has Hutchinson "
                "only.",
                "",
            ]
            lines += table(
                [
                    "workload",
                    "tool",
                    "estimator",
                    "median rel. error",
                    "max rel. error",
                    "s per estimate",
                    "s / landscape",
                    "peak MB",
                    "extra MB",
                    "extra / landscape",
                    "other",
                ],
                rows,
            )
            lines.append("")

        # ------------------------------------------------------------------ density
        if "density" in args.parts:
            w = works["sample:mlp"]
            eig = refs["sample:mlp"]["eigenvalues"]
            limit = args.density_timeout
            res = {t: runner.task("density", w, limit, tool=t, eigenvalues=eig) for t in TOOLS}
            res["curvlinops (oracle bounds)"] = runner.task(
                "density",
                w,
                limit,
                tool="curvlinops",
                eigenvalues=eig,
                boundaries=[eig[0], eig[-1]],
            )
            base = res["landscape"]
            rows = []
            for tool in res:
                r = res[tool]
                if not r.get("ok"):
                    rows.append(failed_row("sample:mlp", tool, r, 8))
                    continue
                rows.append(
                    [
                        "sample:mlp",
                        tool,
                        r["setting"],
                        str(r["hvps"]),
                        _f(r["s"], ".2f"),
                        _x(r["s"], base.get("s")),
                        _f(r.get("w1_nodes"), ".3g"),
                        _f(r.get("w1_density"), ".3g"),
                    ]
                )
            lines += [
                "## Spectral density (SLQ) on `sample:mlp`",
                "",
                "Wasserstein-1 distance to the exact spectrum (dense float64 Hessian): "
                "`W1 nodes` of the quadrature measure (nodes weighted by squared first "
                "components, averaged over runs), `W1 density` of the broadened density the "
                "tool returns. Spectrum range "
                f"[{min(eig):.3g}, {max(eig):.3g}].",
                "",
            ]
            lines += table(
                [
                    "workload",
                    "tool",
                    "setting",
                    "HVPs",
                    "s",
                    "s / landscape",
                    "W1 nodes",
                    "W1 density",
                ],
                rows,
            )
            lines.append("")

        # ------------------------------------------------------------------ whole process
        if "whole" in args.parts:
            name = "cnn3-cifar" if "cnn3-cifar" in works and not args.quick else synth[0]
            w = works[name]
            ref = refs[name]
            log(f"[whole] {name} landscape spectrum")
            runner.wait()
            cli = [
                sys.executable,
                "-m",
                "landscape_cli",
                "spectrum",
                w["checkpoint"],
                "--model",
                w["model"],
                "--data",
                w["data"],
                "--threads",
                str(args.threads),
                "--json",
                "--quiet",
            ]
            ours = run_child(cli, args.timeout)
            ph = runner.task("pyhessian-whole", w, tool="pyhessian")
            rows = []
            ours_row: dict[str, Any] = {}
            try:
                data = json.loads(ours["stdout"])
                ours_row = {
                    "top5": data["top_eigenvalues"],
                    "trace": data["trace"]["estimate"],
                    "hvps": data["hvp_count"],
                }
                rows.append(
                    [
                        name,
                        "landscape",
                        whole_label(data),
                        str(ours_row["hvps"]),
                        f"{ours['wall_s']:.1f}",
                        "1.00x",
                        _f(_top_err(ours_row["top5"], ref["top5"]), ".1e"),
                        _f(_rel(ours_row["trace"], ref["trace"]), ".1e"),
                        f"{ours['peak_mb']:.0f}",
                        f"{ours['other']:.2f}",
                    ]
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                tail = (ours["stderr"].strip().splitlines() or ["no output"])[-1]
                rows.append([name, "landscape", f"error: {tail[:200]}", *["-"] * 7])
            if ph.get("ok"):
                rows.append(
                    [
                        name,
                        "pyhessian",
                        "top-5 (eigenvalues(top_n=5), tol=1e-3) + trace(100 "
                        "probes) + density(iter=100, n_v=1)",
                        str(ph["hvps"]),
                        f"{ph['wall_s']:.1f}",
                        _x(ph["wall_s"], ours["wall_s"]),
                        _f(_top_err(ph["top5"], ref["top5"]), ".1e"),
                        _f(_rel(ph["trace"], ref["trace"]), ".1e"),
                        f"{ph['peak_mb']:.0f}",
                        f"{ph['other']:.2f}",
                    ]
                )
                if ours_row:
                    acc = _top_err(ours_row["top5"], ref["top5"]) <= _top_err(
                        ph["top5"], ref["top5"]
                    ) and _rel(ours_row["trace"], ref["trace"]) <= _rel(ph["trace"], ref["trace"])
                    met = ours["wall_s"] <= ph["wall_s"] / 2 and acc
                    summary.append(
                        f"- whole process on `{name}`: `landscape spectrum` {ours['wall_s']:.1f} s, "
                        f"{ours['peak_mb']:.0f} MB vs PyHessian {ph['wall_s']:.1f} s, {ph['peak_mb']:.0f} MB "
                        f"(target <= 1/2 the time, accuracy at least as good: "
                        f"{'yes' if acc else 'no'}) -> {'MET' if met else 'NOT MET'}"
                    )
            else:
                rows.append(failed_row(name, "pyhessian", ph, 10))
            lines += [
                "## Whole process",
                "",
                "Wall time of a fresh process from start to exit (imports, loading, all "
                "estimates), peak RSS from `os.wait4`. Errors: top-5 max relative error, trace "
                "relative error.",
                "",
            ]
            lines += table(
                [
                    "workload",
                    "tool",
                    "work",
                    "HVPs",
                    "wall s",
                    "/ landscape",
                    "top-5 error",
                    "trace error",
                    "peak MB",
                    "other",
                ],
                rows,
            )
            lines.append("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if summary:
        lines += ["## Acceptance targets", "", *summary, ""]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    lines.append(
        f"Total wall time {time.perf_counter() - started:.0f} s; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
