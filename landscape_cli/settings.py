"""Run configuration: defaults < bundled sample < YAML ``--config`` file < command-line flags.

Every option has one key. In YAML the key is written with underscores (``batch_size``) or dashes
(``batch-size``); command-specific options live in a section named after the command
(``spectrum: {top_k: 5}``). The result is a frozen :class:`RunConfig` that also records where each
value came from (``"default"``, ``"sample:mlp"``, ``"config:run.yaml"`` or ``"flag"``), so a report
can say why a number was used. ``configs/reference.yaml`` lists every key with its default.

Relative paths in a config file (checkpoint, ``path/file.py:callable`` specs, data files) are
resolved against the directory of that file, so a config works from any working directory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

DEVICE_HELP = "auto, cpu, cuda or cuda:INDEX"


@dataclass(frozen=True)
class Option:
    """One configurable key: its type, default, allowed values and help text."""

    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    nullable: bool = False
    positive: bool = False  # strictly greater than zero (and finite)


COMMON: dict[str, Option] = {
    "checkpoint": Option(
        str, None, "checkpoint file, or sample:NAME for a bundled sample", nullable=True
    ),
    "model": Option(
        str, None, "model factory: package.module:callable or path/file.py:callable", nullable=True
    ),
    "model_kwargs": Option(dict, None, "keyword arguments for the model factory", nullable=True),
    "data": Option(
        str,
        None,
        "data: .pt/.npz/.h5 file, package.module:callable or sample:NAME",
        nullable=True,
    ),
    "loss": Option(
        str,
        "cross_entropy",
        "cross_entropy, mse, bce_with_logits, nll or package.module:callable(model, batch)",
    ),
    "batch_size": Option(int, 256, "samples per forward/backward pass", minimum=1),
    "max_samples": Option(
        int, None, "use the first N samples (default: all)", minimum=1, nullable=True
    ),
    "seed": Option(int, 0, "seed of every random choice (probes, start vectors)", minimum=0),
    "device": Option(str, "auto", DEVICE_HELP),
    "threads": Option(
        int,
        None,
        "CPU threads for torch (default: torch's choice); 1 avoids thread contention on a busy machine",
        minimum=1,
        nullable=True,
    ),
    "dtype": Option(str, "float32", "floating-point precision", choices=("float32", "float64")),
    "mode": Option(str, "eval", "module mode during analysis", choices=("eval", "train")),
    "hvp_mode": Option(
        str,
        "auto",
        "cached: keep one differentiable gradient graph; streaming: recompute batch by batch",
        choices=("auto", "cached", "streaming"),
    ),
    "hvp_block": Option(
        str,
        "auto",
        "products of a block of vectors: batched (one vmapped backward) or loop (one backward "
        "per column); auto: batched unless the model has convolutions",
        choices=("auto", "batched", "loop"),
    ),
    "compile": Option(
        bool,
        False,
        "torch.compile the loss for loss and gradient evaluations (surface grids, sharpness); "
        "curvature products stay eager (compiled graphs have no double backward)",
    ),
    "lr": Option(
        float,
        None,
        "learning rate for the edge-of-stability numbers (default: the checkpoint's optimizer state)",
        positive=True,
        nullable=True,
    ),
    "trust_checkpoint": Option(bool, False, "allow full pickle loading (runs code in the file)"),
}

SPECTRUM: dict[str, Option] = {
    "top_k": Option(int, 5, "number of largest eigenvalues", minimum=1),
    "bottom_k": Option(int, 1, "number of smallest eigenvalues", minimum=0),
    "tol": Option(
        float, 1e-4, "relative error target of the wanted Ritz values (Lanczos)", positive=True
    ),
    "max_iter": Option(int, 200, "maximum Lanczos iterations (HVPs)", minimum=1),
    "trace": Option(bool, True, "estimate the trace"),
    "trace_method": Option(
        str,
        "auto",
        "trace estimator (auto: exact from per-sample gradient norms where that applies, else "
        "Hutchinson on the deflated remainder, Hutch++ without deflation; per-sample: exact or "
        "an error)",
        choices=("auto", "hutch++", "hutchinson", "per-sample"),
    ),
    "trace_matvecs": Option(int, 60, "HVPs spent on the trace estimate", minimum=4),
    "deflate_trace": Option(
        bool,
        True,
        "deflate the trace estimate by the extremes' Lanczos basis (tr(T_m) is free; the budget "
        "goes to the remainder)",
    ),
    "density": Option(bool, True, "estimate the spectral density (SLQ)"),
    "share_lanczos": Option(
        bool,
        True,
        "count the extremes' Lanczos run (random Gaussian start) as one more SLQ run of the "
        "density: its HVPs are already spent",
    ),
    "slq_runs": Option(int, 2, "SLQ random probes (besides the shared extremes' run)", minimum=0),
    "slq_steps": Option(int, 30, "Lanczos steps per SLQ probe", minimum=2),
    "sigma": Option(
        float,
        None,
        "Gaussian broadening width (default: from the spectral width)",
        nullable=True,
        positive=True,
    ),
    "grid": Option(int, 1000, "density grid points", minimum=10),
    "exact": Option(bool, False, "also compute the exact Hessian (small models only)"),
    "save_eigenvectors": Option(
        bool, False, "keep the top-k Ritz vectors (stored in the --out report)"
    ),
    "curvature": Option(
        str,
        "hessian",
        "the matrix analysed: hessian, ggn (generalised Gauss-Newton = Fisher for CE/MSE) or "
        "ef (empirical Fisher); ggn and ef need a built-in loss",
        choices=("hessian", "ggn", "ef"),
    ),
    "params": Option(
        list,
        (),
        "restrict to the diagonal block of these parameters: glob patterns, or re:REGEX",
    ),
    "per_layer": Option(bool, False, "λ_max and trace of each module's diagonal block"),
    "spread": Option(
        int,
        None,
        "λ_max and trace on K disjoint contiguous subsets of the batches: mean ± std",
        minimum=2,
        nullable=True,
    ),
    "determinism_check": Option(
        bool, True, "before the run, check that the loss and the products are reproducible"
    ),
}

CLASSIFY: dict[str, Option] = {
    "grad_tol": Option(
        float,
        1e-3,
        "stationary when ‖g‖/|c| ≤ grad_tol·max(‖w‖, 1), c = gᵀHg/‖g‖² clamped to [neg_tol·κ, κ]",
        positive=True,
    ),
    "neg_tol": Option(
        float, 1e-3, "λ_min counts as negative below -(neg_tol·κ + its error bound)", minimum=0.0
    ),
    "flat_tol": Option(
        float, 1e-6, "an eigenvalue within flat_tol·κ (+ error bound) of zero is flat", minimum=0.0
    ),
    "zero_curvature": Option(
        float, 1e-8, "κ at or below this: the Hessian vanishes (degenerate)", minimum=0.0
    ),
    "tol": Option(float, 1e-4, "Lanczos relative error target for λ_max, λ_min", positive=True),
    "max_iter": Option(int, 200, "maximum Lanczos iterations", minimum=2),
    "slq_runs": Option(int, 4, "SLQ probes for the negative fraction", minimum=0),
    "slq_steps": Option(int, 60, "Lanczos steps per SLQ probe", minimum=2),
    "newton": Option(bool, True, "compute the Newton decrement by conjugate gradient"),
    "cg_tol": Option(float, 1e-6, "CG relative residual target", positive=True),
    "cg_max_iter": Option(int, 100, "maximum CG iterations (HVPs)", minimum=1),
    "escape_steps": Option(
        tuple,
        (0.25, 0.5, 1.0, 2.0, 4.0),
        "escape probe steps, in units of escape_scale·max(‖w‖, 1)",
    ),
    "escape_scale": Option(
        float, 0.01, "escape probe steps t are multiples of escape_scale·max(‖w‖, 1)", positive=True
    ),
}

SHARPNESS: dict[str, Option] = {
    "rho": Option(
        tuple,
        (0.01, 0.02, 0.05, 0.1, 0.2),
        "radii of the perturbation ball (each > 0)",
        minimum=0.0,
    ),
    "adaptive": Option(bool, False, "ASAM's scale-invariant ball ‖ε/(|w|+η)‖ ≤ ρ"),
    "eta": Option(float, 0.01, "ASAM's η in T_w = diag(|w| + η)", minimum=0.0),
    "steps": Option(int, 20, "projected gradient-ascent steps per start (worst case)", minimum=1),
    "restarts": Option(int, 2, "random starts besides the SAM point (worst case)", minimum=0),
    "samples": Option(int, 16, "Monte Carlo pairs ±ε for the average case", minimum=2),
    "m": Option(
        int,
        None,
        "m-sharpness: average over disjoint batches of m samples",
        minimum=1,
        nullable=True,
    ),
    "second_order": Option(bool, True, "λ_max by Lanczos for ρ‖g‖ + ½ρ²λ_max"),
    "tol": Option(float, 1e-4, "Lanczos relative error target", positive=True),
    "max_iter": Option(int, 100, "maximum Lanczos iterations", minimum=1),
}

SURFACE: dict[str, Option] = {
    "dims": Option(int, 2, "1 (a curve) or 2 (a surface)", choices=None, minimum=1),
    "kind": Option(str, "random", "directions", choices=("random", "eigen", "interpolation")),
    "points": Option(int, 21, "grid points per axis", minimum=2),
    "span": Option(float, 1.0, "coordinates run over [-span, span]", positive=True),
    "filter_normalize": Option(bool, True, "filter-normalise random directions (Li et al. 2018)"),
    "ignore_bn_and_bias": Option(bool, True, "zero direction on biases and normalisation layers"),
    "orthogonalize": Option(bool, False, "make the second random direction orthogonal"),
    "to": Option(
        str, None, "other checkpoint for interpolation (x over [-0.5, 1.5])", nullable=True
    ),
    "tol": Option(float, 1e-4, "Lanczos tolerance for eigen directions", positive=True),
    "max_iter": Option(int, 100, "Lanczos iterations for eigen directions", minimum=1),
    "accuracy": Option(bool, True, "also measure classification accuracy"),
    "name": Option(
        str, None, "result name (/surface/<name>); default <kind>-<dims>d", nullable=True
    ),
}

JACOBIAN: dict[str, Option] = {
    "samples": Option(
        int,
        32,
        "per-sample Jacobians of the first N samples (of those --max-samples keeps)",
        minimum=1,
    ),
    "tol": Option(
        float, 1e-6, "Lanczos relative error target of σ_max² (eigenvalue of JᵀJ)", positive=True
    ),
    "max_iter": Option(int, 100, "maximum Lanczos iterations per Jacobian", minimum=1),
    "dense_max": Option(
        int,
        256,
        "all singular values (σ_min, rank, condition) when min(input, output dim) ≤ this",
        minimum=0,
    ),
    "layers": Option(bool, True, "σ_max of every layer's Jacobian along the forward pass"),
    "layer_scope": Option(
        str, "leaves", "which modules are layers", choices=("leaves", "children")
    ),
    "ntk": Option(bool, True, "top eigenvalues and trace of the empirical NTK on the samples"),
    "ntk_top_k": Option(int, 5, "NTK eigenvalues to report", minimum=1),
}

SECTIONS: dict[str, dict[str, Option]] = {
    "spectrum": SPECTRUM,
    "classify": CLASSIFY,
    "sharpness": SHARPNESS,
    "surface": SURFACE,
    "jacobian": JACOBIAN,
}


@dataclass(frozen=True)
class SpectrumSettings:
    """Options of ``landscape spectrum`` (see :data:`SPECTRUM` for meanings)."""

    top_k: int = 5
    bottom_k: int = 1
    tol: float = 1e-4
    max_iter: int = 200
    trace: bool = True
    trace_method: str = "auto"
    trace_matvecs: int = 60
    deflate_trace: bool = True
    density: bool = True
    share_lanczos: bool = True
    slq_runs: int = 2
    slq_steps: int = 30
    sigma: float | None = None
    grid: int = 1000
    exact: bool = False
    save_eigenvectors: bool = False
    curvature: str = "hessian"
    params: tuple[str, ...] = ()
    per_layer: bool = False
    spread: int | None = None
    determinism_check: bool = True


@dataclass(frozen=True)
class ClassifySettings:
    """Options of ``landscape classify`` (see :data:`CLASSIFY`; the rule is in
    :mod:`landscape_cli.analyses.classify`)."""

    grad_tol: float = 1e-3
    neg_tol: float = 1e-3
    flat_tol: float = 1e-6
    zero_curvature: float = 1e-8
    tol: float = 1e-4
    max_iter: int = 200
    slq_runs: int = 4
    slq_steps: int = 60
    newton: bool = True
    cg_tol: float = 1e-6
    cg_max_iter: int = 100
    escape_scale: float = 0.01
    escape_steps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class SharpnessSettings:
    """Options of ``landscape sharpness`` (see :data:`SHARPNESS`; the measures are in
    :mod:`landscape_cli.analyses.sharpness`)."""

    rho: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    adaptive: bool = False
    eta: float = 0.01
    steps: int = 20
    restarts: int = 2
    samples: int = 16
    m: int | None = None
    second_order: bool = True
    tol: float = 1e-4
    max_iter: int = 100


@dataclass(frozen=True)
class SurfaceSettings:
    """Options of ``landscape surface`` (see :data:`SURFACE`; the directions are described in
    :mod:`landscape_cli.analyses.surface`)."""

    dims: int = 2
    kind: str = "random"
    points: int = 21
    span: float = 1.0
    filter_normalize: bool = True
    ignore_bn_and_bias: bool = True
    orthogonalize: bool = False
    to: str | None = None
    tol: float = 1e-4
    max_iter: int = 100
    accuracy: bool = True
    name: str | None = None


@dataclass(frozen=True)
class JacobianSettings:
    """Options of ``landscape jacobian`` (see :data:`JACOBIAN`; the method is described in
    :mod:`landscape_cli.analyses.jacobian`)."""

    samples: int = 32
    tol: float = 1e-6
    max_iter: int = 100
    dense_max: int = 256
    layers: bool = True
    layer_scope: str = "leaves"
    ntk: bool = True
    ntk_top_k: int = 5


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run. Build it with :func:`resolve_config`."""

    checkpoint: str | None = None
    model: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    data: str | None = None
    loss: str = "cross_entropy"
    batch_size: int = 256
    max_samples: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    dtype: str = "float32"
    mode: str = "eval"
    hvp_mode: str = "auto"
    hvp_block: str = "auto"
    compile: bool = False
    lr: float | None = None
    trust_checkpoint: bool = False
    spectrum: SpectrumSettings = field(default_factory=SpectrumSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    sharpness: SharpnessSettings = field(default_factory=SharpnessSettings)
    surface: SurfaceSettings = field(default_factory=SurfaceSettings)
    jacobian: JacobianSettings = field(default_factory=JacobianSettings)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    config_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the option values (no sources), as a config file would hold them."""
        out: dict[str, Any] = {}
        for name in COMMON:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, Mapping) else value
        for section, options in SECTIONS.items():
            settings = getattr(self, section)
            out[section] = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in ((key, getattr(settings, key)) for key in options)
            }
        return out

    def to_yaml(self) -> str:
        """The resolved configuration as YAML; feeding it back with ``--config`` reproduces the run."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters so a 400-digit number stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KIND = {tuple: "a list of numbers", list: "a list of strings"}


def coerce_value(key: str, option: Option, value: Any, where: str) -> Any:
    """Check and convert one value; raise :class:`InputError` naming the key and the source."""
    if value is None:
        if option.nullable:
            return None
        raise InputError(f"{where}: '{key}' must not be empty", hint=option.help)
    expected = option.type
    try:
        if expected is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                out = True
            elif isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                out = False
            else:
                raise TypeError
        elif expected is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            out = int(value)
        elif expected is float:
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        elif expected is tuple:  # a list of positive finite numbers: YAML list, "a,b" or one number
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (int, float)) and not isinstance(items, bool):
                items = [items]
            if not isinstance(items, (list, tuple)) or not items:
                raise TypeError
            out = tuple(float(item) for item in items)
            bad = [v for v in out if not (math.isfinite(v) and v > (option.minimum or 0.0))]
            if bad:
                raise InputError(
                    f"{where}: '{key}' holds {bad[0]!r}; every value must be a finite number > "
                    f"{option.minimum or 0.0:g}"
                )
            return out
        elif expected is list:  # a list of strings: YAML list or one string (kept as a tuple)
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise TypeError
            return tuple(items)
        elif expected is dict:
            if not isinstance(value, Mapping):
                raise TypeError
            out = {str(k): v for k, v in value.items()}
        else:
            if isinstance(value, (Mapping, list)):
                raise TypeError
            out = str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        raise InputError(
            f"{where}: '{key}' should be {_KIND.get(expected, expected.__name__)}, got {shown(value)}",
            hint=option.help,
        ) from None
    if option.choices is not None and out not in option.choices:
        raise InputError(f"{where}: '{key}' is {out!r}; choose one of {', '.join(option.choices)}")
    if expected is float and not math.isfinite(out):
        raise InputError(f"{where}: '{key}' is {out!r}; give a finite number")
    if option.minimum is not None and out < option.minimum:
        raise InputError(f"{where}: '{key}' is {out!r}; it must be at least {option.minimum}")
    if option.positive and not out > 0:
        raise InputError(f"{where}: '{key}' is {out!r}; it must be greater than 0")
    return out
