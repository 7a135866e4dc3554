"""An analysis's plan of products: announced once measured, and counted down as they are spent.

Before the bulk of its Hessian-vector products an analysis knows how many it will spend at most
(its Lanczos share is ``max_iter``, an upper bound: the run stops when its Ritz values converge).
The time per product is measured on the first products of the run, so the estimate
``hvps × seconds_per_hvp`` holds for this network, data and HVP mode rather than for a cost
model. :class:`ProductPlan` emits the :class:`~landscape_cli.progress.Plan` once that time is
known, and reports the stage ``"hvps"`` (products spent of those planned) with every progress
call of the analysis, so a progress display can show the remaining time of the whole run; the
total is revised when the Lanczos run has stopped.
"""

from __future__ import annotations

import time
from typing import Any

from ..progress import Plan, PlanCallback, StageProgress


class ProductPlan:
    """The planned products of one analysis on ``operator`` (which counts them in ``matvecs``).

    ``hvps`` is the planned total, ``upper_bound`` whether it is a maximum. Call :meth:`start`
    right before the first products to be timed, :meth:`lap` after them when other work follows
    before the next, and :meth:`announce` when the plan is complete; the plan is emitted then if a
    product has been timed, else at the first progress call after one. :meth:`progress` is the
    :class:`~landscape_cli.progress.StageProgress` to pass on to the estimators.
    """

    def __init__(
        self,
        objective: Any,
        operator: Any,
        hvps: int,
        *,
        upper_bound: bool,
        progress: StageProgress | None,
        plan: PlanCallback | None,
    ) -> None:
        self.objective = objective
        self.operator = operator
        self.hvps = hvps
        self.upper_bound = upper_bound
        self._progress = progress
        self._plan = plan
        self._ready = False  # the counts are complete
        self._emitted = plan is None
        self._clock: tuple[float, int] | None = None  # (time, matvecs) when timing started
        self._seconds: float | None = None  # per product, once measured

    def start(self) -> None:
        """Start timing products (again, until one has been timed)."""
        if self._seconds is None:
            self._clock = (time.perf_counter(), self.operator.matvecs)

    def lap(self) -> None:
        """Keep the time per product spent since :meth:`start`, if any was spent (once)."""
        if self._seconds is None and self._clock is not None:
            started, before = self._clock
            timed = self.operator.matvecs - before
            if timed > 0:
                self._seconds = (time.perf_counter() - started) / timed

    def announce(self) -> None:
        """The counts are complete: emit the plan as soon as a product has been timed."""
        self._ready = True
        self._emit_if_timed()

    def revise(self, hvps: int, *, upper_bound: bool) -> None:
        """A new planned total (e.g. once the Lanczos run has stopped)."""
        self.hvps, self.upper_bound = hvps, upper_bound
        self._report()

    def progress(self, stage: str, done: int, total: int) -> None:
        """The analysis's ``progress(stage, done, total)``: passed on, with the ``"hvps"`` stage."""
        if self._progress is not None:
            self._progress(stage, done, total)
        self.lap()
        self._emit_if_timed()
        self._report()

    def _report(self) -> None:
        if self._progress is not None:
            spent = self.operator.matvecs
            self._progress("hvps", spent, max(self.hvps, spent))

    def _emit_if_timed(self) -> None:
        if self._emitted or not self._ready or self._seconds is None or self._plan is None:
            return
        objective = self.objective
        self._emitted = True
        self._plan(
            Plan(
                parameters=objective.num_parameters,
                samples=objective.num_samples,
                hvp_mode=objective.hvp_mode,
                graph_bytes=getattr(objective, "graph_estimate", None),
                memory_budget=objective.memory_budget,
                hvps=self.hvps,
                upper_bound=self.upper_bound,
                seconds_per_hvp=self._seconds,
            )
        )
