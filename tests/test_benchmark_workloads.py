"""The benchmark scripts build the workloads they claim to: each configuration of ``scaling.py``
builds, through the helpers it shares with ``run.py``, the model and data its tables describe.

No timings here: only that a configuration builds the model and data its tables describe.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scaling():
    for path in (ROOT, ROOT / "benchmarks"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return importlib.import_module("benchmarks.scaling")


def spec(family: str, size: int, samples: int) -> dict:
    return {"family": family, "size": size, "samples": samples, "seed": 0, "device": "cpu"}


@pytest.mark.parametrize("hidden", [10, 70])
def test_scaling_mlp_configuration_has_the_documented_size(scaling, hidden):
    obj = scaling.build_objective(spec("mlp", hidden, 300), "streaming")
    # 64 -> h -> h -> 10 with biases: h² + 76 h + 10 parameters (BENCHMARKS.md)
    assert obj.num_parameters == hidden**2 + 76 * hidden + 10
    assert obj.num_samples == 300 and len(obj.batches) == 2  # batches of 256


def test_scaling_transformer_sample_size_is_the_bundled_sample(scaling):
    obj = scaling.build_objective(spec("transformer", 12, 40), "cached")
    assert obj.num_parameters == 2252 and obj.num_samples == 40
