"""Thresholds on landscape metrics for CI gates: ``landscape check``.

A check is ``metric <= limit`` (``max``), ``metric >= limit`` (``min``) or
``metric == value`` (``equals``, for ``classification``). Metrics:

=================================  ========================================================
``lambda_max``, ``lambda_min``      Lanczos extremes (uncertainty: their error bounds)
``trace``                           Hutch++ estimate (uncertainty: its standard error)
``loss``, ``grad_norm``             at the checkpoint
``negative_fraction``               ``classify``'s SLQ estimate (uncertainty: its standard error)
``classification``                  ``classify``'s label (``equals`` only)
``lr_times_lambda_max``             η·λ_max (η from the optimizer state or ``--lr``)
``preconditioned_sharpness_ratio``  Adam: λ_max(P⁻¹H) / (38/η)
``sharpness@RHO``                   worst-case SAM sharpness at radius RHO (a lower bound)
``jacobian_sigma_max``              median over samples of the input–output Jacobian's σ_max
``jacobian_condition``              median over samples of its condition number σ_max/σ_min
=================================  ========================================================

The Jacobian metrics run :func:`~landscape_cli.analyses.jacobian.analyze_jacobian` without its layer and
NTK parts, and only when a check asks for one of them.

**Margin.** Stochastic estimates carry an uncertainty ``u``; with ``margin = k`` a ``max`` check
fails only when ``value − k·u > limit`` (``min``: ``value + k·u < limit``), so a metric within
``k`` uncertainties of its threshold does not make a build flap. ``k = 0`` (default) compares the
estimate itself.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from ..errors import InputError
from ..files import refuse_special_file
from ..options import shown
from ..safe_yaml import load_yaml
from .run_info import RunInfo

NUMERIC_METRICS = (
    "lambda_max",
    "lambda_min",
    "trace",
    "loss",
    "grad_norm",
    "negative_fraction",
    "lr_times_lambda_max",
    "preconditioned_sharpness_ratio",
    "jacobian_sigma_max",
    "jacobian_condition",
)
JACOBIAN_METRICS = ("jacobian_sigma_max", "jacobian_condition")
SHARPNESS_METRIC = re.compile(r"^sharpness@([0-9.eE+-]+)$")


@dataclass(frozen=True)
class Check:
    """One threshold: ``kind`` is ``max``, ``min`` or ``equals``."""

    metric: str
    kind: str
    limit: Any

    def describe(self) -> str:
        symbol = {"max": "<=", "min": ">=", "equals": "=="}[self.kind]
        return f"{self.metric} {symbol} {self.limit}"


@dataclass(frozen=True)
class CheckOutcome:
    check: Check
    value: Any
    uncertainty: float | None
    passed: bool
    reason: str | None = None  # why a value is missing

    def to_dict(self) -> dict[str, Any]:
        out = {
            "metric": self.check.metric,
            "kind": self.check.kind,
            "value": self.value,
            "limit": self.check.limit,
            "passed": self.passed,
            "uncertainty": self.uncertainty,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class CheckResult:
    """The outcome of every check, with the common envelope of a command's JSON (``run``: the
    objective and the cost; for a report, what it stores, with ``hvp_count`` 0) and ``info``
    (the curvature and parameter block the metrics are of)."""

    outcomes: list[CheckOutcome]
    margin: float
    source: str  # "report" or "checkpoint"
    target: str
    info: dict[str, Any] = field(default_factory=dict)
    run: RunInfo | None = None

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            **(self.run.to_dict() if self.run is not None else {}),
            "command": "check",
            **self.info,
            "passed": self.passed,
            "source": self.source,
            "target": self.target,
            "margin": self.margin,
            "checks": [o.to_dict() for o in self.outcomes],
        }


def _metric_name(name: str, where: str) -> str:
    name = str(name).strip()
    if name in NUMERIC_METRICS or name == "classification":
        return name
    match = SHARPNESS_METRIC.match(name)
    if match:
        try:
            rho = float(match.group(1))
        except ValueError:
            rho = float("nan")
        if not (math.isfinite(rho) and rho > 0):
            raise InputError(f"{where}: '{name}': the radius after @ must be a number > 0")
        return f"sharpness@{rho:g}"
    import difflib

    known = [*NUMERIC_METRICS, "classification", "sharpness@RHO"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    raise InputError(f"{where}: unknown metric '{name}'", hint=hint)


def _limit(metric: str, kind: str, value: Any, where: str) -> Any:
    if metric == "classification":
        if kind != "equals":
            raise InputError(f"{where}: classification takes 'equals', not '{kind}'")
        from .classify import LABELS

        if value not in LABELS:
            raise InputError(f"{where}: classification must equal one of {', '.join(LABELS)}")
        return value
    if kind == "equals":
        raise InputError(f"{where}: '{metric}' takes max or min, not equals")
    if isinstance(value, bool):  # YAML's true/false: float() would make them 1.0 and 0.0
        raise InputError(
            f"{where}: the limit of '{metric}' must be a number, got the boolean "
            f"{str(value).lower()}"
        )
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        raise InputError(
            f"{where}: the limit of '{metric}' must be a number, got {shown(value)}"
        ) from None
    if not math.isfinite(number):
        raise InputError(f"{where}: the limit of '{metric}' must be finite")
    return number


def parse_flag(text: str, kind: str) -> Check:
    """``--max lambda_max=50`` → ``Check("lambda_max", "max", 50.0)``."""
    where = f"--{kind} {text}"
    metric, sep, value = text.partition("=")
    if not sep:
        raise InputError(f"{where}: expected METRIC=VALUE")
    name = _metric_name(metric, where)
    return Check(name, kind, _limit(name, kind, value.strip(), where))


def read_checks(path: str | Path) -> tuple[list[Check], float | None]:
    """Checks from YAML (``path``, or ``-`` for standard input): mappings ``max:``, ``min:``,
    ``equals:`` of metric → limit, and an optional ``margin:``. Unknown keys and metrics are
    errors naming them."""
    where = f"checks {path}"
    try:
        if str(path) == "-":  # thresholds piped in on standard input
            import sys

            text = sys.stdin.read()
        else:
            refuse_special_file(path, where)
            text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read it ({exc})") from None
    document = load_yaml(text, where)
    if not isinstance(document, Mapping):
        raise InputError(f"{where}: expected a mapping with max:, min:, equals: and margin:")
    checks: list[Check] = []
    margin = None
    for key, value in document.items():
        if key == "margin":
            if isinstance(value, bool):  # float(True) would be 1.0
                raise InputError(
                    f"{where}: margin must be a number, got the boolean {str(value).lower()}"
                )
            try:
                margin = float(value)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"{where}: margin must be a number, got {shown(value)}") from None
            if not (math.isfinite(margin) and margin >= 0):
                raise InputError(f"{where}: margin {shown(value)} must be a finite number >= 0")
            continue
        if key not in ("max", "min", "equals"):
            raise InputError(
                f"{where}: unknown key '{key}'", hint="use max:, min:, equals:, margin:"
            )
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: '{key}' must map metrics to limits")
        for metric, limit in value.items():
            name = _metric_name(metric, where)
            checks.append(Check(name, key, _limit(name, key, limit, where)))
    if not checks:
        raise InputError(f"{where}: no checks", hint="add e.g. max: {lambda_max: 100}")
    return checks, margin


def evaluate(
    checks: list[Check], metrics: Mapping[str, tuple[Any, float | None, str | None]], margin: float
) -> list[CheckOutcome]:
    """Compare each check with ``metrics[name] = (value, uncertainty, reason_if_missing)``.

    A metric that could not be computed fails its check, with the reason.
    """
    outcomes = []
    for check in checks:
        value, uncertainty, reason = metrics.get(check.metric, (None, None, "not computed"))
        if value is None:
            outcomes.append(CheckOutcome(check, None, None, False, reason or "not available"))
            continue
        slack = margin * (uncertainty or 0.0)
        if check.kind == "max":
            passed = value - slack <= check.limit
        elif check.kind == "min":
            passed = value + slack >= check.limit
        else:
            passed = value == check.limit
        outcomes.append(CheckOutcome(check, value, uncertainty, bool(passed)))
    return outcomes


def junit_xml(result: CheckResult) -> str:
    """The outcomes as a JUnit XML ``testsuite`` (one ``testcase`` per check)."""
    failures = sum(not o.passed for o in result.outcomes)
    suite = ElementTree.Element(
        "testsuite",
        name="landscape check",
        tests=str(len(result.outcomes)),
        failures=str(failures),
        errors="0",
    )
    for outcome in result.outcomes:
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"landscape.{result.source}", name=outcome.check.describe()
        )
        if not outcome.passed:
            message = (
                f"{outcome.check.metric} = {outcome.value} violates {outcome.check.describe()}"
                if outcome.value is not None
                else f"{outcome.check.metric}: {outcome.reason}"
            )
            failure = ElementTree.SubElement(case, "failure", message=message)
            failure.text = message
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)


# ------------------------------------------------------------------ gathering and running checks
#: The suffixes of a report target: ``check`` reads such a file and computes nothing.
REPORT_SUFFIXES = (".h5", ".hdf5")


def is_report_path(target: str | Path | None) -> bool:
    """Whether ``target`` names a report (``.h5``, ``.hdf5``) rather than a checkpoint."""
    return target is not None and Path(target).suffix in REPORT_SUFFIXES


def gather_checks(
    checks_file: str | Path | None = None,
    max_checks: Sequence[str] = (),
    min_checks: Sequence[str] = (),
    margin: float | None = None,
) -> tuple[list[Check], float]:
    """The checks of a YAML file (:func:`read_checks`), then the upper bounds ``max_checks`` and
    lower bounds ``min_checks`` (``METRIC=VALUE`` texts), and the margin: ``margin`` if given,
    else the file's, else 0.

    Raises:
        InputError: no checks at all, a bad check, or a margin that is not a finite number >= 0.
    """
    checks, file_margin = read_checks(checks_file) if checks_file is not None else ([], None)
    checks += [parse_flag(text, "max") for text in max_checks]
    checks += [parse_flag(text, "min") for text in min_checks]
    if not checks:
        raise InputError(
            "no checks given",
            hint="use `checks_file=FILE.yaml` or `max_checks`/`min_checks` METRIC=VALUE",
        )
    k = margin if margin is not None else (file_margin or 0.0)
    if not (math.isfinite(k) and k >= 0):
        raise InputError(f"`margin={k}`: must be a finite number >= 0")
    return checks, k


def check_report(
    report: Any, checks: list[Check], margin: float, *, target: str | None = None
) -> CheckResult:
    """``checks`` on the results a report holds (a
    :class:`~landscape_cli.io.report_file.Report`, as :func:`~landscape_cli.io.report_file.read_report`
    returns it); computes nothing, so a metric the report lacks fails with a reason. ``target``
    names the report in the result (default: its path)."""
    start = time.perf_counter()
    spectrum = report.spectrum
    sections = [report.spectrum, report.classify, report.sharpness, report.jacobian]
    metrics = metrics_from_results(*sections)
    info = {
        "curvature": None if spectrum is None else spectrum.curvature,
        "params": None if spectrum is None else list(spectrum.params) or None,
    }
    run = RunInfo.from_report(report, "check", time.perf_counter() - start)
    source = str(report.path) if target is None else target
    return CheckResult(evaluate(checks, metrics, margin), margin, "report", source, info, run)


def check_objective(
    objective: Any,
    config: Any,
    checks: list[Check],
    margin: float,
    progress: Callable[[str, int, int], None] | None = None,
) -> CheckResult:
    """``checks`` on ``objective``, running only the analyses they need
    (:func:`compute_metrics`) with the settings of ``config`` (a
    :class:`~landscape_cli.analyses.settings.RunConfig`)."""
    start = time.perf_counter()
    results = _needed_results(objective, config, checks, progress=progress)
    metrics = _metrics(objective, results)
    info = {
        "curvature": config.spectrum.curvature,
        "params": list(config.spectrum.params) or None,
    }
    hvps = sum(r.info.hvp_count for r in results if r is not None)
    run = RunInfo.from_objective(objective, "check", config.seed, hvps, time.perf_counter() - start)
    checkpoint = getattr(objective, "checkpoint", None)
    source = checkpoint.path if checkpoint is not None else "model"
    return CheckResult(evaluate(checks, metrics, margin), margin, "checkpoint", source, info, run)


# ------------------------------------------------------------------ metrics from results
def _sharpness_radii(checks: list[Check]) -> list[float]:
    return sorted(
        {float(c.metric.split("@")[1]) for c in checks if c.metric.startswith("sharpness@")}
    )


Metrics = dict[str, tuple[Any, float | None, str | None]]


def _spectrum_metrics(spectrum: Any, metrics: Metrics) -> None:
    lz = spectrum.lanczos
    metrics["lambda_max"] = (spectrum.lambda_max, float(lz.error_bounds[lz.top_index()]), None)
    if spectrum.lambda_min is not None:
        metrics["lambda_min"] = (
            spectrum.lambda_min,
            float(lz.error_bounds[lz.bottom_index()]),
            None,
        )
    if spectrum.trace_estimate is not None:
        metrics["trace"] = (
            spectrum.trace_estimate.estimate,
            spectrum.trace_estimate.stderr,
            None,
        )
    _stability_metrics(metrics, spectrum.stability, spectrum.notes)


def _classify_metrics(classify: Any, metrics: Metrics) -> None:
    # classify's extremes win: exact up to 200 parameters, else bounded by its SLQ nodes too,
    # so lambda_min agrees with the classification it decided
    metrics["lambda_max"] = (classify.lambda_max, classify.error_max, None)
    metrics["lambda_min"] = (classify.lambda_min, classify.error_min, None)
    metrics["negative_fraction"] = (
        classify.negative_fraction,
        classify.negative_fraction_stderr,
        None,
    )
    metrics["classification"] = (classify.classification, None, None)
    _stability_metrics(metrics, classify.stability, classify.notes)


def _sharpness_metrics(sharpness: Any, metrics: Metrics) -> None:
    for rho, worst in zip(sharpness.rho, sharpness.worst_case, strict=True):
        metrics[f"sharpness@{rho:g}"] = (
            worst,
            None,
            None if worst is not None else "not computed",
        )


def _jacobian_metrics(jacobian: Any, metrics: Metrics) -> None:
    metrics["jacobian_sigma_max"] = (jacobian.sigma_max_median, None, None)
    condition = jacobian.condition_median
    reason = None
    if condition is None:
        reason = jacobian.notes.get("sigma_min", "σ_min is zero for every sample")
    metrics["jacobian_condition"] = (condition, None, reason)


#: The metrics of each registered analysis, applied in this order (classify's extremes replace
#: spectrum's); ``None`` for an analysis that yields no metric to hold a threshold against.
RESULT_METRICS: dict[str, Callable[[Any, Metrics], None] | None] = {
    "spectrum": _spectrum_metrics,
    "classify": _classify_metrics,
    "sharpness": _sharpness_metrics,
    "jacobian": _jacobian_metrics,
    "kfac": None,  # how well an optimizer's approximation fits, not a property of the training
    "surface": None,  # a loss surface is a picture: its numbers depend on the random directions
    "track": None,  # a series of checkpoints: each one is checked on its own
}


def metrics_from_results(
    spectrum: Any = None, classify: Any = None, sharpness: Any = None, jacobian: Any = None
) -> Metrics:
    """Metric values (with uncertainty) from whichever results are present: the loss and
    gradient norm of the first, then each result's metrics (:data:`RESULT_METRICS`)."""
    results = {
        "spectrum": spectrum,
        "classify": classify,
        "sharpness": sharpness,
        "jacobian": jacobian,
    }
    metrics: Metrics = {}
    info = next((r.info for r in results.values() if r is not None), None)
    if info is not None:
        metrics["loss"] = (info.loss, None, None)
        metrics["grad_norm"] = (info.grad_norm, None, None)
    for name, add in RESULT_METRICS.items():
        result = results.get(name)
        if add is not None and result is not None:
            add(result, metrics)
    return metrics


def _stability_metrics(metrics: dict, stability: Any, notes: Mapping[str, str]) -> None:
    if stability is None:
        reason = notes.get("stability", "no learning rate")
        metrics.setdefault("lr_times_lambda_max", (None, None, reason))
        metrics.setdefault("preconditioned_sharpness_ratio", (None, None, reason))
        return
    metrics["lr_times_lambda_max"] = (stability.lr_times_lambda_max, None, None)
    if stability.preconditioned_sharpness is not None:
        ratio = stability.preconditioned_sharpness / stability.preconditioned_threshold
        metrics["preconditioned_sharpness_ratio"] = (ratio, None, None)
    else:
        metrics["preconditioned_sharpness_ratio"] = (None, None, "not an Adam checkpoint")


def compute_metrics(
    objective: Any, config: Any, checks: list[Check], *, progress: Any = None
) -> dict:
    """Run only what the checks need on ``objective`` and return the metrics."""
    return _metrics(objective, _needed_results(objective, config, checks, progress=progress))


def _metrics(objective: Any, results: Sequence[Any]) -> Metrics:
    """The metrics of ``results`` (spectrum, classify, sharpness, jacobian; ``None`` where not
    run), with the loss and gradient norm, known once the objective is loaded."""
    metrics = metrics_from_results(*results)
    metrics.setdefault("loss", (objective.loss_value, None, None))
    metrics.setdefault("grad_norm", (objective.grad_norm, None, None))
    return metrics


def _needed_results(
    objective: Any, config: Any, checks: list[Check], *, progress: Any = None
) -> list[Any]:
    """``[spectrum, classify, sharpness, jacobian]``: each analysis the checks need, run on
    ``objective`` with only the parts they need; ``None`` for the others."""
    import dataclasses

    from .classify import classify_point
    from .jacobian import analyze_jacobian
    from .sharpness import measure_sharpness
    from .spectrum import analyze_spectrum

    names = {c.metric for c in checks}
    spectrum = classify = sharpness = jacobian = None
    curvature = {
        "lambda_max", "lambda_min", "trace", "negative_fraction", "classification",
        "lr_times_lambda_max", "preconditioned_sharpness_ratio",
    }  # fmt: skip
    if names & {"negative_fraction", "classification"}:
        config.spectrum.require_full_hessian(
            "the classification (negative_fraction, classification)"
        )
    if names & curvature:
        # one Lanczos run (with its Ritz vectors) serves spectrum's and classify's metrics; the
        # metrics, not spectrum.lambda_max, say what it computes
        settings = dataclasses.replace(
            config.spectrum,
            lambda_max=False,
            top_k=1,
            bottom_k=max(config.spectrum.bottom_k, 1),
            trace="trace" in names,
            density=False,
            exact=False,
            save_eigenvectors=bool(names & {"negative_fraction", "classification"}),
        )
        spectrum = analyze_spectrum(
            objective, settings, seed=config.seed, lr=config.lr, progress=progress
        )
    if names & {"negative_fraction", "classification"}:
        classify = classify_point(
            objective,
            config.classify,
            seed=config.seed,
            lr=config.lr,
            progress=progress,
            spectrum=spectrum,
        )
    radii = _sharpness_radii(checks)
    if radii:
        settings = dataclasses.replace(config.sharpness, rho=tuple(radii), second_order=False)
        sharpness = measure_sharpness(objective, settings, seed=config.seed, progress=progress)
    if names & set(JACOBIAN_METRICS):
        settings = dataclasses.replace(config.jacobian, layers=False, ntk=False)
        jacobian = analyze_jacobian(objective, settings, seed=config.seed, progress=progress)
    return [spectrum, classify, sharpness, jacobian]
