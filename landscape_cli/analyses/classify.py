"""Critical-point classification: minimum, saddle, maximum, degenerate or not critical.

Kept as one module: the decision rule, the measurements it weighs (Newton decrement, escape probe)
and the evidence sentence it writes are read together.

The second-order test (e.g. Nocedal & Wright, *Numerical Optimization*, Thm. 2.3-2.4) applied with
tolerances, because a trained network never sits exactly at a critical point and its Hessian
always has a bulk of near-zero eigenvalues:

1. **Stationarity.** ``κ = max(|λ_max|, |λ_min|)`` is the curvature scale. On the gradient's
   line the quadratic model is stationary a step ``‖g‖/|c|`` away, with ``c = gᵀHg/‖g‖²`` the
   curvature along the gradient (for ``c > 0`` the Cauchy step, Nocedal & Wright §4.1; one HVP);
   curvature below the analysis's resolution ``neg_tol·κ`` in magnitude counts as that
   resolution, so ``|c|`` is clamped to ``[neg_tol·κ, κ]`` (minima, maxima and saddles alike).
   The point counts as stationary when this step is at most ``grad_tol · max(‖w‖, 1)`` (default
   ``grad_tol = 1e-3``: a step of 0.1 % of the weights' norm).
   Measuring the step with the stiffest curvature ``κ`` instead (``relative_gradient``, also
   reported) would call a point far down a soft valley stationary: on ``x² + 10⁻⁴y²`` at
   ``(0, 50)`` it is ``10⁻⁴`` while the minimiser is 50 away. When ``κ`` is below
   ``zero_curvature`` (the Hessian vanishes to that absolute floor), stationarity needs
   ``‖g‖ ≤ zero_curvature`` and, when ``κ > 0``, the relative test too (a tiny loss with a tiny
   Hessian, e.g. logistic regression on separable data, is not thereby critical).
2. **Significant curvature.** An extreme eigenvalue counts as negative when
   ``λ_min < −(neg_tol · κ + e_min)``, with ``e_min`` the Lanczos error bound of ``λ_min``; and as
   positive when ``λ_max > neg_tol · κ + e_max`` (symmetric). Default ``neg_tol = 1e-3``. The
   density's Lanczos runs (SLQ) are Ritz values too, so ``λ_min ≤`` each SLQ node ``≤ λ_max``:
   when a node lies beyond the extremes run's Ritz value by more than the rounding floor and a
   tenth of ``neg_tol·κ`` (an eigenvalue the extremes run had not found when its residual test
   stopped it, e.g. a small negative eigenvalue below a tight bulk near 0), that node is the
   estimate, with the rounding floor as its error bound.
   Below significance, a sign is still *resolved* when the Ritz value is beyond the rounding floor
   ``u`` of the run (:func:`~landscape_cli.estimators.lanczos.rounding_floor`): a Ritz value is a
   Rayleigh quotient ``yᵀHy`` of a unit vector, so ``λ_min(H) ≤ θ_min + u`` and
   ``λ_max(H) ≥ θ_max − u`` (Courant-Fischer) whatever its residual. Such curvature is *weak*.
3. **Label.** Not stationary → ``not-critical``. ``κ ≤ zero_curvature`` → ``degenerate`` (the
   Hessian is zero: higher-order terms decide, e.g. the monkey saddle). Both signs significant, or
   one significant and the other weak → ``saddle`` (a point with a resolved descent direction is
   not a minimum however small it is; ``neg_tol`` says whether it is significant, and the evidence
   says "weak negative curvature" with ``λ_min/λ_max``). Only positive → ``minimum``; only
   negative → ``maximum``; in both cases the
   opposite extreme being indistinguishable from zero (``|λ| ≤ flat_tol·κ + e``, default
   ``flat_tol = 1e-6``) is reported as ``degenerate_directions``: flat directions where the
   second-order test is inconclusive, the normal state of a network. An ill-conditioned but
   definite minimum (Rosenbrock's, λ_min/λ_max = 4e-4) is not flagged. Neither → ``degenerate``.

Evidence besides λ_max and λ_min:

* **negative_fraction**: the fraction of eigenvalues below ``−neg_tol·κ`` (the Morse index
  divided by ``n``; Ghorbani, Krishnan & Xiao 2019), exact zeros not negative: the mean over SLQ
  runs of each run's Gauss-Radau estimate with the null space at 0
  (:func:`~landscape_cli.estimators.eigenvalue_count.fraction_below`), with the runs' standard
  error; exact up to ``EXACT_FRACTION_MAX`` parameters.
* **Newton decrement** ``δ² = gᵀ(H + μI)⁻¹g`` by conjugate gradient on HVPs, with the damping
  ``μ = max(0, −(λ_min − e_min))·(1 + 10⁻³) + neg_tol·κ`` that makes ``H + μI`` positive definite
  when ``H`` is indefinite or singular (Levenberg-Marquardt damping; Nocedal & Wright §4.3). The
  ``neg_tol·κ`` floor is the resolution of the whole analysis: curvature below it counts as flat,
  and it keeps CG's condition number at most ~1/neg_tol. ``δ²/2`` is the
  loss decrease the (damped) quadratic model predicts for a Newton step, ``‖(H + μI)⁻¹g‖`` that
  step's length (Boyd & Vandenberghe, *Convex Optimization*, §9.5.1).
* **Escape direction** at a saddle (or maximum): the Ritz vector ``v`` of ``λ_min``, with the loss
  measured at ``w ± t·v`` for a few ``t`` next to the quadratic model
  ``L(w) ± t·gᵀv + ½λ_min t²``, so the user sees the descent the saddle offers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError, numerical_errors
from ..estimators.cg import conjugate_gradient
from ..estimators.density import SLQResult, slq_density
from ..estimators.eigenvalue_count import fraction_below
from ..estimators.exact import dense_matrix
from ..estimators.lanczos import LanczosResult, lanczos
from ..estimators.ritz import rounding_floor
from ..hdf5 import (
    field_attrs,
    from_field_attrs,
    optional_group,
    read_arrays,
    read_attrs,
    set_attrs,
    write_group,
)
from ..operators.hessian import HessianOperator
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from ..progress import stage
from .estimator_groups import lanczos_from_hdf5, lanczos_to_hdf5, slq_from_hdf5, slq_to_hdf5
from .run_info import (
    RunInfo,
    json_number,
    json_numbers,
    merge_notes,
    notes_from_hdf5,
    notes_to_hdf5,
    settings_from_hdf5,
    settings_to_hdf5,
)
from .settings import ClassifySettings
from .spectrum import SpectrumResult
from .stability import NO_LEARNING_RATE, StabilityReport, optimizer_state, stability_report

LABELS = ("minimum", "saddle", "maximum", "degenerate", "not-critical")
EXACT_FRACTION_MAX = 200  # parameters up to which the dense Hessian replaces Lanczos and SLQ


@dataclass(frozen=True)
class Decision:
    """The label and the facts it was decided from."""

    classification: str
    stationary: bool
    relative_gradient: float | None  # ‖g‖ / (κ · max(‖w‖, 1)); None when κ == 0
    negative_significant: bool
    positive_significant: bool
    degenerate_directions: bool
    curvature_scale: float
    #: the step ‖g‖ / (|c| · max(‖w‖, 1)), |c| the gradient's curvature clamped to
    #: [neg_tol·κ, κ] (module docstring); the stationarity test. None when κ == 0
    relative_step: float | None = None
    #: the sign of λ_min (λ_max) is resolved (beyond the rounding floor) but not significant
    negative_weak: bool = False
    positive_weak: bool = False

    def to_hdf5(self, group: h5py.Group) -> None:
        """The decision as attributes of the ``/classify`` group, under their JSON names."""
        set_attrs(
            group,
            {
                "classification": self.classification,
                "stationary": self.stationary,
                "relative_gradient": self.relative_gradient,
                "relative_step": self.relative_step,
                "curvature_scale": self.curvature_scale,
                "negative_curvature": self.negative_significant,
                "positive_curvature": self.positive_significant,
                "degenerate_directions": self.degenerate_directions,
                "weak_negative_curvature": self.negative_weak,
                "weak_positive_curvature": self.positive_weak,
            },
        )

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> Decision:
        """The decision among the attributes of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        return cls(
            classification=a["classification"],
            stationary=a["stationary"],
            relative_gradient=a["relative_gradient"],
            negative_significant=a["negative_curvature"],
            positive_significant=a["positive_curvature"],
            degenerate_directions=a["degenerate_directions"],
            curvature_scale=a["curvature_scale"],
            relative_step=a.get("relative_step"),
            negative_weak=a.get("weak_negative_curvature", False),
            positive_weak=a.get("weak_positive_curvature", False),
        )


def decide(
    *,
    grad_norm: float,
    weight_norm: float,
    lambda_max: float,
    lambda_min: float,
    error_max: float = 0.0,
    error_min: float = 0.0,
    gradient_curvature: float | None = None,
    settings: ClassifySettings | None = None,
    rounding: float = 0.0,
) -> Decision:
    """Apply the second-order test with tolerances (module docstring) to the given numbers.

    ``gradient_curvature`` is ``gᵀHg/‖g‖²``; ``None`` takes it as ``κ`` (the step along the
    stiffest direction, a weaker stationarity test). ``rounding`` is the rounding floor of the
    extreme values (Rayleigh quotients): a sign beyond it is resolved.
    """
    s = settings or ClassifySettings()
    kappa = max(abs(lambda_max), abs(lambda_min))
    scale = max(weight_norm, 1.0)
    relative = step = None
    if kappa > 0:
        relative = grad_norm / (kappa * scale)
        along = kappa if gradient_curvature is None else abs(gradient_curvature)
        step = grad_norm / (min(max(along, s.neg_tol * kappa), kappa) * scale)
    if kappa <= s.zero_curvature:
        stationary = grad_norm <= s.zero_curvature and (step is None or step <= s.grad_tol)
        label = "degenerate" if stationary else "not-critical"
        return Decision(label, stationary, relative, False, False, True, kappa, step)
    assert relative is not None and step is not None
    stationary = step <= s.grad_tol
    negative = lambda_min < -(s.neg_tol * kappa + error_min)
    positive = lambda_max > s.neg_tol * kappa + error_max
    negative_weak = not negative and lambda_min < -rounding
    positive_weak = not positive and lambda_max > rounding
    if not stationary:
        label = "not-critical"
    elif (negative and (positive or positive_weak)) or (positive and negative_weak):
        label = "saddle"
    elif positive:
        label = "minimum"
    elif negative:
        label = "maximum"
    else:
        label = "degenerate"
    flat = (label == "minimum" and lambda_min <= s.flat_tol * kappa + error_min) or (
        label == "maximum" and lambda_max >= -(s.flat_tol * kappa + error_max)
    )
    return Decision(
        label,
        stationary,
        relative,
        negative,
        positive,
        flat,
        kappa,
        step,
        negative_weak=negative_weak,
        positive_weak=positive_weak,
    )


@dataclass(frozen=True)
class NewtonDecrement:
    """``δ² = gᵀ(H + μI)⁻¹g`` and the damped Newton step, by conjugate gradient."""

    decrement_squared: float | None
    predicted_decrease: float | None  # δ²/2
    step_norm: float | None
    damping: float
    cg_iterations: int
    cg_relative_residual: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "decrement_squared": json_number(self.decrement_squared),
            "predicted_decrease": json_number(self.predicted_decrease),
            "step_norm": json_number(self.step_norm),
            "damping": json_number(self.damping),
            "cg_iterations": self.cg_iterations,
            "cg_relative_residual": json_number(self.cg_relative_residual),
            "converged": self.converged,
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """Every field as an attribute of ``group`` (``/classify/newton``)."""
        set_attrs(group, field_attrs(self))

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> NewtonDecrement:
        """The decrement of a group written by :meth:`to_hdf5`."""
        return from_field_attrs(cls, read_attrs(group))


@dataclass(frozen=True)
class EscapeProbe:
    """Loss along the eigenvector ``v`` of λ_min: measured at ``w ± t v`` and the quadratic model."""

    eigenvalue: float
    steps: np.ndarray  # t > 0
    loss_plus: np.ndarray  # L(w + t v)
    loss_minus: np.ndarray  # L(w - t v)
    model_plus: np.ndarray  # L + t gᵀv + ½ λ t²
    model_minus: np.ndarray
    best_decrease: float  # L(w) - min over the probes (positive: descent found)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eigenvalue": json_number(self.eigenvalue),
            "t": json_numbers(self.steps),
            "loss_plus": json_numbers(self.loss_plus),
            "loss_minus": json_numbers(self.loss_minus),
            "model_plus": json_numbers(self.model_plus),
            "model_minus": json_numbers(self.model_minus),
            "best_decrease": json_number(self.best_decrease),
        }

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/classify/escape``: the curves over the dimension scale ``t``."""
        curves = ("loss_plus", "loss_minus", "model_plus", "model_minus")
        write_group(
            group,
            {"t": self.steps, **{name: getattr(self, name) for name in curves}},
            {"eigenvalue": self.eigenvalue, "best_decrease": self.best_decrease},
            dims={name: ("t",) for name in curves},
        )

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> EscapeProbe:
        """The probe of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        names = ("t", "loss_plus", "loss_minus", "model_plus", "model_minus")
        arrays = read_arrays(group, dict.fromkeys(names, ("t",)))
        return cls(
            eigenvalue=a["eigenvalue"],
            steps=arrays["t"],
            loss_plus=arrays["loss_plus"],
            loss_minus=arrays["loss_minus"],
            model_plus=arrays["model_plus"],
            model_minus=arrays["model_minus"],
            best_decrease=a["best_decrease"],
        )


@dataclass(frozen=True)
class ClassifyResult:
    """The critical-point label of the checkpoint with its evidence."""

    info: RunInfo
    decision: Decision
    lambda_max: float
    lambda_min: float
    error_max: float
    error_min: float
    negative_fraction: float | None
    newton: NewtonDecrement | None
    escape: EscapeProbe | None
    evidence: str
    settings: ClassifySettings
    lanczos: LanczosResult | None = None
    slq: SLQResult | None = None
    stability: StabilityReport | None = None
    notes: dict[str, str] = field(default_factory=dict)
    #: standard error of ``negative_fraction`` over the SLQ runs (0 when exact from the dense
    #: Hessian; None with one run or no fraction)
    negative_fraction_stderr: float | None = None
    #: SLQ runs averaged for ``negative_fraction`` (None when exact or not computed)
    negative_fraction_runs: int | None = None

    @property
    def classification(self) -> str:
        return self.decision.classification

    def to_dict(self) -> dict[str, Any]:
        out = self.info.to_dict()
        d = self.decision
        out.update(
            {
                "classification": d.classification,
                "lambda_max": json_number(self.lambda_max),
                "lambda_min": json_number(self.lambda_min),
                "negative_fraction": json_number(self.negative_fraction),
                "negative_fraction_stderr": json_number(self.negative_fraction_stderr),
                "negative_fraction_runs": self.negative_fraction_runs,
                "evidence": self.evidence,
                "stationary": d.stationary,
                "relative_gradient": json_number(d.relative_gradient),
                "relative_step": json_number(d.relative_step),
                "curvature_scale": json_number(d.curvature_scale),
                "negative_curvature": d.negative_significant,
                "positive_curvature": d.positive_significant,
                "degenerate_directions": d.degenerate_directions,
                "weak_negative_curvature": d.negative_weak,
                "weak_positive_curvature": d.positive_weak,
                "lambda_max_error_bound": json_number(self.error_max),
                "lambda_min_error_bound": json_number(self.error_min),
                "newton": None if self.newton is None else self.newton.to_dict(),
                "escape": None if self.escape is None else self.escape.to_dict(),
                "tolerances": {
                    "grad_tol": self.settings.grad_tol,
                    "neg_tol": self.settings.neg_tol,
                    "zero_curvature": self.settings.zero_curvature,
                    "lanczos_tol": self.settings.tol,
                },
            }
        )
        out["stability"] = None if self.stability is None else self.stability.to_dict()
        merge_notes(out, self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/classify``: the run, the label and its facts as attributes; ``settings``,
        ``newton``, ``escape``, ``lanczos``, ``slq``, ``stability`` and ``notes`` subgroups."""
        self.info.to_hdf5(group)
        self.decision.to_hdf5(group)
        set_attrs(
            group,
            {
                "evidence": self.evidence,
                "lambda_max": self.lambda_max,
                "lambda_min": self.lambda_min,
                "lambda_max_error_bound": self.error_max,
                "lambda_min_error_bound": self.error_min,
                "negative_fraction": self.negative_fraction,
                "negative_fraction_stderr": self.negative_fraction_stderr,
                "negative_fraction_runs": self.negative_fraction_runs,
            },
        )
        settings_to_hdf5(group, self.settings)
        if self.newton is not None:
            self.newton.to_hdf5(group.create_group("newton"))
        if self.escape is not None:
            self.escape.to_hdf5(group.create_group("escape"))
        if self.lanczos is not None:
            lanczos_to_hdf5(group.create_group("lanczos"), self.lanczos, tol=self.settings.tol)
        if self.slq is not None:
            slq_to_hdf5(group.create_group("slq"), self.slq)
        if self.stability is not None:
            self.stability.to_hdf5(group.create_group("stability"))
        notes_to_hdf5(group, self.notes)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> ClassifyResult:
        """The result of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        return cls(
            info=RunInfo.from_hdf5(group),
            decision=Decision.from_hdf5(group),
            lambda_max=a["lambda_max"],
            lambda_min=a["lambda_min"],
            error_max=a["lambda_max_error_bound"],
            error_min=a["lambda_min_error_bound"],
            negative_fraction=a["negative_fraction"],
            newton=optional_group(group, "newton", NewtonDecrement.from_hdf5),
            escape=optional_group(group, "escape", EscapeProbe.from_hdf5),
            evidence=a["evidence"],
            settings=settings_from_hdf5(group, ClassifySettings),
            lanczos=optional_group(group, "lanczos", lanczos_from_hdf5),
            slq=optional_group(group, "slq", slq_from_hdf5),
            stability=optional_group(group, "stability", StabilityReport.from_hdf5),
            notes=notes_from_hdf5(group),
            negative_fraction_stderr=a.get("negative_fraction_stderr"),
            negative_fraction_runs=a.get("negative_fraction_runs"),
        )


def newton_decrement(
    objective: Objective,
    operator: Any,
    lambda_min: float,
    kappa: float,
    settings: ClassifySettings,
    progress: Callable[[int, int], None] | None = None,
) -> NewtonDecrement:
    """``gᵀ(H + μI)⁻¹g`` by CG with the damping of the module docstring.

    ``lambda_min`` should be a lower estimate (the Ritz value minus its error bound), so that
    ``H + μI`` is positive definite.
    """
    damping = max(0.0, -lambda_min) * (1 + 1e-3) + settings.neg_tol * kappa
    g = objective.gradient
    res = conjugate_gradient(
        operator,
        g,
        shift=damping,
        tol=settings.cg_tol,
        max_iter=settings.cg_max_iter,
        progress=progress,
    )
    if res.negative_curvature:
        return NewtonDecrement(
            None, None, None, damping, res.iterations, res.relative_residual, False
        )
    dec = float(g @ res.x)
    return NewtonDecrement(
        dec,
        dec / 2,
        float(torch.linalg.vector_norm(res.x)),
        damping,
        res.iterations,
        res.relative_residual,
        res.converged,
    )


def escape_probe(
    objective: Objective, vector: torch.Tensor, eigenvalue: float, settings: ClassifySettings
) -> EscapeProbe:
    """Loss at ``w ± t·v`` for ``t = escape_scale·max(‖w‖, 1)·escape_steps``, and the model."""
    v = vector / torch.linalg.vector_norm(vector)
    scale = settings.escape_scale * max(
        float(torch.linalg.vector_norm(objective.flat_parameters())), 1.0
    )
    steps = scale * np.asarray(settings.escape_steps, dtype=np.float64)
    slope = float(objective.gradient @ v)
    base = objective.base_loss()
    plus = np.array([objective.loss(float(t) * v) for t in steps])
    minus = np.array([objective.loss(-float(t) * v) for t in steps])
    model_plus = base + slope * steps + 0.5 * eigenvalue * steps**2
    model_minus = base - slope * steps + 0.5 * eigenvalue * steps**2
    best = base - float(min(plus.min(), minus.min()))
    return EscapeProbe(eigenvalue, steps, plus, minus, model_plus, model_minus, best)


def _evidence(
    result_numbers: dict[str, Any], d: Decision, zero_curvature: float, neg_tol: float
) -> str:
    lmax, lmin, g = (
        result_numbers["lambda_max"],
        result_numbers["lambda_min"],
        result_numbers["grad_norm"],
    )
    step = "" if d.relative_step is None else f" (Cauchy step {d.relative_step:.2g}·max(‖w‖,1))"
    if d.curvature_scale <= zero_curvature:
        return (
            f"degenerate: the Hessian vanishes (|λ| ≤ {d.curvature_scale:.3g}) with gradient norm "
            f"{g:.3g}; the second-order test is inconclusive and higher-order terms decide"
            if d.classification == "degenerate"
            else f"not-critical: gradient norm {g:.3g}{step} with a vanishing Hessian"
        )
    ratio = abs(lmin) / d.curvature_scale
    grad = f"gradient norm {g:.3g}{step}"
    if d.classification == "not-critical":
        return f"not-critical: {grad} exceeds the stationarity tolerance"
    if d.classification == "saddle":
        frac = result_numbers.get("negative_fraction")
        morse = "" if frac is None else f", about {frac:.2%} of the spectrum negative"
        if d.negative_weak:
            return (
                f"saddle with weak negative curvature: {grad}, λ_min = {lmin:.4g} < 0 < λ_max = "
                f"{lmax:.4g} (λ_min/λ_max = {lmin / lmax:.2g}: resolved beyond rounding, below "
                f"the significance threshold {neg_tol:g})"
            )
        if d.positive_weak:
            return (
                f"saddle with weak positive curvature: {grad}, λ_min = {lmin:.4g} < 0 < λ_max = "
                f"{lmax:.4g} (λ_max/|λ_min| = {lmax / abs(lmin):.2g}: resolved beyond rounding, "
                f"below the significance threshold {neg_tol:g})"
            )
        return f"saddle: {grad}, λ_min = {lmin:.4g} < 0 < λ_max = {lmax:.4g}{morse}"
    if d.classification == "minimum":
        flat = (
            f", with flat directions (λ_min = {lmin:.3g}, |λ_min|/λ_max = {ratio:.2g}) where the "
            "second-order test is inconclusive"
            if d.degenerate_directions
            else f", all curvature positive (λ_min = {lmin:.4g})"
        )
        approx = "approximate minimum" if result_numbers["grad_norm"] > 0 else "minimum"
        return f"{approx}: {grad}, λ_max = {lmax:.4g}{flat}"
    if d.classification == "maximum":
        flat = (
            f", with flat directions (λ_max = {lmax:.3g}, λ_max/|λ_min| = "
            f"{abs(lmax) / d.curvature_scale:.2g}) where the second-order test is inconclusive"
            if d.degenerate_directions
            else f", all curvature negative (λ_max = {lmax:.4g})"
        )
        return f"maximum: {grad}, λ_min = {lmin:.4g}{flat}"
    return (
        f"degenerate: {grad}, but neither extreme eigenvalue is significant "
        f"(λ_max = {lmax:.3g}, λ_min = {lmin:.3g})"
    )


def classify_point(
    objective: Objective,
    settings: ClassifySettings | None = None,
    *,
    seed: int = 0,
    lr: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    spectrum: SpectrumResult | None = None,
) -> ClassifyResult:
    """Classify the checkpoint as a critical point of the mean loss, with the evidence.

    One Lanczos run (top 1 and bottom 1, with Ritz vectors) gives λ_max, λ_min and the escape
    direction; SLQ gives the negative fraction; CG on the same HVP operator the Newton decrement.
    ``spectrum``, an earlier :func:`~landscape_cli.analyses.spectrum.analyze_spectrum` result on the same
    objective, lends its Lanczos run (when it kept its Ritz vectors), its SLQ nodes and its
    stability report instead of spending HVPs on them again (``landscape report`` and
    ``landscape check`` do this).
    """
    s = settings or ClassifySettings()
    start = time.perf_counter()
    if spectrum is not None and (spectrum.curvature != "hessian" or spectrum.params):
        raise InputError(
            f"classify needs the full Hessian, but the shared spectrum is of the {spectrum.curvature}"
            + (f" block {' '.join(spectrum.params)}" if spectrum.params else ""),
            hint="share a spectrum with `curvature=hessian` and no `params`",
        )
    optimizer_state(objective, lr)  # a malformed state is refused before any product
    H = HessianOperator(objective)
    notes: dict[str, str] = {}
    n = objective.num_parameters
    lz = slq = None
    shared_lanczos = None if spectrum is None else spectrum.lanczos
    if shared_lanczos is not None and shared_lanczos.bottom_vectors is None:
        shared_lanczos = None  # no escape direction without the Ritz vectors: run our own
    if n <= EXACT_FRACTION_MAX:
        # n HVPs give the whole spectrum exactly; SLQ with a handful of probes would be noisy
        # here (in 2-D a Rademacher probe can be an eigenvector)
        H_dense = dense_matrix(H, progress=stage(progress, "exact"))
        eigenvalues, eigenvectors = torch.linalg.eigh((H_dense + H_dense.T) / 2)
        lambda_max, lambda_min = float(eigenvalues[-1]), float(eigenvalues[0])
        # the products' asymmetry is the measured part of their rounding (rounding_floor)
        asymmetry = float(torch.linalg.matrix_norm(H_dense - H_dense.T, ord=2)) / 2
        kappa = max(abs(lambda_max), abs(lambda_min))
        rounding = rounding_floor(H_dense.dtype, kappa, asymmetry)
        err_max = err_min = rounding
        bottom_vector = eigenvectors[:, 0].to(device=objective.device, dtype=objective.dtype)
    else:
        with numerical_errors("the Lanczos iteration"):
            lz = (
                shared_lanczos
                if shared_lanczos is not None
                else lanczos(
                    H,
                    seed=derive_seed(seed, "lanczos"),
                    max_iter=s.max_iter,
                    tol=s.tol,
                    top_k=1,
                    bottom_k=1,
                    return_vectors=True,
                    progress=stage(progress, "lanczos"),
                )
            )
        if not lz.converged:
            notes["lanczos"] = (
                "the shared spectrum's Lanczos run stopped at its --max-iter before reaching its tol"
                if lz is shared_lanczos
                else f"stopped at --max-iter {s.max_iter} before reaching tol={s.tol:g}"
            )
        top, bottom = lz.top_index(), lz.bottom_index()
        lambda_max, lambda_min = float(lz.ritz_values[top]), float(lz.ritz_values[bottom])
        err_max, err_min = float(lz.error_bounds[top]), float(lz.error_bounds[bottom])
        rounding = lz.rounding_floor
        bottom_vector = lz.bottom_vectors[:, 0]
    ritz_min = lambda_min  # the value bottom_vector belongs to
    if lz is not None and spectrum is not None and spectrum.slq is not None:
        slq = spectrum.slq
    elif lz is not None and s.slq_runs > 0:
        with numerical_errors("stochastic Lanczos quadrature"):
            slq = slq_density(
                H,
                runs=s.slq_runs,
                steps=s.slq_steps,
                seed=derive_seed(seed, "density"),
                progress=stage(progress, "density"),
            )
    if slq is not None and np.isfinite(slq.nodes).any():
        # every SLQ node is a Ritz value: lambda_min <= node <= lambda_max (module docstring)
        low, high = float(np.nanmin(slq.nodes)), float(np.nanmax(slq.nodes))
        # beyond rounding: a tenth of the resolution neg_tol·κ at which a sign becomes significant
        margin = 0.1 * s.neg_tol * max(abs(lambda_max), abs(lambda_min), abs(low), abs(high))
        if low < lambda_min - rounding - margin:  # a lower Rayleigh quotient
            notes["lambda_min"] = (
                f"the density's Lanczos runs found a Ritz value {low:.6g} below the extremes "
                f"run's λ_min {lambda_min:.6g} (±{err_min:.2g}): λ_min ≤ {low:.6g}; the extremes "
                "run had not found that eigenvalue when its residual test stopped it"
            )
            lambda_min, err_min = low, rounding
        if high > lambda_max + rounding + margin:
            notes["lambda_max"] = (
                f"the density's Lanczos runs found a Ritz value {high:.6g} above the extremes "
                f"run's λ_max {lambda_max:.6g} (±{err_max:.2g}): λ_max ≥ {high:.6g}"
            )
            lambda_max, err_max = high, rounding
    weight_norm = float(torch.linalg.vector_norm(objective.flat_parameters()))
    gradient_curvature = None
    if objective.grad_norm > 0:
        g = objective.gradient
        Hg = H_dense @ g.to(H_dense) if lz is None else H @ g  # one HVP
        gradient_curvature = float(g.to(Hg) @ Hg) / objective.grad_norm**2
    decision = decide(
        grad_norm=objective.grad_norm,
        weight_norm=weight_norm,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        error_max=err_max,
        error_min=err_min,
        gradient_curvature=gradient_curvature,
        rounding=rounding,
        settings=s,
    )
    threshold = s.neg_tol * decision.curvature_scale
    negative_fraction_stderr: float | None = None
    negative_fraction_runs: int | None = None
    if lz is None:
        negative_fraction: float | None = float(np.mean(eigenvalues.numpy() < -threshold))
        negative_fraction_stderr = 0.0
    elif slq is not None:
        counted = fraction_below(slq.nodes, slq.weights, threshold, complete=slq.complete_runs)
        negative_fraction, negative_fraction_stderr = counted.estimate, counted.stderr
        negative_fraction_runs = counted.runs
        if counted.stderr is None:
            notes["negative_fraction"] = "one SLQ run: no standard error"
    else:
        negative_fraction = None
        notes["negative_fraction"] = "not computed (slq_runs = 0)"
    newton = None
    if s.newton and decision.curvature_scale > s.zero_curvature:
        newton = newton_decrement(
            objective,
            H,
            lambda_min - err_min,
            decision.curvature_scale,
            s,
            stage(progress, "newton"),
        )
        if newton.decrement_squared is None:
            notes["newton"] = (
                "H + μI met negative curvature (λ_min is below its estimate): no decrement"
            )
        elif not newton.converged:
            notes["newton"] = (
                f"CG stopped at cg_max_iter with relative residual "
                f"{newton.cg_relative_residual:.2g}; the decrement is approximate"
            )
    escape = None
    if decision.negative_significant and ritz_min < -threshold:
        escape = escape_probe(objective, bottom_vector, ritz_min, s)
    elif decision.negative_significant:
        notes["escape"] = (
            "no escape direction: the negative curvature was found by the density's Lanczos runs, "
            "which keep no vectors; raise --max-iter or tighten tol for the extremes run"
        )
    numbers = {
        "lambda_max": lambda_max,
        "lambda_min": lambda_min,
        "grad_norm": objective.grad_norm,
        "negative_fraction": negative_fraction,
    }
    if spectrum is not None:
        stability = spectrum.stability  # same objective and lr: no second preconditioned run
    else:
        stability = stability_report(objective, lambda_max, lr=lr, seed=seed)
    if stability is None:
        notes["stability"] = NO_LEARNING_RATE
    hvps = H.matvecs + (stability.matvecs if stability is not None else 0)
    info = RunInfo.from_objective(objective, "classify", seed, hvps, time.perf_counter() - start)
    return ClassifyResult(
        info=info,
        decision=decision,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        error_max=err_max,
        error_min=err_min,
        negative_fraction=negative_fraction,
        negative_fraction_stderr=negative_fraction_stderr,
        negative_fraction_runs=negative_fraction_runs,
        newton=newton,
        escape=escape,
        evidence=_evidence(numbers, decision, s.zero_curvature, s.neg_tol),
        settings=s,
        lanczos=lz,
        slq=slq,
        stability=stability,
        notes=notes,
    )
