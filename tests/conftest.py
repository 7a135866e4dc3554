"""Shared pytest configuration: a fixed Hypothesis profile so property tests are reproducible,
torchvision importable as the command makes it (:mod:`landscape_cli.problem.torchvision_compat`),
and SIGINT and SIGTERM handled as on a terminal.

``derandomize=True`` makes Hypothesis derive its examples from the test itself (no random seed),
so CI and a laptop run the same examples; ``deadline=None`` because a slow shared runner must not
turn into a flaky failure; ``max_examples`` keeps the property files to seconds. Another profile
can be chosen with ``HYPOTHESIS_PROFILE=dev`` (more examples, random) for a local bug hunt.
"""

from __future__ import annotations

import os
import signal

from hypothesis import HealthCheck, settings

from landscape_cli.problem.torchvision_compat import allow_torchvision_without_extension

# Before any test module imports Lightning or timm, as the command does before loading a model:
# with a torchvision built for another torch installed, both would fail to import otherwise.
allow_torchvision_without_extension()

# A test run started in the background (nohup, `pytest &` in a script) inherits SIGINT ignored,
# and every landscape process it starts would inherit it too: the signal tests need the defaults.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

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
