"""The real Typer app, through CliRunner and as a subprocess: JSON contract, exit codes, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trace-matvecs", "30", "--slq-runs", "2", "--slq-steps", "20", "--grid", "50"]
COMMON_KEYS = {"command", "num_parameters", "loss", "grad_norm", "hvp_count", "seconds", "seed"}
SPECTRUM_KEYS = {
    "lambda_max",
    "lambda_min",
    "top_eigenvalues",
    "bottom_eigenvalues",
    "trace",
    "density",
}

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_spectrum_json_has_every_guide_key_and_nothing_else_on_stdout():
    result = invoke("spectrum", "--json", *FAST)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert COMMON_KEYS | SPECTRUM_KEYS <= set(payload)
    assert payload["command"] == "spectrum"
    assert payload["num_parameters"] == 1476
    assert set(payload["trace"]) >= {"estimate", "stderr", "method", "matvecs"}
    assert set(payload["density"]) >= {"grid", "values"}
    assert len(payload["density"]["grid"]) == len(payload["density"]["values"]) == 50
    top = payload["top_eigenvalues"]
    assert len(top) == 5 and top == sorted(top, reverse=True)
    assert payload["lambda_max"] == top[0]
    assert payload["lambda_min"] == payload["bottom_eigenvalues"][0]
    assert (
        payload["hvp_count"]
        == payload["lanczos"]["matvecs"]
        + 30
        + payload["density"]["matvecs"]
        + payload["determinism_check"]["matvecs"]  # the 2 products of the determinism check
    )


def test_spectrum_table_on_a_terminal_style_run():
    result = invoke("spectrum", "sample:cnn", "--top-k", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    # the sample CNN (conv, eval BatchNorm, ReLU, max-pool) is piecewise linear: exact trace
    assert "λ_max" in result.stdout and "trace (per-sample exact)" in result.stdout
    trace_row = next(line for line in result.stdout.splitlines() if "trace (" in line)
    assert "exact │" in trace_row.replace("exact) ", "") and "s.e." not in trace_row
    assert "1,484 parameters" in result.stdout
    tanh = invoke("spectrum", "sample:mlp", "--top-k", "2", *FAST)
    assert tanh.exit_code == 0, tanh.stderr
    assert "trace (deflated hutchinson)" in tanh.stdout  # tanh: the stochastic estimate


def test_inspect_json():
    result = invoke("inspect", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert COMMON_KEYS <= set(payload) and payload["hvp_count"] == 0
    assert sum(p["numel"] for p in payload["parameters"]) == payload["num_parameters"]
    assert payload["data"]["x"]["shape"] == [512, 8]


def test_analytic_objective_via_config():
    result = invoke(
        "spectrum",
        "--config",
        str(ROOT / "configs" / "cubic.yaml"),
        "--json",
        "--no-density",
        "--no-trace",
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    # x^3 + 3xy - y^3 at (0, 0): Hessian [[0, 3], [3, 0]], eigenvalues ±3
    assert payload["lambda_max"] == pytest.approx(3.0, abs=1e-10)
    assert payload["lambda_min"] == pytest.approx(-3.0, abs=1e-10)


def test_exact_flag_agrees_with_lanczos():
    result = invoke(
        "spectrum", "--json", "--exact", "--dtype", "float64", "--no-density", "--no-trace"
    )
    payload = json.loads(result.stdout)
    assert payload["exact"]["lambda_max"] == pytest.approx(payload["lambda_max"], rel=1e-4)


def test_more_eigenvalues_asked_than_parameters_gives_every_eigenvalue():
    result = invoke("spectrum", "sample:saddle", "--top-k", "5", "--json", "--no-density")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["top_eigenvalues"] == pytest.approx([2.0, -2.0], abs=1e-6)


def test_rich_markup_in_paths_is_printed_literally(tmp_path):
    path = tmp_path / "[red]net[bold].pt"
    path.write_bytes(sample_models.get_sample("mlp").checkpoint.read_bytes())
    result = invoke(
        "inspect",
        str(path),
        "--model",
        "landscape_cli.sample_models.mlp:build",
        "--data",
        "sample:blobs",
    )
    assert result.exit_code == 0, result.stderr
    assert "[red]net[bold].pt" in result.stdout.replace("\n", "")


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and re.match(r"landscape \d+\.\d+\.\d+", result.stdout)
    assert invoke("--help").exit_code == 0


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"inspect", "spectrum"} <= set(names)
    for name in names:
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout
        assert f"landscape {name}" in readme, name


# ------------------------------------------------------------------ bad input: one line, exit code
def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def make_bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], int, str]]:
    good = Path(sample_models.get_sample("mlp").checkpoint)
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:3000])
    other = tmp_path / "cnn_weights.pt"
    other.write_bytes(Path(sample_models.get_sample("cnn").checkpoint).read_bytes())
    nan = tmp_path / "nan.pt"
    state = torch.load(good, weights_only=True)
    state["4.bias"] = torch.full_like(state["4.bias"], float("nan"))
    torch.save(state, nan)
    wrong_x = tmp_path / "wrong.pt"
    torch.save({"x": torch.zeros(10, 7), "y": torch.zeros(10, dtype=torch.long)}, wrong_x)
    typo = tmp_path / "typo.yaml"
    typo.write_text("batchsize: 3\n")
    mlp = ["--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs"]
    return {
        "missing file": ([str(tmp_path / "nope.pt"), *mlp], 2, "file not found"),
        "text file named .pt": ([str(text), *mlp], 2, "not a PyTorch checkpoint"),
        "truncated checkpoint": ([str(cut), *mlp], 2, "truncated or corrupt"),
        "other architecture": ([str(other), *mlp], 2, "missing keys '0.bias'"),
        "data shape": (
            [str(good), "--model", "landscape_cli.sample_models.mlp:build", "--data", str(wrong_x)],
            2,
            "does not fit the model",
        ),
        "NaN weights": ([str(nan), *mlp], 3, "'4.bias' holds 4 non-finite"),
        "unknown loss": ([str(good), *mlp, "--loss", "hinge"], 2, "unknown loss"),
        "YAML typo": (["--config", str(typo)], 2, "unknown key 'batchsize'"),
        "bad dtype": (["--dtype", "half"], 2, "choose one of float32, float64"),
        "no cuda": (["--device", "cuda:7"], 2, "cuda"),
        "unknown sample": (["sample:nope"], 2, "available"),
        "checkpoint without model": ([str(good)], 2, "no model given"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "text file named .pt",
        "truncated checkpoint",
        "other architecture",
        "data shape",
        "NaN weights",
        "unknown loss",
        "YAML typo",
        "bad dtype",
        "no cuda",
        "unknown sample",
        "checkpoint without model",
    ],
)
def test_bad_input_gives_one_line_and_exit_code(tmp_path, case):
    args, code, message = make_bad_inputs(tmp_path)[case]
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = invoke("spectrum", *args, "--json", *FAST)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("landscape: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, text",
    [
        (["--sigma", "-1"], "--sigma"),
        (["--sigma", "0"], "greater than 0"),
        (["--tol", "0"], "greater than 0"),
        (["--top-k", "5", "--max-iter", "3"], "--max-iter"),
    ],
)
def test_out_of_range_numbers_are_input_errors(args, text):
    one_error_line(invoke("spectrum", *args, *FAST), 2, text)


def test_usage_error_is_exit_2():
    result = invoke("spectrum", "--no-such-flag")
    assert result.exit_code == 2


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "landscape_cli", "spectrum", str(tmp_path / "nope.pt"), "--model", "a.b:c", "--debug"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_subprocess_from_another_directory_prints_json_only(tmp_path):
    """The installed entry point works from any working directory; stdout is pure JSON, and
    stderr (not a terminal: no progress bars) holds the plan line alone."""
    proc = subprocess.run(
        [sys.executable, "-m", "landscape_cli", "spectrum", "--json", *FAST],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["num_parameters"] == 1476
    assert re.fullmatch(PLAN, proc.stderr.strip()), proc.stderr


#: The plan line of `spectrum` on the bundled sample (cached: its graph fits any budget).
PLAN = (
    r"landscape: plan: 1,476 parameters · 512 samples · HVP cached \(graph [\d.]+ [kMG]?B, budget "
    r"[\d.]+ [kMG]B\) · ≤ (?P<hvps>[\d,]+) HVPs × [\d.e+-]+ m?s ≈ ≤ [\d.e+-]+ (ms|s|min)"
)


def test_plan_line_goes_to_stderr_before_the_products_with_counts_and_mode():
    result = invoke("spectrum", "--json", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "plan" not in result.stdout and json.loads(result.stdout)["command"] == "spectrum"
    plans = [line for line in result.stderr.splitlines() if line.startswith("landscape: plan:")]
    assert len(plans) == 1 and (match := re.fullmatch(PLAN, plans[0])), result.stderr
    # determinism check (2) + Lanczos at most --max-iter (200) + trace (30) + density (2 x 20)
    assert match["hvps"] == "272"


def test_plan_line_of_lambda_max_counts_the_lanczos_run_alone():
    result = invoke("spectrum", "--lambda-max", "--max-iter", "50")
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(PLAN, result.stderr.strip())["hvps"] == "52", result.stderr
    assert "plan" not in result.stdout


def test_quiet_prints_no_plan_line():
    result = invoke("spectrum", "--lambda-max", "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_same_command_twice_gives_identical_json():
    first = json.loads(invoke("spectrum", "--json", *FAST).stdout)
    second = json.loads(invoke("spectrum", "--json", *FAST).stdout)
    first.pop("seconds")
    second.pop("seconds")
    assert first == second


def test_help_does_not_import_torch():
    code = "import sys; from landscape_cli.cli import app; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
