"""``landscape report``: every analysis on one loaded objective, for one report file.

The checkpoint, data and the cached gradient graph are loaded once and shared by spectrum,
classify, sharpness and a 2-D surface, and so is the spectrum's Lanczos run (λ_max, λ_min and
the λ_min eigenvector for classify and sharpness) and its SLQ nodes (classify's negative
fraction). The spectrum itself is what ``landscape spectrum`` gives with the same seed; its Ritz
vectors are kept for the report only with ``save_eigenvectors``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InputError
from ..problem.objective import Objective
from ..progress import StageProgress
from .classify import classify_point
from .run_info import RunInfo
from .settings import RunConfig
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

    Raises:
        InputError: a curvature other than the full Hessian, or a bad setting (``report
            settings: …``; the surface's are checked before any analysis runs).
    """
    try:
        return _analyze_all(objective, config, surface=surface, progress=progress)
    except ValueError as exc:
        raise InputError(f"report settings: {exc}") from None


def _analyze_all(
    objective: Objective, config: RunConfig, *, surface: bool, progress: StageProgress | None
) -> dict[str, Any]:
    config.spectrum.require_full_hessian("landscape report (its classify and sharpness sections)")
    if surface:
        validate_settings(config.surface)
    # one Krylov space serves all three: the spectrum's Lanczos run (with its Ritz vectors) gives
    # classify its extremes and escape direction and sharpness its λ_max; the spectrum's SLQ
    # nodes and stability report serve classify too
    settings = dataclasses.replace(
        config.spectrum,
        save_eigenvectors=True,
        bottom_k=max(config.spectrum.bottom_k, 1),
        lambda_max=False,  # classify needs λ_min and its vector
    )
    spectrum = analyze_spectrum(
        objective, settings, seed=config.seed, lr=config.lr, progress=progress
    )
    results: dict[str, Any] = {
        "spectrum": spectrum,
        "classify": classify_point(
            objective,
            config.classify,
            seed=config.seed,
            lr=config.lr,
            progress=progress,
            spectrum=spectrum,
        ),
        "sharpness": measure_sharpness(
            objective,
            config.sharpness,
            seed=config.seed,
            progress=progress,
            lanczos_result=spectrum.lanczos,
        ),
    }
    if not config.spectrum.save_eigenvectors:  # kept for classify and sharpness, not asked for
        lanczos = dataclasses.replace(spectrum.lanczos, top_vectors=None, bottom_vectors=None)
        results["spectrum"] = dataclasses.replace(spectrum, lanczos=lanczos)
    if surface:
        results["surface"] = analyze_surface(
            objective,
            config.surface,
            seed=config.seed,
            progress=progress,
            trust_checkpoint=config.trust_checkpoint,
        )
    return results


def bundle_run_info(objective: Objective, results: dict[str, Any], seed: int) -> RunInfo:
    """The run info of a whole :func:`analyze_all`: the objective's, with the HVPs and seconds
    of its analyses summed (classify and sharpness count only what they spent beyond the
    spectrum's shared Lanczos run)."""
    infos = [r.info for r in results.values() if getattr(r, "info", None) is not None]
    return RunInfo.from_objective(
        objective,
        "report",
        seed,
        sum(info.hvp_count for info in infos),
        sum(info.seconds for info in infos),
    )
