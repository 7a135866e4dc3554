"""The generalised Gauss-Newton matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..errors import InputError
from ..problem.data import Batch
from ..problem.losses import SplitLoss
from ..problem.objective import Objective
from .base import CurvatureOperator


class OutputModule(nn.Module):
    """``batch ↦ split.outputs(model, batch)`` as a module, so :func:`functional_call` swaps in
    the objective's parameter tensors under the same ``model.`` names as the objective's loss."""

    def __init__(self, model: nn.Module, split: SplitLoss) -> None:
        super().__init__()
        self.model = model
        self.split = split

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.split.outputs(self.model, batch)


def model_outputs(
    objective: Objective,
    module: OutputModule,
    params: list[torch.Tensor],
    batch: Batch,
    index: int,
    curvature: str = "ggn",
) -> torch.Tensor:
    """The model's outputs on batch ``index`` with ``params`` in place of the objective's
    parameters (in its evaluation context), checked to be a tensor and, for ``loss=nll``,
    log-probabilities (errors name ``curvature``)."""
    obj = objective
    tensors: dict[str, torch.Tensor] = dict(obj._constants)
    tensors.update({f"model.{n}": p for n, p in zip(obj.parameter_names, params, strict=True)})
    with obj._evaluation_context(index):
        out = functional_call(module, tensors, (batch,), strict=False)
    if not isinstance(out, torch.Tensor):
        raise InputError(
            f"`curvature={curvature}`: the model returned {type(out).__name__}, expected a tensor"
        )
    if module.split.name == "nll":
        norm = torch.logsumexp(out.detach(), dim=1)
        if float(norm.abs().max()) > 1e-3:
            raise InputError(
                f"`curvature={curvature}` with `loss=nll`: the model's outputs are not "
                f"log-probabilities (logsumexp deviates from 0 by {float(norm.abs().max()):.3g})",
                hint="end the model with log_softmax, or use `loss=cross_entropy` on logits",
            )
    return out


class GGNOperator(CurvatureOperator):
    """The generalised Gauss-Newton matrix ``G = Σ_b w_b J_bᵀ H_L,b J_b`` (module docstring).

    Example
    -------
    >>> import torch
    >>> from landscape_cli.problem.data import tensor_batches
    >>> from landscape_cli.problem.losses import SplitLoss
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> obj = Objective(torch.nn.Linear(3, 1, bias=False), SplitLoss("mse"),
    ...                 tensor_batches((x, y), 3, None, "toy"), dtype=torch.float64)
    >>> G = GGNOperator(obj, SplitLoss("mse"))
    >>> v = torch.ones(3, dtype=torch.float64)
    >>> torch.allclose(G @ v, 2 * x.T @ x @ v / 8)  # linear model + MSE: G is the Hessian
    True
    """

    def __init__(
        self, objective: Objective, split: SplitLoss, *, cache: bool | None = None
    ) -> None:
        """``cache``: keep each batch's graph (outputs, ``Jᵀu`` and the loss gradient in the
        outputs) between products, as the Hessian's ``cached`` mode keeps its gradient graph;
        ``None`` follows the objective: cached when its ``hvp_mode`` is ``cached`` and a second
        graph of the Hessian graph's measured size still fits its memory budget."""
        super().__init__(objective)
        self.split = split
        self._outputs_module = OutputModule(objective.model, split)
        if cache is None:
            fits = 2 * objective.graph_bytes <= objective.memory_budget
            cache = objective.hvp_mode == "cached" and fits
        self.cache = bool(cache)
        self._graphs: dict[int, _GGNGraph | None] = {}

    def release(self) -> None:
        self._graphs.clear()  # the dict is shared with fresh() twins: they release too

    def _outputs(self, params: list[torch.Tensor], batch: Batch, index: int) -> torch.Tensor:
        return model_outputs(self.objective, self._outputs_module, params, batch, index)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        columns = [obj.unflatten(V[:, j].contiguous()) for j in range(V.shape[1])]
        total = torch.zeros_like(V)
        with obj.second_order():
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

    def _graph(self, index: int, batch: Batch) -> _GGNGraph | None:
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
