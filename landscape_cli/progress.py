"""Progress reporting without a UI dependency: analyses call ``progress(stage, done, total)``.

The CLI draws rich progress bars from these calls; a notebook user can pass any callable or
nothing. Estimators take the two-argument form ``progress(done, total)`` that :func:`stage`
binds to one stage name. An analysis that plans its products also reports the stage
``"hvps"`` (products spent of those planned) and calls a ``plan`` callback once with a
:class:`Plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

StageProgress = Callable[[str, int, int], None]
Progress = Callable[[int, int], None]


def stage(progress: StageProgress | None, name: str) -> Progress | None:
    """The estimator-level callback for stage ``name`` (``None`` when there is no progress)."""
    return None if progress is None else partial(progress, name)


@dataclass(frozen=True)
class Plan:
    """What an analysis is about to spend, emitted once before the bulk of its products.

    ``hvps`` counts the products on the analysed operator: at most that many when
    ``upper_bound`` (a Lanczos run stops when its Ritz values converge, usually well before
    ``max_iter``). ``seconds_per_hvp`` is measured on the first products of the run (those of the
    determinism check, or the first Lanczos step), not modelled: the cost of a product against a
    gradient varies from 1.1x to 3.6x with the network and the HVP mode (BENCHMARKS.md).
    ``graph_bytes`` is what the cached gradient graph holds, as autograd's saved tensors were
    counted while building it; after ``auto`` fell back to streaming, what it would have held,
    extrapolated from the batches counted before it exceeded ``memory_budget``; ``None`` when
    streaming was asked for (nothing was counted).
    """

    parameters: int
    samples: int
    hvp_mode: str
    graph_bytes: int | None
    memory_budget: int
    hvps: int
    upper_bound: bool
    seconds_per_hvp: float

    @property
    def seconds(self) -> float:
        """The estimated time of the planned products: ``hvps × seconds_per_hvp``."""
        return self.hvps * self.seconds_per_hvp


PlanCallback = Callable[[Plan], None]
