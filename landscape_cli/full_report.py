"""``landscape report``: every analysis on one loaded objective, for one report file.

The checkpoint, data and the cached gradient graph are loaded once and shared by spectrum,
classify, sharpness and a 2-D surface; each analysis keeps its own derived random stream, so
its numbers are the same as when it runs alone with the same seed.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig
from .critical import classify_point
from .objective import Objective
from .progress import StageProgress
from .sharpness import measure_sharpness
from .spectrum import analyze_spectrum
from .surface import analyze_surface, validate_settings


def analyze_all(
    objective: Objective,
    config: RunConfig,
    *,
    surface: bool = True,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """``{"spectrum": …, "classify": …, "sharpness": …, "surface": …}`` for ``objective`` with
    the settings of ``config`` (the surface is skipped when ``surface`` is false).

    Raises ``ValueError`` for invalid surface settings before any analysis runs.
    """
    if surface:
        validate_settings(config.surface)
    results: dict[str, Any] = {
        "spectrum": analyze_spectrum(
            objective, config.spectrum, seed=config.seed, lr=config.lr, progress=progress
        ),
        "classify": classify_point(
            objective, config.classify, seed=config.seed, lr=config.lr, progress=progress
        ),
        "sharpness": measure_sharpness(
            objective, config.sharpness, seed=config.seed, progress=progress
        ),
    }
    if surface:
        results["surface"] = analyze_surface(
            objective,
            config.surface,
            seed=config.seed,
            progress=progress,
            trust_checkpoint=config.trust_checkpoint,
        )
    return results
