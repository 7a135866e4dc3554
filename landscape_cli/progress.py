"""Progress reporting without a UI dependency: analyses call ``progress(stage, done, total)``.

The CLI draws rich progress bars from these calls; a notebook user can pass any callable or
nothing. Estimators take the two-argument form ``progress(done, total)`` that :func:`stage`
binds to one stage name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

StageProgress = Callable[[str, int, int], None]
Progress = Callable[[int, int], None]


def stage(progress: StageProgress | None, name: str) -> Progress | None:
    """The estimator-level callback for stage ``name`` (``None`` when there is no progress)."""
    return None if progress is None else partial(progress, name)
