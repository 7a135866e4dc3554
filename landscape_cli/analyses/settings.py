"""Every analysis's settings, and the settings of a whole run.

Each field is one option, declared once with :func:`~landscape_cli.options.option`: its default,
help, bounds and choices. The command line, config files, ``configs/reference.yaml`` and the
option tables of the documentation are derived from these fields. They live together in this
module, which imports no torch, so that ``landscape --help`` builds every command's options
without loading it; each analysis module re-exports its own class
(``from landscape_cli.analyses.spectrum import SpectrumSettings``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InputError
from ..operators.curvature_names import CURVATURES
from ..options import OptionSpec, option, option_specs
from ..problem.settings import ProblemSettings


@dataclass(frozen=True)
class SpectrumSettings:
    """Options of ``landscape spectrum``: extremes, trace and density of the curvature."""

    top_k: int = option(5, "Largest eigenvalues to report.", minimum=1)
    bottom_k: int = option(
        1,
        "Smallest eigenvalues to report (λ_min is the first); 0: Lanczos waits for the top alone.",
        minimum=0,
    )
    lambda_max: bool = option(
        False,
        "λ_max alone: Lanczos stops when the top Ritz value meets tol; sets top_k=1, "
        "bottom_k=0, no trace, no density.",
    )
    tol: float = option(
        1e-4,
        "Relative error target of the reported eigenvalues: Lanczos stops when their residuals "
        "are below tol·(spectral-norm estimate).",
        positive=True,
    )
    max_iter: int = option(200, "Maximum Lanczos iterations (one HVP each).", minimum=1)
    trace: bool = option(True, "Estimate the trace.")
    trace_method: str = option(
        "auto",
        "auto: exact from per-sample gradient norms where that applies, else Hutchinson or "
        "Hutch++, whichever the first products predict to be more accurate; per-sample: exact or "
        "an error; hutch++; hutchinson.",
        choices=("auto", "hutch++", "hutchinson", "per-sample"),
    )
    trace_matvecs: int = option(60, "HVPs spent on the trace estimate.", minimum=4)
    deflate_trace: bool = option(
        True,
        "Deflate the trace by the extremes' Lanczos basis: tr(T_m) is free, the budget goes to "
        "the remainder.",
    )
    density: bool = option(True, "Estimate the spectral density (stochastic Lanczos quadrature).")
    share_lanczos: bool = option(
        True,
        "Count the extremes' Lanczos run (Gaussian start) as one more SLQ run of the density, "
        "for no further HVP.",
    )
    slq_runs: int = option(
        2,
        "SLQ random probes besides the shared Lanczos run, at most (see slq_probe_error).",
        minimum=0,
    )
    slq_steps: int = option(30, "Lanczos steps per SLQ probe.", minimum=2)
    slq_probe_error: float = option(
        0.01,
        "SLQ runs stop being added once the probes' standard error of any interval's mass, at "
        "most sqrt(1/(2·n·runs)), is below this: large models need one run; 0: all slq_runs.",
        minimum=0.0,
    )
    sigma: float | None = option(
        None,
        "Gaussian broadening width of the density.",
        positive=True,
        default_text="from the spectral width",
    )
    grid: int = option(1000, "Density grid points.", minimum=10)
    exact: bool = option(False, "Also compute the exact Hessian (refused above 6000 parameters).")
    save_eigenvectors: bool = option(
        False, "Keep the top-k Ritz vectors (stored in the --out report)."
    )
    curvature: str = option(
        "hessian",
        "The matrix analysed: hessian, ggn (generalised Gauss-Newton; the Fisher for "
        "cross-entropy/MSE), ef (empirical Fisher), kfac (the GGN's Kronecker-factored "
        "approximation on Linear and Conv2d layers) or ekfac (its eigenvalue-corrected form); "
        "all but hessian need a built-in loss.",
        choices=CURVATURES,
        commands=("spectrum", "check", "track"),
    )
    params: tuple[str, ...] = option(
        (),
        "Only the diagonal block of these parameters: glob patterns ('fc1.*') or re:REGEX; "
        "repeatable.",
        commands=("spectrum", "check", "track"),
        default_text="all",
    )
    per_layer: bool = option(
        False, "λ_max and trace of each module's diagonal block, sorted by λ_max."
    )
    spread: int | None = option(
        None,
        "λ_max and trace on K disjoint contiguous subsets of the data: mean ± std.",
        minimum=2,
        default_text="off",
    )
    determinism_check: bool = option(
        True,
        "First check that the loss and two products are reproducible; stop (exit 2) if not.",
        commands=("spectrum", "check", "track"),
    )

    def resolved(self, given: Collection[str] | None = None) -> SpectrumSettings:
        """These settings with what ``lambda_max`` implies (:data:`LAMBDA_MAX_ONLY`) applied.

        A λ_max-only run is one Lanczos run stopped when the top Ritz value alone meets ``tol``:
        the bottom of a network Hessian's spectrum is a dense bulk near zero whose extreme Ritz
        value converges several times more slowly than an isolated top eigenvalue, and the trace
        and density cost far more products than λ_max. An option named in ``given`` (the keys
        the user set; by default those away from their default) that asks for more is an
        :class:`InputError`, not silently overridden. Idempotent.
        """
        if not self.lambda_max:
            return self
        if given is None:
            defaults = SpectrumSettings()
            given = [key for key in LAMBDA_MAX_ONLY if getattr(self, key) != getattr(defaults, key)]
        for key, value in LAMBDA_MAX_ONLY.items():
            if key in given and getattr(self, key) != value:
                raise InputError(
                    "`lambda_max` computes λ_max alone, without further eigenvalues, trace or "
                    f"density, which `{key}={getattr(self, key)}` contradicts",
                    hint=f"drop `{key}` for λ_max alone, or `lambda_max` for the full analysis",
                )
        return replace(self, **LAMBDA_MAX_ONLY)

    def require_full_hessian(self, what: str) -> None:
        """An :class:`InputError` when these settings select a curvature other than the Hessian
        or a parameter block, for ``what``, an analysis defined on the full Hessian only."""
        if self.curvature != "hessian" or self.params:
            chosen = (
                f"`curvature={self.curvature}`"
                if self.curvature != "hessian"
                else "a block of `params` (" + " ".join(self.params) + ")"
            )
            raise InputError(
                f"{what} is defined on the full Hessian only, but {chosen} is set",
                hint="use `landscape spectrum` for other curvatures and parameter blocks",
            )


#: What ``SpectrumSettings(lambda_max=True)`` sets: the largest eigenvalue and nothing else.
LAMBDA_MAX_ONLY: Mapping[str, Any] = {"top_k": 1, "bottom_k": 0, "trace": False, "density": False}


@dataclass(frozen=True)
class ClassifySettings:
    """Options of ``landscape classify``; the decision rule is :func:`decide`."""

    grad_tol: float = option(
        1e-3,
        "Stationary when ‖g‖/|c| ≤ grad_tol·max(‖w‖, 1), c = gᵀHg/‖g‖² clamped to [neg_tol·κ, κ].",
        positive=True,
    )
    neg_tol: float = option(
        1e-3, "λ_min counts as negative below −(neg_tol·κ + its error bound).", minimum=0.0
    )
    flat_tol: float = option(
        1e-6, "An eigenvalue within flat_tol·κ (+ error bound) of zero is flat.", minimum=0.0
    )
    zero_curvature: float = option(
        1e-8, "κ at or below this: the Hessian vanishes (degenerate).", minimum=0.0
    )
    tol: float = option(1e-4, "Lanczos relative error target for λ_max and λ_min.", positive=True)
    max_iter: int = option(200, "Maximum Lanczos iterations.", minimum=2)
    slq_runs: int = option(
        4, "SLQ probes for the negative fraction (exact up to 200 parameters).", minimum=0
    )
    slq_steps: int = option(60, "Lanczos steps per SLQ probe.", minimum=2)
    newton: bool = option(True, "Compute the Newton decrement by conjugate gradient.")
    cg_tol: float = option(1e-6, "Conjugate-gradient relative residual target.", positive=True)
    cg_max_iter: int = option(100, "Maximum conjugate-gradient iterations (HVPs).", minimum=1)
    escape_steps: tuple[float, ...] = option(
        (0.25, 0.5, 1.0, 2.0, 4.0),
        "Escape probe steps, in units of escape_scale·max(‖w‖, 1); comma-separated or repeated.",
    )
    escape_scale: float = option(
        0.01,
        "Escape probe steps t are multiples of escape_scale·max(‖w‖, 1).",
        positive=True,
    )


@dataclass(frozen=True)
class SharpnessSettings:
    """Options of ``landscape sharpness``; the measures are described in this module."""

    rho: tuple[float, ...] = option(
        (0.01, 0.02, 0.05, 0.1, 0.2),
        "Radii of the perturbation ball (each > 0); comma-separated or repeated.",
        minimum=0.0,
    )
    adaptive: bool = option(False, "ASAM's scale-invariant ball ‖ε/(|w|+η)‖ ≤ ρ.")
    eta: float = option(0.01, "ASAM's η in T_w = diag(|w| + η).", minimum=0.0)
    steps: int = option(20, "Projected gradient-ascent steps per start (worst case).", minimum=1)
    restarts: int = option(2, "Random starts besides the SAM point (worst case).", minimum=0)
    samples: int = option(16, "Monte Carlo pairs ±ε for the average case.", minimum=2)
    m: int | None = option(
        None,
        "m-sharpness: average over disjoint batches of m samples.",
        minimum=1,
        default_text="off",
    )
    second_order: bool = option(True, "λ_max by Lanczos for ρ‖g‖ + ½ρ²λ_max.")
    tol: float = option(1e-4, "Lanczos relative error target.", positive=True)
    max_iter: int = option(100, "Maximum Lanczos iterations.", minimum=1)


@dataclass(frozen=True)
class SurfaceSettings:
    """Options of ``landscape surface``; the directions are described in this module."""

    dims: int = option(2, "1 (a curve) or 2 (a surface).", minimum=1)
    kind: str = option(
        "random",
        "Directions: random (filter-normalised), eigen (top Hessian eigenvectors) or "
        "interpolation (towards --to).",
        choices=("random", "eigen", "interpolation"),
    )
    points: int = option(21, "Grid points per axis.", minimum=2)
    span: float = option(1.0, "Coordinates run over [-span, span].", positive=True)
    filter_normalize: bool = option(True, "Filter-normalise random directions (Li et al. 2018).")
    ignore_bn_and_bias: bool = option(
        True,
        "Zero direction on biases and normalisation layers.",
        flag="--ignore-bn-and-bias/--include-bn-and-bias",
        default_text="ignore",
    )
    orthogonalize: bool = option(False, "Make the second random direction orthogonal.")
    to: str | None = option(
        None,
        "Another checkpoint: the line w + t(w_to − w), t over [-0.5, 1.5].",
    )
    tol: float = option(1e-4, "Lanczos tolerance for eigen directions.", positive=True)
    max_iter: int = option(100, "Lanczos iterations for eigen directions.", minimum=1)
    accuracy: bool = option(True, "Also measure classification accuracy.")
    name: str | None = option(
        None,
        "Result name (/surface/<name> in a report).",
        default_text="<kind>-<dims>d",
        name=True,
    )


@dataclass(frozen=True)
class JacobianSettings:
    """Options of ``landscape jacobian``; the method is described in this module."""

    samples: int = option(
        32,
        "Per-sample Jacobians (and the NTK) of the first N samples (of those max_samples keeps).",
        minimum=1,
    )
    tol: float = option(
        1e-6, "Lanczos relative error target of σ_max² (an eigenvalue of JᵀJ).", positive=True
    )
    max_iter: int = option(100, "Maximum Lanczos iterations per Jacobian.", minimum=1)
    dense_max: int = option(
        256,
        "All singular values (σ_min, rank, condition number) when min(input, output dim) ≤ this.",
        minimum=0,
    )
    layers: bool = option(True, "σ_max of every layer's Jacobian along the forward pass.")
    layer_scope: str = option(
        "leaves",
        "Which modules are layers: leaves (modules without children) or children.",
        choices=("leaves", "children"),
    )
    ntk: bool = option(True, "Top eigenvalues and trace of the empirical NTK on the samples.")
    ntk_top_k: int = option(5, "NTK eigenvalues to report.", minimum=1)


@dataclass(frozen=True)
class KFACSettings:
    """Options of ``landscape kfac``; the method is described in :mod:`landscape_cli.analyses.kfac`."""

    kind: str = option(
        "type-2",
        "Which K-FAC: type-2 (the output Hessians' exact square roots: the GGN's), empirical "
        "(the per-sample loss gradients: the empirical Fisher's) or ekfac (type-2 with EK-FAC's "
        "eigenvalue corrections, one more pass). All are compared with the GGN.",
        choices=("type-2", "empirical", "ekfac"),
    )
    probes: int = option(
        16,
        "Random probes of the Frobenius errors (more: smaller standard errors; no extra pass "
        "over the data).",
        minimum=2,
    )
    lambda_max: bool = option(
        True,
        "Compare λ_max and the top eigenvector with the GGN's, per layer and overall (a Lanczos "
        "run on each GGN block).",
    )
    tol: float = option(1e-3, "Lanczos relative error target of the GGN's λ_max.", positive=True)
    max_iter: int = option(100, "Maximum Lanczos iterations per GGN block.", minimum=1)
    density: bool = option(
        True, "The spectral densities of both on one grid (SLQ for the GGN, exact for K-FAC)."
    )
    slq_runs: int = option(4, "SLQ runs of the GGN's density.", minimum=1)
    slq_steps: int = option(40, "Lanczos steps per SLQ run.", minimum=2)
    grid: int = option(400, "Density grid points.", minimum=10)
    preconditioned: bool = option(
        True,
        "λ_max((K + δI)⁻¹H) on the covered parameters: the sharpness a K-FAC-type optimizer's "
        "step meets (a Lanczos run of HVPs).",
    )
    damping: float = option(
        1e-3, "δ, added to K-FAC before it is inverted as a preconditioner.", positive=True
    )


#: The sections of a config file (``spectrum: {top_k: 5}``), each an analysis's settings.
SECTIONS: dict[str, type] = {
    "spectrum": SpectrumSettings,
    "classify": ClassifySettings,
    "sharpness": SharpnessSettings,
    "surface": SurfaceSettings,
    "jacobian": JacobianSettings,
    "kfac": KFACSettings,
}


@dataclass(frozen=True)
class RunConfig(ProblemSettings):
    """The resolved configuration of one run (build it with
    :func:`~landscape_cli.io.config.resolve_config`); ``sources`` records where each dotted key's
    value came from (``"default"``, ``"sample:mlp"``, ``"config:run.yaml"`` or ``"flag"``)."""

    spectrum: SpectrumSettings = field(default_factory=SpectrumSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    sharpness: SharpnessSettings = field(default_factory=SharpnessSettings)
    surface: SurfaceSettings = field(default_factory=SurfaceSettings)
    jacobian: JacobianSettings = field(default_factory=JacobianSettings)
    kfac: KFACSettings = field(default_factory=KFACSettings)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    config_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the option values (no sources), as a config file would hold them."""
        out: dict[str, Any] = {}
        for spec in option_specs(ProblemSettings):
            value = getattr(self, spec.key)
            out[spec.key] = dict(value) if isinstance(value, Mapping) else value
        for section, settings_class in SECTIONS.items():
            settings = getattr(self, section)
            out[section] = {
                spec.key: _plain(getattr(settings, spec.key))
                for spec in option_specs(settings_class)
            }
        return out

    def to_yaml(self) -> str:
        """The resolved configuration as YAML; feeding it back with ``--config`` reproduces the run."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def all_option_specs() -> dict[str, OptionSpec]:
    """Every option of a run by its dotted key (``batch_size``, ``spectrum.top_k``)."""
    specs = {spec.key: spec for spec in option_specs(ProblemSettings)}
    for section, settings_class in SECTIONS.items():
        specs.update({f"{section}.{spec.key}": spec for spec in option_specs(settings_class)})
    return specs
