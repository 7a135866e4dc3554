"""Curvature matrices besides the Hessian: generalised Gauss-Newton, empirical Fisher and the
GGN's Kronecker-factored approximation (K-FAC, :mod:`landscape_cli.operators.kfac`).

The first two are matrix-free :class:`~landscape_cli.operators.base.CurvatureOperator` subclasses like
:class:`~landscape_cli.operators.hessian.HessianOperator` (the contract of
:class:`~landscape_cli.linear_operator.SymmetricOperator`: ``.shape``, ``.dtype``, ``.device``,
``.matvecs``, ``A @ v`` for ``v`` of shape ``(n,)`` or ``(n, k)``), so Lanczos, Hutch++ and SLQ
apply unchanged. Both sum over the objective's batches with the weights ``w_b = n_b / N`` of
:class:`~landscape_cli.problem.objective.Objective` and pass the total through
:meth:`~landscape_cli.problem.objective.Objective.reduce_sum`.

**Generalised Gauss-Newton** (Schraudolph, "Fast curvature matrix-vector products for
second-order gradient descent", Neural Computation 2002; Martens, "New insights and perspectives
on the natural gradient method", JMLR 2020, §8-9). With ``f_b(w)`` the model's outputs on batch
``b``, ``J_b = ∂f_b/∂w`` and ``H_L,b = ∂²L_b/∂f_b²`` the Hessian of the batch's mean loss in the
outputs,

    G = Σ_b w_b J_bᵀ H_L,b J_b,        G v = Σ_b w_b J_bᵀ (H_L,b (J_b v)).

``H = G + Σ_i (∂ℓ/∂f)·∇²f``: the GGN drops the second derivatives of the network. It is positive
semi-definite whenever the loss is convex in the outputs (all built-in losses), and for
cross-entropy, negative log-likelihood and MSE it equals the Fisher information matrix of the
model's predictive distribution (Martens 2020, §9.2). ``J v`` is computed with the
double-backward trick (``J v = ∂/∂u (Jᵀu)·v``, one reverse pass through ``u ↦ Jᵀu``), ``H_L (J v)``
by double backward through the loss on the outputs, ``Jᵀ(·)`` by one reverse pass. Without a
cache, one forward per batch is shared by every column of a block. When the objective is in
``cached`` mode (and a second graph fits its memory budget), each batch's outputs, ``Jᵀu`` and
loss gradient are kept, and a product is three backward passes with no forward: about the cost
of a cached HVP, and less than an uncached product (BENCHMARKS.md, "GGN and empirical Fisher
products").

**Empirical Fisher** (Kunstner, Hennig & Balles, "Limitations of the empirical Fisher
approximation for natural gradient descent", NeurIPS 2019; Martens 2020, §11). With ``g_i`` the
gradient of the *per-sample* loss ``ℓ_i`` (the loss of sample ``i`` alone, so that
``L = (1/N) Σ_i ℓ_i``),

    F = (1/N) Σ_i g_i g_iᵀ,        F v = (1/N) Σ_i g_i (g_iᵀ v).

It is *not* the Fisher (the labels are the data's, not the model's), and Kunstner et al. show its
spectrum can differ qualitatively from the Hessian's; it is reported because users compare with
tools that use it. Per-sample gradients come from ``torch.func.vmap(grad(...))`` over
``functional_call`` in chunks; they need eval mode (BatchNorm in train mode couples the samples of
a batch, so a sample's loss alone is not defined). They are kept in memory (``N × n`` numbers)
when that fits in half the objective's memory budget, else recomputed for every product; once
kept, a product is two matrix products.

Only the built-in losses can be split into model output and loss on the output
(:class:`~landscape_cli.problem.losses.SplitLoss`); a custom ``module:fn`` loss raises
:class:`~landscape_cli.errors.InputError` for ``ggn`` and ``ef``.
"""

from __future__ import annotations

from ..errors import InputError
from ..linear_operator import SymmetricOperator
from ..problem.losses import SplitLoss
from ..problem.objective import Objective
from .base import CurvatureOperator
from .curvature_names import CURVATURES, KRONECKER_CURVATURES
from .empirical_fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator


def split_loss(objective: Objective, curvature: str) -> SplitLoss:
    """The objective's :class:`~landscape_cli.problem.losses.SplitLoss`, or an :class:`InputError`
    saying why ``curvature`` needs one."""
    from ..problem.losses import NAMED_LOSSES

    loss_fn = objective._module.loss_fn
    if not isinstance(loss_fn, SplitLoss):
        raise InputError(
            f"`curvature={curvature}` needs the model's outputs separately from the loss, and "
            f"only the built-in losses ({', '.join(NAMED_LOSSES)}) can be split that way; a "
            "custom module:fn loss is one opaque function of (model, batch)",
            hint="use a built-in `loss` with a model that returns its outputs, or `curvature=hessian`",
        )
    if objective.batches.source is None:
        raise InputError(f"`curvature={curvature}` needs data; give `data`")
    return loss_fn


def curvature_operator(objective: Objective, curvature: str = "hessian") -> CurvatureOperator:
    """A fresh matrix-free operator (its own matvec counter) for ``curvature``:
    ``"hessian"`` (:class:`~landscape_cli.operators.hessian.HessianOperator`), ``"ggn"``
    (:class:`GGNOperator`), ``"ef"`` (:class:`EmpiricalFisherOperator`), ``"kfac"`` or
    ``"ekfac"`` (:class:`~landscape_cli.operators.kfac.KFACOperator`, its factors computed
    here)."""
    if curvature == "hessian":
        return HessianOperator(objective)
    if curvature in KRONECKER_CURVATURES:
        from .kfac import KFACOperator

        split = split_loss(objective, curvature)
        return KFACOperator(objective, split, corrected=curvature == "ekfac")
    if curvature == "ggn":
        return GGNOperator(objective, split_loss(objective, curvature))
    if curvature == "ef":
        split = split_loss(objective, curvature)
        if objective.mode != "eval":
            raise InputError(
                "`curvature=ef` needs per-sample gradients, which are defined in eval mode only "
                "(train-mode BatchNorm couples the samples of a batch)",
                hint="use `mode=eval`, or `curvature=ggn`",
            )
        return EmpiricalFisherOperator(objective, split)
    raise InputError(f"`curvature={curvature}`: choose one of {', '.join(CURVATURES)}")


def analysis_operator(
    objective: Objective, curvature: str = "hessian", params: tuple[str, ...] | list[str] = ()
) -> SymmetricOperator:
    """The operator an analysis runs on: ``curvature``'s operator, restricted to the diagonal
    block of the parameters matched by ``params`` (:mod:`landscape_cli.operators.blocks`) when given."""
    from .blocks import BlockOperator, block_indices, select_parameters

    names = select_parameters(objective.parameter_names, params) if params else None
    operator = curvature_operator(objective, curvature)
    if names is None:
        return operator
    return BlockOperator(operator, block_indices(objective, names), names)
