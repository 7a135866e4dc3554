"""The exact trace of the generalised Gauss-Newton matrix from per-sample gradient norms, and with
it the exact trace of the Hessian of a piecewise-linear network.

Kept as one module: the support checks (graph inspection, layer hooks) decide when the per-sample
computation they guard is exact, and are read with it.

**The GGN trace.** With ``f_i(w)`` the outputs of sample ``i`` (flattened to ``d`` numbers),
``J_i = ∂f_i/∂w`` and ``ℓ_i`` its loss (the batch loss is the mean of the ``ℓ_i``),

    G = (1/N) Σ_i J_iᵀ ∇²ℓ_i J_i,        tr(G) = (1/N) Σ_i Σ_k ‖J_iᵀ s_ik‖²,

where ``∇²ℓ_i = S_i S_iᵀ`` (an eigendecomposition of the ``d × d`` loss Hessian in the outputs,
positive semi-definite for every built-in loss) and ``s_ik`` is the ``k``-th column of ``S_i``.
``J_iᵀ s_ik`` is the gradient of ``s_ikᵀ f_i`` alone: one backward pass from the outputs with the
cotangent rows ``s_ik`` gives, at every parameterised module, the output gradient of each sample
separately (samples do not interact in eval mode), and a module's per-sample parameter gradient
follows from its input and that output gradient: ``b_i a_iᵀ`` for a Linear layer, whose squared
norm is ``‖b_i‖²‖a_i‖²`` without forming it (Goodfellow, "Efficient per-example gradient
computations", 2015), ``B_i · unfold(a_i)ᵀ`` for a convolution, ``Σ b_i ∘ â_i`` for the affine
part of a normalisation layer (BackPACK's ``BatchL2Grad``; Dangel, Kunstner & Hennig, "BackPACK:
packing more into backprop", ICLR 2020). ``d`` backward passes (``d − 1`` for cross-entropy,
whose loss Hessian has the null vector ``1``) and no parameter-sized vectors give the trace
exactly, where Hutch++ or Hutchinson need tens of HVPs for a percent.

**The Hessian of a piecewise-linear network.** ``H = G + (1/N) Σ_i Σ_c (∂ℓ_i/∂f_ic) ∇²f_ic``.
When the network restricted to any single parameter coordinate is piecewise linear (Linear,
convolution, ReLU/LeakyReLU/hardtanh, max and average pooling, eval-mode BatchNorm; products only
of a parameter with something that does not depend on that parameter), every ``∇²f_ic`` has a zero
diagonal almost everywhere, so ``tr(H) = tr(G)`` exactly (the identity behind BackPACK's exact
diagonal GGN being the Hessian diagonal of ReLU networks). :func:`piecewise_linear_reason`
checks this on the autograd graph of one forward pass: every node must be one of a list of
operations that are piecewise linear in each input, and products must have one factor
independent of the parameters. It is conservative: a network it cannot prove piecewise linear
(tanh, GELU, softmax attention, LayerNorm, a parameter multiplied by itself) is refused for the
Hessian, never given the GGN's trace.

**What is supported.** Eval mode; every trainable parameter owned directly by a ``Linear``,
``Conv1d``/``Conv2d`` (zero padding, numeric padding), ``BatchNorm1d/2d/3d`` (with running
statistics) or ``LayerNorm`` module (these classes exactly, with only ``weight`` and ``bias``
and no forward hooks), each called once per forward pass, each parameter used once (an autograd
use count) and not shared; samples independent (a batch's outputs unchanged when the batch is
reversed, split in halves, or one sample is made extreme); a
:class:`~landscape_cli.problem.losses.SplitLoss` (built-in loss but ``lm``, whose mean is over
tokens) without ``ignore_index`` labels, on ``(x, y)`` batches; at
most :data:`MAX_OUTPUTS` outputs per sample. Module outputs and inputs are copied in the hooks,
so in-place operations downstream (``ReLU(inplace=True)``) do not change them. Anything else raises :class:`Unsupported` with the reason,
and the caller falls back to the stochastic estimators.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.graph import Node
from torch.func import functional_call, hessian, vmap
from torch.nn import functional as F

from ..errors import InputError
from ..problem.data import Batch
from ..problem.losses import SplitLoss
from ..problem.objective import Objective

#: the largest number of outputs per sample (backward passes per batch) the exact trace accepts
MAX_OUTPUTS = 256
#: elements of unfolded convolution inputs formed at once (128 MB in float32)
_CHUNK_ELEMENTS = 1 << 25

_LINEAR = (nn.Linear,)
_CONV = (nn.Conv1d, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_SUPPORTED = _LINEAR + _CONV + _BATCHNORM + (nn.LayerNorm,)
#: module name → ``(input, output)`` of each of its calls in one forward pass
_Calls = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]
#: ``(batch, index) ↦ (outputs, calls, tensors)``: one forward pass with the calls captured
_Forward = Callable[[Batch, int], tuple[torch.Tensor, _Calls, dict[str, torch.Tensor]]]

#: autograd nodes that are piecewise linear jointly in all their inputs
_PIECEWISE_LINEAR_NODES = {
    "AddBackward0",
    "AddBackward1",
    "SubBackward0",
    "SubBackward1",
    "NegBackward0",
    "MulBackward1",  # by a Python number
    "DivBackward1",
    "ReluBackward0",
    "LeakyReluBackward0",
    "HardtanhBackward0",
    "ThresholdBackward0",
    "MaxPool1DWithIndicesBackward0",
    "MaxPool2DWithIndicesBackward0",
    "MaxPool3DWithIndicesBackward0",
    "AvgPool2DBackward0",
    "AvgPool3DBackward0",
    "AdaptiveAvgPool2DBackward0",
    "AdaptiveAvgPool3DBackward0",
    "AdaptiveMaxPool2DBackward0",
    "AdaptiveMaxPool3DBackward0",
    "MeanBackward0",
    "MeanBackward1",
    "SumBackward0",
    "SumBackward1",
    "MaxBackward0",
    "MaxBackward1",
    "MinBackward0",
    "MinBackward1",
    "CatBackward0",
    "StackBackward0",
    "IndexBackward0",
    "ConstantPadNdBackward0",
    "CloneBackward0",
    "ToCopyBackward0",
}
#: nodes that only rearrange their input (a parameter seen through them is still the parameter)
_VIEW_NODES = {
    "ViewBackward0",
    "UnsafeViewBackward0",
    "ReshapeAliasBackward0",
    "AsStridedBackward0",
    "TBackward0",
    "TransposeBackward0",
    "PermuteBackward0",
    "ExpandBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
    "SqueezeBackward2",
    "UnsqueezeBackward0",
    "SliceBackward0",
    "SelectBackward0",
    "SplitBackward0",
    "SplitWithSizesBackward0",
    "UnbindBackward0",
}
#: multilinear nodes (products): piecewise linear along any single coordinate as long as at most
#: one factor is an activation (depends on the weights through the network) and the others are
#: parameters themselves (for BatchNorm, only with running statistics: eval mode)
_PRODUCT_NODES = {
    "AddmmBackward0",
    "MmBackward0",
    "MvBackward0",
    "BmmBackward0",
    "LinearBackward0",
    "ConvolutionBackward0",
    "MkldnnConvolutionBackward0",
    "NativeBatchNormBackward0",
    "CudnnBatchNormBackward0",
    "MiopenBatchNormBackward0",
    "MulBackward0",
}


def _is_parameter(node: Node | None) -> bool:
    """Whether ``node`` is a leaf parameter, possibly seen through view-like nodes."""
    while node is not None and type(node).__name__ in _VIEW_NODES:
        inputs = [fn for fn, _ in node.next_functions if fn is not None]
        if len(inputs) != 1:
            return False
        node = inputs[0]
    return node is not None and type(node).__name__ == "AccumulateGrad"


class Unsupported(Exception):
    """The exact trace does not apply to this model, loss or mode (the message says why)."""


def piecewise_linear_reason(output: torch.Tensor) -> str | None:
    """``None`` when the autograd graph of ``output`` proves the network piecewise linear along
    every single parameter coordinate (module docstring); else what stands in the way.

    Every node must be piecewise linear in its inputs jointly (ReLU, pooling, sums, views), or a
    product (matrix product, convolution, eval-mode BatchNorm, elementwise product) of which at
    most one factor is an activation and the others are parameters: along one coordinate such a
    product is linear (either the coordinate is in the parameter factor and the activation does
    not move, or it is upstream of the activation and the parameter factor does not move), while
    a product of two activations (attention scores, gating) can be quadratic. A division is
    linear in its numerator only. Parameters are distinct leaves (shared parameters are refused
    by the caller), so no coordinate reaches a product through two factors.
    """
    for node in _graph_nodes(output):
        name = type(node).__name__
        label = name.removesuffix("0").removesuffix("1").removesuffix("Backward")
        if name == "DivBackward0":
            if node.next_functions[1][0] is not None:
                return "a division by a tensor that depends on the weights"
        elif name in _PRODUCT_NODES:
            if "BatchNorm" in name and bool(getattr(node, "_saved_training", True)):
                return "BatchNorm with batch statistics (train mode)"
            inputs = [fn for fn, _ in node.next_functions if fn is not None]
            if sum(not _is_parameter(fn) for fn in inputs) > 1:
                return f"{label} of two tensors that both depend on the weights"
        elif name not in _PIECEWISE_LINEAR_NODES | _VIEW_NODES | {"AccumulateGrad"}:
            return f"the operation {label}"
    return None


def _graph_nodes(output: torch.Tensor) -> Iterator[Node]:
    """Each node of the autograd graph of ``output`` once (depth first)."""
    seen: set[Node] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)


def parameter_reuse_reason(output: torch.Tensor) -> str | None:
    """``None`` when every parameter leaf in the autograd graph of ``output`` has exactly one
    consumer; else a description. A weight used twice (``F.linear(h, layer.weight)`` besides
    ``layer(x)``, a weight reused in a loop) is missed by the module hooks, which see one call,
    and makes the network quadratic in that weight."""
    uses: dict[int, int] = {}
    for node in _graph_nodes(output):
        for fn, _ in node.next_functions:
            if fn is not None and type(fn).__name__ == "AccumulateGrad":
                uses[id(fn)] = uses.get(id(fn), 0) + 1
    reused = sum(count > 1 for count in uses.values())
    if reused:
        return f"{reused} parameter tensor(s) are used more than once in one forward pass"
    return None


def _owners(objective: Objective) -> dict[str, nn.Module]:
    """Module name → module for every module owning trainable parameters of the objective, after
    checking that each is supported and that no parameter is shared."""
    trainable = {
        id(t) for n, t in objective.model.named_parameters() if n in objective.parameter_names
    }
    owners: dict[str, nn.Module] = {}
    claimed: set[int] = set()
    for name, module in objective.model.named_modules(remove_duplicate=False):
        # by identity: a tied parameter appears under each module that holds it
        own = [(p, t) for p, t in module.named_parameters(recurse=False) if id(t) in trainable]
        if not own:
            continue
        if type(module) not in _SUPPORTED:  # exactly: a subclass may compute otherwise
            raise Unsupported(
                f"module '{name}' ({type(module).__name__}) owns parameters; the exact trace "
                f"knows {', '.join(c.__name__ for c in _SUPPORTED)} (not subclasses)"
            )
        if any(p not in ("weight", "bias") for p, _ in module.named_parameters(recurse=False)):
            raise Unsupported(f"module '{name}' has parameters besides weight and bias")
        if module._forward_hooks or module._forward_pre_hooks:
            raise Unsupported(f"module '{name}' has forward hooks that may change its output")
        if isinstance(module, _CONV) and (
            module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)
        ):
            raise Unsupported(f"convolution '{name}' has groups, string or non-zero padding")
        if isinstance(module, _BATCHNORM) and not module.track_running_stats:
            raise Unsupported(f"BatchNorm '{name}' has no running statistics (couples samples)")
        for _, t in own:
            if id(t) in claimed or name in owners:
                raise Unsupported(f"a parameter of '{name}' is shared with another module")
            claimed.add(id(t))
        owners[name] = module
    if len(trainable) != len(claimed):
        raise Unsupported("some trainable parameters are not owned by a module")
    return owners


def outer_sq_norms(b: torch.Tensor, a: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Per-sample ``‖Σ_l b_il a_ilᵀ‖_F²`` for ``b`` of shape ``(n, L, o)`` and ``a`` ``(n, L, i)``:
    the squared norm of a layer's per-sample weight gradient, summed over ``L`` positions
    (sequence steps, or a convolution's output positions with ``a`` its unfolded input).

    ``"formed"``: the ``o × i`` gradient of each sample is formed and squared. ``"gram"``: the
    same number as the inner product of the positions' Gram matrices,
    ``‖bᵢᵀ aᵢ‖_F² = ⟨bᵢ bᵢᵀ, aᵢ aᵢᵀ⟩`` (``L × L``; Rochette, Manoel & Tramel, "Efficient
    per-example gradient computations in convolutional neural networks", 2019; the "ghost norm"
    of Li, Tramèr, Liang & Hashimoto, ICLR 2022), which never forms a parameter-sized tensor per
    sample. ``"auto"`` takes the one with fewer multiply-adds, ``L·o·i`` against
    ``L²·(o + i)``, counting also the ``o·i`` elements the formed gradient writes and reads
    back: for the deep layers of a convolutional network (few positions, many channels) that
    is the Gram form, for which the formed gradients of a batch are gigabytes.
    """
    _, positions, o = b.shape
    i = a.shape[2]
    if method == "auto":
        formed = positions * o * i + 2 * o * i
        gram = positions * positions * (o + i + 1)
        method = "gram" if gram < formed else "formed"
    if method == "formed":
        grad = torch.bmm(b.transpose(1, 2), a)
        return (grad**2).sum((1, 2))  # cascade summation: float32 error ~1e-7
    gram_b = torch.bmm(b, b.transpose(1, 2))
    gram_a = torch.bmm(a, a.transpose(1, 2))
    return (gram_b * gram_a).sum((1, 2))


def _sq_norms(
    module: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    stats: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
) -> torch.Tensor:
    """Per-sample ``‖∂(bᵀ y_i)/∂θ‖²`` summed over the module's trainable parameters ``θ``, from
    its input ``a`` and output gradient ``b`` (leading dimension: samples); ``stats``: a
    BatchNorm's running mean and variance as the forward pass used them (the objective's copies,
    in its dtype and on its device)."""
    n = a.shape[0]
    out = torch.zeros(n, dtype=b.dtype, device=b.device)
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    train_w = weight is not None and weight.requires_grad
    train_b = bias is not None and bias.requires_grad
    if isinstance(module, nn.Linear):
        a3, b3 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
        if train_w:  # Σ_t b_t a_tᵀ; one position: ‖b‖²‖a‖², the Gram form
            out += outer_sq_norms(b3, a3)
        if train_b:
            out += (b3.sum(1) ** 2).sum(1)
    elif isinstance(module, _CONV):
        one_d = isinstance(module, nn.Conv1d)
        x = a.unsqueeze(2) if one_d else a
        kernel = (1, *module.kernel_size) if one_d else module.kernel_size
        pad = (0, *module.padding) if one_d else module.padding
        stride = (1, *module.stride) if one_d else module.stride
        dilation = (1, *module.dilation) if one_d else module.dilation
        if train_w:  # samples in chunks: the unfolded inputs are k_h·k_w times the input
            flat_b = b.reshape(n, b.shape[1], -1)
            per_sample = x[0].numel() * math.prod(kernel)
            step = max(1, _CHUNK_ELEMENTS // max(per_sample, 1))
            for lo in range(0, n, step):
                cols = F.unfold(
                    x[lo : lo + step], kernel, dilation=dilation, padding=pad, stride=stride
                )
                out[lo : lo + step] += outer_sq_norms(
                    flat_b[lo : lo + step].transpose(1, 2), cols.transpose(1, 2)
                )
        if train_b:
            out += (b.reshape(n, b.shape[1], -1).sum(2) ** 2).sum(1)
    elif isinstance(module, _BATCHNORM):
        shape = (1, -1) + (1,) * (a.ndim - 2)
        running_mean, running_var = stats
        assert running_mean is not None and running_var is not None  # _owners requires them
        mean = running_mean.reshape(shape)
        var = running_var.reshape(shape)
        dims = tuple(range(2, a.ndim))
        if train_w:
            normed = (a - mean) / torch.sqrt(var + module.eps)
            out += (((b * normed).sum(dims) if dims else b * normed) ** 2).sum(1)
        if train_b:
            out += ((b.sum(dims) if dims else b) ** 2).sum(1)
    else:  # LayerNorm
        k = len(module.normalized_shape)
        dims = tuple(range(a.ndim - k, a.ndim))
        normed = (a - a.mean(dims, keepdim=True)) / torch.sqrt(
            a.var(dims, unbiased=False, keepdim=True) + module.eps
        )
        lead = tuple(range(1, a.ndim - k))
        if train_w:
            out += (((b * normed).sum(lead) if lead else b * normed) ** 2).reshape(n, -1).sum(1)
        if train_b:
            out += ((b.sum(lead) if lead else b) ** 2).reshape(n, -1).sum(1)
    return out


@contextlib.contextmanager
def _capture(owners: dict[str, nn.Module]) -> Iterator[_Calls]:
    """Each owner's ``(input, output)`` of every call during the block."""
    calls: _Calls = {name: [] for name in owners}
    handles = []
    for name, module in owners.items():

        def hook(
            module: nn.Module,
            args: tuple[torch.Tensor, ...],
            output: torch.Tensor,
            name: str = name,
        ) -> torch.Tensor:
            # keep private copies: an in-place op downstream (ReLU(inplace=True) after a
            # BatchNorm, as in torchvision's ResNets) would otherwise change the kept output,
            # whose gradient is then that of the ReLU's output; the clone is what the rest of
            # the network sees and may modify
            calls[name].append((args[0].detach().clone(), output))
            return output.clone()

        handles.append(module.register_forward_hook(hook))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


#: why a batch's targets or outputs stop the exact trace (flags summed over ranks)
_TARGET_PROBLEMS = (
    "targets hold ignore_index (-100): the batch mean is over the other samples only",
    "the nll model's outputs are not log-probabilities",
)


def _target_problems(
    split: SplitLoss, out: torch.Tensor, y: torch.Tensor, curvature: str
) -> list[float]:
    """Flags (1.0 = present) for :data:`_TARGET_PROBLEMS` in one batch: class labels set to
    ``ignore_index``, and for the GGN of ``nll`` outputs that are not log-probabilities (as
    :class:`~landscape_cli.operators.ggn.GGNOperator` refuses)."""
    ignored = split.name in ("cross_entropy", "nll") and not y.is_floating_point()
    ignored = ignored and bool((y < 0).any())
    not_log = split.name == "nll" and curvature == "ggn"
    not_log = not_log and float(torch.logsumexp(out.detach(), dim=1).abs().max()) > 1e-3
    return [float(ignored), float(not_log)]


def _loss_gradients(split: SplitLoss, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, d, 1)``: each sample's gradient of its loss ``ℓ_i`` in its flattened outputs (the
    empirical Fisher's one "factor": ``g_i = J_iᵀ ∇ℓ_i``)."""
    n = out.shape[0]
    o = out.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(split.loss(o, (None, y)) * n, o)
    return grad.reshape(n, -1, 1)


def loss_hessian_factors(
    split: SplitLoss, out: torch.Tensor, y: torch.Tensor, for_hessian: bool
) -> torch.Tensor:
    """``(n, d, d)``: ``S_i`` with ``S_i S_iᵀ = ∇²ℓ_i`` in the sample's flattened outputs.

    Closed forms for the built-in losses (``ℓ_i`` is sample ``i``'s share of the batch mean times
    the batch size): cross-entropy on logits ``z``, ``∇²ℓ = diag(p) − ppᵀ = S Sᵀ`` with
    ``S = diag(√p) − p √pᵀ`` and ``p = softmax(z)`` (``Σ p = 1``); MSE averaged over ``d``
    elements, ``(2/d) I``; BCE with logits, ``diag(σ(1 − σ))/d``; NLL is linear in its inputs
    (zero; its GGN uses the cross-entropy, :meth:`SplitLoss.curvature_loss`). Other output shapes
    of the cross-entropy (a class dimension with more after it) go through ``torch.func.hessian``.
    """
    n = out.shape[0]
    flat = out.detach().reshape(n, -1)
    d = flat.shape[1]
    name = split.name
    if name == "nll" and for_hessian:
        return torch.zeros(n, d, d, dtype=flat.dtype, device=flat.device)
    if name == "mse":
        eye = torch.eye(d, dtype=flat.dtype, device=flat.device)
        return (2.0 / d) ** 0.5 * eye.expand(n, d, d)
    if name == "bce_with_logits":
        sig = torch.sigmoid(flat)
        return torch.diag_embed((sig * (1 - sig) / d).sqrt())
    if out.ndim == 2 and not y.is_floating_point():
        # cross-entropy with class labels, or nll's GGN (the cross-entropy of log-probabilities)
        p = torch.softmax(flat, dim=1)
        root = p.sqrt()
        S = torch.diag_embed(root) - p.unsqueeze(2) * root.unsqueeze(1)
        # S √p = 0 and ‖√p‖ = 1: the Householder reflection R with R e_last = √p keeps S R Rᵀ Sᵀ
        # and zeroes S R's last column, which then costs no backward pass (d − 1 passes)
        u = root.clone()
        u[:, -1] -= 1.0
        norm = u.norm(dim=1, keepdim=True)
        u = torch.where(norm > 1e-12, u / norm.clamp_min(1e-300), torch.zeros_like(u))
        S = S - 2.0 * (S @ u.unsqueeze(2)) * u.unsqueeze(1)
        S[:, :, -1] = 0.0  # exactly (it is rounding-small)
        return S
    shape = out.shape[1:]
    loss = split.loss if for_hessian else split.curvature_loss

    def per_sample(o: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss(o.reshape(1, *shape), (None, yi.unsqueeze(0)))

    H = vmap(hessian(per_sample), in_dims=(0, 0))(flat, y)
    H = (H + H.transpose(1, 2)) / 2
    values, vectors = torch.linalg.eigh(H)
    # eigenvalues at rounding level are null directions (e.g. 1 per position for a sequence
    # cross-entropy): zero columns, which cost no backward pass
    floor = 1e3 * torch.finfo(values.dtype).eps * values.abs().amax(dim=1, keepdim=True)
    values = torch.where(values > floor, values, torch.zeros_like(values))
    return vectors * values.sqrt().unsqueeze(1)


@dataclass(frozen=True)
class ExactTrace:
    """An exact trace and its split over the modules owning parameters (their diagonal blocks'
    traces, which add up to it), with the backward passes it took per batch and, when not from
    per-sample gradients, how it was obtained (``method``, the trace estimate's label)."""

    trace: float
    per_module: dict[str, float]
    passes: int
    method: str | None = None


def _check_samples_independent(
    out: torch.Tensor, batch: Batch, forward: _Forward, objective: Objective
) -> None:
    """Raise :class:`Unsupported` when changing one sample's input changes another sample's
    outputs (batch statistics computed in ``forward``, e.g. ``x - x.mean(0)``): the per-sample
    split of a backward pass then mixes samples. One forward pass with sample 0 replaced by the
    last one; the other outputs must stay within rounding."""
    from ..problem.data import move_batch

    if not isinstance(batch, tuple) or batch[0].shape[0] < 3:
        return
    x, rest = batch[0], batch[1:]
    n = x.shape[0]
    tol = 1e3 * torch.finfo(out.dtype).eps * (float(out.abs().max()) + torch.finfo(out.dtype).tiny)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            moved = move_batch((inputs, *rest), objective.device, objective.dtype)
            return forward(moved, 0)[0].detach()

    def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
        return float((a - b).abs().max()) > tol

    reverse = torch.arange(n - 1, -1, -1)
    half = n // 2
    coupled = differs(run(x[reverse])[reverse], out)  # order-dependent coupling (h - h[1])
    coupled = coupled or differs(torch.cat([run(x[:half]), run(x[half:])]), out)  # batch stats
    if x.is_floating_point() and not coupled:  # one sample made extreme: max/min statistics
        loud = x.clone()
        loud[0] = 10 * x[-1] + 1
        coupled = differs(run(loud)[1:], out[1:])
    if coupled:
        raise Unsupported("a sample's outputs depend on the other samples of its batch")


def exact_trace(
    objective: Objective, curvature: str = "ggn", *, max_outputs: int = MAX_OUTPUTS
) -> ExactTrace:
    """The exact trace of ``curvature`` at the objective's point, from per-sample gradient norms
    (module docstring): ``"ggn"`` (any network of supported modules), ``"ef"`` (the empirical
    Fisher ``(1/N) Σ_i ‖g_i‖²``: one backward pass with the per-sample loss gradients in the
    outputs) or ``"hessian"`` (``tr(H) = tr(G)``, after proving the network piecewise linear;
    the loss Hessian is then that of :meth:`SplitLoss.loss`, not
    :meth:`~SplitLoss.curvature_loss`). ``max_outputs`` caps the backward passes per batch.

    Raises:
        Unsupported: the model, loss, mode or output size is outside the supported set, or (for
            the Hessian) the network is not provably piecewise linear; the reason is the message.
    """
    from .curvature import split_loss

    if curvature not in ("ggn", "ef", "hessian"):
        raise ValueError(f"curvature must be ggn, ef or hessian, got {curvature!r}")
    if objective.batches.source is None:
        raise Unsupported("no data")
    try:
        split = split_loss(objective, "ggn")
    except InputError:
        raise Unsupported(
            "a custom loss is one function of (model, batch), not a built-in loss on the "
            "model's outputs"
        ) from None
    return _exact_trace(objective, split, curvature, max_outputs)


def _exact_trace(
    objective: Objective, split: SplitLoss, curvature: str, max_outputs: int
) -> ExactTrace:
    from ..problem.data import move_batch
    from .ggn import OutputModule

    if objective.mode != "eval":
        raise Unsupported("train mode couples the samples of a batch (BatchNorm)")
    if split.name == "lm":
        raise Unsupported("the loss lm is a mean over a batch's tokens, not over its samples")
    first, _ = next(iter(objective.batches))
    if not isinstance(first, tuple):
        raise Unsupported("the batches are named model inputs, not (x, y)")
    owners = _owners(objective)
    module = OutputModule(objective.model, split)
    for_hessian = curvature == "hessian"

    def forward(batch: Batch, index: int) -> tuple[torch.Tensor, _Calls, dict[str, torch.Tensor]]:
        tensors = dict(objective._constants)
        leaves = [p.detach().requires_grad_(True) for p in objective._params]
        tensors.update(
            {f"model.{n}": p for n, p in zip(objective.parameter_names, leaves, strict=True)}
        )
        with _capture(owners) as calls, objective._evaluation_context(index):
            out = functional_call(module, tensors, (batch,), strict=False)
        return out, calls, tensors

    # Whether the method applies is decided on the first batch of the data on every rank alike
    # (a rank may hold no batch), before any collective, so that all ranks fall back together.
    out, calls, _ = forward(move_batch(first, objective.device, objective.dtype), 0)
    if not isinstance(out, torch.Tensor):
        raise Unsupported(f"the model returns {type(out).__name__}, not a tensor")
    reused = parameter_reuse_reason(out)
    if reused is not None:
        raise Unsupported(reused)
    if for_hessian:
        reason = piecewise_linear_reason(out)
        if reason is not None:
            raise Unsupported(f"the network is not piecewise linear: {reason}")
    for name, seen in calls.items():
        if len(seen) != 1:
            raise Unsupported(f"module '{name}' ran {len(seen)} times in one forward pass")
    if curvature != "ef" and out[0].numel() > max_outputs:
        raise Unsupported(f"{out[0].numel()} outputs per sample (> {max_outputs} backward passes)")
    _check_samples_independent(out.detach(), first, forward, objective)
    del out, calls

    local = torch.zeros(len(owners), dtype=torch.float64, device=objective.device)
    problems = torch.zeros(len(_TARGET_PROBLEMS), dtype=torch.float64, device=objective.device)
    passes = 0
    with objective.collect_failure() as failure:
        for index, batch, weight in objective._batches_on_device():
            out, calls, tensors = forward(batch, index)
            n = out.shape[0]
            flags = _target_problems(split, out, batch[1], curvature)
            if any(flags):  # said on every rank after the sum below
                problems += torch.tensor(flags, dtype=torch.float64, device=problems.device)
                continue
            if curvature == "ef":
                S = _loss_gradients(split, out, batch[1]).to(out.dtype)
            else:
                S = loss_hessian_factors(split, out, batch[1], for_hessian).to(out.dtype)
            names = list(calls)
            outputs = [calls[m][0][1] for m in names]
            sums = torch.zeros(len(names), dtype=torch.float64, device=out.device)
            for k in range(S.shape[2]):
                column = S[:, :, k]
                if not bool(column.any()):
                    continue
                # the scalar Σ⟨out, column⟩ rather than grad_outputs=column: the same gradients,
                # without the import of sympy that tensor grad_outputs trigger on first use
                grads = torch.autograd.grad(
                    (out * column.reshape(out.shape)).sum(),
                    outputs,
                    retain_graph=True,
                    allow_unused=True,
                )
                passes += 1
                for j, (m, g) in enumerate(zip(names, grads, strict=True)):
                    if g is not None:
                        prefix = f"model.{m}." if m else "model."
                        stats = (
                            tensors.get(prefix + "running_mean"),
                            tensors.get(prefix + "running_var"),
                        )
                        norms = _sq_norms(owners[m], calls[m][0][0], g, stats)
                        sums[j] += norms.sum().to(torch.float64)
            local = local + sums * (weight / n)
    packed = objective.reduce_sum(torch.cat([local, problems]), failure).cpu()
    total, flagged = packed[: len(owners)], packed[len(owners) :]
    for message, flag in zip(_TARGET_PROBLEMS, flagged, strict=True):
        if float(flag) > 0:
            raise Unsupported(message)
    per_module = {m: float(v) for m, v in zip(owners, total, strict=True)}
    num_batches = max(len(objective.batches.local_indices), 1)
    return ExactTrace(float(total.sum()), per_module, -(-passes // num_batches))
