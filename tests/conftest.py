"""Shared pytest configuration: a fixed Hypothesis profile so property tests are reproducible, and
torchvision importable as the command makes it (:mod:`landscape_cli.problem.torchvision_compat`).

``derandomize=True`` makes Hypothesis derive its examples from the test itself (no random seed),
so CI and a laptop run the same examples; ``deadline=None`` because a slow shared runner must not
turn into a flaky failure; ``max_examples`` keeps the property files to seconds. Another profile
can be chosen with ``HYPOTHESIS_PROFILE=dev`` (more examples, random) for a local bug hunt.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from landscape_cli.problem.torchvision_compat import allow_torchvision_without_extension

# Before any test module imports Lightning or timm, as the command does before loading a model:
# with a torchvision built for another torch installed, both would fail to import otherwise.
allow_torchvision_without_extension()

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
