"""Curvature matrices besides the Hessian: generalised Gauss-Newton and empirical Fisher.

Both are matrix-free operators with the interface of
:class:`~landscape_cli.objective.HessianOperator` (``.shape``, ``.dtype``, ``.device``,
``.matvecs``, ``A @ v`` for ``v`` of shape ``(n,)`` or ``(n, k)``), so Lanczos, Hutch++ and SLQ
apply unchanged. Both sum over the objective's batches with the weights ``w_b = n_b / N`` of
:class:`~landscape_cli.objective.Objective` and pass the total through
:meth:`~landscape_cli.objective.Objective.reduce_sum`.

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
loss gradient are kept, and a product is three backward passes with no forward. Measured with
one column per product (as in Lanczos; 1 CPU thread, float32, BENCHMARKS.md):

- ``mlp-784``: a cached GGN product costs 13 ms, against 25 ms uncached and 12 ms for a cached
  HVP;
- ``cnn3-cifar``: 0.96 s, against 1.49 s uncached and 0.91 s for a cached HVP.

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
kept, a product is two matrix products (0.1-1 ms on the bundled samples).

Only the built-in losses can be split into model output and loss on the output
(:class:`~landscape_cli.loading.SplitLoss`); a custom ``module:fn`` loss raises
:class:`~landscape_cli.errors.InputError` for ``ggn`` and ``ef``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .errors import InputError, NumericalError
from .objective import CurvatureOperator, Objective

CURVATURES = ("hessian", "ggn", "ef")
CURVATURE_NAMES = {
    "hessian": "Hessian",
    "ggn": "generalised Gauss-Newton",
    "ef": "empirical Fisher",
}


class _OutputModule(nn.Module):
    """``batch ↦ split.outputs(model, batch)`` as a module, so :func:`functional_call` swaps in
    the objective's parameter tensors under the same ``model.`` names as the objective's loss."""

    def __init__(self, model: nn.Module, split: Any) -> None:
        super().__init__()
        self.model = model
        self.split = split

    def forward(self, batch: Any) -> torch.Tensor:
        return self.split.outputs(self.model, batch)


def split_loss(objective: Objective, curvature: str) -> Any:
    """The objective's :class:`~landscape_cli.loading.SplitLoss`, or an :class:`InputError`
    saying why ``curvature`` needs one."""
    from .loading import NAMED_LOSSES, SplitLoss

    loss_fn = objective._module.loss_fn
    if not isinstance(loss_fn, SplitLoss):
        raise InputError(
            f"--curvature {curvature} needs the model's outputs separately from the loss, and "
            f"only the built-in losses ({', '.join(NAMED_LOSSES)}) can be split that way; a "
            "custom module:fn loss is one opaque function of (model, batch)",
            hint="use a built-in --loss with a model that returns its outputs, or --curvature hessian",
        )
    if objective.batches.source is None:
        raise InputError(f"--curvature {curvature} needs data; give --data")
    return loss_fn


def curvature_operator(objective: Objective, curvature: str = "hessian") -> Any:
    """A fresh matrix-free operator (its own matvec counter) for ``curvature``:
    ``"hessian"`` (:class:`~landscape_cli.objective.HessianOperator`), ``"ggn"``
    (:class:`GGNOperator`) or ``"ef"`` (:class:`EmpiricalFisherOperator`)."""
    if curvature == "hessian":
        return objective.operator()
    if curvature == "ggn":
        return GGNOperator(objective, split_loss(objective, curvature))
    if curvature == "ef":
        split = split_loss(objective, curvature)
        if objective.mode != "eval":
            raise InputError(
                "--curvature ef needs per-sample gradients, which are defined in eval mode only "
                "(train-mode BatchNorm couples the samples of a batch)",
                hint="use --mode eval, or --curvature ggn",
            )
        return EmpiricalFisherOperator(objective, split)
    raise InputError(f"--curvature '{curvature}': choose one of {', '.join(CURVATURES)}")


class GGNOperator(CurvatureOperator):
    """The generalised Gauss-Newton matrix ``G = Σ_b w_b J_bᵀ H_L,b J_b`` (module docstring).

    Example
    -------
    >>> import torch
    >>> from landscape_cli.data import tensor_batches
    >>> from landscape_cli.loading import SplitLoss
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> obj = Objective(torch.nn.Linear(3, 1, bias=False), SplitLoss("mse"),
    ...                 tensor_batches((x, y), 3, None, "toy"), dtype=torch.float64)
    >>> G = GGNOperator(obj, SplitLoss("mse"))
    >>> v = torch.ones(3, dtype=torch.float64)
    >>> torch.allclose(G @ v, 2 * x.T @ x @ v / 8)  # linear model + MSE: G is the Hessian
    True
    """

    def __init__(self, objective: Objective, split: Any, *, cache: bool | None = None) -> None:
        """``cache``: keep each batch's graph (outputs, ``Jᵀu`` and the loss gradient in the
        outputs) between products, as the Hessian's ``cached`` mode keeps its gradient graph;
        ``None`` follows the objective: cached when its ``hvp_mode`` is ``cached`` and a second
        graph of the Hessian graph's measured size still fits its memory budget."""
        super().__init__(objective)
        self.split = split
        self._outputs_module = _OutputModule(objective.model, split)
        if cache is None:
            fits = 2 * objective.graph_bytes <= objective.memory_budget
            cache = objective.hvp_mode == "cached" and fits
        self.cache = bool(cache)
        self._graphs: dict[int, _GGNGraph | None] = {}

    def release(self) -> None:
        self._graphs.clear()  # the dict is shared with fresh() twins: they release too

    def _outputs(self, params: list[torch.Tensor], batch: Any, index: int) -> torch.Tensor:
        obj = self.objective
        tensors: dict[str, torch.Tensor] = dict(obj._constants)
        tensors.update({f"model.{n}": p for n, p in zip(obj.parameter_names, params, strict=True)})
        with obj._evaluation_context(index):
            out = functional_call(self._outputs_module, tensors, (batch,), strict=False)
        if not isinstance(out, torch.Tensor):
            raise InputError(
                f"--curvature ggn: the model returned {type(out).__name__}, expected a tensor"
            )
        if self.split.name == "nll":
            norm = torch.logsumexp(out.detach(), dim=1)
            if float(norm.abs().max()) > 1e-3:
                raise InputError(
                    "--curvature ggn with --loss nll: the model's outputs are not "
                    f"log-probabilities (logsumexp deviates from 0 by {float(norm.abs().max()):.3g})",
                    hint="end the model with log_softmax, or use --loss cross_entropy on logits",
                )
        return out

    def _block(self, V: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        columns = [obj.unflatten(V[:, j].contiguous()) for j in range(V.shape[1])]
        total = torch.zeros_like(V)
        with obj.collect_failure() as failure:
            for index, batch, weight in obj._batches_on_device():
                graph = self._graphs.get(index) if self.cache else None
                if graph is None and not (self.cache and index in self._graphs):
                    graph = self._graph(index, batch)
                    if self.cache:
                        self._graphs[index] = graph
                if graph is not None:
                    graph.accumulate(total, columns, weight, obj)
        return obj.reduce_sum(total, failure)

    def _graph(self, index: int, batch: Any) -> _GGNGraph | None:
        """One batch's differentiable pieces: ``out = f_b(w)``, the loss gradient in the outputs
        (differentiable once more, for ``H_L``) and ``Jᵀu`` for a dummy cotangent ``u``
        (differentiable in ``u``, for ``J v``); ``None`` when the outputs do not depend on
        ``w`` (``J = 0``)."""
        obj = self.objective
        leaves = [p.detach().requires_grad_(True) for p in obj._params]
        out = self._outputs(leaves, batch, index)
        o = out.detach().requires_grad_(True)
        loss = self.split.curvature_loss(o, batch)
        (dl,) = torch.autograd.grad(loss, o, create_graph=True)
        u = torch.zeros_like(out, requires_grad=True)
        jtu = torch.autograd.grad((out * u).sum(), leaves, create_graph=True, allow_unused=True)
        live = [i for i, g in enumerate(jtu) if g is not None and g.requires_grad]
        if not live:
            return None
        return _GGNGraph(leaves, out, o, dl, u, [jtu[i] for i in live], live)


class _GGNGraph:
    """The autograd pieces of one batch from which ``J_bᵀ H_L,b J_b v`` is three backward passes
    (double-backward trick for ``J v``; no forward pass)."""

    def __init__(
        self,
        leaves: list[torch.Tensor],
        out: torch.Tensor,
        o: torch.Tensor,
        dl: torch.Tensor,
        u: torch.Tensor,
        jtu: list[torch.Tensor],
        live: list[int],
    ) -> None:
        self.leaves, self.out, self.o, self.dl, self.u = leaves, out, o, dl, u
        self.jtu, self.live = jtu, live

    def accumulate(
        self,
        total: torch.Tensor,
        columns: list[list[torch.Tensor]],
        weight: float,
        obj: Objective,
    ) -> None:
        """``total[:, j] += weight · J_bᵀ H_L,b J_b v_j`` for every column ``v_j``."""
        for j, v in enumerate(columns):
            # Each backward differentiates a scalar <y, c> rather than passing c as grad_outputs:
            # the same numbers, but tensor grad_outputs make torch import sympy on the first call
            # (~0.3 s; see Objective._backward).
            jtu_v = torch.stack(
                [(g * v[i]).sum() for g, i in zip(self.jtu, self.live, strict=True)]
            )
            (jv,) = torch.autograd.grad(jtu_v.sum(), self.u, retain_graph=True)
            if self.dl.requires_grad:
                (hjv,) = torch.autograd.grad((self.dl * jv).sum(), self.o, retain_graph=True)
            else:  # the loss is linear in the outputs: H_L = 0
                hjv = torch.zeros_like(jv)
            parts = torch.autograd.grad(
                (self.out * hjv).sum(), self.leaves, retain_graph=True, allow_unused=True
            )
            total[:, j] += weight * obj.flatten([None if p is None else p.detach() for p in parts])


class EmpiricalFisherOperator(CurvatureOperator):
    """The empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` of per-sample gradients (module docstring).

    Parameters
    ----------
    objective, split:
        The objective (eval mode) and its :class:`~landscape_cli.loading.SplitLoss`.
    chunk_size:
        Samples per ``vmap`` call (memory: ``chunk_size × n`` numbers plus activations).
    cache:
        Keep the per-sample gradients between products (``None``: when ``N × n`` numbers fit in
        half of ``objective.memory_budget``).
    """

    def __init__(
        self,
        objective: Objective,
        split: Any,
        *,
        chunk_size: int = 64,
        cache: bool | None = None,
    ) -> None:
        super().__init__(objective)
        self.split = split
        self.chunk_size = int(chunk_size)
        size = objective.num_samples * objective.num_parameters * objective.gradient.element_size()
        self.cache = size <= objective.memory_budget // 2 if cache is None else bool(cache)
        # {"rows": [(G_b, 1/N), ...]} once a full pass has kept them; a dict, so that fresh()
        # twins share it (and release() empties it for all)
        self._kept: dict[str, list[tuple[torch.Tensor, float]]] = {}
        self._sample_grad: Callable[..., Any] | None = None

    def release(self) -> None:
        self._kept.clear()

    def _per_sample_function(self) -> Callable[..., Any]:
        obj = self.objective
        model, split = obj.model, self.split
        constants = {k[len("model.") :]: v for k, v in obj._constants.items()}

        def sample_loss(params: dict[str, torch.Tensor], sample: tuple[torch.Tensor, ...]):
            batch = tuple(t.unsqueeze(0) for t in sample)
            out = functional_call(model, {**constants, **params}, (batch[0],), strict=False)
            return split.loss(out, batch)

        return vmap(grad(sample_loss), in_dims=(None, 0))

    def per_sample_gradients(self, batch: Any, index: int) -> torch.Tensor:
        """The ``(n_b, n)`` matrix of the per-sample gradients ``g_i`` of one batch."""
        obj = self.objective
        if self._sample_grad is None:
            self._sample_grad = self._per_sample_function()
        params = {n: p.detach() for n, p in zip(obj.parameter_names, obj._params, strict=True)}
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        rows = []
        size = int(batch[0].shape[0])
        for start in range(0, size, self.chunk_size):
            chunk = tuple(t[start : start + self.chunk_size] for t in batch)
            try:
                with obj._evaluation_context(index):
                    grads = self._sample_grad(params, chunk)
            except (RuntimeError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise InputError(
                    f"--curvature ef: per-sample gradients (torch.func.vmap over the model) "
                    f"failed on batch {index}: {first}",
                    hint="the model's forward must be vmap-compatible (no .item(), no in-place "
                    "ops on inputs, no data-dependent Python control flow); or use --curvature ggn",
                ) from None
            count = int(chunk[0].shape[0])
            rows.append(
                torch.cat([grads[n].reshape(count, -1) for n in obj.parameter_names], dim=1)
            )
        return torch.cat(rows, dim=0)

    def _batches(self) -> Any:
        if "rows" in self._kept:
            yield from self._kept["rows"]
            return
        keep: list[tuple[torch.Tensor, float]] = []
        for index, batch, weight in self.objective._batches_on_device():
            G = self.per_sample_gradients(batch, index)
            if not bool(torch.isfinite(G).all()):
                raise NumericalError(f"a per-sample gradient is not finite (batch {index})")
            scale = weight / G.shape[0]  # w_b / n_b = 1 / N
            if self.cache:
                keep.append((G, scale))
            yield G, scale
        if self.cache:
            self._kept["rows"] = keep

    def _block(self, V: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(V)
        with self.objective.collect_failure() as failure:
            for G, scale in self._batches():
                total += scale * (G.T @ (G @ V))
        return self.objective.reduce_sum(total, failure)


def analysis_operator(
    objective: Objective, curvature: str = "hessian", params: tuple[str, ...] | list[str] = ()
) -> Any:
    """The operator an analysis runs on: ``curvature``'s operator, restricted to the diagonal
    block of the parameters matched by ``params`` (:mod:`landscape_cli.blocks`) when given."""
    from .blocks import BlockOperator, block_indices, select_parameters

    names = select_parameters(objective.parameter_names, params) if params else None
    operator = curvature_operator(objective, curvature)
    if names is None:
        return operator
    return BlockOperator(operator, block_indices(objective, names), names)


def require_hessian(settings: Any, what: str) -> None:
    """An :class:`InputError` when ``settings`` (spectrum settings) select a curvature other than
    the Hessian or a parameter block, for analyses defined on the full Hessian only."""
    if settings.curvature != "hessian" or settings.params:
        chosen = (
            f"--curvature {settings.curvature}"
            if settings.curvature != "hessian"
            else "--params " + " ".join(settings.params)
        )
        raise InputError(
            f"{what} is defined on the full Hessian only, but {chosen} is set",
            hint="use `landscape spectrum` for other curvatures and parameter blocks",
        )
