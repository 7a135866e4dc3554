"""Jacobians as matrix-free operators, and a network as the function they differentiate.

:class:`JacobianGram` is ``JᵀJ`` of any tensor function (a JVP and a VJP per product),
:class:`NTKOperator` the empirical NTK ``J_θ J_θᵀ`` of the outputs with respect to the parameters.
:class:`NetworkFunction` evaluates an objective's model as a pure function of its input (and
optionally its parameters) with :func:`torch.func.functional_call` on the objective's tensor
copies, in its module mode; :func:`row_function` is one sample's slice of it and
:func:`capture_layers` records each layer call's input by forward hooks. The analysis built on
them, with the maths, is :mod:`landscape_cli.analyses.jacobian`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from ..errors import InputError
from ..linear_operator import SymmetricOperator

__all__ = [
    "JacobianGram",
    "LayerCall",
    "ModuleForward",
    "NTKOperator",
    "NetworkFunction",
    "capture_layers",
    "row_function",
]

#: Rows of ``J_θᵀ`` computed per vectorised VJP call of the NTK trace.
TRACE_CHUNK = 64


class JacobianGram(SymmetricOperator):
    """``JᵀJ`` for the Jacobian ``J = ∂g/∂z`` of ``g`` at ``z₀``, as a matrix-free operator.

    ``g`` maps a tensor shaped like ``z₀`` to a tensor; both are flattened (``d`` inputs, ``m``
    outputs). ``A @ v = Jᵀ(J v)`` costs one JVP and one VJP per column; the forward pass of the
    VJP is done once, at construction. :meth:`jvp`, :meth:`vjp` and :meth:`dense` are exposed for
    tests and counted in :attr:`jvps`, :attr:`vjps`. A non-finite product is left to the Lanczos
    run, whose error names its step, and to the analysis, which names the Jacobian.

    Example:
        >>> W = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
        >>> A = JacobianGram(lambda z: W @ z, torch.zeros(3, dtype=torch.float64))
        >>> torch.equal(A.dense(), W), A.shape
        (True, (3, 3))
    """

    check_finite = False

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor) -> None:
        self.fn = fn
        self.z0 = z0.detach()
        out, self._vjp_fn = vjp(fn, self.z0)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise InputError(
                f"a Jacobian needs a floating-point tensor output, got {type(out).__name__}"
            )
        self.output = out.detach()
        self.input_dim = int(self.z0.numel())
        self.output_dim = int(out.numel())
        super().__init__(self.input_dim, self.z0.dtype, self.z0.device)
        self.jvps = 0
        self.vjps = 0

    def jvp(self, u: torch.Tensor) -> torch.Tensor:
        """``J u`` (flat, length ``m``) for ``u`` of length ``d``."""
        self.jvps += 1
        tangent = u.to(device=self.device, dtype=self.dtype).reshape(self.z0.shape)
        _, out = jvp(self.fn, (self.z0,), (tangent,))
        return out.reshape(-1)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        """``Jᵀ w`` (flat, length ``d``) for ``w`` of length ``m``."""
        self.vjps += 1
        cotangent = w.to(device=self.device, dtype=self.dtype).reshape(self.output.shape)
        (out,) = self._vjp_fn(cotangent)
        return out.reshape(-1)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.vjp(self.jvp(v)) for v in V.unbind(dim=1)], dim=1)

    def dense(self) -> torch.Tensor:
        """The ``m × d`` Jacobian from ``min(m, d)`` products: rows ``Jᵀ e_c`` by VJPs when
        ``m ≤ d``, else columns ``J e_j`` by JVPs."""
        m, d = self.output_dim, self.input_dim
        if m <= d:
            eye = torch.eye(m, device=self.device, dtype=self.dtype)
            return torch.stack([self.vjp(eye[c]) for c in range(m)])
        eye = torch.eye(d, device=self.device, dtype=self.dtype)
        return torch.stack([self.jvp(eye[j]) for j in range(d)], dim=1)


class NTKOperator(SymmetricOperator):
    """The empirical NTK ``K = J_θ J_θᵀ`` (``N·C × N·C``) of ``F(θ) = f(X; θ)`` flattened.

    ``K v = J_θ (J_θᵀ v)``: a VJP (its forward pass is done once, at construction) and a JVP per
    column (Novak et al. 2022, NTK-vector products). ``params`` is the tuple of parameter tensors
    ``F`` takes as positional arguments. A non-finite product is left to the Lanczos run and the
    analysis, as for :class:`JacobianGram`.
    """

    check_finite = False

    def __init__(self, fn: Callable[..., torch.Tensor], params: Sequence[torch.Tensor]) -> None:
        self.fn = fn
        self.params = tuple(p.detach() for p in params)
        out, self._vjp_fn = vjp(fn, *self.params)
        self.output = out.detach()
        super().__init__(int(out.numel()), out.dtype, out.device)
        self.jvps = 0
        self.vjps = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._product(v) for v in V.unbind(dim=1)], dim=1)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        """``K v = J_θ (J_θᵀ v)`` for one column ``v``."""
        self.vjps += 1
        tangents = self._vjp_fn(v.reshape(self.output.shape))
        self.jvps += 1
        _, out = jvp(self.fn, self.params, tuple(tangents))
        return out.reshape(-1)

    def trace(self, progress: Callable[[int, int], None] | None = None) -> float:
        """``tr K = Σ_a ‖J_θᵀ e_a‖²`` exactly, from ``N·C`` VJPs in chunks of
        :data:`TRACE_CHUNK` (vectorised by :func:`torch.func.vmap`; a plain loop when the model
        does not support vmap)."""
        n = self.shape[0]
        total = 0.0
        vectorised = True
        for start in range(0, n, TRACE_CHUNK):
            stop = min(start + TRACE_CHUNK, n)
            eye = torch.zeros(stop - start, n, device=self.device, dtype=self.dtype)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            rows = eye.reshape(stop - start, *self.output.shape)
            parts = None
            if vectorised:
                try:
                    parts = torch.func.vmap(self._vjp_fn)(rows)
                except (RuntimeError, NotImplementedError, ValueError):
                    vectorised = False
            if parts is not None:
                total += float(sum((p.to(torch.float64) ** 2).sum() for p in parts))
            else:
                for row in rows:
                    total += float(sum((p.to(torch.float64) ** 2).sum() for p in self._vjp_fn(row)))
            self.vjps += stop - start
            if progress is not None:
                progress(stop, n)
        return total


# ---------------------------------------------------------------------------- the network


class ModuleForward(nn.Module):
    """Holds a module as ``self.model`` so that :func:`functional_call` swaps its tensors by the
    names ``model.<name>`` (as the objective does; this also works for TorchScript modules)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


class NetworkFunction:
    """The objective's model as a pure function of its input (and optionally its parameters),
    evaluated with ``functional_call`` on the objective's tensor copies, in its module mode."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.model: nn.Module = objective.model
        self._wrapped = ModuleForward(objective.model)
        # the objective's names: "model.<name>" for buffers and frozen parameters
        self.tensors: dict[str, torch.Tensor] = dict(objective._constants)
        self.names = [f"model.{name}" for name in objective.parameter_names]
        self.tensors.update(zip(self.names, objective._params, strict=True))

    def _fresh(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """In train mode, fresh copies of the buffers for every call: BatchNorm updates its
        running statistics in place, which torch.func transforms forbid on captured tensors
        (and which must not accumulate across products anyway)."""
        if self.objective.mode != "train":
            return tensors
        trainable = set(self.names)
        return {k: v if k in trainable else v.clone() for k, v in tensors.items()}

    def __call__(self, x: torch.Tensor, params: Sequence[torch.Tensor] | None = None) -> Any:
        tensors = self.tensors
        if params is not None:
            tensors = {**self.tensors, **dict(zip(self.names, params, strict=True))}
        with self.objective._evaluation_context(0):
            return functional_call(self._wrapped, self._fresh(tensors), (x,), strict=False)

    def module_call(self, path: str, wrapped: ModuleForward, z: torch.Tensor) -> Any:
        """``module(z)`` (``wrapped`` holds the module at ``path``) with the objective's copies of
        the module's own tensors."""
        start = f"model.{path}." if path else "model."
        local = {
            "model." + k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)
        }
        if self.objective.mode == "train":
            local = {k: v.clone() for k, v in local.items()}  # see _fresh; parameters too
        with self.objective._evaluation_context(0):
            return functional_call(wrapped, local, (z,), strict=False)


def row_function(
    call: Callable[[torch.Tensor], Any], batch: torch.Tensor, i: int, alone: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sample ``i``'s function ``z ↦ call(...)[i]``: on ``z`` alone (eval) or on ``batch`` with
    row ``i`` replaced by ``z`` (train mode: the other rows held fixed)."""
    if alone:
        return lambda z: call(z.unsqueeze(0))[0]

    def replaced(z: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([batch[:i], z.unsqueeze(0), batch[i + 1 :]])
        return call(rows)[i]

    return replaced


def _layer_modules(model: nn.Module, scope: str) -> list[tuple[str, nn.Module]]:
    if scope == "children":
        children = list(model.named_children())
        return children if children else [("", model)]
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]


@dataclass
class LayerCall:
    path: str
    module: nn.Module
    input: torch.Tensor
    output_dim: int


def capture_layers(
    network: NetworkFunction, X: torch.Tensor, scope: str
) -> tuple[list[tuple[str, LayerCall]], list[str]]:
    """One forward pass of ``X`` with forward hooks on the layer modules: every qualifying call,
    in execution order, labelled; and the modules whose calls were skipped."""
    n = X.shape[0]
    calls: list[LayerCall] = []
    skipped: list[str] = []
    rejected: set[str] = set()

    def make_hook(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            ok = (
                len(args) == 1
                and not kwargs
                and isinstance(args[0], torch.Tensor)
                and args[0].is_floating_point()
                and args[0].ndim >= 1
                and args[0].shape[0] == n
                and isinstance(output, torch.Tensor)
                and output.is_floating_point()
                and output.ndim >= 1
                and output.shape[0] == n
            )
            if ok:
                calls.append(LayerCall(path, module, args[0].detach(), int(output[0].numel())))
            elif path not in rejected:
                rejected.add(path)
                skipped.append(f"{path or '(model)'} (not one batch-first tensor in and out)")

        return hook

    handles = []
    try:
        for path, module in _layer_modules(network.model, scope):
            try:
                handles.append(module.register_forward_hook(make_hook(path), with_kwargs=True))
            except (RuntimeError, AttributeError, TypeError):  # e.g. TorchScript modules
                skipped.append(f"{path or '(model)'} (takes no forward hooks: TorchScript?)")
        with torch.no_grad():
            network(X)
    finally:
        for handle in handles:
            handle.remove()
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.path] = counts.get(call.path, 0) + 1
    seen: dict[str, int] = {}
    labelled = []
    for call in calls:
        label = call.path or "(model)"
        if counts[call.path] > 1:
            seen[call.path] = seen.get(call.path, 0) + 1
            label = f"{label}#{seen[call.path]}"
        labelled.append((label, call))
    return labelled, skipped
