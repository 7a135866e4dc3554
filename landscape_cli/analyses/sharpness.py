"""SAM sharpness of the mean loss over a grid of radii ρ: worst case, one step, average, 2nd order.

Kept as one module: the worst-case, one-step and average measures share the loss evaluation, its
counter and the per-chunk problems of m-sharpness, and are swept over the radii together.

All quantities are differences of the full-data mean loss ``L`` of the
:class:`~landscape_cli.problem.objective.Objective` (the same ``L`` as every other analysis):

* **worst case** (Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for
  Efficiently Improving Generalization", ICLR 2021, eq. 1):

      S_max(ρ) = max_{‖ε‖₂ ≤ ρ} L(w + ε) − L(w),

  by the best of the quadratic model's maximiser over the ball (the trust-region start, below) and
  projected normalised-gradient ascent (below). Any point found is feasible, so the reported
  number is a **lower bound** of the true maximum (the maximisation is non-convex); on a
  quadratic loss it is the maximum (the trust-region start is exact, up to rounding, when the
  Lanczos subspaces below span the problem).
* **one step** (SAM's first-order solution of that problem, Foret et al. eq. 2):
  ``L(w + ρ g/‖g‖) − L(w)`` with ``g = ∇L(w)``; undefined (``None``) when ``g = 0``.
* **average case** (Andriushchenko, Croce, Müller, Hein & Flammarion, "A Modern Look at the
  Relationship between Sharpness and Generalization", ICML 2023, §3):

      S_avg(ρ) = E_{ε ~ N(0, ρ² I / n)} [L(w + ε) − L(w)],        (so E‖ε‖² = ρ²)

  by Monte Carlo with antithetic pairs ``±ε`` (the gradient term ``gᵀε`` cancels exactly in each
  pair). Each pair mean ``D_j = ½[L(w+ε_j) + L(w−ε_j)] − L(w)`` is one sample (the two halves of a
  pair are not independent): the estimate is ``D̄`` over the ``N = samples`` pairs and its
  standard error ``s/√N`` with ``s`` the sample standard deviation of the ``D_j`` (``N − 1``
  degrees of freedom, ``average_case_dof``). An interval is ``D̄ ± t_{N−1} s/√N`` with the
  Student-t quantile (:meth:`SharpnessResult.average_case_halfwidth`; 2.13 s.e. for 95 % at the
  default 16 pairs, not the normal 1.96). It is exact for normal ``D_j`` and holds approximately
  when they are mildly skewed; near ``w`` the ``D_j`` are ``≈ ½ εᵀHε``, a weighted sum of χ²₁
  variables that is the more right-skewed the fewer eigenvalues dominate ``H``, and with few
  pairs the interval then undercovers (the sample mean and standard deviation are low
  together). **Convention:** ``ρ`` is the
  perturbation's root-mean-square *norm*, as in the worst case, so the two are comparable at one
  ρ. The paper (and its code, ``eval_average_sharpness``) draws ``σ = ρ`` per coordinate (and
  ``|w|·ρ`` adaptive, without ``η``): its ``ρ`` is this ``ρ/√n``. The JSON records
  ``average_case_sigma`` (the per-coordinate standard deviation of ``z``, ``ρ/√n``).
* **second order**: the quadratic model's bound ``ρ‖g‖ + ½ ρ² max(λ_max, 0)`` (Taylor expansion
  of the worst case; ``λ_max`` from one Lanczos run shared by every ρ). It bounds the quadratic
  model's maximum over the ball from above (``max(λ_max, 0)``: with only negative curvature the
  best the model does is the linear term, at most ``ρ‖g‖``) and is exact for ``g = 0`` with
  ``λ_max ≥ 0`` or ``g`` along the top eigenvector.

**Adaptive sharpness** (ASAM; Kwon, Kim, Park & Choi, "ASAM: Adaptive Sharpness-Aware
Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML 2021, eq. 6) replaces the
ball by the scale-invariant region ``‖T_w⁻¹ ε‖₂ ≤ ρ`` with ``T_w = diag(|w| + η)`` (default
``η = 0.01``): write ``ε = T_w z`` with ``‖z‖ ≤ ρ``. Then the worst case is an ascent in ``z``
(gradient ``T_w ∇L(w + T_w z)``), one-step ASAM is ``ε = ρ T_w² g / ‖T_w g‖``, the average case
draws ``z ~ N(0, ρ² I / n)``, and the second-order estimate is ``ρ‖T_w g‖ + ½ ρ² λ_max(T_w H T_w)``.
``T_w`` scales every trainable parameter, biases included, as in the paper's definition (the
authors' reference code leaves biases unscaled). Without ``adaptive`` the same formulas hold with
``T_w = I``.

**m-sharpness** (Foret et al. §4.1; Andriushchenko & Flammarion, "Towards Understanding
Sharpness-Aware Minimization", ICML 2022): with ``m`` set, the data are cut into disjoint chunks
``S`` of at most ``m`` consecutive samples (inside each of the objective's batches, so a chunk never
straddles two batches; a batch size that is not a multiple of ``m`` leaves one shorter chunk per
batch) and the worst-case and one-step values are

      Σ_S (|S| / N) · [L_S(w + ε_S) − L_S(w)],

each ``ε_S`` chosen for the chunk's own mean loss ``L_S`` (its own ascent, or ``ρ g_S / ‖g_S‖``).
The average case and the second-order estimate stay those of the full-data loss (the average case
is the same either way, by linearity of expectation).

**Trust-region start.** The quadratic model in the scaled variables,
``m(z) = (T_w g)ᵀz + ½ zᵀ (T_w H T_w) z``, is maximised exactly over ``‖z‖ ≤ ρ`` in the subspace
spanned by the Krylov space ``K_k(T_w H T_w, T_w g)`` (a Lanczos run started from ``T_w g``, as in
Gould, Lucidi, Roma & Toint, "Solving the Trust-Region Subproblem using the Lanczos Method", SIAM
J. Optim. 1999) and the top Ritz vector of the random-start λ_max run (which the Krylov space of
``g`` misses in the "hard case", ``g`` orthogonal to the top eigenvector); see
:func:`trust_region_maximiser` for the subproblem. Its maximiser ``z_TR`` is the first start of
the ascent, and ``worst_case_method`` records per ρ whether the reported value is that point's
(``trust_region``), an ascent iterate's (``ascent``, also under m-sharpness, which has no
trust-region start), or ``ε = 0``'s (``zero``: nothing found above ``L(w)``). The Lanczos runs
cost their HVPs once for every ρ.

**Ascent.** For each start ``z₀`` the iteration is ``z_{k+1} = P_ρ(z_k + α_k d_k / ‖d_k‖)`` with
``d_k = T_w ∇L(w + T_w z_k)`` and ``P_ρ`` the projection onto the ball ``‖z‖ ≤ ρ``; the step
decays geometrically from ``α₀ = 2ρ`` to ``2ρ/steps`` (large early steps act like the iterated
SAM/power iteration ``z ← ρ d/‖d‖`` and find the stiff directions; the small late steps refine,
as the step-halving of Croce & Hein's APGD used by Andriushchenko et al. 2023). The starts are the
one-step SAM point, ``restarts`` random points on the sphere ``‖z‖ = ρ`` and the best point found
at the next smaller radius (feasible in the larger ball, which makes the reported lower bound
non-decreasing in ρ), after the trust-region start. The best value over every iterate is reported,
and never below 0 (``ε = 0`` is feasible); a later point replaces the best only when it is higher by
more than :data:`RESOLUTION_UNITS` units of rounding of the perturbed loss, so that rounding does
not decide ``worst_case_method``.

Example
-------
>>> import torch
>>> from landscape_cli.problem.data import no_data
>>> from landscape_cli.problem.objective import Objective
>>> A = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
>>> model = torch.nn.Module()
>>> model.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
>>> obj = Objective(model, lambda m, b: 0.5 * m.w @ A @ m.w, no_data(), dtype=torch.float64)
>>> res = measure_sharpness(obj, SharpnessSettings(rho=(0.1,)))
>>> round(res.worst_case[0], 6), round(res.second_order[0], 6)  # ½ ρ² λ_max = 0.02
(0.02, 0.02)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import InputError, NumericalError
from ..estimators.lanczos import LanczosResult, lanczos
from ..estimators.lanczos_process import checked_product
from ..hdf5 import (
    NONE_DATASETS,
    optional_group,
    read_arrays,
    read_attrs,
    read_list,
    set_attrs,
    write_datasets,
)
from ..operators.hessian import HessianOperator
from ..problem.data import Batch, batch_size_of
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from .estimator_groups import lanczos_from_hdf5, lanczos_to_hdf5
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
from .settings import SharpnessSettings

#: The curves over ρ, stored as datasets with ``rho`` as their dimension scale.
SHARPNESS_CURVES = (
    "worst_case",
    "one_step",
    "average_case",
    "average_case_stderr",
    "second_order",
)

Progress = Callable[[str, int, int], None]
WeightedBatches = Sequence[tuple[Batch, float]]


def validate_settings(settings: SharpnessSettings) -> None:
    """Raise :class:`ValueError` naming the offending value."""
    s = settings
    if len(s.rho) == 0:
        raise ValueError("rho must hold at least one radius, got an empty list")
    for rho in s.rho:
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
            raise ValueError(f"every radius rho must be a finite number > 0, got rho={rho!r}")
    if not (math.isfinite(s.eta) and s.eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got eta={s.eta!r}")
    if s.steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={s.steps}")
    if s.restarts < 0:
        raise ValueError(f"restarts must be >= 0, got restarts={s.restarts}")
    if s.samples < 2:
        raise ValueError(f"samples must be >= 2 (for a standard error), got samples={s.samples}")
    if s.m is not None and s.m < 1:
        raise ValueError(f"m must be >= 1 (or None), got m={s.m}")
    if s.max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got max_iter={s.max_iter}")


# ---------------------------------------------------------------------------- evaluation
class _Counter:
    def __init__(self) -> None:
        self.losses = 0
        self.gradients = 0


def gradient_at(
    objective: Objective, delta: torch.Tensor | None = None, batches: WeightedBatches | None = None
) -> tuple[float, torch.Tensor]:
    """``(L(w + δ), ∇L(w + δ))`` by one backward pass per batch (no graph kept).

    ``L = Σ_b weight_b · L_b`` over ``batches`` (pairs of a batch on the objective's device and
    its weight), by default all of the objective's batches with weights ``n_b / N`` (the mean
    loss). Same evaluation as :meth:`Objective._initial_pass` without ``create_graph``; it would
    sit naturally on :class:`~landscape_cli.problem.objective.Objective` next to :meth:`loss`.
    """
    return objective.loss_and_gradient(delta, batches)


def _loss_at(
    objective: Objective, delta: torch.Tensor, batches: WeightedBatches | None, counter: _Counter
) -> float:
    counter.losses += 1
    if batches is None:
        return objective.loss(delta)
    params = [p + d for p, d in zip(objective._params, objective.unflatten(delta), strict=True)]
    total = 0.0
    with torch.no_grad():
        for index, (batch, weight) in enumerate(batches):
            value = objective._call(params, batch, index)
            if not bool(torch.isfinite(value)):
                raise NumericalError(f"the loss is {float(value)} at the perturbed point")
            total += float(value) * weight
    return total


def _chunks(objective: Objective, m: int) -> Iterator[tuple[int, Batch, float]]:
    """Disjoint chunks of at most ``m`` samples inside each of this rank's batches, weighted by
    ``|S| / N``, each with an index unique among all ranks' chunks: batch ``b``'s chunks start
    at ``b · ⌈B / m⌉`` with ``B`` the largest batch size (:attr:`Batches.batch_size_bound`), so
    indices skip where a batch is shorter (a last batch, a loader's uneven batches) and never
    collide; seeds derived from them are the same whatever the number of ranks."""
    per_batch = -(-objective.batches.batch_size_bound // m)
    for index, batch, weight in objective._batches_on_device():
        size = batch_size_of(batch)
        for j, start in enumerate(range(0, size, m)):
            stop = min(start + m, size)
            if isinstance(batch, torch.Tensor):
                piece: Batch = batch[start:stop]
            else:
                piece = tuple(t[start:stop] for t in batch)
            yield index * per_batch + j, piece, weight * (stop - start) / size


# ---------------------------------------------------------------------------- measures
def _project(z: torch.Tensor, rho: float) -> torch.Tensor:
    norm = float(torch.linalg.vector_norm(z))
    return z if norm <= rho else z * (rho / norm)


def _step_sizes(rho: float, steps: int) -> list[float]:
    """``2ρ`` decaying geometrically to ``2ρ/steps``."""
    if steps == 1:
        return [2 * rho]
    return [2 * rho * (1 / steps) ** (k / (steps - 1)) for k in range(steps)]


def trust_region_maximiser(B: np.ndarray, c: np.ndarray, rho: float) -> np.ndarray:
    """The maximiser ``y`` of ``cᵀy + ½ yᵀBy`` over ``‖y‖₂ ≤ ρ`` (``B`` small, symmetric).

    The trust-region subproblem, solved exactly (Moré & Sorensen, "Computing a Trust Region Step",
    SIAM J. Sci. Stat. Comput. 1983): ``y`` is a maximiser iff ``(μI − B) y = c`` for some
    ``μ ≥ 0`` with ``μI − B ⪰ 0`` and ``μ (ρ − ‖y‖) = 0``. With ``B = V diag(λ) Vᵀ`` and
    ``ĉ = Vᵀc``:

    * ``λ_max < 0`` and ``‖B⁻¹c‖ ≤ ρ``: the interior maximiser ``y = −B⁻¹c`` (``μ = 0``);
    * otherwise ``‖y(μ)‖ = ρ`` with ``y(μ) = V diag(1/(μ − λ)) ĉ``: the secular equation
      ``Σ ĉᵢ²/(μ − λᵢ)² = ρ²`` has one root ``μ > max(λ_max, 0)`` (the left side decreases
      from ``+∞`` when ``ĉ`` has a component on the top eigenvector), found by bisection to
      the resolution of float64;
    * the *hard case* (``ĉ`` has no component on the top eigenspace and ``‖y(λ_max)‖ < ρ``):
      ``μ = λ_max`` and ``y = y(λ_max) + τ v_max`` with ``τ`` filling the ball
      (``‖y‖ = ρ``), its sign that of ``ĉ_max`` (either sign when ``ĉ_max = 0``). The bisection
      ends at the smallest ``μ`` it resolves, and the top-eigenvector fill covers the rest.
    """
    lam, V = np.linalg.eigh(0.5 * (B + B.T))
    ch = V.T @ c
    top = float(lam[-1])
    if top < 0:
        interior = -(V @ (ch / lam))
        if float(np.linalg.norm(interior)) <= rho:
            return interior

    def y_of(mu: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ch == 0.0, 0.0, ch / (mu - lam))

    lo = max(top, 0.0)
    hi = lo + float(np.linalg.norm(c)) / rho  # ‖y(hi)‖ ≤ ‖c‖ / (hi − λ_max) ≤ ρ
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if float(np.linalg.norm(y_of(mid))) <= rho:
            hi = mid
        else:
            lo = mid
    y = y_of(hi)
    slack = rho**2 - float(y @ y)
    if top >= 0 and slack > 0:  # the hard case, or a root closer to λ_max than float64 resolves
        y[-1] += math.copysign(math.sqrt(slack + y[-1] ** 2), y[-1]) - y[-1]
    return V @ y


@dataclass(frozen=True)
class _ModelSubspace:
    """An orthonormal basis ``Q`` (``n × k``) with the quadratic model projected onto it:
    ``B = Qᵀ (T H T) Q`` and ``c = Qᵀ T g`` (float64), for the trust-region start."""

    basis: torch.Tensor
    B: np.ndarray
    c: np.ndarray

    def maximiser(self, rho: float) -> torch.Tensor:
        """``Q y`` with ``y`` the model's maximiser over ``‖y‖ ≤ ρ`` in the subspace."""
        y = trust_region_maximiser(self.B, self.c, rho)
        return _project(self.basis @ torch.as_tensor(y, dtype=self.basis.dtype), rho)


def _orthonormal_complement(Q: torch.Tensor | None, U: torch.Tensor) -> torch.Tensor:
    """The columns of ``U`` orthogonalised against ``Q`` and each other (two Gram-Schmidt passes),
    dropping those already in the span (left with under 1e-6 of their norm)."""
    kept: list[torch.Tensor] = []
    for j in range(U.shape[1]):
        u = U[:, j]
        scale = float(torch.linalg.vector_norm(u))
        for _ in range(2):
            if Q is not None:
                u = u - Q @ (Q.mT @ u)
            for p in kept:
                u = u - p * (p @ u)
        norm = float(torch.linalg.vector_norm(u))
        if scale > 0 and norm > 1e-6 * scale:
            kept.append(u / norm)
    return torch.stack(kept, dim=1) if kept else U[:, :0]


def _model_subspace(
    op: Any, tg: torch.Tensor, top_vectors: torch.Tensor, settings: SharpnessSettings
) -> _ModelSubspace:
    """The Krylov space of ``T g`` under ``T H T`` (a Lanczos run started from ``T g``, stopped
    by ``tol``/``max_iter`` like the λ_max run) plus the top Ritz vectors; one HVP per added
    vector. Without a gradient, the top Ritz vectors alone."""
    Q: torch.Tensor | None = None
    blocks: list[np.ndarray] = []
    if bool(tg.any()):
        krylov = lanczos(
            op, start=tg, tol=settings.tol, max_iter=settings.max_iter, return_basis=True
        )
        Q = krylov.basis
        m = krylov.steps
        T = np.diag(krylov.alphas) + np.diag(krylov.betas[: m - 1], 1)
        blocks.append(T + np.triu(T, 1).T)
    P = _orthonormal_complement(Q, top_vectors.to(dtype=tg.dtype, device=tg.device))
    HP = checked_product(op, P, "on the top Ritz vector") if P.shape[1] > 0 else P
    basis = P if Q is None else torch.cat([Q, P], dim=1)
    B = np.zeros((basis.shape[1], basis.shape[1]))
    k = 0 if Q is None else Q.shape[1]
    if blocks:
        B[:k, :k] = blocks[0]
    coupling = (basis.mT @ HP).double().cpu().numpy()
    B[:, k:] = coupling
    B[k:, :] = coupling.T
    c = (basis.mT @ tg).double().cpu().numpy()
    return _ModelSubspace(basis, B, c)


@dataclass
class _Problem:
    """One loss ``L_S`` (the full data, or an m-sharpness chunk) with its value and gradient at w."""

    batches: WeightedBatches | None  # None: the objective's batches
    base: float
    gradient: torch.Tensor


def _worst_case(
    objective: Objective,
    problem: _Problem,
    t: torch.Tensor,
    rho: float,
    starts: list[tuple[torch.Tensor, str]],
    steps: int,
    counter: _Counter,
) -> tuple[float, torch.Tensor, str]:
    """Best ``L_S(w + T z) − L_S(w)`` over projected ascent from ``starts`` (``ε = 0`` included),
    with how it was found: the label of the start for its first point (``trust_region`` for the
    model's maximiser), ``ascent`` for a later iterate, ``zero`` for ``ε = 0``."""
    best_value, best_z, best_method = 0.0, torch.zeros_like(t), "zero"
    unit = RESOLUTION_UNITS * torch.finfo(objective.dtype).eps / 2
    sizes = _step_sizes(rho, steps)
    for z0, label in starts:
        z = _project(z0, rho)
        for k in range(steps + 1):
            if k == steps:  # the last iterate needs only its value
                value = _loss_at(objective, t * z, problem.batches, counter) - problem.base
            else:
                counter.gradients += 1
                loss, grad = gradient_at(objective, t * z, problem.batches)
                value = loss - problem.base
            if value - best_value > unit * abs(problem.base + best_value):
                best_value, best_z = value, z
                best_method = label if k == 0 else "ascent"
            if k == steps:
                break
            d = t * grad
            norm = float(torch.linalg.vector_norm(d))
            if norm == 0.0:  # a stationary point of the perturbed loss: nothing to climb
                break
            z = _project(z + (sizes[k] / norm) * d, rho)
    return best_value, best_z, best_method


def _random_sphere(n: int, rho: float, generator: torch.Generator, like: torch.Tensor):
    u = torch.randn(n, generator=generator, dtype=torch.float64)
    norm = float(torch.linalg.vector_norm(u))
    return (u * (rho / norm)).to(device=like.device, dtype=like.dtype)


def _problem_sweep(
    objective: Objective,
    problem: _Problem,
    t: torch.Tensor,
    rhos: list[float],
    settings: SharpnessSettings,
    seed: int,
    label: str,
    counter: _Counter,
    tick: Callable[[], None],
    model_starts: list[torch.Tensor] | None = None,
) -> tuple[list[float | None], list[float], list[str]]:
    """One-step and worst-case values of one problem at every ρ (``rhos`` ascending), and how
    each worst case was found (:func:`_worst_case`); ``model_starts[i]`` is the trust-region
    start of ``rhos[i]``."""
    tg = t * problem.gradient
    tg_norm = float(torch.linalg.vector_norm(tg))
    one_step: list[float | None] = []
    worst: list[float] = []
    methods: list[str] = []
    previous: torch.Tensor | None = None
    for i, rho in enumerate(rhos):
        try:
            starts = [] if model_starts is None else [(model_starts[i], "trust_region")]
            if tg_norm > 0:
                z_sam = tg * (rho / tg_norm)
                one_step.append(
                    _loss_at(objective, t * z_sam, problem.batches, counter) - problem.base
                )
                starts.append((z_sam, "ascent"))
            else:
                one_step.append(None)
            if previous is not None and bool(previous.any()):
                starts.append((previous, "ascent"))
            generator = torch.Generator().manual_seed(
                derive_seed(seed, f"sharpness/worst/{label}/{rho!r}")
            )
            starts += [
                (_random_sphere(t.numel(), rho, generator, t), "ascent")
                for _ in range(settings.restarts)
            ]
            value, previous, method = _worst_case(
                objective, problem, t, rho, starts, settings.steps, counter
            )
            worst.append(value)
            methods.append(method)
        except NumericalError as exc:
            where = "" if label == "full" else f" (m-sharpness {label})"
            raise NumericalError(f"at rho={rho:g}{where}: {exc.message}", hint=exc.hint) from None
        tick()
    return one_step, worst, methods


#: Units of rounding of the loss (``u = 2^-p``, half the machine epsilon, times ``|L(w)|``) below
#: which an average-case value is reported as unresolved. Each pair mean
#: ``½[L(w+ε) + L(w−ε)] − L(w)`` subtracts losses computed in the analysis dtype, each a sum of
#: rounded batch means; 16 units leave room for those roundings without printing one of them
#: as a measurement.
RESOLUTION_UNITS = 16


def loss_resolution(objective: Objective) -> float:
    """``RESOLUTION_UNITS · u · |L(w)|``: the smallest loss difference the analysis dtype can
    resolve at this loss (float32: ``u = 2^-24``; float64: ``2^-53``)."""
    unit = torch.finfo(objective.dtype).eps / 2
    return (
        RESOLUTION_UNITS * unit * max(abs(objective.base_loss()), torch.finfo(objective.dtype).tiny)
    )


def student_t_quantile(level: float, dof: int) -> float:
    """The two-sided Student-t quantile ``c`` with ``P(|T| ≤ c) = level`` for ``dof`` degrees of
    freedom (``c = t_{(1+level)/2, dof}``; 2.131 for ``level = 0.95``, ``dof = 15``).

    ``P(|T| ≤ c)`` in closed form for integer ``dof`` (Abramowitz & Stegun 26.7.3–4): with
    ``θ = arctan(c/√ν)``, ``(2/π)[θ + sin θ Σ_k a_k cos^{2k-1} θ]`` for odd ``ν`` and
    ``sin θ Σ_k b_k cos^{2k} θ`` for even ``ν``, the coefficients the products of ratios of odd
    and even numbers; ``c`` by bisection on that increasing function.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof!r}")

    def coverage(c: float) -> float:
        theta = math.atan(c / math.sqrt(dof))
        sin, cos = math.sin(theta), math.cos(theta)
        if dof % 2 == 1:
            term, total = cos, 0.0
            for k in range(1, (dof - 1) // 2 + 1):
                total += term
                term *= cos * cos * (2 * k) / (2 * k + 1)
            return (2 / math.pi) * (theta + sin * total)
        term, total = 1.0, 0.0
        for k in range(1, dof // 2 + 1):
            total += term
            term *= cos * cos * (2 * k - 1) / (2 * k)
        return sin * total

    lo, hi = 0.0, 1.0
    while coverage(hi) < level:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if coverage(mid) < level:
            lo = mid
        else:
            hi = mid
    return hi


def _average_case(
    objective: Objective,
    t: torch.Tensor,
    rho: float,
    samples: int,
    seed: int,
    counter: _Counter,
) -> np.ndarray:
    """``samples`` antithetic pair means ``½[L(w+ε) + L(w−ε)] − L(w)``, ``ε = T z``.

    The draws are the same standard normals at every ρ (common random numbers; the generator is
    re-seeded), so the curve over ρ is smooth; each ρ's mean and standard error stay unbiased.
    """
    n = objective.num_parameters
    generator = torch.Generator().manual_seed(derive_seed(seed, "sharpness/average"))
    base = objective.base_loss()
    values = np.empty(samples, dtype=np.float64)
    scale = rho / math.sqrt(n)
    for j in range(samples):
        u = torch.randn(n, generator=generator, dtype=torch.float64)
        eps = t * (scale * u).to(device=t.device, dtype=t.dtype)
        plus = _loss_at(objective, eps, None, counter)
        minus = _loss_at(objective, -eps, None, counter)
        values[j] = 0.5 * (plus + minus) - base
    return values


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SharpnessResult:
    """Sharpness at every radius ρ (lists aligned with ``rho``; ``None`` with a reason in notes).

    ``worst_case`` is a **lower bound** of the maximum (the best point found), and
    ``worst_case_method[i]`` says which point it is: ``trust_region`` (the quadratic model's
    maximiser), ``ascent`` or ``zero`` (module docstring). ``average_samples[i]`` holds the
    antithetic pair means of radius ``rho[i]``, each one sample: ``average_case_stderr`` is their
    standard deviation over ``√samples``, with ``samples − 1`` degrees of freedom
    (:attr:`average_case_dof`; :meth:`average_case_halfwidth` for a two-sided interval).
    """

    info: RunInfo
    rho: list[float]
    worst_case: list[float | None]
    one_step: list[float | None]
    average_case: list[float | None]
    average_case_stderr: list[float | None]
    second_order: list[float | None]
    lambda_max: float | None
    adaptive: bool
    m: int | None
    settings: SharpnessSettings
    gradient_evaluations: int
    loss_evaluations: int
    average_samples: np.ndarray
    worst_case_method: list[str]
    lanczos: LanczosResult | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def average_case_dof(self) -> int:
        """Degrees of freedom of ``average_case_stderr``: the antithetic pairs minus one."""
        return int(self.settings.samples) - 1

    def average_case_halfwidth(self, level: float = 0.95) -> list[float | None]:
        """Half-widths ``t · s.e.`` of the two-sided Student-t intervals of ``average_case`` at
        confidence ``level`` (``t`` from :func:`student_t_quantile` with
        :attr:`average_case_dof`): exact for normal pair means, approximate otherwise (the
        module docstring says when)."""
        t = student_t_quantile(level, self.average_case_dof)
        return [None if se is None else t * se for se in self.average_case_stderr]

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        out = self.info.to_dict()
        out.update(
            {
                "rho": json_numbers(self.rho),
                "worst_case": json_numbers(self.worst_case),
                "one_step": json_numbers(self.one_step),
                "average_case": json_numbers(self.average_case),
                "second_order": json_numbers(self.second_order),
                "adaptive": self.adaptive,
                "average_case_stderr": json_numbers(self.average_case_stderr),
                "lambda_max": json_number(self.lambda_max),
                # with adaptive, λ_max is that of T_w H T_w (the scaled region's curvature)
                "lambda_max_of": "T_w H T_w" if self.adaptive else "H",
                "average_case_sigma": json_numbers(
                    [rho / math.sqrt(self.info.num_parameters) for rho in self.rho]
                ),
                "m": self.m,
                "eta": s.eta if self.adaptive else None,
                "worst_case_bound": "lower",
                "worst_case_method": list(self.worst_case_method),
                "ascent": {"steps": s.steps, "restarts": s.restarts},
                "samples": s.samples,
                "average_case_dof": self.average_case_dof,
                "gradient_evaluations": self.gradient_evaluations,
                "loss_evaluations": self.loss_evaluations,
            }
        )
        if self.lanczos is not None:
            out["lanczos"] = {**self.lanczos.summary(), "tol": s.tol}
        merge_notes(out, self.notes)
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """``/sharpness``: ``rho`` and the curves over it (``None`` stored as NaN and listed in
        ``none_datasets``, always present here), the antithetic samples, the run, the counts,
        ``worst_case_method`` (strings, aligned with ``rho``) and ``average_case_dof`` as
        attributes; ``settings``, ``lanczos`` and ``notes`` subgroups."""
        s = self.settings
        arrays: dict[str, Any] = {"rho": np.asarray(self.rho, dtype=np.float64)}
        arrays.update({name: list(getattr(self, name)) for name in SHARPNESS_CURVES})
        arrays["average_samples"] = np.asarray(self.average_samples, dtype=np.float64)
        none_datasets = write_datasets(group, arrays, dims={n: ("rho",) for n in SHARPNESS_CURVES})
        self.info.to_hdf5(group)
        set_attrs(
            group,
            {
                "lambda_max": self.lambda_max,
                "adaptive": self.adaptive,
                "m": self.m,
                "eta": s.eta if self.adaptive else None,
                "worst_case_bound": "lower",
                "worst_case_method": list(self.worst_case_method),
                "samples": s.samples,
                "average_case_dof": self.average_case_dof,
                "gradient_evaluations": self.gradient_evaluations,
                "loss_evaluations": self.loss_evaluations,
                NONE_DATASETS: none_datasets,
            },
        )
        settings_to_hdf5(group, s)
        if self.lanczos is not None:
            lanczos_to_hdf5(group.create_group("lanczos"), self.lanczos, tol=s.tol)
        notes_to_hdf5(group, self.notes)

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> SharpnessResult:
        """The result of a group written by :meth:`to_hdf5`."""
        a = read_attrs(group)
        shapes = {name: ("rho",) for name in ("rho", *SHARPNESS_CURVES)}
        arrays = read_arrays(group, {**shapes, "average_samples": ("rho", "samples")})
        return cls(
            info=RunInfo.from_hdf5(group),
            rho=[float(r) for r in arrays["rho"]],
            **{name: read_list(group, name) for name in SHARPNESS_CURVES},
            lambda_max=a["lambda_max"],
            adaptive=a["adaptive"],
            m=a["m"],
            settings=settings_from_hdf5(group, SharpnessSettings),
            gradient_evaluations=a["gradient_evaluations"],
            loss_evaluations=a["loss_evaluations"],
            average_samples=arrays["average_samples"],
            worst_case_method=list(a["worst_case_method"]),
            lanczos=optional_group(group, "lanczos", lanczos_from_hdf5),
            notes=notes_from_hdf5(group),
        )


def measure_sharpness(
    objective: Objective,
    settings: SharpnessSettings | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    lanczos_result: LanczosResult | None = None,
) -> SharpnessResult:
    """Worst-case, one-step, average-case and second-order sharpness at every ρ (module docstring).

    ``lanczos_result``: a converged Lanczos run on this objective's Hessian (e.g. from
    :func:`~landscape_cli.analyses.spectrum.analyze_spectrum`) whose λ_max, and top Ritz vector
    for the trust-region start, are reused instead of running another (ignored for ``adaptive``,
    whose operator is T H T, and without m-sharpness when it holds no ``top_vectors``).

    Raises:
        ValueError: a radius ``ρ ≤ 0`` (named) or another bad setting.
        InputError: ``m`` set on an objective without data.
        NumericalError: a non-finite loss or gradient at a perturbed point (the ρ is named).
    """
    s = settings or SharpnessSettings()
    validate_settings(s)
    start_time = time.perf_counter()
    counter = _Counter()
    notes: dict[str, str] = {}
    w = objective.flat_parameters()
    t = w.abs() + s.eta if s.adaptive else torch.ones_like(w)
    order = sorted(range(len(s.rho)), key=lambda i: s.rho[i])
    rhos = [float(s.rho[i]) for i in order]

    # ---- λ_max of H (or T H T) and its Ritz vector from one Lanczos run: the second-order
    # estimate, and with the Krylov space of T g the subspace of the trust-region start
    H = HessianOperator(objective)
    op = H.scale(t) if s.adaptive else H
    lambda_max: float | None = None
    lz = None
    reusable = lanczos_result is not None and not s.adaptive
    if reusable and (s.m is not None or lanczos_result.top_vectors is not None):  # type: ignore[union-attr]
        lz = lanczos_result
    elif s.second_order or s.m is None:
        try:
            lz = lanczos(
                op,
                seed=derive_seed(seed, "sharpness/lanczos"),
                top_k=1,
                tol=s.tol,
                max_iter=s.max_iter,
                return_vectors=s.m is None,
                progress=None if progress is None else (lambda d, n: progress("lanczos", d, n)),
            )
        except FloatingPointError as exc:
            raise NumericalError(
                f"the Lanczos iteration produced non-finite numbers: {exc}"
            ) from None
        if not lz.converged:
            notes["lanczos"] = f"stopped at max_iter {s.max_iter} before reaching tol={s.tol:g}"
    if s.second_order and lz is not None:
        lambda_max = float(lz.top(1)[0])
    else:
        notes["second_order"] = "not computed (second_order = false)"
    tg = t * objective.gradient
    tg_norm = float(torch.linalg.vector_norm(tg))
    second = [
        None if lambda_max is None else rho * tg_norm + 0.5 * rho**2 * max(lambda_max, 0.0)
        for rho in rhos
    ]
    model_starts = None  # the maximisers, not the subspace's basis, are kept through the sweep
    if s.m is None and lz is not None and lz.top_vectors is not None:
        try:
            subspace = _model_subspace(op, tg, lz.top_vectors[:, :1], s)
            model_starts = [subspace.maximiser(rho) for rho in rhos]
            del subspace
            if lz is not lanczos_result:  # its Ritz vector served the start only
                lz = replace(lz, top_vectors=None)
        except FloatingPointError as exc:
            raise NumericalError(
                f"the Lanczos iteration of the trust-region start produced non-finite numbers: "
                f"{exc}"
            ) from None

    # ---- worst case and one step: on the full loss, or on every m-chunk
    if s.m is None:
        problems: Any = [(0, _Problem(None, objective.base_loss(), objective.gradient), 1.0)]
        total_problems = 1
    else:
        if objective.batches.source is None:
            raise InputError(
                "m-sharpness needs data: the objective has none (analytic loss)",
                hint="drop `m` or give `data`",
            )
        total_problems = sum(-(-batch_size_of(b) // s.m) for _, b, _ in _iter_batches(objective))
        problems = _chunk_problems(objective, s.m, counter)
    done = 0
    total = total_problems * len(rhos)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress("sharpness", done, total)

    one_step_acc = np.zeros(len(rhos))
    worst_acc = np.zeros(len(rhos))
    methods = ["ascent"] * len(rhos)
    one_step_undefined: str | None = None
    with objective.collect_failure() as failure:
        for index, problem, weight in problems:
            label = "full" if s.m is None else f"chunk {index}"
            one, worst, found = _problem_sweep(
                objective, problem, t, rhos, s, seed, label, counter, tick, model_starts
            )
            if s.m is None:
                methods = found
            worst_acc += weight * np.asarray(worst)
            if one[0] is None:
                one_step_undefined = label
            else:
                one_step_acc += weight * np.asarray(one, dtype=np.float64)
    if s.m is not None:  # chunks are per rank: sum their weighted values over ranks
        packed = np.concatenate([worst_acc, one_step_acc, [one_step_undefined is not None]])
        packed = objective.reduce_sum(torch.from_numpy(packed).to(objective.device), failure)
        packed = packed.cpu().numpy()
        worst_acc, one_step_acc = packed[: len(rhos)], packed[len(rhos) : -1]
        if packed[-1] > 0 and one_step_undefined is None:
            one_step_undefined = "a chunk on another rank"
    elif failure.error is not None:  # the full-data sweep's collectives already ran on all ranks
        raise failure.error
    direction = "ρ T_w² g/‖T_w g‖" if s.adaptive else "ρ g/‖g‖"
    if one_step_undefined is not None:
        where = "at w" if s.m is None else f"of {one_step_undefined} at w"
        notes["one_step"] = (
            f"the gradient {where} is zero, so the direction {direction} is undefined"
        )
        if s.restarts == 0:
            notes["worst_case"] = "no SAM start (zero gradient) and restarts = 0: only ε = 0 tried"
    one_step: list[float | None] = (
        [None] * len(rhos) if one_step_undefined is not None else [float(x) for x in one_step_acc]
    )
    worst_case: list[float | None] = [float(x) for x in worst_acc]

    # ---- average case
    average_samples = np.empty((len(rhos), s.samples), dtype=np.float64)
    for i, rho in enumerate(rhos):
        try:
            average_samples[i] = _average_case(objective, t, rho, s.samples, seed, counter)
        except NumericalError as exc:
            raise NumericalError(f"at rho={rho:g}: {exc.message}", hint=exc.hint) from None
        if progress is not None:
            progress("average", i + 1, len(rhos))
    average: list[float | None] = [float(x) for x in average_samples.mean(axis=1)]
    stderr: list[float | None] = [
        float(x) for x in average_samples.std(axis=1, ddof=1) / math.sqrt(s.samples)
    ]
    resolution = loss_resolution(objective)
    unresolved = [i for i, value in enumerate(average) if abs(value) < resolution]  # type: ignore[arg-type]
    for i in unresolved:
        average[i] = stderr[i] = None
    if unresolved:
        radii = ", ".join(f"{rhos[i]:g}" for i in unresolved)
        dtype = str(objective.dtype).replace("torch.", "")
        notes["average_case"] = (
            f"below the resolution of {dtype} at rho = {radii}: the mean change "
            f"is under {resolution:.2g}, {RESOLUTION_UNITS} units of rounding of the loss "
            f"{objective.base_loss():.6g}, so its value is rounding; use --dtype float64 or a "
            "larger rho"
        )
    if s.m is not None:
        notes["m"] = (
            f"worst_case and one_step are m-sharpness over chunks of {s.m} samples; average_case "
            "and second_order are of the full-data loss"
        )

    # ---- back to the user's order of ρ
    inverse = np.argsort(order)

    def unsort(values: list[Any]) -> list[Any]:
        return [values[int(j)] for j in inverse]

    info = RunInfo.from_objective(
        objective, "sharpness", seed, H.matvecs, time.perf_counter() - start_time
    )
    return SharpnessResult(
        info=info,
        rho=[float(r) for r in s.rho],
        worst_case=unsort(worst_case),
        one_step=unsort(one_step),
        average_case=unsort(average),
        average_case_stderr=unsort(stderr),
        second_order=unsort(second),
        lambda_max=lambda_max,
        adaptive=s.adaptive,
        m=s.m,
        settings=s,
        gradient_evaluations=counter.gradients,
        loss_evaluations=counter.losses,
        average_samples=average_samples[inverse],
        worst_case_method=unsort(methods),
        lanczos=lz,
        notes=notes,
    )


def _iter_batches(objective: Objective) -> Iterator[tuple[int, Batch, float]]:
    yield from objective._batches_on_device()


def _chunk_problems(
    objective: Objective, m: int, counter: _Counter
) -> Iterator[tuple[_Problem, float]]:
    """The m-sharpness chunks, each with its own loss and gradient at ``w`` (computed lazily, so
    only one chunk's gradient is held at a time)."""
    for index, piece, weight in _chunks(objective, m):
        batches = [(piece, 1.0)]
        counter.gradients += 1
        try:
            base, grad = gradient_at(objective, None, batches)
        except NumericalError as exc:
            raise NumericalError(f"on an m-sharpness chunk at w: {exc.message}") from None
        yield index, _Problem(batches, base, grad), weight
