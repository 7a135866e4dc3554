"""Edge of stability: the learning rate against the curvature it meets.

Gradient descent with step ``η`` on a quadratic diverges along an eigenvector once ``η·λ > 2``;
Cohen et al. ("Gradient descent on neural networks typically occurs at the edge of stability",
ICLR 2021) found full-batch training drives ``λ_max`` to ``2/η`` and hovers there. With heavy-ball
momentum ``β`` the bound is ``η·λ < 2(1 + β)`` (their appendix; Goh 2017). PyTorch's SGD variants
shift it: with ``dampening τ`` the buffer accumulates ``(1 − τ)g``, so the bound is
``2(1 + β)/(1 − τ)``; with ``nesterov=True`` the step is ``η(g + β b)`` and the iteration matrix
``[[1 − h(1+β), −β²], [h, β]]`` (``h = ηλ``) has an eigenvalue ``−1`` at ``h = 2(1 + β)/(1 + 2β)``
(1.36 for ``β = 0.9``, not 3.8).

For Adam the relevant quantity is the *preconditioned* sharpness ``λ_max(P⁻¹H)`` with
``P = (1 − β₁ᵗ)·diag(√v̂ + ε)``, ``v̂ = v/(1 − β₂ᵗ)`` the bias-corrected second-moment estimate,
whose stability threshold is ``(2 + 2β₁)/((1 − β₁)η)`` = ``38/η`` for ``β₁ = 0.9`` (Cohen et al.,
"Adaptive gradient methods at the edge of stability", 2022). ``λ_max(P⁻¹H)`` is computed as the
largest eigenvalue of the symmetric ``P^{-1/2} H P^{-1/2}`` by Lanczos. With ``amsgrad=True`` Adam
divides by the running maximum ``max_exp_avg_sq`` instead of ``v``, and so does ``P`` here.

Only SGD (``momentum`` in its param group, with ``dampening``/``nesterov`` when present; not
RMSprop's ``alpha``) and Adam are modelled:
``exp_avg_sq`` in the state, except NAdam (``mu_product``) and torch's RAdam (Adam's keys without
``amsgrad``); Adam implementations outside ``torch.optim`` (``transformers``' AdamW with
``correct_bias``, FusedAdam with ``bias_correction``) count as Adam, without the bias corrections
when those are off. Other optimizers' states (RMSprop, RAdam, NAdam, Adagrad, Adamax, ...) are
reported as ``unknown``: ``η·λ_max`` against the plain gradient-descent bound 2, with a note that
this is not their threshold. Coupled weight decay
``wd`` adds ``wd`` to every eigenvalue the step meets; it is not included.

The learning rate and optimizer state come from the checkpoint (``optimizer``,
``optimizer_state_dict`` or Lightning's ``optimizer_states``) or from ``--lr``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import torch

from ..errors import InputError
from ..estimators.lanczos import lanczos
from ..hdf5 import field_attrs, from_field_attrs, read_attrs, set_attrs
from ..operators.hessian import HessianOperator
from ..problem.objective import Objective
from ..problem.seeding import derive_seed
from .run_info import json_number

OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "opt")
NO_LEARNING_RATE = "no learning rate: pass --lr, or a checkpoint that stores its optimizer state"


@dataclass(frozen=True)
class OptimizerState:
    """What the stability analysis needs from a torch optimizer ``state_dict``."""

    kind: str  # "adam" (Adam/AdamW), "sgd", or "unknown"
    lr: float
    momentum: float = 0.0
    betas: tuple[float, float] | None = None
    eps: float = 1e-8
    step: float | None = None
    #: per parameter, optimizer order: Adam's ``exp_avg_sq``, or ``max_exp_avg_sq`` with amsgrad
    exp_avg_sq: list[torch.Tensor] | None = None
    nesterov: bool = False
    dampening: float = 0.0
    note: str = ""  # why an optimizer is "unknown"


def find_optimizer_state(extra: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The optimizer ``state_dict`` stored beside the weights in a training checkpoint, if any."""
    for key in OPTIMIZER_KEYS:
        value = extra.get(key)
        if isinstance(value, Mapping) and "param_groups" in value:
            return value
    states = extra.get("optimizer_states")  # PyTorch Lightning
    if isinstance(states, (list, tuple)) and states and isinstance(states[0], Mapping):
        return states[0]
    return None


def _number(value: Any, name: str) -> float:
    """``value`` (a number or a one-element tensor) as a finite float; a :class:`ValueError`
    naming the optimizer setting ``name`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"'{name}' is {value!r:.40}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"'{name}' is {number}, not a finite number")
    return number


def parse_optimizer_state(
    state_dict: Mapping[str, Any], where: str = "checkpoint"
) -> OptimizerState:
    """Read the learning rate, momentum / betas and Adam's second moments (single param group
    assumed for the preconditioner; the first group's hyper-parameters are used). Malformed
    state (a learning rate that is not a finite number, a group that is not a mapping, second
    moments that are not tensors) is an :class:`InputError` naming ``where``."""
    groups = state_dict.get("param_groups")
    if (
        not isinstance(groups, (list, tuple))
        or not groups
        or not all(isinstance(g, Mapping) for g in groups)
        or "lr" not in groups[0]
    ):
        raise InputError(f"{where}: optimizer state has no param_groups with an 'lr'")
    try:
        return _parse_groups(state_dict, groups, where)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        about_lr = str(exc).startswith("'lr'")
        raise InputError(
            f"{where}: malformed optimizer state ({exc})",
            hint="pass `lr` to give the learning rate yourself" if about_lr else None,
        ) from None


def _parse_groups(
    state_dict: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], where: str
) -> OptimizerState:
    group = groups[0]
    lr = _number(group["lr"], "lr")
    state = state_dict.get("state", {})
    if len(groups) > 1:
        lrs = {_number(g.get("lr", lr), "lr") for g in groups}
        if len(lrs) > 1:
            raise InputError(
                f"{where}: the optimizer has {len(groups)} parameter groups with different learning "
                f"rates {sorted(lrs)}",
                hint="pass `lr` to choose one",
            )
    order = [index for g in groups for index in g.get("params", [])]
    first = next(iter(state.values()), {}) if isinstance(state, Mapping) else {}
    first = first if isinstance(first, Mapping) else {}
    nadam = "mu_product" in first or "momentum_decay" in group
    # torch.optim's RAdam has Adam's keys but no amsgrad; Adam implementations outside torch.optim
    # (transformers' AdamW: correct_bias, apex/DeepSpeed FusedAdam: bias_correction) have neither
    # amsgrad nor torch's capturable/differentiable flags
    radam = "amsgrad" not in group and ("capturable" in group or "differentiable" in group)
    if "exp_avg_sq" in first and not nadam and not radam:
        betas = tuple(_number(b, "betas") for b in group.get("betas", (0.9, 0.999)))
        if len(betas) != 2:
            raise ValueError(f"'betas' holds {len(betas)} numbers, not 2")
        key = "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"
        try:
            squares = [state[index][key] for index in order]
            step = state[order[0]].get("step")
        except KeyError as exc:
            raise InputError(f"{where}: Adam state is missing {exc}") from None
        if not all(isinstance(s, torch.Tensor) for s in squares):
            raise ValueError(f"Adam's '{key}' is not a tensor for every parameter")
        corrected = group.get("correct_bias", group.get("bias_correction", True))
        # no bias correction: P = √v + ε, which step = None (t = ∞) gives below
        step_value = _number(step, "step") if step is not None and corrected else None
        return OptimizerState(
            "adam", lr, 0.0, betas, _number(group.get("eps", 1e-8), "eps"), step_value, squares
        )
    rmsprop = "alpha" in group or "square_avg" in first
    if "momentum" in group and not rmsprop and "exp_avg_sq" not in first:
        return OptimizerState(
            "sgd",
            lr,
            _number(group.get("momentum") or 0.0, "momentum"),
            nesterov=bool(group.get("nesterov")),
            dampening=_number(group.get("dampening") or 0.0, "dampening"),
        )
    keys = sorted({*(k for k in group if k != "params"), *first})
    return OptimizerState(
        "unknown",
        lr,
        note=(
            "the optimizer is neither SGD nor Adam/AdamW (its state has "
            + ", ".join(keys)
            + "): η·λ_max is compared with the plain gradient-descent bound 2, which is not its "
            "stability threshold"
        ),
    )


@dataclass(frozen=True)
class StabilityReport:
    """``η·λ_max`` against ``2`` (GD) and SGD's momentum bound (``2(1+β)/(1−τ)``, Nesterov
    ``2(1+β)/(1+2β)``); for Adam ``λ_max(P⁻¹H)`` against ``(2+2β₁)/((1−β₁)η)``."""

    lr: float
    source: str  # "checkpoint" or "--lr"
    optimizer: str
    lambda_max: float
    momentum: float
    preconditioned_sharpness: float | None = None
    preconditioned_threshold: float | None = None
    matvecs: int = 0
    nesterov: bool = False
    dampening: float = 0.0
    note: str = ""  # e.g. why the optimizer's own threshold is not known
    mode: str = "eval"  # the module mode of the objective whose λ_max this is

    @property
    def lr_times_lambda_max(self) -> float:
        return self.lr * self.lambda_max

    @property
    def within_bound(self) -> bool:
        """Below the optimizer's own bound: Adam's preconditioned threshold, else SGD's."""
        if self.preconditioned_sharpness is not None and self.preconditioned_threshold is not None:
            return bool(self.preconditioned_sharpness < self.preconditioned_threshold)
        return bool(self.lr_times_lambda_max < self.momentum_threshold)

    @property
    def momentum_formula(self) -> str:
        """How :attr:`momentum_threshold` is computed, for display."""
        return "2(1+β)/(1+2β), Nesterov" if self.nesterov else "2(1+β)/(1−τ)"

    @property
    def momentum_threshold(self) -> float:
        """The bound on ``η·λ_max`` of SGD with this momentum: ``2(1+β)/(1−τ)`` (heavy ball with
        dampening ``τ``), ``2(1+β)/(1+2β)`` with Nesterov; 2 without momentum."""
        beta = self.momentum
        if beta == 0:  # torch's SGD ignores dampening and nesterov without momentum
            return 2.0
        if self.nesterov:
            return 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta)
        if self.dampening >= 1:  # the buffer never moves: no step, no instability
            return math.inf
        return 2.0 * (1.0 + beta) / (1.0 - self.dampening)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lr": self.lr,
            "lr_source": self.source,
            "optimizer": self.optimizer,
            "lr_times_lambda_max": json_number(self.lr_times_lambda_max),
            "gd_threshold": 2.0,
            "gd_stable": bool(self.lr_times_lambda_max < 2.0),
            "stable": self.within_bound,
            "momentum": self.momentum,
            "nesterov": bool(self.nesterov),
            "dampening": self.dampening,
            "momentum_threshold": json_number(self.momentum_threshold),
            "mode": self.mode,
        }
        if self.note:
            out["note"] = self.note
        if self.preconditioned_sharpness is not None:
            assert self.preconditioned_threshold is not None
            out.update(
                {
                    "preconditioned_sharpness": json_number(self.preconditioned_sharpness),
                    "preconditioned_threshold": json_number(self.preconditioned_threshold),
                    "preconditioned_sharpness_ratio": json_number(
                        self.preconditioned_sharpness / self.preconditioned_threshold
                    ),
                    "preconditioned_matvecs": self.matvecs,
                }
            )
        return out

    def to_hdf5(self, group: h5py.Group) -> None:
        """Every field as an attribute, with the derived numbers of :meth:`to_dict`."""
        fields = field_attrs(self)
        derived = {k: v for k, v in self.to_dict().items() if k not in fields}
        derived.pop("lr_source", None)  # the field ``source``
        set_attrs(group, {**fields, **derived})

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> StabilityReport:
        """The report of a group written by :meth:`to_hdf5` (a field missing from an older
        report, e.g. nesterov, dampening or note, takes its default)."""
        return from_field_attrs(cls, read_attrs(group))


def adam_preconditioner(objective: Objective, state: OptimizerState) -> torch.Tensor:
    """The diagonal of ``P = (1 − β₁ᵗ)(√(v/(1 − β₂ᵗ)) + ε)`` as a flat vector (parameter order)."""
    assert state.exp_avg_sq is not None and state.betas is not None
    if len(state.exp_avg_sq) != len(objective.parameter_shapes):
        raise InputError(
            f"the optimizer state holds {len(state.exp_avg_sq)} parameters but the model has "
            f"{len(objective.parameter_shapes)} trainable ones",
            hint="the optimizer must have been built on model.parameters() in order",
        )
    parts = []
    for square, shape, name in zip(
        state.exp_avg_sq, objective.parameter_shapes, objective.parameter_names, strict=True
    ):
        if tuple(square.shape) != tuple(shape):
            raise InputError(
                f"the optimizer's second moment for '{name}' has shape {tuple(square.shape)}, "
                f"the parameter {tuple(shape)}"
            )
        parts.append(square.reshape(-1))
    v = torch.cat(parts).to(device=objective.device, dtype=objective.dtype)
    beta1, beta2 = state.betas
    t = state.step if state.step is not None else float("inf")
    correction1 = 1.0 - beta1**t
    correction2 = 1.0 - beta2**t
    return correction1 * (torch.sqrt(v / correction2) + state.eps)


def optimizer_state(objective: Objective, lr: float | None = None) -> OptimizerState | None:
    """The optimizer state stored beside the weights of ``objective``'s checkpoint, parsed, with
    ``lr`` (when given) replacing its learning rate, bad or not; ``None`` without one. Raises
    :class:`InputError` for a malformed state: the analyses call it before their products, so
    that a bad checkpoint costs no HVP."""
    checkpoint = getattr(objective, "checkpoint", None)
    raw = find_optimizer_state(checkpoint.extra) if checkpoint is not None else None
    if raw is None:
        return None
    if lr is not None:
        groups = raw.get("param_groups")
        if isinstance(groups, (list, tuple)):
            groups = [{**g, "lr": lr} if isinstance(g, Mapping) else g for g in groups]
            raw = {**raw, "param_groups": groups}
    return parse_optimizer_state(raw, f"checkpoint {checkpoint.path}")


def stability_report(
    objective: Objective,
    lambda_max: float,
    *,
    lr: float | None = None,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 100,
) -> StabilityReport | None:
    """The edge-of-stability numbers, or ``None`` when no learning rate is known.

    ``lr`` (the CLI's ``--lr``) overrides the checkpoint's. For Adam state, one more Lanczos run
    gives ``λ_max(P^{-1/2} H P^{-1/2})``.
    """
    checkpoint = getattr(objective, "checkpoint", None)
    state = optimizer_state(objective, lr)
    if lr is None and state is None:
        return None
    rate = float(lr) if lr is not None else state.lr  # type: ignore[union-attr]
    if not (math.isfinite(rate) and rate > 0):
        if lr is not None:
            raise InputError(f"`lr` must be a finite positive number, got {rate}")
        raise InputError(
            f"checkpoint {checkpoint.path}: the learning rate in its optimizer state "  # type: ignore[union-attr]
            f"(param_groups[0]['lr']) is {rate}, not a finite positive number",
            hint="pass `lr` to give the learning rate",
        )
    source = "--lr" if lr is not None else "checkpoint"
    if state is None:  # --lr alone: plain gradient descent
        return StabilityReport(rate, source, "unknown", lambda_max, 0.0, mode=objective.mode)
    if state.kind != "adam":
        return StabilityReport(
            rate,
            source,
            state.kind,
            lambda_max,
            state.momentum,
            nesterov=state.nesterov,
            dampening=state.dampening,
            note=state.note,
            mode=objective.mode,
        )
    inverse_sqrt = adam_preconditioner(objective, state).rsqrt()
    result = lanczos(
        HessianOperator(objective).scale(inverse_sqrt),
        seed=derive_seed(seed, "preconditioned"),
        tol=tol,
        max_iter=max_iter,
        top_k=1,
    )
    beta1 = state.betas[0]  # type: ignore[index]
    threshold = (2.0 + 2.0 * beta1) / ((1.0 - beta1) * rate)
    return StabilityReport(
        rate,
        source,
        "adam",
        lambda_max,
        0.0,
        float(result.top(1)[0]),
        threshold,
        result.matvecs,
        mode=objective.mode,
    )
