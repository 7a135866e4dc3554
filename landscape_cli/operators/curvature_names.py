"""The curvature matrices by key, and how each is named in prose, headings and figure labels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CurvatureName:
    """How one curvature matrix is named: ``prose`` inside a sentence ("the ..."), ``title`` at
    the head of a table, ``label`` in a figure title, ``detail`` where a report says in full
    what was analysed."""

    prose: str
    title: str
    label: str
    detail: str


#: Every curvature a command can analyse (``--curvature``), in the order of its choices.
CURVATURE_NAMES: dict[str, CurvatureName] = {
    "hessian": CurvatureName("Hessian", "Hessian", "Hessian", "Hessian"),
    "ggn": CurvatureName(
        "generalised Gauss-Newton",
        "Generalised Gauss-Newton (Fisher)",
        "GGN (Fisher)",
        "generalised Gauss-Newton (Fisher)",
    ),
    "ef": CurvatureName(
        "empirical Fisher", "Empirical Fisher", "empirical Fisher", "empirical Fisher"
    ),
    "kfac": CurvatureName(
        "K-FAC",
        "K-FAC (Kronecker-factored GGN)",
        "K-FAC",
        "K-FAC approximation of the generalised Gauss-Newton",
    ),
    "ekfac": CurvatureName(
        "EK-FAC",
        "EK-FAC (eigenvalue-corrected K-FAC)",
        "EK-FAC",
        "EK-FAC approximation of the generalised Gauss-Newton",
    ),
}
CURVATURES = tuple(CURVATURE_NAMES)
#: The curvatures given by Kronecker factors, whose trace and eigenvalues the factors hold.
KRONECKER_CURVATURES = ("kfac", "ekfac")


def curvature_name(key: str) -> CurvatureName:
    """The names of ``key``; an unknown key names itself in every form."""
    return CURVATURE_NAMES.get(key) or CurvatureName(key, key, key, key)
