"""landscape on models of 10M+ parameters against PyHessian, whole process against whole process.

Run from the repository root on an idle machine, with ``transformers`` and PyHessian installed
(``benchmarks/README.md``)::

    python benchmarks/scale.py                     # ResNet-18, GPT-2-style 10M and 100M
    python benchmarks/scale.py --quick             # smoke run: 128 images, the 10M model only
    python benchmarks/scale.py --device cuda       # the same on a GPU
    python benchmarks/scale.py --workloads resnet18 --parts spectrum --tools landscape

Workloads (written once to a temporary directory; every tool reads the same files):

* ``resnet18``: torchvision's ResNet-18 (``workloads.resnet18``: torchvision's own model when it
  imports, else the same layout, 11 181 642 parameters), 1 024 images of 3x32x32 (scikit-learn's
  bundled digits, upsampled, when scikit-learn is installed; else seeded Gaussian images), after
  one epoch of SGD from its seeded initialisation; mean cross-entropy, eval mode.
* ``gpt2-10m``, ``gpt2-100m``: ``transformers``' GPT-2 built from a config (10.3M and 98M
  parameters, tied embeddings, SDPA attention), saved with ``save_pretrained``, on seeded token
  sequences of 64 tokens (64 and 8 sequences); next-token cross-entropy (landscape's ``lm``).

Rows per workload:

* **cost**: median seconds of a gradient of the mean loss and of one HVP through landscape's
  objective (the cached graph), in one child process, and their ratio.
* **lambda_max**: ``landscape spectrum --lambda-max --tol 1e-3 --json`` as a process against a
  PyHessian process doing ``eigenvalues(top_n=1, tol=1e-3)``.
* **spectrum**: ``landscape spectrum --json`` at its defaults (top-5, λ_min, trace, density)
  against a PyHessian process doing ``eigenvalues(top_n=5)`` and ``trace(maxIter=100)`` (its
  eigenvalues and trace; PyHessian has no λ_min).

Each process's wall time includes ``import torch`` and loading; its peak resident memory is
``ru_maxrss`` from ``os.wait4``. PyHessian runs on the whole data as one batch (its cached-graph
mode, the faster one); for the language models it sees a module returning the shifted logits
as ``(tokens, vocabulary)`` rows and ``CrossEntropyLoss`` on the next tokens, the same loss.
Timings belong in BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

GPT2 = {  # name: (n_embd, n_layer, n_head, vocab, sequences, quick sequences)
    "gpt2-10m": (384, 4, 6, 8192, 64, 8),
    "gpt2-100m": (768, 12, 12, 16384, 8, 2),
}
SEQUENCE = 64


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# =================================================================================== workloads
def digit_images(n: int, seed: int) -> Any:
    """``(x, y)``: ``n`` digits upsampled to 3x32x32 (scikit-learn's bundled set), else Gaussian."""
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    digits = load_digits()
    index = torch.arange(n) % len(digits.target)
    x = torch.as_tensor(digits.images, dtype=torch.float32)[index] / 16.0
    x = torch.nn.functional.interpolate(x[:, None], size=(32, 32), mode="bilinear")
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(digits.target)[index]


def prepare_resnet(tmp: Path, samples: int, seed: int) -> dict[str, Any]:
    import torch
    from workloads import resnet18

    torch.manual_seed(seed)
    model = resnet18(num_classes=10)
    x, y = digit_images(samples, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for xb, yb in zip(x.split(128), y.split(128), strict=True):  # one epoch
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    ckpt, data = tmp / "resnet18.pt", tmp / "resnet18-data.pt"
    torch.save(model.state_dict(), ckpt)
    torch.save({"x": x, "y": y}, data)
    return {
        "name": "resnet18",
        "kind": "image",
        "checkpoint": str(ckpt),
        "model": f"{HERE / 'workloads.py'}:resnet18",
        "data": str(data),
        "samples": samples,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def prepare_gpt2(tmp: Path, name: str, quick: bool, seed: int) -> dict[str, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    n_embd, n_layer, n_head, vocab, sequences, quick_sequences = GPT2[name]
    sequences = quick_sequences if quick else sequences
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=SEQUENCE,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    directory = tmp / name
    model.save_pretrained(directory)
    gen = torch.Generator().manual_seed(seed + 1)
    # tokens from a Zipf-like law, so a few are frequent, as in text
    probabilities = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    tokens = torch.multinomial(probabilities, sequences * SEQUENCE, True, generator=gen)
    data = tmp / f"{name}-tokens.pt"
    torch.save({"input_ids": tokens.reshape(sequences, SEQUENCE)}, data)
    return {
        "name": name,
        "kind": "lm",
        "checkpoint": str(directory),
        "model": None,
        "data": str(data),
        "samples": sequences,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# =================================================================================== children
def _pyhessian_inputs(w: dict[str, Any], device: str) -> tuple[Any, Any, Any]:
    """PyHessian's ``(model, criterion, (inputs, targets))`` for workload ``w``."""
    import torch

    data = torch.load(w["data"], weights_only=True)
    if w["kind"] == "image":
        from landscape_cli.problem.loading import apply_state_dict, load_checkpoint
        from landscape_cli.problem.model_sources import build_model

        model = build_model(w["model"])
        apply_state_dict(model, load_checkpoint(w["checkpoint"]).state_dict, w["checkpoint"])
        return model.eval().to(device), torch.nn.CrossEntropyLoss(), (data["x"], data["y"])
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(w["checkpoint"], attn_implementation="eager")

    class ShiftedLogits(torch.nn.Module):
        """The logits of every position but the last, one row per predicted token."""

        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            logits = self.lm(input_ids=ids).logits[:, :-1]
            return logits.reshape(-1, logits.shape[-1])

    ids = data["input_ids"]
    return (
        ShiftedLogits().eval().to(device),
        torch.nn.CrossEntropyLoss(),
        (ids, ids[:, 1:].reshape(-1)),
    )


def child_pyhessian(job: dict[str, Any]) -> dict[str, Any]:
    """PyHessian's side: top-1 (``lambda_max``) or top-5 and a 100-probe trace (``spectrum``)."""
    import numpy as np
    import torch
    from peers import patch_torch_eig
    from pyhessian import hessian

    patch_torch_eig()
    torch.manual_seed(0)
    model, criterion, data = _pyhessian_inputs(job["workload"], job["device"])
    cuda = job["device"].startswith("cuda")
    if cuda:
        data = tuple(t.to(job["device"]) for t in data)
    h = hessian(model, criterion, data=data, cuda=cuda)
    if job["part"] == "lambda_max":
        values, _ = h.eigenvalues(top_n=1, tol=1e-3)
        return {"top": [float(v) for v in values]}
    values, _ = h.eigenvalues(top_n=5, tol=1e-3)
    trace = float(np.mean(h.trace(maxIter=100, tol=-math.inf)))
    return {"top": sorted((float(v) for v in values), reverse=True), "trace": trace}


def child_cost(job: dict[str, Any]) -> dict[str, Any]:
    """Median seconds of a gradient and of one HVP through landscape's objective."""
    import torch

    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.problem.loading import build_objective

    w = job["workload"]
    flags = {"checkpoint": w["checkpoint"], "data": w["data"], "device": job["device"]}
    if w["model"]:
        flags["model"] = w["model"]
    objective = build_objective(resolve_run_config(flags))
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(objective.num_parameters, generator=gen).to(objective.device)
    gradient, hvp = [], []
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        objective.loss_and_gradient()
        gradient.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        objective.hvp(v)
        hvp.append(time.perf_counter() - t0)
    return {
        "gradient_s": statistics.median(gradient),
        "hvp_s": statistics.median(hvp),
        "hvp_mode": objective.hvp_mode,
        "parameters": objective.num_parameters,
    }


CHILDREN = {"pyhessian": child_pyhessian, "cost": child_cost}


def worker(spec: str) -> None:
    """Child process: run one job, print its result as one JSON line on stdout."""
    import torch

    job = json.loads(spec)
    torch.set_num_threads(job["threads"])
    try:
        result = CHILDREN[job["child"]](job)
        result["ok"] = True
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(json.dumps(result, default=float))


# =================================================================================== parent
class Runner:
    """Runs one child at a time after waiting for the machine to go idle."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def _run(self, cmd: list[str]) -> dict[str, Any]:
        from peers import child_result, run_child
        from run import wait_for_idle

        if self.args.wait:
            wait_for_idle(self.args.max_wait)
        return child_result(run_child(cmd, self.args.timeout), self.args.timeout)

    def child(self, name: str, w: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = {
            "child": name,
            "workload": w,
            "device": self.args.device,
            "threads": self.args.threads,
            "repeats": self.args.repeats,
            **extra,
        }
        log(f"[{name} {extra.get('part', '')}] {w['name']}")
        return self._run([sys.executable, str(HERE / "scale.py"), "--worker", json.dumps(job)])

    def landscape(self, w: dict[str, Any], *flags: str) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "landscape_cli", "spectrum", w["checkpoint"]]
        cmd += ["--data", w["data"], "--device", self.args.device, "--json", "--quiet"]
        cmd += ["--threads", str(self.args.threads), *flags]
        if w["model"]:
            cmd += ["--model", w["model"]]
        log(f"[landscape {' '.join(flags) or 'defaults'}] {w['name']}")
        return self._run(cmd)


def _f(value: Any, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def _rel(a: Any, b: Any) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{abs(a - b) / abs(b):.1e}"


def report(w: dict[str, Any], cost: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown of one workload: cost, then the processes side by side."""
    lines = [f"### {w['name']}: {w['parameters']:,} parameters, {w['samples']:,} samples", ""]
    if cost.get("ok"):
        ratio = cost["hvp_s"] / cost["gradient_s"]
        lines += [
            "| gradient s | HVP s | HVP / gradient | HVP mode | child peak MB |",
            "|---|---|---|---|---|",
            f"| {cost['gradient_s']:.3f} | {cost['hvp_s']:.3f} | {ratio:.2f} | "
            f"{cost['hvp_mode']} | {cost['peak_mb']:.0f} |",
            "",
        ]
    else:
        lines += [f"cost: failed ({cost.get('error')})", ""]
    lines += [
        "| run | process s | peak MB | HVPs | λ_max | top-5 | trace | other cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        if not r.get("ok"):
            lines.append(f"| {label} | failed: {r.get('error')} | | | | | | |")
            continue
        top = r.get("top_eigenvalues") or r.get("top") or []
        trace = r.get("trace")
        trace = trace.get("estimate") if isinstance(trace, dict) else trace
        lines.append(
            f"| {label} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {_f(r.get('hvp_count'), 'd')} "
            f"| {_f(top[0] if top else None)} | {', '.join(_f(t, '.3g') for t in top[:5])} "
            f"| {_f(trace)} | {r['other']:.2f} |"
        )
    for label, r in rows.items():  # where landscape's products went, and the trace's error
        if r.get("ok") and label.startswith("landscape"):
            parts = {k: (r.get(k) or {}).get("matvecs") for k in ("lanczos", "trace", "density")}
            trace = r.get("trace") if isinstance(r.get("trace"), dict) else {}
            lines.append(
                f"- {label}: HVPs {', '.join(f'{k} {v}' for k, v in parts.items() if v)}; "
                f"λ_min {_f(r.get('lambda_min'))}; trace ± {_f(trace.get('stderr'))} (s.e.)"
            )
    spectrum = {k: v for k, v in rows.items() if v.get("ok")}
    pairs = (
        ("landscape λ_max", "PyHessian top-1"),
        ("landscape spectrum", "PyHessian top-5 + trace"),
    )
    lines.append("")
    for ours, theirs in pairs:
        if ours in spectrum and theirs in spectrum:
            a, b = spectrum[ours], spectrum[theirs]
            top_a = (a.get("top_eigenvalues") or [None])[0]
            top_b = (b.get("top") or [None])[0]
            lines.append(
                f"- {ours} / {theirs}: wall {a['wall_s'] / b['wall_s']:.2f}×, "
                f"λ_max relative difference {_rel(top_a, top_b)}"
            )
    return [*lines, ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="landscape at model scale (BENCHMARKS.md).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 10M only")
    parser.add_argument("--workloads", default="resnet18,gpt2-10m,gpt2-100m")
    parser.add_argument("--parts", default="cost,lambda_max,spectrum")
    parser.add_argument(
        "--tools", default="landscape,pyhessian", help="whose processes run (a PyHessian-free run)"
    )
    parser.add_argument("--samples", type=int, default=1024, help="ResNet-18 images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed gradients/HVPs (cost)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument("--max-wait", type=float, default=30.0)
    parser.add_argument("--no-wait", dest="wait", action="store_false")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = min(args.samples, 128)
        args.workloads = ",".join(w for w in args.workloads.split(",") if w != "gpt2-100m")
        args.max_wait = min(args.max_wait, 3.0)
    args.workload_names = [w for w in args.workloads.split(",") if w]
    args.part_names = set(args.parts.split(","))
    args.tool_names = set(args.tools.split(","))
    return args


def main(argv: list[str] | None = None) -> None:
    from landscape_cli.problem.torchvision_compat import allow_torchvision_without_extension

    allow_torchvision_without_extension()  # transformers imports torchvision, as the CLI does
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runner = Runner(args)
        for name in args.workload_names:
            log(f"preparing {name}")
            if name == "resnet18":
                w = prepare_resnet(tmp, args.samples, args.seed)
            else:
                w = prepare_gpt2(tmp, name, args.quick, args.seed)
            cost: dict[str, Any] = {"ok": False, "error": "not run"}
            if "cost" in args.part_names:
                cost = runner.child("cost", w)
            rows: dict[str, dict[str, Any]] = {}
            ours, theirs = "landscape" in args.tool_names, "pyhessian" in args.tool_names
            if "lambda_max" in args.part_names:
                if ours:
                    rows["landscape λ_max"] = runner.landscape(w, "--lambda-max", "--tol", "1e-3")
                if theirs:
                    rows["PyHessian top-1"] = runner.child("pyhessian", w, part="lambda_max")
            if "spectrum" in args.part_names:
                if ours:
                    rows["landscape spectrum"] = runner.landscape(w)
                if theirs:
                    rows["PyHessian top-5 + trace"] = runner.child("pyhessian", w, part="spectrum")
            print("\n".join(report(w, cost, rows)), flush=True)


if __name__ == "__main__":
    main()
