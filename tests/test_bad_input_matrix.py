"""The bad-input matrix: every input kind × its failure modes, through the real Typer app.

Input kinds: checkpoint, model spec, data spec, loss spec, YAML config, report file, thresholds
(``check --checks``) file, numeric and choice flags, the ``--out`` target. Failure modes: missing,
unreadable, empty, truncated, wrong type, wrong keys, wrong shapes, wrong dtype, NaN/Inf,
out-of-range values, unknown options.

Every case asserts the same contract (docs/reliability.md):

* the documented exit code (2 bad input, 3 numerical);
* exactly one non-empty line on stderr, ``landscape: error: ...``, that matches a regex naming the
  culprit (the file, key, flag or batch);
* no "Traceback" anywhere, nothing on stdout;
* no file left behind: the directory the case works in is byte-for-byte as before (so an
  ``--out new.h5`` does not exist afterwards, and an existing report given as ``--out`` is
  unchanged).

The installed typer (0.29, its own copy of click) keeps ``result.stderr`` apart from
``result.stdout`` without a ``mix_stderr`` argument. Cases are data:
``Case(id, argv builder, exit code, regex)``; the builder writes whatever files
the case needs into ``tmp_path`` and returns the command line. Cases marked ``unreadable`` use
``chmod 000`` and are skipped when running as root (root reads such files anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOOD = Path(sample_models.get_sample("mlp").checkpoint)
CNN = Path(sample_models.get_sample("cnn").checkpoint)
MLP = ["--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs"]
# Cheap analysis settings: a case that wrongly succeeded would still finish in about a second.
FAST = ["--no-density", "--no-trace", "--max-iter", "20"]
LINE = re.compile(r"^landscape: error: ")

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], list[str]]
    code: int
    message: str  # regex searched in the single stderr line
    unreadable: bool = False  # chmod 000: meaningless as root


# ------------------------------------------------------------------ file builders
def state() -> dict[str, torch.Tensor]:
    return torch.load(GOOD, weights_only=True)


def saved(tmp: Path, name: str, obj: object) -> Path:
    path = tmp / name
    torch.save(obj, path)
    return path


def text(tmp: Path, name: str, content: str) -> Path:
    path = tmp / name
    path.write_text(content, encoding="utf-8")
    return path


def raw(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


def unreadable(path: Path) -> Path:
    path.chmod(0)
    return path


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    return sample_models.load_dataset("blobs")


def npz(tmp: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def h5(tmp: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp / name
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle[key] = value
    return path


def spectrum(tmp: Path, *args: str | Path) -> list[str]:
    """``spectrum ARGS --out tmp/out.h5``: every analysis case also proves no report appears."""
    return ["spectrum", *FAST, *map(str, args), "--out", str(tmp / "out.h5")]


def on_ckpt(path_of: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: spectrum(tmp, path_of(tmp), *MLP)


def on_data(path_of: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: spectrum(tmp, "sample:mlp", "--data", path_of(tmp), *extra)


def on_config(content: str) -> Callable[[Path], list[str]]:
    return lambda tmp: spectrum(tmp, "--config", text(tmp, "run.yaml", content))


def on_checks(content: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["check", "sample:mlp", "--checks", str(text(tmp, "gate.yaml", content))]


def with_flags(*args: str, command: str = "spectrum") -> Callable[[Path], list[str]]:
    if command == "spectrum":
        return lambda tmp: spectrum(tmp, *args)
    return lambda tmp: [command, *args]


USER_CODE = """\
import torch

def build(width=4):
    return torch.nn.Linear(8, width)

def not_a_module():
    return {"weights": 1}

def raises():
    raise RuntimeError("factory exploded")

def nan_model():
    net = torch.nn.Linear(8, 4)
    with torch.no_grad():
        net.bias.fill_(float("nan"))
    return net

constant = 3

def vector_loss(model, batch):
    return model(batch[0]).sum(0)

def detached_loss(model, batch):
    return model(batch[0]).sum().detach()

def raising_loss(model, batch):
    raise ValueError("label smoothing out of range")

def nan_loss(model, batch):
    return model(batch[0]).sum() * float("nan")

def inf_loss(model, batch):
    return model(batch[0]).sum() + float("inf")
"""


def user_file(tmp: Path) -> Path:
    return text(tmp, "user.py", USER_CODE)


def on_model(spec: Callable[[Path], str], *extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: spectrum(tmp, "--model", spec(tmp), "--data", "sample:blobs", *extra)


def on_loss(spec: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    return lambda tmp: spectrum(tmp, "sample:mlp", "--loss", spec(tmp))


def nan_weights(value: float) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        weights = state()
        weights["4.bias"] = torch.full_like(weights["4.bias"], value)
        return saved(tmp, "diverged.pt", weights)

    return make


def x_with_nan_at(sample: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        x, y = blobs()
        x = x[:40].clone()
        x[sample, 3] = float("nan")
        return saved(tmp, "dirty.pt", {"x": x, "y": y[:40]})

    return make


def mse_targets_with_nan_in_batch(batch: int, batch_size: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        x, _ = blobs()
        y = torch.zeros(40, 4)
        y[batch * batch_size + 1, 0] = float("nan")  # finite inputs: the loss of that batch is NaN
        return saved(tmp, "targets.pt", {"x": x[:40], "y": y})

    return make


# ------------------------------------------------------------------ reports (module-scoped)
@pytest.fixture(scope="module")
def saddle_report(tmp_path_factory) -> Path:
    """A real report of the 2-parameter analytic sample (written once; cases copy it)."""
    path = tmp_path_factory.mktemp("report") / "saddle.h5"
    made = runner.invoke(
        app, ["spectrum", "sample:saddle", "--no-density", "--no-trace", "--out", str(path)]
    )
    assert made.exit_code == 0, made.stderr
    return path


REPORT: dict[str, Path] = {}  # filled by the autouse fixture below


@pytest.fixture(autouse=True)
def _report(saddle_report):
    REPORT["saddle"] = saddle_report


def report_copy(tmp: Path, name: str = "run.h5") -> Path:
    return Path(shutil.copy(REPORT["saddle"], tmp / name))


def truncated_report(tmp: Path) -> Path:
    data = REPORT["saddle"].read_bytes()
    return raw(tmp, "cut.h5", data[: len(data) // 2])


def report_with_schema(schema: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = report_copy(tmp, "future.h5")
        with h5py.File(path, "a") as f:
            f.attrs["schema"] = schema
        return path

    return make


def report_edited(name: str, edit: Callable[[h5py.File], object]) -> Callable[[Path], Path]:
    """A copy of the saddle report named ``name``, changed by ``edit`` (the open file)."""

    def make(tmp: Path) -> Path:
        path = report_copy(tmp, name)
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    return make


def replaced(path: str, data: object, **options: object) -> Callable[[h5py.File], object]:
    def edit(f: h5py.File) -> None:
        del f[path]
        f.create_dataset(path, data=data, **options)

    return edit


def huge_dataset(path: str) -> Callable[[h5py.File], object]:
    """A chunked dataset declaring 10⁹ float64 values (8 GB) that takes a few bytes on disk."""

    def edit(f: h5py.File) -> None:
        del f[path]
        f.create_dataset(path, shape=(10**9,), dtype="f8", chunks=(65536,), compression="gzip")

    return edit


def training_checkpoint(optimizer: dict, **extra: object) -> Callable[[Path], Path]:
    return lambda t: saved(t, "train.pt", {"model": state(), "optimizer": optimizer, **extra})


def report_without_lanczos(tmp: Path) -> Path:
    path = report_copy(tmp, "gutted.h5")
    with h5py.File(path, "a") as f:
        del f["spectrum/lanczos"]
    return path


# ------------------------------------------------------------------ the matrix
CASES = [
    # --- checkpoint (positional) ---------------------------------------------------------
    Case("ckpt-missing", on_ckpt(lambda t: t / "nope.pt"), 2, r"nope\.pt: file not found"),
    Case(
        "ckpt-unreadable",
        on_ckpt(lambda t: unreadable(saved(t, "locked.pt", state()))),
        2,
        r"locked\.pt: cannot read it",
        unreadable=True,
    ),
    Case("ckpt-directory", on_ckpt(lambda t: t), 2, r"is a directory, expected a file"),
    Case(
        "ckpt-empty", on_ckpt(lambda t: raw(t, "empty.pt", b"")), 2, r"empty\.pt: the file is empty"
    ),
    Case(
        "ckpt-truncated",
        on_ckpt(lambda t: raw(t, "cut.pt", GOOD.read_bytes()[:3000])),
        2,
        r"cut\.pt: the file is truncated or corrupt",
    ),
    Case(
        "ckpt-text-file",
        on_ckpt(lambda t: text(t, "notes.pt", "not weights\n")),
        2,
        r"notes\.pt: not a PyTorch checkpoint",
    ),
    Case(
        "ckpt-garbage-pickle",
        on_ckpt(lambda t: raw(t, "junk.pt", b"\x80\x02garbage-after-a-pickle-header")),
        2,
        r"junk\.pt: not a torch\.save file, or it is corrupt",
    ),
    Case(
        "ckpt-wrong-type-list",
        on_ckpt(lambda t: saved(t, "list.pt", [1, 2, 3])),
        2,
        r"list\.pt: expected a state_dict .*got list",
    ),
    Case(
        "ckpt-no-tensors",
        on_ckpt(lambda t: saved(t, "meta.pt", {"epoch": 3, "lr": 0.1})),
        2,
        r"meta\.pt: no tensors found; top-level keys are epoch, lr",
    ),
    Case(
        "ckpt-wrong-keys",
        on_ckpt(lambda t: Path(shutil.copy(CNN, t / "cnn_weights.pt"))),
        2,
        r"cnn_weights\.pt: does not fit the model: missing keys '0\.bias'",
    ),
    Case(
        "ckpt-wrong-shapes",
        on_ckpt(lambda t: saved(t, "narrow.pt", {**state(), "0.weight": torch.zeros(16, 8)})),
        2,
        r"narrow\.pt: shape mismatch: '0\.weight' \(16, 8\) vs model \(32, 8\)",
    ),
    Case(
        "ckpt-wrong-dtype-int",
        on_ckpt(lambda t: saved(t, "ints.pt", {k: v.long() for k, v in state().items()})),
        2,
        r"ints\.pt: wrong dtype: '0\.weight' is torch\.int64",
    ),
    Case(
        "ckpt-wrong-dtype-complex",
        on_ckpt(
            lambda t: saved(t, "cplx.pt", {k: v.to(torch.complex64) for k, v in state().items()})
        ),
        2,
        r"cplx\.pt: wrong dtype: '0\.weight' is torch\.complex64",
    ),
    Case(
        "ckpt-nan",
        on_ckpt(nan_weights(float("nan"))),
        3,
        r"diverged\.pt: tensor '4\.bias' holds 4 non-finite",
    ),
    Case(
        "ckpt-inf",
        on_ckpt(nan_weights(float("inf"))),
        3,
        r"diverged\.pt: tensor '4\.bias' holds 4 non-finite",
    ),
    Case(
        "ckpt-full-pickle-untrusted",
        on_ckpt(lambda t: saved(t, "module.pt", sample_models.mlp.build())),
        2,
        r"module\.pt: holds Python objects .*would run code from the file .*--trust-checkpoint",
    ),
    Case(
        "ckpt-safetensors-corrupt",
        on_ckpt(lambda t: raw(t, "w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")),
        2,
        r"w\.safetensors: not a valid safetensors file",
    ),
    Case(
        "ckpt-sparse-tensor",
        on_ckpt(
            lambda t: saved(
                t, "sparse.pt", {**state(), "0.weight": state()["0.weight"].to_sparse()}
            )
        ),
        2,
        r"sparse\.pt: '0\.weight' is a sparse_coo tensor, not a dense one",
    ),
    Case(
        "ckpt-meta-tensor",
        on_ckpt(
            lambda t: saved(
                t, "meta.pt", {**state(), "0.weight": torch.empty(32, 8, device="meta")}
            )
        ),
        2,
        r"meta\.pt: '0\.weight' is a meta tensor",
    ),
    Case(
        "ckpt-optimizer-lr-not-a-number",
        on_ckpt(
            training_checkpoint(
                {"param_groups": [{"lr": "fast", "momentum": 0.9, "params": [0]}], "state": {}}
            )
        ),
        2,
        r"checkpoint .*train\.pt: malformed optimizer state \('lr' is 'fast', not a number\)",
    ),
    Case(
        "ckpt-optimizer-lr-nan",
        on_ckpt(
            training_checkpoint(
                {
                    "param_groups": [{"lr": float("nan"), "momentum": 0.0, "params": [0]}],
                    "state": {},
                }
            )
        ),
        2,
        r"train\.pt: malformed optimizer state \('lr' is nan, not a finite number\)",
    ),
    Case(
        "ckpt-nan-global-step",
        lambda t: [
            "track",
            str(saved(t, "a.pt", {"model": state(), "global_step": torch.tensor(float("nan"))})),
            str(saved(t, "b.pt", {"model": state(), "global_step": torch.tensor(9)})),
            *MLP,
        ],
        2,
        r"a\.pt: 'global_step' is nan, not a whole number of steps",
    ),
    Case("ckpt-unknown-sample", with_flags("sample:nope"), 2, r"sample:nope.*available"),
    Case("ckpt-without-model", lambda t: spectrum(t, GOOD), 2, r"no model given.*--model"),
    # --- model spec --------------------------------------------------------------------------
    Case(
        "model-missing-file",
        on_model(lambda t: f"{t}/nope.py:build"),
        2,
        r"model '.*nope\.py:build': file .*nope\.py not found",
    ),
    Case(
        "model-unreadable",
        on_model(lambda t: f"{unreadable(user_file(t))}:build"),
        2,
        r"model '.*user\.py:build'",
        unreadable=True,
    ),
    Case(
        "model-no-callable-part",
        on_model(lambda t: "landscape_cli.sample_models.mlp"),
        2,
        r"model 'landscape_cli\.sample_models\.mlp': expected package\.module:callable",
    ),
    Case(
        "model-unknown-module",
        on_model(lambda t: "no_such_pkg.nets:build"),
        2,
        r"module 'no_such_pkg' not found",
    ),
    Case(
        "model-unknown-attribute",
        on_model(lambda t: "landscape_cli.sample_models.mlp:nope"),
        2,
        r"sample_models\.mlp has no attribute 'nope'",
    ),
    Case(
        "model-not-callable",
        on_model(lambda t: f"{user_file(t)}:constant"),
        2,
        r"user\.py:constant': is not callable",
    ),
    Case(
        "model-wrong-return-type",
        on_model(lambda t: f"{user_file(t)}:not_a_module"),
        2,
        r"not_a_module': returned dict, expected an nn\.Module",
    ),
    Case(
        "model-factory-raises",
        on_model(lambda t: f"{user_file(t)}:raises"),
        2,
        r"raises': the factory raised RuntimeError\('factory exploded'\)",
    ),
    Case(
        "model-syntax-error",
        on_model(lambda t: str(text(t, "broken.py", "def build(:\n")) + ":build"),
        2,
        r"importing .*broken\.py failed: SyntaxError",
    ),
    Case(
        "model-unknown-kwarg",
        lambda t: spectrum(
            t,
            "--config",
            text(
                t,
                "k.yaml",
                "model: {spec: landscape_cli.sample_models.mlp:build, kwargs: {widht: 3}}\ndata: sample:blobs\n",
            ),
        ),
        2,
        r"model 'landscape_cli\.sample_models\.mlp:build': bad keyword arguments: .*widht",
    ),
    Case(
        "model-nan-init",
        on_model(lambda t: f"{user_file(t)}:nan_model"),
        3,
        r"nan_model': tensor 'bias' is not finite",
    ),
    # --- data spec ---------------------------------------------------------------------------
    Case("data-missing", on_data(lambda t: t / "val.pt"), 2, r"val\.pt: file not found"),
    Case(
        "data-unreadable",
        on_data(lambda t: unreadable(npz(t, "locked.npz", x=np.zeros((3, 8)), y=np.zeros(3)))),
        2,
        r"locked\.npz: cannot read it",
        unreadable=True,
    ),
    Case(
        "data-empty", on_data(lambda t: raw(t, "val.npz", b"")), 2, r"val\.npz: the file is empty"
    ),
    Case(
        "data-truncated-npz",
        on_data(
            lambda t: raw(
                t,
                "cut.npz",
                npz(t, "whole.npz", x=np.zeros((50, 8)), y=np.zeros(50)).read_bytes()[:200],
            )
        ),
        2,
        r"cut\.npz: cannot be read as \.npz",
    ),
    Case(
        "data-truncated-h5",
        on_data(
            lambda t: raw(
                t,
                "cut.h5",
                h5(t, "whole.h5", x=np.zeros((500, 8)), y=np.zeros(500)).read_bytes()[:3000],
            )
        ),
        2,
        r"cut\.h5: cannot be read as HDF5",
    ),
    Case(
        "data-wrong-type",
        on_data(lambda t: saved(t, "triple.pt", [torch.zeros(3, 8)] * 3)),
        2,
        r"triple\.pt: expected \{'x': \.\.\., 'y': \.\.\.\} or a pair",
    ),
    Case(
        "data-wrong-keys-pt",
        on_data(lambda t: saved(t, "keys.pt", {"inputs": torch.zeros(3, 8)})),
        2,
        r"keys\.pt: missing key\(s\) x, y; found inputs",
    ),
    Case(
        "data-wrong-keys-h5",
        on_data(lambda t: h5(t, "only_x.h5", x=np.zeros((3, 8)))),
        2,
        r"only_x\.h5: needs datasets 'x' and 'y'; found x",
    ),
    Case(
        "data-wrong-shape-features",
        on_data(
            lambda t: saved(
                t, "wide.pt", {"x": torch.zeros(10, 7), "y": torch.zeros(10, dtype=torch.long)}
            )
        ),
        2,
        r"wide\.pt does not fit the model and loss at batch 0 of 1 \(batch shapes \(10, 7\), \(10,\)\)",
    ),
    Case(
        "data-wrong-shape-count",
        on_data(lambda t: npz(t, "ragged.npz", x=np.zeros((10, 8)), y=np.zeros(12))),
        2,
        r"ragged\.npz: x has 10 samples but y has 12",
    ),
    Case(
        "data-scalar",
        on_data(lambda t: saved(t, "scalar.pt", {"x": torch.tensor(1.0), "y": torch.tensor(0)})),
        2,
        r"scalar\.pt: 'x' is a scalar",
    ),
    Case(
        "data-no-samples",
        on_data(
            lambda t: saved(
                t, "none.pt", {"x": torch.zeros(0, 8), "y": torch.zeros(0, dtype=torch.long)}
            )
        ),
        2,
        r"none\.pt: holds no samples",
    ),
    Case(
        "data-sparse-tensor",
        on_data(
            lambda t: saved(
                t, "sparse.pt", {"x": blobs()[0][:40].to_sparse(), "y": blobs()[1][:40]}
            )
        ),
        2,
        r"sparse\.pt: 'x' is a sparse_coo tensor, not a dense one",
    ),
    Case(
        "data-meta-tensor",
        on_data(
            lambda t: saved(
                t, "meta.pt", {"x": torch.empty(40, 8, device="meta"), "y": blobs()[1][:40]}
            )
        ),
        2,
        r"meta\.pt: 'x' is a meta tensor",
    ),
    Case(
        "data-wrong-dtype-strings",
        on_data(lambda t: npz(t, "words.npz", x=np.array(["a"] * 10), y=np.zeros(10))),
        2,
        r"words\.npz: 'x' is not an array",
    ),
    Case(
        "data-wrong-dtype-labels",
        on_data(lambda t: saved(t, "soft.pt", {"x": blobs()[0][:20], "y": torch.zeros(20)})),
        2,
        r"soft\.pt does not fit the model and loss at batch 0 of 1.*target dtype",
    ),
    Case(
        "data-pickled-objects-npz",
        on_data(
            lambda t: npz(t, "objects.npz", x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3))
        ),
        2,
        r"objects\.npz: cannot be read as \.npz \(Object arrays cannot be loaded when allow_pickle=False\)",
    ),
    Case(
        "data-label-out-of-range",
        on_data(
            lambda t: saved(
                t, "labels.pt", {"x": blobs()[0][:40], "y": torch.tensor([0] * 35 + [9] * 5)}
            ),
            "--batch-size",
            "10",
        ),
        2,
        r"labels\.pt does not fit the model and loss at batch 3 of 4",
    ),
    Case(
        "data-nan-inputs",
        on_data(x_with_nan_at(25), "--batch-size", "10"),
        3,
        r"dirty\.pt: 'x' holds NaN or Inf values \(1 sample\(s\); the first is sample 25, in batch 2 of 4\)",
    ),
    Case(
        "data-nan-targets-batch-2",
        on_data(mse_targets_with_nan_in_batch(2, 10), "--batch-size", "10", "--loss", "mse"),
        3,
        r"the loss is nan on batch 2 of 4",
    ),
    Case(
        "data-unknown-format",
        on_data(lambda t: text(t, "val.csv", "1,2\n")),
        2,
        r"val\.csv: unknown data format '\.csv'",
    ),
    Case(
        "data-unknown-sample",
        on_data(lambda t: Path("sample:nope")),
        2,
        r"data 'sample:nope': unknown sample",
    ),
    # --- loss spec ---------------------------------------------------------------------------
    Case(
        "loss-unknown-name",
        on_loss(lambda t: "crossentropy"),
        2,
        r"loss 'crossentropy': unknown loss.*did you mean 'cross_entropy'",
    ),
    Case(
        "loss-unknown-attribute",
        on_loss(lambda t: "landscape_cli.sample_models.analytic:not_a_loss"),
        2,
        r"loss 'landscape_cli\.sample_models\.analytic:not_a_loss'.*has no attribute 'not_a_loss'",
    ),
    Case(
        "loss-not-callable",
        on_loss(lambda t: f"{user_file(t)}:constant"),
        2,
        r"loss '.*user\.py:constant': is not callable",
    ),
    Case(
        "loss-returns-vector",
        on_loss(lambda t: f"{user_file(t)}:vector_loss"),
        2,
        r"the loss must return a scalar tensor, got \(4,\)",
    ),
    Case(
        "loss-detached",
        on_loss(lambda t: f"{user_file(t)}:detached_loss"),
        2,
        r"does not depend on the model's parameters",
    ),
    Case(
        "loss-raises",
        on_loss(lambda t: f"{user_file(t)}:raising_loss"),
        2,
        r"at batch 0 of 2 .*label smoothing out of range",
    ),
    Case(
        "loss-nan",
        on_loss(lambda t: f"{user_file(t)}:nan_loss"),
        3,
        r"the loss is nan on batch 0 of 2",
    ),
    Case(
        "loss-inf",
        on_loss(lambda t: f"{user_file(t)}:inf_loss"),
        3,
        r"the loss is inf on batch 0 of 2",
    ),
    Case(
        "loss-needs-data",
        lambda t: spectrum(t, "--model", "landscape_cli.sample_models.mlp:build"),
        2,
        r"loss 'cross_entropy' needs data; give --data",
    ),
    # --- YAML config -------------------------------------------------------------------------
    Case(
        "config-missing",
        lambda t: spectrum(t, "--config", t / "run.yaml"),
        2,
        r"config .*run\.yaml: file not found",
    ),
    Case(
        "config-unreadable",
        lambda t: spectrum(t, "--config", unreadable(text(t, "run.yaml", "seed: 1\n"))),
        2,
        r"config .*run\.yaml: cannot read it",
        unreadable=True,
    ),
    Case(
        "config-directory",
        lambda t: spectrum(t, "--config", t),
        2,
        r"config .*: cannot read it \(IsADirectoryError",
    ),
    Case(
        "config-binary",
        lambda t: spectrum(t, "--config", raw(t, "run.yaml", b"\xff\xfe\x00\x01")),
        2,
        r"run\.yaml: cannot read it \(UnicodeDecodeError",
    ),
    Case(
        "config-truncated",
        on_config("spectrum: {top_k: 3, tol"),
        2,
        r"run\.yaml: invalid YAML at line 1",
    ),
    Case(
        "config-wrong-type",
        on_config("- batch_size\n- 8\n"),
        2,
        r"run\.yaml: expected a mapping of keys to values, got list",
    ),
    Case(
        "config-unknown-key",
        on_config("batchsize: 8\n"),
        2,
        r"unknown key 'batchsize' \(did you mean 'batch_size'\?\)",
    ),
    Case(
        "config-unknown-section-key",
        on_config("spectrum: {topk: 3}\n"),
        2,
        r"unknown key 'spectrum\.topk'",
    ),
    Case(
        "config-section-not-mapping",
        on_config("spectrum: 3\n"),
        2,
        r"section 'spectrum' must be a mapping",
    ),
    Case(
        "config-wrong-value-type",
        on_config("batch_size: many\n"),
        2,
        r"'batch_size' should be int, got 'many'",
    ),
    Case(
        "config-wrong-float-type",
        on_config("spectrum: {tol: [1, 2]}\n"),
        2,
        r"'spectrum\.tol' should be float",
    ),
    Case(
        "config-huge-number",
        on_config("spectrum: {tol: 1" + "0" * 400 + "}\n"),
        2,
        r"'spectrum\.tol' should be float, got 1000+\.\.\. ",
    ),
    Case(
        "config-nan",
        on_config("spectrum: {tol: .nan}\n"),
        2,
        r"'spectrum\.tol' is nan; give a finite number",
    ),
    Case(
        "config-out-of-range",
        on_config("spectrum: {top_k: 0}\n"),
        2,
        r"'spectrum\.top_k' is 0; it must be at least 1",
    ),
    Case(
        "config-unknown-choice",
        on_config("dtype: float16\n"),
        2,
        r"'dtype' is 'float16'; choose one of float32, float64",
    ),
    Case(
        "config-python-tag",
        on_config("!!python/object/apply:os.system ['touch pwned']\n"),
        2,
        r"run\.yaml: invalid YAML at line 1, column 1: could not determine a constructor",
    ),
    # --- report file (plot / check REPORT.h5) ----------------------------------------------
    Case(
        "report-missing", lambda t: ["plot", str(t / "run.h5")], 2, r"run\.h5: no such report file"
    ),
    Case(
        "report-unreadable",
        lambda t: ["plot", str(unreadable(report_copy(t)))],
        2,
        r"run\.h5",
        unreadable=True,
    ),
    Case(
        "report-empty",
        lambda t: ["plot", str(raw(t, "run.h5", b""))],
        2,
        r"run\.h5: not an HDF5 file",
    ),
    Case(
        "report-truncated",
        lambda t: ["plot", str(truncated_report(t))],
        2,
        r"cut\.h5: cannot be read as HDF5",
    ),
    Case(
        "report-wrong-type-text",
        lambda t: ["check", str(text(t, "run.h5", "hello\n")), "--max", "lambda_max=1"],
        2,
        r"run\.h5: not an HDF5 file",
    ),
    Case(
        "report-wrong-type-data",
        lambda t: ["plot", str(h5(t, "data.h5", x=np.zeros((3, 8)), y=np.zeros(3)))],
        2,
        r"data\.h5: not a landscape report \(no 'schema' attribute",
    ),
    Case(
        "report-wrong-schema",
        lambda t: ["plot", str(report_with_schema("landscape-report/99")(t))],
        2,
        r"future\.h5: not a landscape report \(schema 'landscape-report/99'",
    ),
    Case(
        "report-wrong-keys",
        lambda t: ["check", str(report_without_lanczos(t)), "--max", "lambda_max=1"],
        2,
        r"gutted\.h5: section /spectrum is incomplete or malformed",
    ),
    Case(
        "report-non-utf8-root-attribute",
        lambda t: [
            "plot",
            str(
                report_edited(
                    "bytes.h5", lambda f: f.attrs.create("command_line", np.bytes_(b"\xff\xfe"))
                )(t)
            ),
        ],
        2,
        r"bytes\.h5: the root group is incomplete or malformed \('utf-8' codec",
    ),
    Case(
        "report-non-utf8-schema",
        lambda t: [
            "check",
            str(
                report_edited("bytes.h5", lambda f: f.attrs.create("schema", np.bytes_(b"\xff")))(t)
            ),
            "--max",
            "lambda_max=1",
        ],
        2,
        r"bytes\.h5: the root attribute 'schema' is incomplete or malformed",
    ),
    Case(
        "report-string-eigenvalues",
        lambda t: [
            "check",
            str(
                report_edited("words.h5", replaced("spectrum/top_eigenvalues", np.array([b"big"])))(
                    t
                )
            ),
            "--max",
            "lambda_max=1",
        ],
        2,
        r"words\.h5: section /spectrum .*dataset /spectrum/top_eigenvalues holds \|S3 values",
    ),
    Case(
        "report-mismatched-shapes",
        lambda t: [
            "plot",
            str(report_edited("ragged.h5", replaced("spectrum/lanczos/betas", np.zeros(1)))(t)),
        ],
        2,
        r"ragged\.h5: section /spectrum .*dataset /spectrum/lanczos/betas has shape \(1,\)",
    ),
    Case(
        "report-eigenvalues-2d",
        lambda t: [
            "check",
            str(
                report_edited("square.h5", replaced("spectrum/top_eigenvalues", np.zeros((2, 2))))(
                    t
                )
            ),
            "--max",
            "lambda_max=1",
        ],
        2,
        r"square\.h5: section /spectrum .*top_eigenvalues has shape \(2, 2\), expected 1",
    ),
    Case(
        "report-implausible-dataset-size",
        lambda t: [
            "plot",
            str(report_edited("huge.h5", huge_dataset("spectrum/lanczos/alphas"))(t)),
        ],
        2,
        r"huge\.h5: section /spectrum .*dataset /spectrum/lanczos/alphas declares shape "
        r"\(1000000000,\), more than 100000000 elements",
    ),
    Case(
        "plot-unknown-format",
        lambda t: ["plot", str(report_copy(t)), "--format", "gif"],
        2,
        r"--format gif: choose one of",
    ),
    Case(
        "plot-sigma-out-of-range",
        lambda t: ["plot", str(report_copy(t)), "--sigma", "-1"],
        2,
        r"--sigma -1\.0: it must be greater than 0",
    ),
    Case(
        "plot-out-dir-missing",
        lambda t: ["plot", str(report_copy(t)), "--out-dir", str(t / "figs")],
        2,
        r"--out-dir .*figs: not a directory",
    ),
    # --- --out target ------------------------------------------------------------------------
    Case(
        "out-directory-missing",
        lambda t: ["spectrum", "sample:saddle", *FAST, "--out", str(t / "no" / "r.h5")],
        2,
        r"r\.h5: the directory .*no does not exist",
    ),
    Case(
        "out-is-a-directory",
        lambda t: ["spectrum", "sample:saddle", *FAST, "--out", str(t)],
        2,
        r"is a directory",
    ),
    Case(
        "out-not-hdf5",
        lambda t: [
            "spectrum",
            "sample:saddle",
            *FAST,
            "--out",
            str(text(t, "notes.h5", "keep me\n")),
        ],
        2,
        r"notes\.h5: exists and is not an HDF5 file; refusing to overwrite it",
    ),
    Case(
        "out-not-a-report",
        lambda t: [
            "spectrum",
            "sample:saddle",
            *FAST,
            "--out",
            str(h5(t, "data.h5", x=np.zeros(3))),
        ],
        2,
        r"data\.h5: not a landscape report .*refusing to overwrite it",
    ),
    Case(
        "out-other-checkpoint",
        lambda t: ["spectrum", *FAST, "--out", str(report_copy(t))],
        2,
        r"run\.h5: the report holds results for num_parameters = 2, this run has 1476",
    ),
    Case(
        "junit-directory-missing",
        lambda t: [
            "check",
            str(report_copy(t)),
            "--max",
            "lambda_max=100",
            "--junit",
            str(t / "no" / "j.xml"),
        ],
        2,
        r"j\.xml: the directory .*no does not exist",
    ),
    # --- thresholds file (check --checks) ----------------------------------------------------
    Case(
        "checks-missing",
        lambda t: ["check", "--checks", str(t / "gate.yaml")],
        2,
        r"checks .*gate\.yaml: file not found",
    ),
    Case(
        "checks-unreadable",
        lambda t: ["check", "--checks", str(unreadable(text(t, "gate.yaml", "max: {loss: 1}\n")))],
        2,
        r"gate\.yaml: cannot read it",
        unreadable=True,
    ),
    Case(
        "checks-empty",
        on_checks(""),
        2,
        r"gate\.yaml: expected a mapping with max:, min:, equals: and margin:",
    ),
    Case("checks-truncated", on_checks("max: {lambda_max: 1"), 2, r"gate\.yaml: invalid YAML"),
    Case("checks-wrong-type", on_checks("- lambda_max\n"), 2, r"gate\.yaml: expected a mapping"),
    Case(
        "checks-unknown-key",
        on_checks("maximum: {lambda_max: 1}\n"),
        2,
        r"gate\.yaml: unknown key 'maximum'",
    ),
    Case(
        "checks-unknown-metric",
        on_checks("max: {lambda_maxx: 1}\n"),
        2,
        r"unknown metric 'lambda_maxx' \(did you mean 'lambda_max'\?\)",
    ),
    Case(
        "checks-section-not-mapping",
        on_checks("max: 3\n"),
        2,
        r"gate\.yaml: 'max' must map metrics to limits",
    ),
    Case(
        "checks-wrong-value-type",
        on_checks("max: {lambda_max: big}\n"),
        2,
        r"the limit of 'lambda_max' must be a number, got 'big'",
    ),
    Case(
        "checks-nan-limit",
        on_checks("max: {lambda_max: .nan}\n"),
        2,
        r"the limit of 'lambda_max' must be finite",
    ),
    Case(
        "checks-huge-limit",
        on_checks("max: {trace: 1" + "0" * 400 + "}\n"),
        2,
        r"the limit of 'trace' must be a number",
    ),
    Case(
        "checks-bad-radius",
        on_checks("min: {sharpness@-1: 0}\n"),
        2,
        r"'sharpness@-1': the radius after @ must be a number > 0",
    ),
    Case(
        "checks-wrong-label",
        on_checks("equals: {classification: bowl}\n"),
        2,
        r"classification must equal one of",
    ),
    Case(
        "checks-negative-margin",
        on_checks("margin: -1\nmax: {loss: 1}\n"),
        2,
        r"gate\.yaml: margin -1 must be a finite number >= 0",
    ),
    Case(
        "checks-wrong-margin-type",
        on_checks("margin: lots\nmax: {loss: 1}\n"),
        2,
        r"gate\.yaml: margin must be a number, got 'lots'",
    ),
    Case("checks-none-given", with_flags(command="check"), 2, r"no checks given"),
    Case(
        "checks-flag-no-value",
        with_flags("--max", "lambda_max", command="check"),
        2,
        r"--max lambda_max: expected METRIC=VALUE",
    ),
    # --- numeric and choice flags ---------------------------------------------------------
    Case(
        "flag-wrong-type-int",
        with_flags("--batch-size", "abc"),
        2,
        r"Invalid value for '--batch-size'",
    ),
    Case(
        "flag-wrong-type-float-for-int",
        with_flags("--top-k", "2.5"),
        2,
        r"Invalid value for '--top-k'",
    ),
    Case("flag-wrong-type-float", with_flags("--tol", "tiny"), 2, r"Invalid value for '--tol'"),
    Case(
        "flag-missing-value",
        with_flags("--seed", command="inspect"),
        2,
        r"Option '--seed' requires an argument",
    ),
    Case(
        "flag-zero-batch-size",
        with_flags("--batch-size", "0"),
        2,
        r"'--batch-size' is 0; it must be at least 1",
    ),
    Case(
        "flag-negative-max-samples",
        with_flags("--max-samples", "-5"),
        2,
        r"'--max-samples' is -5; it must be at least 1",
    ),
    Case(
        "flag-negative-seed",
        with_flags("--seed", "-1"),
        2,
        r"'--seed' is -1; it must be at least 0",
    ),
    Case(
        "flag-zero-threads",
        with_flags("--threads", "0"),
        2,
        r"'--threads' is 0; it must be at least 1",
    ),
    Case(
        "flag-huge-threads",
        with_flags("--threads", "1" + "0" * 12),
        2,
        r"--threads 1000000000000: not a usable number of threads",
    ),
    Case(
        "flag-top-k-zero", with_flags("--top-k", "0"), 2, r"'--top-k' is 0; it must be at least 1"
    ),
    Case(
        "flag-too-few-trace-matvecs",
        with_flags("--trace", "--trace-matvecs", "2"),
        2,
        r"'--trace-matvecs' is 2; it must be at least 4",
    ),
    Case(
        "flag-max-iter-below-top-k", with_flags("--top-k", "5", "--max-iter", "3"), 2, r"--max-iter"
    ),
    Case("flag-nan-tol", with_flags("--tol", "nan"), 2, r"'--tol' is nan; give a finite number"),
    Case("flag-inf-lr", with_flags("--lr", "inf"), 2, r"'--lr' is inf; give a finite number"),
    Case(
        "flag-negative-sigma",
        with_flags("--sigma", "-1"),
        2,
        r"'--sigma' is -1\.0; it must be greater than 0",
    ),
    Case(
        "flag-zero-rho",
        with_flags("--rho", "0", command="sharpness"),
        2,
        r"'--rho' holds 0\.0; every value must be a finite number > 0",
    ),
    Case(
        "flag-nan-rho", with_flags("--rho", "0.1,nan", command="sharpness"), 2, r"'--rho' holds nan"
    ),
    Case(
        "flag-rho-not-a-number",
        with_flags("--rho", "wide", command="sharpness"),
        2,
        r"'--rho' should be a list of numbers, got 'wide'",
    ),
    Case(
        "flag-surface-dims",
        with_flags("--dims", "3", command="surface"),
        2,
        r"dims must be 1 or 2, got dims=3",
    ),
    Case(
        "flag-surface-name-slash",
        lambda t: ["surface", "sample:saddle", "--name", "a/b", "--out", str(t / "S.h5")],
        2,
        r"'--name' is 'a/b'; a name must not contain '/'",
    ),
    Case(
        "flag-surface-name-dot",
        lambda t: ["surface", "sample:saddle", "--name", ".", "--out", str(t / "S.h5")],
        2,
        r"'--name' is '\.'; a name must not be '\.' or '\.\.'",
    ),
    Case(
        "flag-surface-name-empty",
        lambda t: ["surface", "sample:saddle", "--name", "", "--out", str(t / "S.h5")],
        2,
        r"'--name' is ''; a name must not be empty",
    ),
    Case(
        "config-surface-name-unprintable",
        lambda t: [
            "report",
            "sample:saddle",
            "--config",
            str(text(t, "run.yaml", 'surface: {name: "a\\tb"}\n')),
            "--out",
            str(t / "R.h5"),
        ],
        2,
        r"run\.yaml: 'surface\.name' is 'a\\tb'; a name must hold printable characters only",
    ),
    Case(
        "flag-surface-points",
        with_flags("--points", "1", command="surface"),
        2,
        r"'--points' is 1; it must be at least 2",
    ),
    Case(
        "flag-inf-span",
        with_flags("--span", "inf", command="surface"),
        2,
        r"'--span' is inf; give a finite number",
    ),
    Case(
        "flag-nan-margin",
        with_flags("--max", "loss=1", "--margin", "nan", command="check"),
        2,
        r"--margin nan: must be a finite number >= 0",
    ),
    Case(
        "flag-unknown-dtype",
        with_flags("--dtype", "half"),
        2,
        r"'--dtype' is 'half'; choose one of float32, float64",
    ),
    Case(
        "flag-unknown-mode",
        with_flags("--mode", "test"),
        2,
        r"'--mode' is 'test'; choose one of eval, train",
    ),
    Case(
        "flag-unknown-hvp-mode",
        with_flags("--hvp-mode", "fast"),
        2,
        r"'--hvp-mode' is 'fast'; choose one of auto, cached, streaming",
    ),
    Case(
        "flag-unknown-trace-method",
        with_flags("--trace-method", "magic"),
        2,
        r"'--trace-method' is 'magic'; choose one of auto, hutch\+\+, hutchinson",
    ),
    Case("flag-unknown-device", with_flags("--device", "tpu"), 2, r"--device tpu: not a device"),
    Case("flag-unknown-option", with_flags("--no-such-flag"), 2, r"No such option: --no-such-flag"),
    Case(
        "flag-unknown-command",
        with_flags(command="spectra"),
        2,
        r"No such command 'spectra'\. Did you mean 'spectrum'",
    ),
    Case("flag-missing-required-out", with_flags(command="report"), 2, r"Missing option '--out'"),
]


def snapshot(directory: Path) -> dict[str, str | None]:
    """Every file under ``directory`` with a hash of its bytes (``None`` when unreadable);
    ``__pycache__`` (Python's byte-code cache for the user modules a case imports) is ignored."""
    files: dict[str, str | None] = {}
    for path in sorted(directory.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        try:
            files[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
        except PermissionError:
            files[str(path.relative_to(directory))] = None
    return files


def test_the_matrix_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40
    kinds = {case.id.split("-")[0] for case in CASES}
    assert {"ckpt", "model", "data", "loss", "config", "report", "checks", "flag", "out"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    if case.unreadable and os.geteuid() == 0:
        pytest.skip("chmod 000 does not stop root from reading")
    argv = case.build(tmp_path)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    out_before = out.read_bytes() if out is not None and out.is_file() else None
    before = snapshot(tmp_path)

    result = runner.invoke(app, argv)

    assert result.exit_code == case.code, (result.exit_code, result.stderr, result.exception)
    # bad input is refused before any product, so before the plan line too
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert LINE.match(lines[0]), lines[0]
    assert re.search(case.message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit), result.exception  # no escaped exception
    if out is not None and out_before is None:
        assert not out.exists() or out.is_dir(), f"{out} was left behind"
    if out_before is not None:
        assert out.read_bytes() == out_before, f"{out} was modified"
    assert snapshot(tmp_path) == before  # nothing created, changed or removed (temp files too)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


# ------------------------------------------------------------------ real processes
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["spectrum", "nope.pt", *MLP, "--out", "r.h5"], 2, r"nope\.pt: file not found"),
        (
            ["spectrum", "--batch-size", "abc", "--out", "r.h5"],
            2,
            r"Invalid value for '--batch-size'",
        ),
        (["inspect", "diverged.pt", *MLP, "--json"], 3, r"diverged\.pt: tensor '4\.bias' holds 4"),
    ],
    ids=["missing-checkpoint", "usage-error", "nan-weights"],
)
def test_real_process_exit_codes(tmp_path, args, code, message):
    """The exit codes and the one line as a real process sees them (``python -m landscape_cli``)."""
    nan_weights(float("nan"))(tmp_path)
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and LINE.match(lines[0]) and re.search(message, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged.pt"]  # no r.h5


def test_bare_landscape_still_prints_the_help():
    """The one-line usage errors leave ``no_args_is_help`` alone."""
    result = runner.invoke(app, [])
    assert "Usage" in result.stdout + result.stderr and "spectrum" in result.stdout + result.stderr


def test_json_success_output_is_unaffected(tmp_path):
    result = runner.invoke(app, ["spectrum", "sample:saddle", *FAST, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["num_parameters"] == 2
