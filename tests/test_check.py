"""`landscape check` as a CI gate: exit codes, JSON, JUnit, report targets, margins."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.analyses.check import Check, evaluate, parse_flag
from landscape_cli.cli import app
from landscape_cli.errors import InputError

runner = CliRunner()
TRAINING = str(sample_models.CHECKPOINT_DIR / "mlp_training.pt")
MLP = ["--model", "landscape_cli.sample_models.mlp:build", "--data", "sample:blobs"]


def run_check(*args: str, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", "check", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def test_stable_passes_and_sharp_fails_as_a_subprocess(tmp_path):
    """The same network at SGD lr 0.1 (its stored optimizer) is beyond 2/eta; at lr 0.01 it is not."""
    junit = tmp_path / "checks.xml"
    sharp = run_check(
        TRAINING, *MLP, "--max", "lr_times_lambda_max=2", "--junit", str(junit), "--json"
    )
    assert sharp.returncode == 1, sharp.stderr
    payload = json.loads(sharp.stdout)
    assert payload["passed"] is False
    assert payload["checks"][0]["value"] > 2
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.attrib["failures"] == "1"
    assert suite.find("testcase/failure") is not None

    stable = run_check(TRAINING, *MLP, "--lr", "0.01", "--max", "lr_times_lambda_max=2", "--json")
    assert stable.returncode == 0, stable.stderr
    assert json.loads(stable.stdout)["passed"] is True


def test_checks_file_and_report_target(tmp_path):
    report = tmp_path / "r.h5"
    made = runner.invoke(app, ["classify", "--out", str(report), "--json"])
    assert made.exit_code == 0, made.stderr
    checks = tmp_path / "checks.yaml"
    checks.write_text(
        "max: {lambda_max: 100, negative_fraction: 0.01}\nequals: {classification: minimum}\n"
    )
    result = runner.invoke(app, ["check", str(report), "--checks", str(checks), "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["source"] == "report" and payload["passed"]
    assert {c["metric"] for c in payload["checks"]} == {
        "lambda_max",
        "negative_fraction",
        "classification",
    }
    # a metric the report does not hold fails with a reason instead of being computed
    missing = runner.invoke(app, ["check", str(report), "--max", "trace=1", "--json"])
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["checks"][0]["reason"]


#: The keys every command's JSON object begins with (docs/json.md).
ENVELOPE = {"command", "num_parameters", "loss", "grad_norm", "hvp_count", "seconds", "seed",
            "num_samples", "device", "dtype"}  # fmt: skip


def test_check_json_carries_the_common_envelope_for_a_checkpoint_and_a_report(tmp_path):
    report = tmp_path / "r.h5"
    made = runner.invoke(app, ["spectrum", "--out", str(report), "--no-density", "--json"])
    assert made.exit_code == 0, made.stderr
    spectrum = json.loads(made.stdout)
    computed = runner.invoke(app, ["check", "--max", "lambda_max=1e9", "--json"])
    assert computed.exit_code == 0, computed.stderr
    from_checkpoint = json.loads(computed.stdout)
    from_report = json.loads(
        runner.invoke(app, ["check", str(report), "--max", "lambda_max=1e9", "--json"]).stdout
    )
    for payload in (from_checkpoint, from_report):
        assert ENVELOPE <= set(payload) and payload["command"] == "check"
        for key in ("num_parameters", "loss", "grad_norm", "seed", "num_samples", "dtype"):
            assert payload[key] == spectrum[key], key
    assert from_checkpoint["hvp_count"] > 0 and from_report["hvp_count"] == 0


def test_margin_keeps_a_noisy_estimate_from_failing():
    outcome = evaluate([Check("trace", "max", 100.0)], {"trace": (101.0, 2.0, None)}, margin=0)
    assert not outcome[0].passed
    outcome = evaluate([Check("trace", "max", 100.0)], {"trace": (101.0, 2.0, None)}, margin=1)
    assert outcome[0].passed
    outcome = evaluate([Check("trace", "max", 100.0)], {"trace": (105.0, 2.0, None)}, margin=1)
    assert not outcome[0].passed


@pytest.mark.parametrize(
    "args, text",
    [
        (["--max", "lambda_maxx=1"], "did you mean 'lambda_max'"),
        (["--max", "lambda_max"], "METRIC=VALUE"),
        (["--max", "lambda_max=big"], "must be a number"),
        (["--max", "sharpness@-1=1"], "radius"),
        ([], "no checks given"),
    ],
)
def test_bad_thresholds_exit_2(args, text):
    result = runner.invoke(app, ["check", *args])
    assert result.exit_code == 2
    assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_classification_takes_equals_only():
    with pytest.raises(InputError, match="classification takes 'equals'"):
        parse_flag("classification=minimum", "max")


def test_checks_from_stdin():
    result = runner.invoke(
        app,
        ["check", "sample:saddle", "--checks", "-", "--json"],
        input="equals: {classification: saddle}\n",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["checks"][0]["value"] == "saddle"


def test_classification_check_reuses_the_spectrum_lanczos_run(monkeypatch):
    """classify borrows the spectrum's Ritz vectors: its own Lanczos must not run."""
    import landscape_cli.analyses.classify

    def forbidden(*args, **kwargs):
        raise AssertionError("classify ran a second Lanczos")

    monkeypatch.setattr(landscape_cli.analyses.classify, "lanczos", forbidden)
    result = runner.invoke(
        app, ["check", "--max", "lambda_max=50", "--max", "negative_fraction=0.01", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["passed"]


def test_classify_extremes_win_over_the_spectrum_s_in_the_metrics():
    """With both results, lambda_min is classify's (exact for small models, bounded by its SLQ
    nodes), so it agrees with the classification; the spectrum's Lanczos value overwrote it."""
    from types import SimpleNamespace

    import numpy as np

    from landscape_cli.analyses.check import metrics_from_results

    info = SimpleNamespace(loss=1.0, grad_norm=0.0)
    lanczos = SimpleNamespace(
        error_bounds=np.array([1e-6, 1e-6]), top_index=lambda: 1, bottom_index=lambda: 0
    )
    spectrum = SimpleNamespace(
        info=info, lanczos=lanczos, lambda_max=10.0, lambda_min=1e-5, trace_estimate=None,
        stability=None, notes={},
    )  # fmt: skip
    classify = SimpleNamespace(
        info=info, lambda_max=10.0, error_max=0.0, lambda_min=-3e-2, error_min=0.0,
        negative_fraction=0.01, negative_fraction_stderr=None, classification="saddle",
        stability=None, notes={},
    )  # fmt: skip
    metrics = metrics_from_results(spectrum=spectrum, classify=classify)
    assert metrics["lambda_min"][0] == -3e-2 and metrics["classification"][0] == "saddle"


def test_loss_and_grad_norm_alone_are_checked_as_a_subprocess():
    proc = run_check("--max", "loss=1", "--max", "grad_norm=1", "--json")
    assert proc.returncode == 0, proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    assert [c["metric"] for c in checks] == ["loss", "grad_norm"]
    assert all(c["passed"] and c["value"] is not None for c in checks)


@pytest.mark.parametrize(
    "metric, flag",
    [
        ("loss", "--max"),
        ("grad_norm", "--max"),
        ("lambda_max", "--max"),
        ("lambda_min", "--min"),
        ("trace", "--max"),
        ("negative_fraction", "--max"),
        ("lr_times_lambda_max", "--max"),
        ("sharpness@0.05", "--max"),
        ("jacobian_sigma_max", "--max"),
        ("jacobian_condition", "--max"),
    ],
)
def test_every_numeric_metric_is_computed_when_checked_alone(metric, flag):
    """Each documented metric, asked for alone on a checkpoint with an SGD optimizer state, is
    computed (a value, not "not computed")."""
    limit = "-1e12" if flag == "--min" else "1e12"
    result = runner.invoke(
        app, ["check", TRAINING, *MLP, flag, f"{metric}={limit}", "--json", "--max-samples", "64"]
    )
    assert result.exit_code == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["checks"]
    assert outcome["value"] is not None and outcome["passed"], outcome


# ---------------------------------------------------------------- the library, without the CLI
@pytest.fixture(scope="module")
def mlp():
    from landscape_cli.io.config import resolve_run_config
    from landscape_cli.problem.loading import build_objective

    config = resolve_run_config({"checkpoint": "sample:mlp"})
    return config, build_objective(config)


def test_gather_checks_reads_the_file_then_the_flags_and_resolves_the_margin(tmp_path):
    from landscape_cli.analyses.check import gather_checks

    path = tmp_path / "checks.yaml"
    path.write_text("max: {trace: 10}\nmargin: 2\n")
    checks, margin = gather_checks(path, ["lambda_max=5"], ["loss=0.1"])
    assert [c.describe() for c in checks] == ["trace <= 10.0", "lambda_max <= 5.0", "loss >= 0.1"]
    assert margin == 2.0
    assert gather_checks(path, margin=0.5)[1] == 0.5  # the argument wins over the file
    assert gather_checks(None, ["loss=1"])[1] == 0.0
    with pytest.raises(InputError, match="no checks given"):
        gather_checks()
    with pytest.raises(InputError, match="`margin=-1.0`"):
        gather_checks(None, ["loss=1"], margin=-1.0)


def test_report_paths_are_told_from_checkpoints_by_suffix():
    from landscape_cli.analyses.check import is_report_path

    assert is_report_path("runs/r.h5") and is_report_path("r.hdf5")
    assert not is_report_path("ckpt.pt") and not is_report_path(None)


def test_check_objective_computes_what_the_checks_need(mlp):
    from landscape_cli.analyses.check import check_objective

    config, objective = mlp
    stages = set()
    checks = [parse_flag("loss=1", "max"), parse_flag("lambda_max=1e-9", "max")]
    result = check_objective(
        objective, config, checks, 0.0, progress=lambda stage, done, total: stages.add(stage)
    )
    assert result.source == "checkpoint" and result.target.endswith("mlp.pt")
    assert [o.passed for o in result.outcomes] == [True, False] and not result.passed
    assert result.outcomes[1].value > 0 and "lanczos" in stages
    payload = result.to_dict()
    assert payload["num_parameters"] == objective.num_parameters
    assert payload["loss"] == objective.loss_value and payload["curvature"] == "hessian"


def test_check_computes_the_metrics_it_gates_whatever_spectrum_lambda_max_says(mlp):
    """spectrum.lambda_max in a config drops λ_min and the trace from `spectrum`; the gate's
    metrics still get them."""
    import dataclasses

    from landscape_cli.analyses.check import check_objective

    config, objective = mlp
    config = dataclasses.replace(
        config, spectrum=dataclasses.replace(config.spectrum, lambda_max=True).resolved()
    )
    checks = [parse_flag("lambda_min=1e9", "max"), parse_flag("trace=1e9", "max")]
    result = check_objective(objective, config, checks, 0.0)
    assert [o.value is not None for o in result.outcomes] == [True, True], result.to_dict()
    assert result.passed


def test_check_report_evaluates_the_stored_results_without_computing(mlp, tmp_path):
    import dataclasses

    from landscape_cli.analyses.check import check_report
    from landscape_cli.analyses.spectrum import analyze_spectrum
    from landscape_cli.io.report_file import objective_info, read_report, write_report

    config, objective = mlp
    settings = dataclasses.replace(config.spectrum, density=False, trace=False)
    spectrum = analyze_spectrum(objective, settings, seed=config.seed)
    path = write_report(
        tmp_path / "r.h5",
        {"spectrum": spectrum},
        config=config,
        command_line="test",
        objective_info=objective_info(objective, config.seed),
    )
    checks = [parse_flag("lambda_max=1e9", "max"), parse_flag("trace=1", "max")]
    result = check_report(read_report(path), checks, 0.0)
    assert result.source == "report" and result.target == str(path)
    assert result.outcomes[0].passed
    assert result.outcomes[0].value == pytest.approx(spectrum.lambda_max)
    assert not result.outcomes[1].passed and result.outcomes[1].reason  # not in the report
    assert result.run.num_parameters == objective.num_parameters
