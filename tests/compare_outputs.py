"""Run every command on the bundled samples and compare their JSON and HDF5 outputs with another
run, so that a change meant to keep behaviour can show it does.

    python tests/compare_outputs.py record DIR          # DIR/<case>.json, DIR/<case>.h5
    python tests/compare_outputs.py compare DIR OTHER   # exit 1 and list differences

Run both recordings on one machine (numbers are bit-reproducible there, not across CPUs). What
varies by nature is dropped before comparing: wall-clock ``seconds``, the creation time, version
strings, the command line and the recording's own folder in paths (and in the config). Every other key, attribute,
dataset, dtype, shape and number must be equal.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "sample_models" / "checkpoints"
FAST_SPECTRUM = ["--slq-runs", "1", "--slq-steps", "20", "--grid", "100"]

# name -> arguments; OUT stands for the case's HDF5 file, DIR for the recording's folder.
CASES: dict[str, list[str]] = {
    "inspect": ["inspect"],
    "inspect-transformer": ["inspect", "sample:transformer"],
    "spectrum": ["spectrum", "--out", "OUT"],
    "spectrum-exact-per-layer": ["spectrum", "--exact", "--per-layer", *FAST_SPECTRUM, "--out", "OUT"],
    "spectrum-spread": ["spectrum", "--spread", "2", *FAST_SPECTRUM, "--out", "OUT"],
    "spectrum-cnn-ggn": ["spectrum", "sample:cnn", "--curvature", "ggn", *FAST_SPECTRUM, "--out", "OUT"],
    "spectrum-ef-params": ["spectrum", "--curvature", "ef", "--params", "0.*", *FAST_SPECTRUM],
    "spectrum-transformer": ["spectrum", "sample:transformer", *FAST_SPECTRUM, "--out", "OUT"],
    "spectrum-saddle": ["spectrum", "sample:saddle", "--out", "OUT"],
    "classify": ["classify", "--out", "OUT"],
    "classify-saddle": ["classify", "sample:saddle"],
    "classify-not-critical": ["classify", "sample:rosenbrock_at_start"],
    "sharpness": ["sharpness", "--out", "OUT"],
    "sharpness-adaptive": ["sharpness", "--adaptive", "--rho", "0.05,0.1"],
    "surface": ["surface", "--points", "5", "--out", "OUT"],
    "surface-eigen": ["surface", "--kind", "eigen", "--dims", "1", "--points", "5", "--out", "OUT"],
    "surface-to": ["surface", "--to", str(CHECKPOINTS / "mlp_training.pt"), "--points", "5"],
    "jacobian": ["jacobian", "--out", "OUT"],
    "jacobian-cnn": ["jacobian", "sample:cnn", "--samples", "8"],
    "report": ["report", "--out", "OUT", "--no-plots", "--no-html", "--config", "DIR/fast.yaml"],
    "check-checkpoint": ["check", "--max", "lambda_max=100", "--min", "trace=0"],
    "check-report": ["check", "DIR/report.h5", "--max", "lambda_max=100"],
    "track": [
        "track", str(CHECKPOINTS / "mlp.pt"), str(CHECKPOINTS / "mlp_training.pt"),
        "--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs", "--out", "OUT",
    ],
    "plot": ["plot", "DIR/report.h5", "--format", "svg"],
}  # fmt: skip
FAST_CONFIG = """\
spectrum: {slq_runs: 1, slq_steps: 20, grid: 100}
surface: {points: 5}
"""
VOLATILE_KEYS = {"seconds", "created", "landscape_version", "torch_version", "command_line"}


def record(folder: Path) -> None:
    """Run every case into ``folder`` (created); stop at the first failing command."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fast.yaml").write_text(FAST_CONFIG)
    (folder / "root.txt").write_text(str(ROOT))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for name, args in CASES.items():
        out = folder / f"{name}.h5"
        out.unlink(missing_ok=True)
        argv = [a.replace("OUT", str(out)).replace("DIR", str(folder)) for a in args]
        argv = [*argv, "--json"] + ([] if argv[0] == "plot" else ["--seed", "0", "--threads", "1"])
        proc = subprocess.run(
            [sys.executable, "-m", "landscape_cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=folder,
        )
        if proc.returncode not in (0, 1):
            sys.exit(f"{name}: exit {proc.returncode}: {proc.stderr.strip()}")
        (folder / f"{name}.json").write_text(proc.stdout)
        print(f"{name}: exit {proc.returncode}", file=sys.stderr)


def _paths(folder: Path) -> dict[str, str]:
    """The recording's own paths, replaced by placeholders before comparing."""
    return {str(folder): "DIR", (folder / "root.txt").read_text(): "ROOT"}


def _normalise(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, paths) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normalise(v, paths) for v in value]
    if isinstance(value, str):
        for path, placeholder in paths.items():
            value = value.replace(path, placeholder)
    return value


def _diff_json(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'second' if key not in a else 'first'}")
            else:
                _diff_json(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff_json(x, y, f"{where}[{i}]", out)
    elif type(a) is not type(b) or (a != b and not (_nan(a) and _nan(b))):
        out.append(f"{where}: {a!r} != {b!r}")


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _h5_items(path: Path, paths: dict[str, str]) -> dict[str, Any]:
    """Every group, dataset and attribute of a report, flattened to comparable values; the
    attachments of dimension scales are compared by the scales' names."""
    items: dict[str, Any] = {}

    def attrs(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            items[f"{name}@dims"] = str(
                [[scale.name for scale in dim.values()] for dim in obj.dims]
            )
        for key, value in obj.attrs.items():
            if key in VOLATILE_KEYS or key in ("REFERENCE_LIST", "DIMENSION_LIST"):
                continue
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str):
                value = _normalise(value, paths)
            items[f"{name}@{key}"] = np.asarray(value) if not isinstance(value, str) else value

    with h5py.File(path, "r") as handle:
        attrs("/", handle)

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                items[name] = (str(obj.dtype), obj.shape, obj[()])
            else:
                items[name] = "group"
            attrs(name, obj)

        handle.visititems(visit)
    return items


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return (
            isinstance(b, tuple) and a[:2] == b[:2] and _equal(np.asarray(a[2]), np.asarray(b[2]))
        )
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    return a == b


def compare(first: Path, second: Path) -> list[str]:
    """Differences between two recordings, one line each (empty when equal)."""
    problems: list[str] = []
    for name in CASES:
        a = _normalise(json.loads((first / f"{name}.json").read_text()), _paths(first))
        b = _normalise(json.loads((second / f"{name}.json").read_text()), _paths(second))
        _diff_json(a, b, f"{name}.json", problems)
        h5a, h5b = first / f"{name}.h5", second / f"{name}.h5"
        if h5a.exists() != h5b.exists():
            problems.append(f"{name}.h5: written in only one recording")
        elif h5a.exists():
            ia, ib = _h5_items(h5a, _paths(first)), _h5_items(h5b, _paths(second))
            for key in sorted(set(ia) | set(ib)):
                if key not in ia or key not in ib:
                    problems.append(
                        f"{name}.h5:{key}: only in {'second' if key not in ia else 'first'}"
                    )
                elif not _equal(ia[key], ib[key]):
                    problems.append(f"{name}.h5:{key}: differs")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "record":
        record(Path(argv[1]).resolve())
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        problems = compare(Path(argv[1]).resolve(), Path(argv[2]).resolve())
        for line in problems:
            print(line)
        print(f"{len(problems)} difference(s)", file=sys.stderr)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
