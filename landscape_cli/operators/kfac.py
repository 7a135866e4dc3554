"""Kronecker-factored curvature (K-FAC): each layer's GGN block approximated by ``G ⊗ A``.

For a linear layer ``z = W a + b`` evaluated on sample ``n`` (inputs ``a_n``, outputs ``z_n``),
the gradient of a loss in ``[W | b]`` is ``g_n [a_n; 1]ᵀ``, ``g_n = ∂ℓ/∂z_n``. The layer's block of
the generalised Gauss-Newton matrix ``GGN = (1/N) Σ_n J_nᵀ H_n J_n`` (``H_n`` the Hessian of the
sample's loss in the model's outputs, ``H_n = S_n S_nᵀ``) is therefore, in the row-major
flattening of ``[W | b]``,

    GGN_l = (1/N) Σ_n Σ_c (b_nc b_ncᵀ) ⊗ (ā_n ā_nᵀ),    b_nc = (∂f_n/∂z_n)ᵀ S_n e_c,  ā_n = [a_n; 1].

K-FAC (Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate
curvature", ICML 2015) replaces the mean of Kronecker products by the product of means,

    K_l = G_l ⊗ A_l,    A_l = (1/N) Σ_n ā_n ā_nᵀ,    G_l = (1/N) Σ_n Σ_c b_nc b_ncᵀ,

exact when the output-gradient covariance ``Σ_c b_nc b_ncᵀ`` does not depend on the sample (a
network's last linear layer under the mean-squared error). This is the *type-2* K-FAC of the GGN
(exact square roots ``S_n`` of the output Hessians, no sampling); the *empirical* variant uses
the per-sample loss gradients instead (``S_n = ∂ℓ_n/∂f_n``, one column), approximating the
empirical Fisher. A layer applied to ``R`` positions per sample (a sequence, or the ``R``
patches of a convolution, Grosse & Martens, "A Kronecker-factored approximate Fisher matrix for
convolution layers", ICML 2016, KFC) counts every position as a row: ``A_l`` averages ``ā ā ᵀ``
over the ``N R`` rows and ``G_l`` sums ``b bᵀ`` over positions and averages over the ``N``
samples (the *expand* setting of Eschenhagen et al., "Kronecker-factored approximate curvature
for modern neural network architectures", NeurIPS 2023). For ``Conv2d`` the input rows are the
unfolded patches (``C_in · k_h · k_w`` entries, the layout of the flattened weight).

Eigenvalues come from the factors: those of ``G ⊗ A`` are the products ``μ_i ν_j`` of the
factors' eigenvalues, and ``tr(G ⊗ A) = tr(G) tr(A)``. Covered are ``Linear`` and ``Conv2d``
layers (ungrouped, zero padding) whose weight is trained; every other parameter is reported as
not covered and has zero rows in the operator.

Kept as one module: the factors, the passes over the data that make them and the operators built
on them share one layer layout (``indices``, the ``[W | b]`` matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..linear_operator import SymmetricOperator
from ..problem.data import Batch
from ..problem.losses import SplitLoss
from ..problem.objective import Objective
from .blocks import parameter_offsets
from .exact_trace import ExactTrace, loss_hessian_factors
from .ggn import OutputModule, model_outputs
from .sample_gradients import ProbeProducts, SampleGradients, probe_pass

#: The label of a trace computed from the factors (``tr(G ⊗ A) = tr(G) tr(A)``, exact).
KRONECKER_METHOD = "Kronecker factors"
#: The K-FAC variants: ``type-2`` (output-Hessian square roots: the GGN) and ``empirical``
#: (per-sample loss gradients: the empirical Fisher).
KFAC_KINDS = ("type-2", "empirical")
#: The built-in losses whose per-sample output Hessian has a closed-form square root (not ``lm``,
#: whose curvature is per token of a sequence).
KFAC_LOSSES = ("mse", "cross_entropy", "nll", "bce_with_logits", "sequence_classification")

__all__ = [
    "KFAC_KINDS",
    "KFAC_LOSSES",
    "KRONECKER_METHOD",
    "KFACOperator",
    "KFACPreconditioned",
    "KroneckerFactors",
    "kronecker_factors",
]


@dataclass
class KroneckerFactors:
    """One layer's K-FAC block ``G ⊗ A`` and where its parameters sit in the flat vector.

    Attributes:
        module: the module's name in the model (``""`` for the model itself).
        layer_type: ``"Linear"`` or ``"Conv2d"``.
        parameters: the names of its weight and (when trained) bias.
        indices: the flat-vector coordinates of the weight (row-major, ``(out, in·k_h·k_w)``)
            followed by the bias: the order of ``vec([W | b])`` row by row is recovered by
            :meth:`matmat`.
        A: ``(d, d)`` input factor (``d = in·k_h·k_w``, plus 1 with a bias).
        G: ``(out, out)`` output-gradient factor.
        rows: input rows per sample (positions, patches, calls of a shared layer), averaged
            over the samples; ``A`` averages over all of them.
        corrections: EK-FAC's eigenvalues ``s_ij`` ``(out, d)`` in the factors' eigenbasis
            (their order, :meth:`_eigen`), in place of ``μ_i ν_j``; ``None`` for K-FAC.
    """

    module: str
    layer_type: str
    parameters: tuple[str, ...]
    indices: torch.Tensor
    A: torch.Tensor
    G: torch.Tensor
    rows: float
    corrections: torch.Tensor | None = None

    @property
    def has_bias(self) -> bool:
        return len(self.parameters) == 2

    @property
    def size(self) -> int:
        """Number of parameters of the block."""
        return int(self.indices.numel())

    def to_matrix(self, V: torch.Tensor) -> torch.Tensor:
        """Flat layer vectors ``(size, k)`` as ``[W | b]`` matrices ``(k, out, d)``."""
        out, d = self.G.shape[0], self.A.shape[0]
        k = V.shape[1]
        d_w = d - 1 if self.has_bias else d
        M = V[: out * d_w].T.reshape(k, out, d_w)
        if self.has_bias:
            M = torch.cat([M, V[out * d_w :].T.reshape(k, out, 1)], dim=2)
        return M

    def from_matrix(self, M: torch.Tensor) -> torch.Tensor:
        """``[W | b]`` matrices ``(k, out, d)`` as flat layer vectors ``(size, k)``."""
        k = M.shape[0]
        if not self.has_bias:
            return M.reshape(k, -1).T
        return torch.cat([M[:, :, :-1].reshape(k, -1), M[:, :, -1]], dim=1).T

    def apply(self, M: torch.Tensor) -> torch.Tensor:
        """The block on ``[W | b]`` matrices ``(k, out, d)``: ``G M A``, or with EK-FAC's
        corrections ``U_G [(U_Gᵀ M U_A) ∘ s] U_Aᵀ``."""
        if self.corrections is None:
            return (self.G @ M) @ self.A
        _, U, _, W = self._eigen
        return U @ ((U.T @ M @ W) * self.corrections) @ W.T

    def eigenvalue_grid(self) -> torch.Tensor:
        """``(out, d)``: the block's eigenvalues, entry ``(i, j)`` belonging to the eigenvector
        ``u_i w_jᵀ`` of the factors' eigenbases: ``μ_i ν_j``, or EK-FAC's ``s_ij``."""
        if self.corrections is not None:
            return self.corrections
        g, _, a, _ = self._eigen
        return g[:, None] * a[None, :]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``(G ⊗ A) V`` for ``V`` of shape ``(size, k)`` in the layer's flat layout."""
        return self.from_matrix(self.apply(self.to_matrix(V)))

    def eigenvalues(self) -> np.ndarray:
        """All ``size`` eigenvalues of the block, descending (float64)."""
        if self.corrections is not None:
            return np.sort(self.corrections.detach().double().cpu().numpy().reshape(-1))[::-1]
        g = np.linalg.eigvalsh(self.G.detach().double().cpu().numpy())
        a = np.linalg.eigvalsh(self.A.detach().double().cpu().numpy())
        return np.sort(np.outer(g, a).reshape(-1))[::-1]

    @cached_property
    def _eigen(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The factors' eigendecompositions ``(μ, U_G, ν, U_A)``, ascending, eigenvalues clamped
        at 0, in the factors' dtype and device. Computed by numpy's LAPACK in float64 on the
        CPU: ``torch.linalg.eigh`` fails to converge on the rank-deficient 4608 × 4608 input
        factors of a ResNet-18 on a few samples, in float32 and in float64 alike."""

        def eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            values, vectors = np.linalg.eigh(M.detach().double().cpu().numpy())
            like = {"dtype": M.dtype, "device": M.device}
            return torch.as_tensor(values).clamp_min(0).to(**like), torch.as_tensor(vectors).to(
                **like
            )

        g, U = eigh(self.G)
        a, W = eigh(self.A)
        return g, U, a, W

    def damped_power(self, M: torch.Tensor, damping: float, power: float) -> torch.Tensor:
        """``(G ⊗ A + δI)^p`` on ``[W | b]`` matrices ``(k, out, d)``, in the factors'
        eigenbases: ``U_G [(U_Gᵀ M U_A) ∘ (μ_i ν_j + δ)^p] U_Aᵀ`` (the factors' eigenvalues
        clamped at 0, as the factors are positive semi-definite up to rounding)."""
        _, U, _, W = self._eigen
        scale = (self.eigenvalue_grid().clamp_min(0) + damping) ** power
        return U @ ((U.T @ M @ W) * scale) @ W.T

    def diagonal(self) -> torch.Tensor:
        """The block's diagonal in the layer's flat layout: at entry ``(i, j)`` of ``[W | b]``,
        ``G_ii A_jj`` (``diag(G ⊗ A) = diag(G) ⊗ diag(A)``), or with EK-FAC's corrections
        ``Σ_ab U_G[i, a]² s_ab U_A[j, b]²``."""
        if self.corrections is None:
            grid = torch.outer(torch.diagonal(self.G), torch.diagonal(self.A))
        else:
            _, U, _, W = self._eigen
            grid = (U * U) @ self.corrections.to(U.dtype) @ (W * W).T
        return self.from_matrix(grid[None])[:, 0]

    def trace(self) -> float:
        """``tr(G ⊗ A) = tr(G) tr(A)``, or EK-FAC's ``Σ s_ij``."""
        if self.corrections is not None:
            return float(self.corrections.double().sum())
        return float(torch.trace(self.G).double() * torch.trace(self.A).double())


def _output_hessian_roots(split: SplitLoss, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``(n_b, C, C)``: ``S_n`` with ``S_n S_nᵀ`` the Hessian of sample ``n``'s loss in its
    outputs (:func:`~landscape_cli.operators.exact_trace.loss_hessian_factors`)."""
    return loss_hessian_factors(split, outputs, split.targets(batch), for_hessian=False)


def _loss_gradients(split: SplitLoss, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``(n_b, C, 1)``: the gradient of each sample's loss ``ℓ_n`` in its outputs."""
    o = outputs.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(o.shape[0] * split.curvature_loss(o, batch), o)
    return g.reshape(o.shape[0], -1, 1)


def covered_layers(
    model: nn.Module, trained: set[str]
) -> tuple[list[tuple[str, nn.Module, tuple[str, ...]]], list[str]]:
    """``([(module name, module, its trained parameter names)], uncovered parameter names)``.

    A ``Linear`` or ungrouped, zero-padded ``Conv2d`` is covered when its weight is trained
    (its bias too when it has a trained one); every other trained parameter is uncovered."""
    layers = []
    covered: set[str] = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = f"{prefix}weight"
        if weight not in trained:
            continue
        if isinstance(module, nn.Conv2d):
            if (
                module.groups != 1
                or module.padding_mode != "zeros"
                or isinstance(module.padding, str)
            ):
                continue
        elif not isinstance(module, nn.Linear):
            continue
        names = (weight,)
        if module.bias is not None and f"{prefix}bias" in trained:
            names = (weight, f"{prefix}bias")
        layers.append((name, module, names))
        covered.update(names)
    return layers, [p for p in sorted(trained) if p not in covered]


def _input_rows(module: nn.Module, x: torch.Tensor, bias: bool) -> torch.Tensor:
    """The layer's input rows ``ā`` per sample: ``(n_b, R, d)``, a trailing 1 with a bias."""
    if isinstance(module, nn.Conv2d):
        patches = nn.functional.unfold(
            x,
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )  # (n, C_in·k_h·k_w, L): the flattened weight's layout
        rows = patches.transpose(1, 2)
    else:
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
    if bias:
        rows = torch.cat([rows, rows.new_ones(*rows.shape[:2], 1)], dim=2)
    return rows


def _output_rows(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Output-gradient rows ``(n_b, R, out)`` of a layer's output gradient ``g``."""
    if isinstance(module, nn.Conv2d):
        return g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
    return g.reshape(g.shape[0], -1, g.shape[-1])


def kronecker_factors(
    objective: Objective,
    split: SplitLoss,
    kind: str = "type-2",
    *,
    probes: list[torch.Tensor] | None = None,
    corrected: bool = False,
) -> tuple[list[KroneckerFactors], list[str], ProbeProducts | None]:
    """Every covered layer's K-FAC factors on the objective's data, the names of the trained
    parameters not covered (module docstring), and with ``probes`` (one ``(m, out, d)`` tensor
    per covered layer, in its ``[W | b]`` layout) their products with the GGN
    (:class:`ProbeProducts`, for ``kind="type-2"``).

    One forward pass per batch records each covered layer's inputs and outputs; one backward
    pass per column of the output-Hessian square root (``C`` for ``C`` outputs; one for
    ``kind="empirical"``) gives the output gradients. The per-sample gradients of a layer,
    ``M_nc = Σ_r b_nrc ā_nrᵀ``, give the GGN's products without another pass:
    ``GGN Z = (1/N) Σ_n Σ_c M_nc ⟨M_nc, Z⟩``. Batches are weighted like the objective's
    (``n_b / N``) and everything is summed over ranks. ``corrected``: EK-FAC, a second pass for
    the eigenvalue corrections (:func:`_correct`)."""
    if kind not in KFAC_KINDS:
        raise InputError(f"K-FAC kind {kind!r}: choose one of {', '.join(KFAC_KINDS)}")
    if split.name not in KFAC_LOSSES:
        raise InputError(
            f"K-FAC needs a loss whose output Hessian has a closed-form square root "
            f"({', '.join(KFAC_LOSSES)}); `loss={split.name}` is not one",
            hint="use `curvature=ggn` for this loss",
        )
    obj = objective
    layers, uncovered = covered_layers(obj.model, set(obj.parameter_names))
    if not layers:
        raise InputError(
            "K-FAC covers Linear and Conv2d layers; the model has no trained one",
            hint="use `curvature=ggn`",
        )
    offsets = parameter_offsets(obj)

    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=obj.dtype, device=obj.device)

    sums: list[list[torch.Tensor]] = []
    for _, module, names in layers:
        d = module.weight[0].numel() + (len(names) == 2)
        out = module.weight.shape[0]
        sums.append([zeros(d, d), zeros(out, out), zeros(())])
    if probes is not None:
        probes = [Z.to(dtype=obj.dtype, device=obj.device) for Z in probes]
        for Z, (A0, G0, _) in zip(probes, sums, strict=True):
            if tuple(Z.shape[1:]) != (G0.shape[0], A0.shape[0]):
                raise ValueError(f"a probe of shape {tuple(Z.shape)} does not fit its layer")
        own = [torch.zeros_like(Z) for Z in probes]
        joint = [torch.zeros_like(Z) for Z in probes]
        traces = [zeros(()) for _ in probes]
    with obj.collect_failure() as failure:
        for rows, weight, n_b in _batch_rows(obj, split, layers, kind):
            for i, (a, bs) in enumerate(rows):
                A, G, count = sums[i]
                flat_a = a.reshape(-1, a.shape[2])
                A += (weight / flat_a.shape[0]) * (flat_a.T @ flat_a)
                count += a.shape[1] * weight
                for b in bs:
                    flat_b = b.reshape(-1, b.shape[2])
                    G += (weight / n_b) * (flat_b.T @ flat_b)
            if probes is not None:
                probe_pass(rows, probes, own, joint, traces, weight / n_b)
    parts = [t.reshape(-1) for s in sums for t in s]
    if probes is not None:
        parts += [t.reshape(-1) for t in (*own, *joint, *traces)]
    flat = obj.reduce_sum(torch.cat(parts), failure)
    result = []
    at = 0

    def take(like: torch.Tensor) -> torch.Tensor:
        nonlocal at
        out = flat[at : at + like.numel()].reshape(like.shape)
        at += like.numel()
        return out

    for (name, module, names), (A0, G0, count) in zip(layers, sums, strict=True):
        A, G, rows_per_sample = take(A0), take(G0), float(take(count))
        indices = torch.cat(
            [torch.arange(offsets[p][0], offsets[p][1], device=obj.device) for p in names]
        )
        result.append(
            KroneckerFactors(
                module=name,
                layer_type=type(module).__name__,
                parameters=names,
                indices=indices,
                A=A,
                G=G,
                rows=rows_per_sample,
            )
        )
    if corrected:
        _correct(obj, split, layers, kind, result)
    products = None
    if probes is not None:
        products = ProbeProducts(
            [take(t) for t in own],
            [take(t) for t in joint],
            [float(take(t)) for t in traces],
        )
    return result, uncovered, products


def _batch_rows(
    obj: Objective,
    split: SplitLoss,
    layers: list[tuple[str, nn.Module, tuple[str, ...]]],
    kind: str,
) -> Iterator[tuple[list[tuple[torch.Tensor, list[torch.Tensor]]], float, int]]:
    """``(rows, weight, n_b)`` per batch of this rank (:func:`_layer_rows`): one forward pass
    records every covered layer's inputs and outputs, one backward pass per column of the
    output-Hessian square root (``kind="type-2"``) or of the loss gradient (``"empirical"``)
    their output gradients. Run it inside the objective's ``collect_failure``."""
    factor: Callable[[SplitLoss, torch.Tensor, Batch], torch.Tensor] = (
        _output_hessian_roots if kind == "type-2" else _loss_gradients
    )
    wrapper = OutputModule(obj.model, split)
    records: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in layers]

    def recorder(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            x = args[0] if args else kwargs["input"]
            records[i].append((x.detach(), output))

        return hook

    handles = [
        module.register_forward_hook(recorder(i), with_kwargs=True)
        for i, (_, module, _) in enumerate(layers)
    ]
    try:
        for index, batch, weight in obj._batches_on_device():
            for r in records:
                r.clear()
            leaves = [p.detach().requires_grad_(True) for p in obj._params]
            f = model_outputs(obj, wrapper, leaves, batch, index, curvature="kfac")
            S = factor(split, f, batch)
            n_b = f.shape[0]
            outputs = [z for r in records for _, z in r]
            gradients: list[list[torch.Tensor]] = [[] for _ in outputs]
            for c in range(S.shape[2]):
                if not bool(S[:, :, c].any()):
                    continue  # a null direction of every output Hessian
                cotangent = S[:, :, c].reshape(f.shape)
                grads = torch.autograd.grad(
                    (f * cotangent).sum(), outputs, retain_graph=True, allow_unused=True
                )
                for j, g in enumerate(grads):
                    gradients[j].append(torch.zeros_like(outputs[j]) if g is None else g)
            del f, outputs
            yield _layer_rows(layers, records, gradients, n_b), weight, n_b
            del gradients
    finally:
        for handle in handles:
            handle.remove()
        for r in records:
            r.clear()


def _correct(
    obj: Objective,
    split: SplitLoss,
    layers: list[tuple[str, nn.Module, tuple[str, ...]]],
    kind: str,
    factors: list[KroneckerFactors],
) -> None:
    """EK-FAC (George, Laurent, Bouthillier, Ballas & Vincent, "Fast approximate natural
    gradient descent in a Kronecker-factored eigenbasis", NeurIPS 2018): in the eigenbasis
    ``U_G ⊗ U_A`` of the factors, replace K-FAC's eigenvalues ``μ_i ν_j`` by the curvature's own
    diagonal there, ``s_ij = (1/N) Σ_n Σ_c (U_Gᵀ M_nc U_A)_ij²``, the best diagonal in that basis
    in Frobenius norm; its trace is the block's. One more pass over the data, the per-sample
    gradients taken from rows rotated into the eigenbases (``b U_G``, ``ā U_A``). Sets each
    factor's ``corrections``."""
    sums = [layer.G.new_zeros(layer.G.shape[0], layer.A.shape[0]) for layer in factors]
    bases = [layer._eigen for layer in factors]
    with obj.collect_failure() as failure:
        for rows, weight, n_b in _batch_rows(obj, split, layers, kind):
            for (a, bs), (_, U, _, W), total in zip(rows, bases, sums, strict=True):
                rotated = SampleGradients(a @ W, [b @ U for b in bs])
                total += (weight / n_b) * rotated.squares()
    flat = obj.reduce_sum(torch.cat([t.reshape(-1) for t in sums]), failure)
    at = 0
    for layer, like in zip(factors, sums, strict=True):
        layer.corrections = flat[at : at + like.numel()].reshape(like.shape)
        at += like.numel()


def _layer_rows(
    layers: list[tuple[str, nn.Module, tuple[str, ...]]],
    records: list[list[tuple[torch.Tensor, torch.Tensor]]],
    gradients: list[list[torch.Tensor]],
    n_b: int,
) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Per covered layer: its input rows ``(n_b, R, d)`` and, per output-Hessian column, its
    output-gradient rows ``(n_b, R, out)``, the ``R`` positions of all its calls in the batch
    (a layer not called has ``R = 0``)."""
    out = []
    j = 0
    for (_, module, names), calls in zip(layers, records, strict=True):
        if not calls:
            d = module.weight[0].numel() + (len(names) == 2)
            empty = module.weight.new_zeros(n_b, 0, d)
            width = module.weight.shape[0]
            columns = len(gradients[0]) if gradients else 0
            out.append((empty, [module.weight.new_zeros(n_b, 0, width)] * columns))
            continue
        for x, _ in calls:
            if x.shape[0] != n_b:
                raise InputError(
                    f"K-FAC: layer '{names[0].rpartition('.')[0]}' receives inputs of shape "
                    f"{tuple(x.shape)} whose first dimension is not the batch's ({n_b})",
                    hint="use `curvature=ggn`",
                )
        a = torch.cat([_input_rows(module, x, len(names) == 2) for x, _ in calls], dim=1)
        columns = zip(*gradients[j : j + len(calls)], strict=True)
        bs = [torch.cat([_output_rows(module, g) for g in column], dim=1) for column in columns]
        out.append((a, bs))
        j += len(calls)
    return out


class KFACOperator(SymmetricOperator):
    """The K-FAC approximation of the GGN as an ``n × n`` operator on all trained parameters:
    ``G_l ⊗ A_l`` on each covered layer's coordinates, zero rows on the uncovered ones
    (:func:`kronecker_factors`). Products cost no model evaluation; the factors are computed once.

    Example
    -------
    >>> import torch
    >>> from landscape_cli.problem.data import tensor_batches
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    >>> obj = Objective(torch.nn.Linear(3, 2), SplitLoss("mse"),
    ...                 tensor_batches((x, y), 4, None, "toy"), dtype=torch.float64)
    >>> K = KFACOperator(obj, SplitLoss("mse"))
    >>> [layer.module for layer in K.layers], K.uncovered, K.shape
    ([''], [], (8, 8))
    """

    def __init__(
        self,
        objective: Objective,
        split: SplitLoss,
        kind: str = "type-2",
        *,
        corrected: bool = False,
    ) -> None:
        super().__init__(objective.num_parameters, objective.dtype, objective.device)
        self.objective = objective
        self.kind = kind
        self.corrected = corrected
        self.layers, self.uncovered, _ = kronecker_factors(
            objective, split, kind, corrected=corrected
        )

    @property
    def covered_parameters(self) -> int:
        return sum(layer.size for layer in self.layers)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(V)
        for layer in self.layers:
            out[layer.indices] = layer.matmat(V[layer.indices])
        return out

    def eigenvalues(self) -> np.ndarray:
        """All ``n`` eigenvalues, descending: every layer's products of factor eigenvalues, and
        a zero per uncovered parameter."""
        parts = [layer.eigenvalues() for layer in self.layers]
        parts.append(np.zeros(self.shape[0] - self.covered_parameters))
        return np.sort(np.concatenate(parts))[::-1]

    def trace(self) -> float:
        """``Σ_l tr(G_l) tr(A_l)``."""
        return float(sum(layer.trace() for layer in self.layers))

    def exact_trace(self, indices: torch.Tensor | None = None) -> ExactTrace:
        """:meth:`trace` split over the modules owning parameters (0 for the uncovered ones),
        at no product. With ``indices`` (a ``params`` block), the trace of the principal
        submatrix on those coordinates: the sum of the layers' diagonals over them
        (:meth:`KroneckerFactors.diagonal`), split over the modules the block touches."""
        if indices is None:
            per_module = {name.rpartition(".")[0]: 0.0 for name in self.uncovered}
            for layer in self.layers:
                per_module[layer.module] = layer.trace()
            return ExactTrace(self.trace(), per_module, 0, KRONECKER_METHOD)
        kept = torch.zeros(self.shape[0], dtype=torch.bool, device=self.device)
        kept[indices] = True
        offsets = parameter_offsets(self.objective)
        per_module = {
            name.rpartition(".")[0]: 0.0
            for name in self.uncovered
            if bool(kept[slice(*offsets[name])].any())
        }
        for layer in self.layers:
            inside = kept[layer.indices]
            if bool(inside.any()):
                per_module[layer.module] = float(layer.diagonal()[inside].double().sum())
        return ExactTrace(float(sum(per_module.values())), per_module, 0, KRONECKER_METHOD)


class KFACPreconditioned(SymmetricOperator):
    """``P^{-1/2} C P^{-1/2}`` on the covered parameters, ``P = K + δI`` the damped K-FAC matrix
    and ``C`` the block of a curvature operator (e.g. the Hessian) on those parameters. Its
    eigenvalues are those of ``P⁻¹C``: ``λ_max`` is the sharpness a step ``η P⁻¹ g`` of a
    K-FAC-type optimizer meets, stable while ``η λ_max < 2`` on a quadratic (the
    preconditioned analogue of Cohen et al. 2022 for Adam). ``P^{-1/2}`` is applied layer by
    layer in the factors' eigenbases (:meth:`KroneckerFactors.damped_power`); the coordinates
    are the layers' ``indices`` concatenated in order. Each product is one product of ``C``."""

    check_finite = False  # the estimator multiplying by it names the failing step

    def __init__(
        self, curvature: SymmetricOperator, layers: list[KroneckerFactors], damping: float
    ) -> None:
        if not damping > 0:
            raise ValueError(f"damping must be positive, got {damping}")
        covered = torch.cat([layer.indices for layer in layers])
        super().__init__(int(covered.numel()), curvature.dtype, curvature.device)
        self.block = curvature.block(covered)
        self.layers = layers
        self.damping = float(damping)
        self._bounds = np.cumsum([0, *(layer.size for layer in layers)]).tolist()

    def fresh(self) -> KFACPreconditioned:
        twin = super().fresh()
        twin.block = self.block.fresh()
        return twin

    def release(self) -> None:
        self.block.release()

    def _root(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(V)
        for layer, lo, hi in zip(self.layers, self._bounds, self._bounds[1:], strict=False):
            M = layer.to_matrix(V[lo:hi])
            out[lo:hi] = layer.from_matrix(layer.damped_power(M, self.damping, -0.5))
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._root(self.block @ self._root(V))
