"""Faults, untrusted files and determinism (docs/reliability.md).

* Faults: a non-finite gradient or Hessian-vector product stops with exit 3 and says what failed;
  running out of memory gives exit 3 and advice (smaller --batch-size, --hvp-mode streaming); a
  real SIGINT gives exit 130 and leaves no partial report. (Non-finite data in a given batch and
  Lanczos breakdown are covered in test_bad_input_matrix.py and test_properties.py.)
* Untrusted files: YAML is only ever ``safe_load``-ed, tensors only ``weights_only``-loaded unless
  --trust-checkpoint; a pickle in a data file is refused without running it; Python code is
  imported only when a spec names it.
* Determinism: the same command in two separate processes prints the same JSON (but "seconds").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile import BANNER, linear_problem, torchscript_that_writes
from typer.testing import CliRunner

import landscape_cli.analyses.spectrum
from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.problem.loading import load_data

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-density", "--no-trace", "--max-iter", "20"]
runner = CliRunner()


def one_line(result, code: int, pattern: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


# ------------------------------------------------------------------ faults
SINGULAR = """\
import torch

class Point(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

def build():
    return Point()

def curvature_blows_up(model, batch):
    # |w|^1.5: finite loss and gradient at w = 0, infinite second derivative
    return (model.w.abs() ** 1.5).sum()

def gradient_blows_up(model, batch):
    # sqrt(|w|): finite loss at w = 0, infinite first derivative
    return model.w.abs().sqrt().sum()
"""


@pytest.mark.parametrize(
    "loss, pattern",
    [
        ("curvature_blows_up", r"landscape: error: a Hessian-vector product is not finite"),
        ("gradient_blows_up", r"landscape: error: the gradient of the loss is not finite"),
    ],
)
def test_non_finite_derivatives_stop_with_exit_3_and_no_report(tmp_path, loss, pattern):
    module = tmp_path / "point.py"
    module.write_text(SINGULAR)
    out = tmp_path / "r.h5"
    result = runner.invoke(
        app,
        ["spectrum", "--model", f"{module}:build", "--loss", f"{module}:{loss}", *FAST,
         "--out", str(out)],
    )  # fmt: skip
    one_line(result, 3, pattern)
    assert not out.exists()


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        torch.OutOfMemoryError(""),  # recognised by its type, not only by its message
        RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
        MemoryError(),
    ],
    ids=["cuda-oom", "oom-without-message", "runtime-error-oom", "host-memory"],
)
def test_out_of_memory_is_exit_3_with_advice(tmp_path, monkeypatch, exc):
    def exhausted(*args, **kwargs):
        raise exc

    monkeypatch.setattr(landscape_cli.analyses.spectrum, "analyze_spectrum", exhausted)
    out = tmp_path / "r.h5"
    result = runner.invoke(app, ["spectrum", *FAST, "--out", str(out)])
    line = one_line(result, 3, r"ran out of memory")
    assert "--batch-size" in line and "--hvp-mode streaming" in line
    assert not out.exists()


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("shape '[3]' is invalid")

    monkeypatch.setattr(landscape_cli.analyses.spectrum, "analyze_spectrum", broken)
    result = runner.invoke(app, ["spectrum", *FAST])
    one_line(result, 70, r"internal error: RuntimeError: shape .*--debug")


EXHAUSTING = """\
import torch

from landscape_cli import sample_models

calls = 0


def allocate_too_much():
    torch.empty(1 << 60)  # torch's CPU allocator refuses at once: no memory is used


def factory_exhausts_host():
    raise MemoryError()


def factory_exhausts_allocator():
    allocate_too_much()


def loss_exhausts_allocator(model, batch):
    allocate_too_much()


def loss_exhausts_allocator_later(model, batch):
    global calls
    calls += 1
    if calls > 8:  # past the initial pass and the determinism check: inside the analysis
        allocate_too_much()
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
"""


@pytest.mark.parametrize(
    "spec",
    [
        ["--model", "exhausting.py:factory_exhausts_host"],
        ["--model", "exhausting.py:factory_exhausts_allocator"],
        ["--loss", "exhausting.py:loss_exhausts_allocator"],
        ["--loss", "exhausting.py:loss_exhausts_allocator_later"],
    ],
    ids=[
        "factory-memory-error",
        "factory-cpu-allocator",
        "loss-cpu-allocator",
        "analysis-cpu-allocator",
    ],
)
def test_host_out_of_memory_in_a_real_process_is_exit_3_with_advice(tmp_path, spec):
    (tmp_path / "exhausting.py").write_text(EXHAUSTING)
    proc = _landscape("spectrum", *spec, "--hvp-mode", "streaming", "-q", *FAST, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "landscape: error: the host ran out of memory (try a smaller --batch-size, "
        "--max-samples or --hvp-mode streaming)"
    ], proc.stderr
    assert proc.stdout == ""


INTERRUPTIBLE = """\
import pathlib
import torch

calls = 0

def loss(model, batch):
    global calls
    calls += 1
    if calls == 40:  # well inside the analysis: HVPs recompute the loss (--hvp-mode streaming)
        pathlib.Path("started").touch()
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
"""


def test_real_sigint_exits_130_and_leaves_no_report(tmp_path):
    (tmp_path / "slowloss.py").write_text(INTERRUPTIBLE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape_cli", "spectrum", "--loss", "slowloss.py:loss",
         "--hvp-mode", "streaming", "--batch-size", "64", "--max-iter", "200", "--tol", "1e-12",
         "--trace-matvecs", "400", "--out", "r.h5", "--quiet"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the analysis never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "landscape: interrupted" and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "slowloss.py",
        "started",
    ]  # no r.h5, no temporary file


# ------------------------------------------------------------------ closed pipe
CHECKPOINTS = ROOT / "sample_models" / "checkpoints"


def _closed_early(args: list[str], cwd: Path, read: int) -> tuple[int, str, bytes]:
    """Run landscape with stdout a pipe whose reader takes ``read`` lines (0: none) and closes
    it, like ``landscape ... | head -n 1``; the exit code, stderr and what was read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape_cli", *args],
        cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        taken = b"".join(proc.stdout.readline() for _ in range(read))
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        return proc.wait(timeout=300), stderr, taken
    finally:
        if proc.poll() is None:
            proc.kill()


def test_track_jsonl_into_a_closed_pipe_stops_quietly_with_exit_141(tmp_path):
    code, stderr, taken = _closed_early(
        ["track", str(CHECKPOINTS / "mlp.pt"), str(CHECKPOINTS / "mlp_training.pt"),
         "--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs",
         "--no-trace", "--jsonl"],
        tmp_path, read=1,
    )  # fmt: skip
    assert json.loads(taken)["checkpoint"].endswith("mlp.pt")
    assert (code, stderr) == (141, "")


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "table"])
def test_spectrum_into_a_closed_pipe_stops_quietly_with_exit_141(tmp_path, output):
    code, stderr, _ = _closed_early(["spectrum", *FAST, *output], tmp_path, read=0)
    assert code == 141 and _without_plan(stderr) == [], stderr


def _without_plan(stderr: str) -> list[str]:
    """The lines of ``stderr`` but the plan line an analysis prints before its products."""
    return [
        line for line in stderr.strip().splitlines() if not line.startswith("landscape: plan: ")
    ]


# ------------------------------------------------------------------ untrusted files
def test_yaml_is_only_safe_loaded_and_pickles_only_weights_only():
    """Static guard: no unsafe YAML loader, no raw pickle.load, torch.load always weights-only
    unless the user trusts the file."""
    sources = {p: p.read_text() for p in (ROOT / "landscape_cli").rglob("*.py")}
    assert len(sources) > 40
    for path, source in sources.items():
        if path.name == "safe_yaml.py":  # the one loader: a yaml.SafeLoader subclass
            assert "class _UniqueKeySafeLoader(yaml.SafeLoader)" in source
            assert source.count("Loader=") == 1 and "Loader=_UniqueKeySafeLoader" in source
            continue
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", source), path
        assert "Loader=" not in source and "pickle.load" not in source, path
        for call in re.findall(r"torch\.load\([^)]*\)", source):
            assert "weights_only=True" in call or "weights_only=not trust" in call, (path, call)
        assert "allow_pickle=True" not in source, path


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-data",))


def test_pickle_in_a_data_file_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "val.pt"
    torch.save({"x": torch.zeros(4, 8), "y": torch.zeros(4, dtype=torch.long), "p": Evil()}, path)
    with pytest.raises(InputError, match=r"val\.pt: cannot be read as a tensor file"):
        load_data(str(path), 4, None)
    assert not (tmp_path / "pwned-by-data").exists()


def test_malicious_checkpoint_through_the_cli_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Evil()}, path)
    result = runner.invoke(
        app,
        [
            "inspect",
            str(path),
            "--model",
            "landscape_cli.sample_models.mlp:build",
            "--data",
            "sample:blobs",
        ],
    )
    one_line(result, 2, r"evil\.pt: holds Python objects .* would run code .*--trust-checkpoint")
    assert not (tmp_path / "pwned-by-data").exists()


def _landscape(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "ARCHIVE"],
        ["spectrum", "ARCHIVE", *FAST],
        ["surface", "PLAIN", "--to", "ARCHIVE", "--points", "3"],
        ["track", "PLAIN", "ARCHIVE", "--no-trace"],
        ["check", "ARCHIVE", "--max", "lambda_max=1e9"],
    ],
    ids=["inspect", "spectrum", "surface-to", "track", "check"],
)
def test_torchscript_checkpoint_is_refused_by_every_command_without_trust(tmp_path, command):
    model, data, plain = linear_problem(tmp_path)
    target = tmp_path / "victim.txt"
    target.write_text("untouched contents")
    archive = torchscript_that_writes(tmp_path / "scripted.pt", target)
    args = [{"ARCHIVE": str(archive), "PLAIN": str(plain)}.get(a, a) for a in command]
    proc = _landscape(*args, "--model", f"{model}:build", "--data", str(data), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TorchScript archive" in lines[0], proc.stderr
    assert "--trust-checkpoint" in lines[0]
    assert proc.stdout == ""
    assert target.read_text() == "untouched contents"


def test_trusted_torchscript_prints_on_stderr_and_json_stays_clean(tmp_path):
    model, data, _ = linear_problem(tmp_path)
    target = tmp_path / "victim.txt"
    target.write_text("untouched contents")
    archive = torchscript_that_writes(tmp_path / "scripted.pt", target)
    proc = _landscape(
        "inspect", str(archive), "--model", f"{model}:build", "--data", str(data),
        "--trust-checkpoint", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["command"] == "inspect"
    assert BANNER in proc.stderr


def test_what_user_code_prints_goes_to_stderr_not_into_json(tmp_path):
    (tmp_path / "chatty.py").write_text(
        "from landscape_cli import sample_models\n\n\ndef build(**kwargs):\n"
        "    print('python print from the factory')\n"
        "    import os\n    os.write(1, b'raw write to fd 1\\n')\n"
        "    return sample_models.mlp.build(**kwargs)\n"
    )
    proc = _landscape(
        "spectrum", "--model", "chatty.py:build", "--data", "sample:blobs", *FAST, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["command"] == "spectrum"
    assert "python print from the factory" in proc.stderr
    assert "raw write to fd 1" in proc.stderr


def test_user_code_is_imported_only_when_named(tmp_path, monkeypatch):
    (tmp_path / "eager_model.py").write_text(
        "import pathlib\npathlib.Path('imported').touch()\n"
        "from landscape_cli import sample_models\nbuild = sample_models.mlp.build\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert runner.invoke(app, ["inspect", "--json"]).exit_code == 0
    assert not (tmp_path / "imported").exists()  # on sys.path and in the cwd, but not named
    named = runner.invoke(
        app, ["inspect", "--model", "eager_model:build", "--data", "sample:blobs"]
    )
    assert named.exit_code == 0, named.stderr
    assert (tmp_path / "imported").exists()
    sys.modules.pop("eager_model", None)


# ------------------------------------------------------------------ determinism
SMALL = {
    "spectrum": ["--trace-matvecs", "30", "--slq-runs", "2", "--slq-steps", "20", "--grid", "50"],
    "classify": [],
    "sharpness": [
        "--rho",
        "0.05",
        "--rho",
        "0.1",
        "--steps",
        "5",
        "--restarts",
        "1",
        "--samples",
        "4",
    ],
}


@pytest.mark.parametrize("command", sorted(SMALL))
def test_the_same_command_in_two_processes_prints_the_same_json(tmp_path, command):
    argv = [sys.executable, "-m", "landscape_cli", command, "--json", *SMALL[command]]
    procs = [
        subprocess.Popen(argv, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        payload = json.loads(stdout)
        assert isinstance(payload.pop("seconds"), float)
        outputs.append(payload)
    assert outputs[0] == outputs[1]
    assert outputs[0]["command"] == command


# ------------------------------------------------------------------ messages
def _error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()  # bad input is refused before the plan line
    assert len(lines) == 1 and lines[0].startswith("landscape: error: "), proc.stderr
    return lines[0]


def test_top_k_beyond_the_parameters_is_reported_as_asked_with_the_limit(tmp_path):
    line = _error_line(
        _landscape("spectrum", "--top-k", "1000000000", "--no-density", cwd=tmp_path)
    )
    assert "--top-k 1000000000 plus --bottom-k 1 exceed --max-iter 200" in line
    assert "the operator has 1476 eigenvalues, so at most 1476 can be found" in line
    assert "raise --max-iter to at least 1476" in line


def test_a_nan_learning_rate_in_the_optimizer_state_is_named_with_its_checkpoint(tmp_path):
    from landscape_cli import sample_models

    model = sample_models.mlp.build()
    state = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()
    state["param_groups"][0]["lr"] = float("nan")
    torch.save({"model": model.state_dict(), "optimizer": state}, tmp_path / "nan-lr.pt")
    spectrum = ["spectrum", "nan-lr.pt", "--model", "landscape_cli.sample_models.mlp:build"]
    spectrum += ["--data", "sample:blobs", *FAST]
    line = _error_line(_landscape(*spectrum, cwd=tmp_path))
    assert line.startswith("landscape: error: checkpoint nan-lr.pt: ")
    assert "'lr' is nan, not a finite number" in line
    assert "pass --lr" in line
    # the way out it names: the given rate replaces the stored one, the momentum is still read
    proc = _landscape(*spectrum, "--lr", "0.1", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stability = json.loads(proc.stdout)["stability"]
    assert (stability["lr"], stability["lr_source"], stability["momentum"]) == (0.1, "--lr", 0.9)


def test_two_spellings_of_one_config_key_are_refused_by_name(tmp_path):
    (tmp_path / "c.yaml").write_text("max-samples: 100\nmax_samples: 200\n")
    line = _error_line(_landscape("spectrum", "--config", "c.yaml", *FAST, cwd=tmp_path))
    assert "config c.yaml: 'max-samples' and 'max_samples' are the same key" in line


def test_a_boolean_check_threshold_is_not_taken_as_a_number(tmp_path):
    (tmp_path / "checks.yaml").write_text("max:\n  lambda_max: true\n")
    line = _error_line(_landscape("check", "--checks", "checks.yaml", cwd=tmp_path))
    assert "the limit of 'lambda_max' must be a number, got the boolean true" in line


def test_a_data_file_with_python_objects_says_why_it_is_refused_and_what_to_do(tmp_path):
    import fractions

    torch.save(
        {"x": torch.zeros(4, 8), "y": torch.zeros(4, dtype=torch.long), "p": fractions.Fraction(1)},
        tmp_path / "val.pt",
    )
    line = _error_line(_landscape("spectrum", "--data", "val.pt", *FAST, cwd=tmp_path))
    assert "would run code from the file" in line
    assert "module:callable given as --data" in line
    assert "weights_only" not in line


def test_plot_of_a_sharpness_with_nothing_positive_prints_no_warning(tmp_path):
    """At a maximum every sharpness measure is <= 0: nothing goes on the log axes, and matplotlib
    must not warn of an empty legend."""
    made = _landscape("sharpness", "sample:neg_bowl", "--out", "s.h5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    proc = _landscape("plot", "s.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip().endswith("s-sharpness.png")
