"""The plan an analysis emits before its products, and the "hvps" stage counting them down.

No timings are asserted: only that a time per product was measured (positive, finite), that the
plan arrives once and before the Lanczos run's products, and that its counts are the settings'.
"""

from __future__ import annotations

import math

import pytest

from landscape_cli.analyses.spectrum import SpectrumSettings, analyze_spectrum
from landscape_cli.io.config import resolve_run_config
from landscape_cli.problem.loading import build_objective
from landscape_cli.progress import Plan


@pytest.fixture(scope="module")
def objective():
    return build_objective(resolve_run_config({}), determinism_check=False)


def run(objective, settings: SpectrumSettings) -> tuple[list, object]:
    events: list = []
    result = analyze_spectrum(
        objective,
        settings,
        progress=lambda stage, done, total: events.append((stage, done, total)),
        plan=events.append,
    )
    return events, result


@pytest.mark.parametrize("check", [True, False], ids=["determinism-check", "no-check"])
def test_the_plan_arrives_once_before_the_lanczos_products(objective, check):
    settings = SpectrumSettings(
        determinism_check=check, max_iter=60, trace_matvecs=12, slq_runs=1, slq_steps=10
    )
    events, result = run(objective, settings)
    plans = [i for i, event in enumerate(events) if isinstance(event, Plan)]
    assert len(plans) == 1
    plan = events[plans[0]]
    lanczos_steps = [
        e[1] for e in events[: plans[0]] if not isinstance(e, Plan) and e[0] == "lanczos"
    ]
    # timed on the determinism check's products, or on the first Lanczos step without it
    assert lanczos_steps == ([] if check else [1])
    assert plan.hvps == (2 if check else 0) + 60 + 12 + 10 and plan.upper_bound
    assert (plan.parameters, plan.samples, plan.hvp_mode) == (1476, 512, "cached")
    assert plan.graph_bytes == objective.graph_bytes > 0
    assert plan.memory_budget == objective.memory_budget
    assert math.isfinite(plan.seconds_per_hvp) and plan.seconds_per_hvp > 0
    assert plan.seconds == plan.hvps * plan.seconds_per_hvp
    hvps = [e for e in events if not isinstance(e, Plan) and e[0] == "hvps"]
    assert hvps[-1] == ("hvps", result.info.hvp_count, result.info.hvp_count)
    assert all(done <= total for _, done, total in hvps)
