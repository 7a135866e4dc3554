"""The loss over the selected data, its gradient, and Hessian-vector products.

Kept as one module: the loss, the gradient and both Hessian-vector-product modes are one class over
the same parameter copies and batch loop.

The objective is the mean loss over all selected samples (see :mod:`landscape_cli.problem.data`),

    L(w) = Σ_b (n_b / N) · L_b(w),

evaluated as a pure function of the parameters with :func:`torch.func.functional_call`, so the
user's module is never mutated: its parameters and buffers are copied once onto the analysis
device and dtype, and those copies are what the estimators perturb.

Hessian-vector products use Pearlmutter's identity (Pearlmutter, "Fast exact multiplication by
the Hessian", Neural Computation 1994):

    H v = ∇_w ( ∇_w L(w) · v ),

one extra backward pass through a differentiable gradient. Two mechanisms, chosen by ``hvp_mode``:

* ``cached``: build the gradient ``g = ∇L`` once with ``create_graph=True`` over all batches and
  keep its graph; every HVP is then one backward pass through it. Memory grows with the number
  of samples.
* ``streaming``: for every HVP, recompute each batch's gradient graph, differentiate, free it:
  a forward and two backward passes per batch, memory of one batch.

What each costs against a gradient, per workload: BENCHMARKS.md, "HVP cost".

``auto`` builds the cached graph while measuring the bytes autograd saves (a
``saved_tensors_hooks`` count, not a guess) and falls back to streaming as soon as they would
exceed the memory budget (half of the available device memory by default).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import InputError, NumericalError, is_out_of_memory
from .data import Batch, Batches, move_batch, nonfinite_samples
from .distributed import Failure, Ranks, all_reduce_sum, collect_failure, current
from .memory import available_memory
from .seeding import derive_seed

Progress = Callable[[int, int], None]


class _LossModule(nn.Module):
    """Wraps ``fn(model, batch)`` so :func:`functional_call` swaps in our parameter tensors for
    every parameter the loss touches, however the loss reaches them (``model(x)`` or ``model.w``)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class _SavedBytes:
    """Counts the bytes autograd saves for backward while active (``saved_tensors_hooks``)."""

    def __init__(self) -> None:
        self.total = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.total += tensor.numel() * tensor.element_size()
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


#: how autograd says that an operation has no derivative of the order asked for
_NO_DERIVATIVE = re.compile(r"derivative for '?([^'\s]+?)'? is not implemented")
_ONCE_DIFFERENTIABLE = "marked with @once_differentiable"


def _is_once_differentiable(backward: Any) -> bool:
    """Whether a custom ``autograd.Function``'s ``backward`` is wrapped by
    :func:`torch.autograd.function.once_differentiable` (its wrapper lives in that module)."""
    if getattr(backward, "__wrapped__", None) is None:
        return False
    code = getattr(backward, "__code__", None)
    return code is not None and code.co_filename == torch.autograd.function.__file__


def once_differentiable_functions(root: torch.Tensor) -> list[str]:
    """The class names of the custom ``autograd.Function`` nodes marked ``@once_differentiable``
    in the autograd graph of ``root`` (a walk over its nodes, each visited once)."""
    names: list[str] = []
    seen: set[int] = set()
    stack = [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and _is_once_differentiable(cls.backward) and cls.__name__ not in names:
            names.append(cls.__name__)
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return names


def not_twice_differentiable(
    exc: BaseException, once_differentiable: list[str] | tuple[str, ...] = ()
) -> InputError | None:
    """The :class:`InputError` for autograd's refusal to differentiate an operation a second
    time (a Hessian-vector product differentiates the gradient, so every operation of the
    forward pass needs a differentiable backward), naming the operation; ``None`` for any other
    error. ``once_differentiable`` names the custom Functions of the model marked so
    (:func:`once_differentiable_functions`), whose error does not name them."""
    if not isinstance(exc, (RuntimeError, NotImplementedError)):
        return None
    text = str(exc)
    match = _NO_DERIVATIVE.search(text)
    if match is not None:
        operation = f"autograd has no derivative for {match.group(1)}"
    elif _ONCE_DIFFERENTIABLE in text:
        named = ", ".join(once_differentiable) or "a custom autograd.Function"
        operation = (
            f"autograd has no second derivative of {named}, whose backward is marked "
            "@once_differentiable"
        )
    else:
        return None
    return InputError(
        f"curvature products differentiate the model's backward pass, and {operation}",
        hint="compute it with torch operations autograd can differentiate twice; a custom "
        "autograd.Function needs a backward written with torch operations, not marked "
        "@once_differentiable; or use `curvature=ef`, which needs first derivatives only",
    )


class Objective:
    """Mean loss over the selected samples as a function of the flattened trainable parameters.

    Parameters
    ----------
    model:
        The network; never mutated (its tensors are copied to ``device``/``dtype``).
    loss_fn:
        ``fn(model, batch) -> scalar``, the *mean* loss of a batch (``batch`` is ``None`` when there
        is no data).
    batches:
        The samples, with per-batch weights ``n_b / N``.
    mode:
        ``"eval"`` (default: BatchNorm uses its running statistics, Dropout is off, so the loss is
        a sum over samples) or ``"train"``.
    hvp_mode:
        ``"auto"``, ``"cached"`` or ``"streaming"`` (module docstring).
    hvp_block:
        How ``H V`` is computed for a block ``V`` of ``k`` vectors: ``"loop"``, one backward pass
        per column through the shared gradient graph; ``"batched"``, one backward pass for all
        columns with ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the
        backward); ``"auto"``: batched unless the model has convolutions, where the loop costs
        less per column (BENCHMARKS.md). If the batched backward fails for the model's
        operations, the loop is used from then on.
    distributed:
        When a :mod:`torch.distributed` process group is initialised (``torchrun``), evaluate
        only this rank's share of the batches and all-reduce every loss, gradient and HVP
        (:mod:`landscape_cli.problem.distributed`); ``False`` keeps all batches in this process.
    notes:
        What was done to the model or its checkpoint so it could be analysed, by topic (e.g.
        ``"checkpoint_keys"``: a stripped prefix); kept in :attr:`notes`, to which the objective
        adds its own, and reported with every result.

    Example
    -------
    >>> import torch
    >>> from landscape_cli.problem.data import tensor_batches
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> mse = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
    >>> obj = Objective(model, mse, tensor_batches((x, y), 4, None, "toy"), dtype=torch.float64)
    >>> v = torch.ones(3, dtype=torch.float64)
    >>> torch.allclose(obj.hvp(v), 2 * x.double().T @ x.double() @ v / 8)
    True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
        batches: Batches,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: str = "eval",
        hvp_mode: str = "auto",
        checkpoint: Any = None,
        memory_budget: int | None = None,
        seed: int = 0,
        progress: Progress | None = None,
        hvp_block: str = "auto",
        distributed: bool = True,
        compile: bool = False,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        if hvp_mode not in ("auto", "cached", "streaming"):
            raise ValueError(f"hvp_mode must be auto, cached or streaming, got {hvp_mode!r}")
        if hvp_block not in ("auto", "batched", "loop"):
            raise ValueError(f"hvp_block must be auto, batched or loop, got {hvp_block!r}")
        auto_block = hvp_block == "auto"
        if auto_block:
            convolutional = any(
                isinstance(m, nn.modules.conv._ConvNd)
                # a scripted module keeps the name of its class
                or getattr(m, "original_name", "") in ("Conv1d", "Conv2d", "Conv3d")
                for m in model.modules()
            )
            hvp_block = "loop" if convolutional else "batched"
        self.hvp_block_mode = hvp_block
        self.device = torch.device(device)
        self.dtype = dtype
        self.mode = mode
        self.seed = seed
        self.ranks = current() if distributed else Ranks()
        if self.ranks.distributed:
            batches = batches.shard(self.ranks.rank, self.ranks.world_size)
        self.batches = batches
        self.checkpoint = checkpoint
        self.notes: dict[str, str] = dict(notes or {})
        self._module = _LossModule(model, loss_fn)
        self.model = model
        #: "off", "on" (loss and gradient evaluations through torch.compile), or
        #: "fallback: <reason>" when compiling failed and evaluation went back to eager
        self.compile_mode = "on" if compile else "off"
        self._compiled: Callable[..., torch.Tensor] | None = None
        self._base_loss: float | None = None

        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise InputError("the model has no trainable parameters (requires_grad=True)")
        self.parameter_names = [n for n, _ in trainable]
        self.parameter_shapes = [tuple(p.shape) for _, p in trainable]
        self._numels = [p.numel() for _, p in trainable]
        self.num_parameters = int(sum(self._numels))
        self._params = [self._to_device(p) for _, p in trainable]
        trainable_ids = {id(p) for _, p in trainable}
        self._constants = {
            f"model.{n}": self._to_device(t)
            for n, t in list(model.named_parameters()) + list(model.named_buffers())
            if id(t) not in trainable_ids
        }
        self._device_batches: list[tuple[int, Batch, float]] | None = None
        self._graph_grads: list[torch.Tensor] | None = None
        self._graph_leaves: list[torch.Tensor] | None = None
        self.memory_budget = (
            int(memory_budget) if memory_budget is not None else available_memory(self.device) // 2
        )
        self.graph_bytes = 0
        #: the custom autograd Functions of the forward pass marked @once_differentiable
        self._once_differentiable: list[str] = []
        #: bytes of the cached gradient graph as counted (cached), or extrapolated from the
        #: batches counted before it exceeded the budget (auto fell back to streaming); None
        #: when streaming was asked for
        self.graph_estimate: int | None = None
        self.loss_value, self.gradient, self.hvp_mode = self._initial_pass(hvp_mode, progress)
        fit = self.batched_columns()
        if self.hvp_block_mode == "batched" and (
            fit == 1 or (auto_block and fit < self.BATCHED_COLUMNS)
        ):
            # one column at a time is the loop; and under auto a graph too large to batch every
            # column makes per-call overhead, what batching saves, negligible, and the vmapped
            # backward slower (the GPT-2 of batched_columns: 4 columns in 35 s batched two at a
            # time, 23 s looped)
            self.hvp_block_mode = "loop"
        self.grad_norm = float(torch.linalg.vector_norm(self.gradient))

    # ------------------------------------------------------------------ parameters
    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype).clone()
        return tensor.to(device=self.device).clone()

    def flat_parameters(self) -> torch.Tensor:
        """The trainable parameters ``w`` as one vector of length :attr:`num_parameters`."""
        return self.flatten(self._params)

    def flatten(self, tensors: Iterable[torch.Tensor | None]) -> torch.Tensor:
        """Concatenate per-parameter tensors (``None`` means zeros) into one flat vector."""
        parts = []
        for tensor, numel in zip(tensors, self._numels, strict=True):
            if tensor is None:
                parts.append(torch.zeros(numel, device=self.device, dtype=self.dtype))
            else:
                parts.append(tensor.reshape(-1))
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into views shaped like the parameters."""
        if vector.shape != (self.num_parameters,):
            raise ValueError(
                f"expected a vector of length {self.num_parameters}, got {tuple(vector.shape)}"
            )
        pieces = torch.split(vector, self._numels)
        return [p.reshape(s) for p, s in zip(pieces, self.parameter_shapes, strict=True)]

    def reduce_sum(self, tensor: torch.Tensor, failure: Failure | None = None) -> torch.Tensor:
        """The sum over all ranks of a partial result accumulated over this rank's batches.

        Every data loop that accumulates ``Σ_b w_b · (...)`` over :meth:`_batches_on_device` passes
        its total through here, so that each rank holds the full-data value (identity in a single
        process). A loop run inside :meth:`collect_failure` passes its :class:`Failure` along, so
        an error on one rank is raised on all (:func:`landscape_cli.problem.distributed.all_reduce_sum`).
        """
        return all_reduce_sum(tensor, self.ranks, failure)

    def collect_failure(self) -> contextlib.AbstractContextManager[Failure]:
        """Context for a data loop over this rank's batches: on a multi-rank run an error is held
        until the loop's :meth:`reduce_sum`, so that no rank waits for a failed one."""
        return collect_failure(self.ranks)

    @property
    def num_samples(self) -> int:
        return self.batches.num_samples if self.batches.source is not None else 0

    # ------------------------------------------------------------------ evaluation
    @contextlib.contextmanager
    def _evaluation_context(self, index: int) -> Iterator[None]:
        """Module mode set for the call and restored after it (the user's module keeps its own
        flags); in train mode, a random state derived from ``(seed, batch index)`` so Dropout
        draws the same masks for a batch in every evaluation (and HVPs are of one function).

        Every forward pass runs here, and ``scaled_dot_product_attention`` in it is computed by
        its math backend (softmax and matrix products, differentiable to any order): the fused
        CPU and flash kernels have no double backward, so a Hessian-vector product through them
        fails. Entering the context costs about 16 µs (torch 2.13, 2-core CPU), within the
        run-to-run noise of a streaming HVP on the bundled MLP, CNN and transformer, so it is
        entered for every model rather than only for those that call the fused kernel.
        """
        flags = [(module, module.training) for module in self._module.modules()]
        self._module.train(self.mode == "train")
        try:
            if self.mode == "train":
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), sdpa_kernel(SDPBackend.MATH):
                    torch.manual_seed(derive_seed(self.seed, f"batch/{index}"))
                    yield
            else:
                with sdpa_kernel(SDPBackend.MATH):
                    yield
        finally:
            for module, training in flags:
                module.training = training

    def _call(
        self,
        params: list[torch.Tensor],
        batch: Batch,
        index: int = 0,
        *,
        first_order: bool = False,
    ) -> torch.Tensor:
        """The mean loss of one batch at ``params`` (a list shaped like the parameters).

        With ``compile`` on, calls without gradients or marked ``first_order`` (no ``create_graph``
        on the result) go through :func:`torch.compile`; curvature products always run eager,
        since compiled graphs have no double backward (torch 2.13).
        """
        tensors: dict[str, torch.Tensor] = dict(self._constants)
        tensors.update({f"model.{n}": p for n, p in zip(self.parameter_names, params, strict=True)})
        with self._evaluation_context(index):
            loss = None
            if self.compile_mode == "on" and (first_order or not torch.is_grad_enabled()):
                loss = self._compiled_call(tensors, batch)
            if loss is None:
                loss = functional_call(self._module, tensors, (batch,), strict=False)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise InputError(f"the loss must return a scalar tensor, got {shape}")
        return loss.reshape(())

    def _compiled_call(self, tensors: dict[str, torch.Tensor], batch: Batch) -> Any:
        """The loss through the compiled function, or ``None`` after recording why compiling
        failed (then this and every later call run eager; a genuine error in the user's loss is
        raised again by the eager call with its usual message)."""
        if self._compiled is None:
            module = self._module

            def loss_of(tensors: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
                return functional_call(module, tensors, (batch,), strict=False)

            # fallback_random: random ops (Dropout in train mode) draw from the eager generator,
            # so a compiled evaluation uses the same masks as the eager HVPs at the same seed
            self._compiled = torch.compile(loss_of, options={"fallback_random": True})
        try:
            # guard on module hooks: a forward hook registered after the first compile (the
            # surface metric's) must cause a recompile, not be silently skipped
            with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
                return self._compiled(tensors, batch)
        except Exception as exc:  # compiler missing, graph not traceable, ...
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            self.compile_mode = f"fallback: {exc.__class__.__name__}: {first}".rstrip(": ")
            return None

    def _batches_on_device(self) -> Iterable[tuple[int, Batch, float]]:
        """``(global batch index, batch on the device, weight n_b/N)`` for this rank's batches."""
        if self._device_batches is not None:
            yield from self._device_batches
            return
        for index, batch, weight in self.batches.local():
            yield index, move_batch(batch, self.device, self.dtype), weight

    def _check_finite_loss(self, loss: torch.Tensor, index: int, batch: Batch = None) -> None:
        """A non-finite loss is a :class:`NumericalError` naming the batch, and the first sample
        whose inputs hold NaN/Inf when that is the cause (file data are checked on loading; a
        Dataset or DataLoader is only read here, so its inputs are checked when the loss fails)."""
        if not bool(torch.isfinite(loss)):
            where = (
                "" if self.batches.source is None else f" on batch {index} of {len(self.batches)}"
            )
            bad = nonfinite_samples(batch[0]) if isinstance(batch, tuple) and batch else None
            if bad is not None and bool(bad.any()):
                raise NumericalError(
                    f"the loss is {float(loss.detach())}{where}: the inputs 'x' hold NaN or "
                    f"Inf ({int(bad.sum())} sample(s); the first is sample "
                    f"{int(bad.nonzero()[0, 0])} of that batch)",
                    hint="clean the data or select other samples with `max_samples`",
                )
            raise NumericalError(
                f"the loss is {float(loss.detach())}{where}",
                hint="check the checkpoint (diverged?) and the data (NaN inputs, labels out of range)",
            )

    def _checked_call(self, params: list[torch.Tensor], batch: Batch, index: int) -> torch.Tensor:
        """A batch evaluation whose shape and type errors become one-line input errors naming
        the batch; the loss must depend on the parameters."""
        try:
            loss = self._call(params, batch, index)
        except (InputError, NumericalError):
            raise
        except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as exc:
            if is_out_of_memory(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            shapes = ""
            if isinstance(batch, tuple):
                shapes = " (batch shapes " + ", ".join(str(tuple(t.shape)) for t in batch) + ")"
            elif isinstance(batch, Mapping):
                shapes = (
                    " (batch shapes "
                    + ", ".join(f"{k} {tuple(t.shape)}" for k, t in batch.items())
                    + ")"
                )
            where = (
                "" if self.batches.source is None else f" at batch {index} of {len(self.batches)}"
            )
            raise InputError(
                f"data {self.batches.description} does not fit the model and loss{where}{shapes}: {first}",
                hint="check `data`, `model` (and its kwargs) and `loss`",
            ) from None
        if any(p.requires_grad for p in params) and not loss.requires_grad:
            raise InputError(
                "the loss does not depend on the model's parameters (no gradient flows back)",
                hint="a custom loss must compute from model(...) or its parameters, without .detach()",
            )
        return loss

    def _initial_pass(
        self, hvp_mode: str, progress: Progress | None
    ) -> tuple[float, torch.Tensor, str]:
        """Loss and gradient at ``w``; in cached/auto mode also the differentiable gradient graph
        (of this rank's batches; HVPs through it are summed over ranks)."""
        want_graph = hvp_mode in ("cached", "auto")
        leaves = [p.detach().requires_grad_(True) for p in self._params]
        counter = _SavedBytes()
        zeros = [torch.zeros_like(p) for p in leaves]
        graph_grads: list[torch.Tensor] | None = zeros if want_graph else None
        plain_grads: list[torch.Tensor] = zeros
        device_batches: list[tuple[int, Batch, float]] = []
        loss_total = 0.0
        total = len(self.batches.local_indices)
        with self.collect_failure() as failure:
            for done, (index, batch, weight) in enumerate(self.batches.local(), start=1):
                batch = move_batch(batch, self.device, self.dtype)
                with counter.hooks() if want_graph else nullcontext():
                    loss = self._checked_call(leaves, batch, index)
                    self._check_finite_loss(loss, index, batch)
                    if done == 1:
                        self._once_differentiable = once_differentiable_functions(loss)
                    grads = torch.autograd.grad(
                        loss * weight, leaves, create_graph=want_graph, allow_unused=True
                    )
                loss_total += float(loss.detach()) * weight
                grads = [
                    g if g is not None else torch.zeros_like(p)
                    for g, p in zip(grads, leaves, strict=True)
                ]
                if want_graph:
                    assert graph_grads is not None
                    graph_grads = [a + b for a, b in zip(graph_grads, grads, strict=True)]
                    device_batches.append((index, batch, weight))
                    # stop before the next batch's graph would pass the budget, not after:
                    # batches are alike in size, and memory runs out while one is being built
                    ahead = counter.total + (counter.total // done if done < total else 0)
                    if hvp_mode == "auto" and ahead > self.memory_budget:
                        want_graph = (
                            False  # fall back to streaming: keep the values, drop the graph
                        )
                        # batches are alike in size (the last may be smaller): the graph grows
                        # about linearly in them
                        self.graph_estimate = counter.total * total // done
                        plain_grads = [g.detach() for g in graph_grads]
                        graph_grads = None
                        device_batches = []
                else:
                    plain_grads = [a + b.detach() for a, b in zip(plain_grads, grads, strict=True)]
                if progress is not None:
                    progress(done, total)
        self.graph_bytes = counter.total if graph_grads is not None else 0
        if graph_grads is not None:
            self.graph_estimate = counter.total
            self._graph_leaves = leaves
            self._graph_grads = graph_grads
            self._device_batches = device_batches
            local_gradient = self.flatten([g.detach() for g in graph_grads])
            mode = "cached"
        else:
            local_gradient = self.flatten(plain_grads)
            mode = "streaming"
        gradient, loss_total = self._reduce_with_scalar(local_gradient, loss_total, failure)
        if not bool(torch.isfinite(gradient).all()):
            raise NumericalError(
                "the gradient of the loss is not finite", hint="check the checkpoint and data"
            )
        return loss_total, gradient, mode

    def loss(self, delta: torch.Tensor | None = None) -> float:
        """``L(w + delta)`` (``delta`` flat, default zero), without gradients."""
        params = self._params
        if delta is not None:
            params = [p + d for p, d in zip(self._params, self.unflatten(delta), strict=True)]
        total = 0.0
        with torch.no_grad(), self.collect_failure() as failure:
            for index, batch, weight in self._batches_on_device():
                value = self._call(params, batch, index)
                self._check_finite_loss(value, index, batch)
                total += float(value) * weight
        return self._reduce_float(total, failure)

    def base_loss(self) -> float:
        """``L(w)`` through the same evaluation path as :meth:`loss`, the baseline of differences
        ``L(w + δ) − L(w)`` (sharpness, escape probes).

        Without ``compile`` this is :attr:`loss_value`. With it, :meth:`loss` runs compiled and
        :attr:`loss_value` (from the eager gradient pass) may differ from it by rounding (fused
        and reordered kernels); subtracting one from the other would put that rounding into a
        difference that can itself be tiny. So the compiled ``L(w)`` is evaluated once and kept.
        """
        if self.compile_mode == "off" or self.compile_mode.startswith("fallback"):
            return self.loss_value
        if self._base_loss is None:
            self._base_loss = self.loss()
        return self._base_loss

    def _reduce_float(self, value: float, failure: Failure | None = None) -> float:
        return self._reduce_with_scalar(None, value, failure)[1]

    def _reduce_with_scalar(
        self, vector: torch.Tensor | None, value: float, failure: Failure | None
    ) -> tuple[torch.Tensor, float]:
        """Sum a flat vector and a Python float over ranks in one collective (float64 on the
        wire, so the loss keeps double precision); unchanged in a single process."""
        if not self.ranks.distributed:
            if failure is not None and failure.error is not None:
                raise failure.error
            return vector, value  # type: ignore[return-value]
        parts = [] if vector is None else [vector.to(torch.float64)]
        parts.append(torch.tensor([value], dtype=torch.float64, device=self.device))
        packed = self.reduce_sum(torch.cat(parts), failure)
        summed = None if vector is None else packed[:-1].to(vector.dtype)
        return summed, float(packed[-1])  # type: ignore[return-value]

    def loss_and_gradient(
        self,
        delta: torch.Tensor | None = None,
        batches: Iterable[tuple[Batch, float]] | None = None,
    ) -> tuple[float, torch.Tensor]:
        """``L(w + delta)`` and its flat gradient by plain autograd (no graph kept).

        ``batches`` (``(batch, weight)`` pairs already on the device) replaces the objective's
        data, e.g. for m-sharpness chunks, and is then this rank's alone (no sum over ranks);
        default: all the objective's batches.
        """
        base = self._params
        if delta is not None:
            base = [p + d for p, d in zip(self._params, self.unflatten(delta), strict=True)]
        leaves = [p.detach().requires_grad_(True) for p in base]
        pairs = (
            ((i, b, w) for i, b, w in self._batches_on_device())
            if batches is None
            else ((i, b, w) for i, (b, w) in enumerate(batches))
        )
        total = 0.0
        grads = [torch.zeros_like(p) for p in leaves]
        with self.collect_failure() as failure:
            for index, batch, weight in pairs:
                loss = self._call(leaves, batch, index, first_order=True)
                self._check_finite_loss(loss, index, batch)
                parts = torch.autograd.grad(loss * weight, leaves, allow_unused=True)
                grads = [
                    a + b.detach() if b is not None else a
                    for a, b in zip(grads, parts, strict=True)
                ]
                total += float(loss.detach()) * weight
        flat = self.flatten(grads)
        if batches is None:
            flat, total = self._reduce_with_scalar(flat, total, failure)
        elif failure.error is not None:
            raise failure.error
        if not bool(torch.isfinite(flat).all()):
            raise NumericalError("the gradient is not finite at the perturbed point")
        return total, flat

    # ------------------------------------------------------------------ HVPs
    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """Hessian-vector product ``H v`` of the mean loss (``v`` flat, length ``n``)."""
        return self.hvp_block(v.reshape(-1, 1)).reshape(-1)

    @contextlib.contextmanager
    def second_order(self) -> Iterator[None]:
        """Context of a computation that differentiates the model's backward pass (an HVP, a
        GGN product): autograd's refusal to do so for an operation becomes one
        :class:`InputError` naming it (:func:`not_twice_differentiable`). A custom Function
        marked ``@once_differentiable`` is refused before anything runs: autograd raises for it
        only when the second backward reaches its error node, and prunes that node whenever its
        backward's inputs do not lead back to the parameters, so the products would silently
        lack its second derivative."""
        if self._once_differentiable:
            error = not_twice_differentiable(
                RuntimeError(_ONCE_DIFFERENTIABLE), self._once_differentiable
            )
            assert error is not None
            raise error
        try:
            yield
        except (RuntimeError, NotImplementedError) as exc:
            error = not_twice_differentiable(exc, self._once_differentiable)
            if error is None:
                raise
            raise error from None

    def hvp_block(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block ``V`` of shape ``(n, k)``: k HVPs sharing each batch's graph."""
        vectors = vectors.to(device=self.device, dtype=self.dtype)
        columns = [self.unflatten(vectors[:, j].contiguous()) for j in range(vectors.shape[1])]
        failure = Failure()
        with self.second_order():
            if self._graph_grads is not None:
                assert self._graph_leaves is not None
                results = self._backward_columns(
                    self._graph_grads, self._graph_leaves, columns, keep_graph=True
                )
            else:
                results, failure = self._streaming(columns)
            out = self.reduce_sum(torch.stack(results, dim=1), failure)
        if not bool(torch.isfinite(out).all()):
            raise NumericalError(
                "a Hessian-vector product is not finite",
                hint="the loss surface overflows here; try `dtype=float64`",
            )
        return out

    def _backward(
        self,
        grads: list[torch.Tensor],
        leaves: list[torch.Tensor],
        v: list[torch.Tensor],
        *,
        retain: bool,
    ) -> torch.Tensor:
        """``∇_w (g · v)`` through the graph of ``g = grads(leaves)``: Pearlmutter's ``H v``.

        The scalar ``g · v`` is formed and differentiated, rather than passing ``v`` as
        ``grad_outputs``: the backward of the product hands ``1 · v = v`` to the graph, so the
        result is the same to the bit, but ``torch.autograd.grad`` with tensor ``grad_outputs``
        imports ``torch.fx.experimental.symbolic_shapes`` (and sympy) on its first call, which
        would add that import to a process's first HVP.
        """
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        if not live:  # the gradient does not depend on w: the Hessian is zero
            return torch.zeros(self.num_parameters, device=self.device, dtype=self.dtype)
        dot = torch.stack([(grads[i] * v[i]).sum() for i in live]).sum()
        hv = torch.autograd.grad(dot, leaves, retain_graph=retain, allow_unused=True)
        return self.flatten(hv)

    def _streaming(self, columns: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], Failure]:
        totals = [
            torch.zeros(self.num_parameters, device=self.device, dtype=self.dtype) for _ in columns
        ]
        with self.collect_failure() as failure:
            for index, batch, weight in self._batches_on_device():
                leaves = [p.detach().requires_grad_(True) for p in self._params]
                loss = self._call(leaves, batch, index)
                self._check_finite_loss(loss, index, batch)
                grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
                grads = [
                    g if g is not None else torch.zeros_like(p)
                    for g, p in zip(grads, leaves, strict=True)
                ]
                parts = self._backward_columns(grads, leaves, columns, keep_graph=False)
                for j, part in enumerate(parts):
                    totals[j] += weight * part
        return totals, failure

    #: Columns per batched backward pass at most (bounds the memory of the vmapped backward).
    BATCHED_COLUMNS = 16

    def batched_columns(self) -> int:
        """Columns per batched backward pass: :attr:`BATCHED_COLUMNS`, fewer when the memory
        budget left beside the gradient graph holds fewer copies of it. The vmapped backward
        keeps each column's intermediates, about one graph's size per column (a GPT-2 of 10M
        parameters on 4,096 tokens: 3.4 GB of graph, +7.5 GB for 4 columns, and 16 columns do
        not fit in 24 GB); 1 means the loop. ``hvp_block="auto"`` loops for a graph too large
        for all :attr:`BATCHED_COLUMNS`."""
        graph = self.graph_bytes or self.graph_estimate or 0
        if graph <= 0:
            return self.BATCHED_COLUMNS
        spare = self.memory_budget - (self.graph_bytes or 0)
        return int(max(1, min(self.BATCHED_COLUMNS, spare // graph)))

    def _backward_columns(
        self,
        grads: list[torch.Tensor],
        leaves: list[torch.Tensor],
        columns: list[list[torch.Tensor]],
        *,
        keep_graph: bool,
    ) -> list[torch.Tensor]:
        """``[∇(g · v) for v in columns]`` through one gradient graph ``g(leaves)``: one backward
        per column (``loop``) or per chunk of columns (``batched``). The loop frees the graph
        after the last column unless ``keep_graph``; the batched passes always retain it (it is
        freed with ``grads``), so that the loop can take over if a batched pass fails."""
        k = len(columns)
        step = self.batched_columns() if self.hvp_block_mode == "batched" else 1
        if step > 1 and k > 1:
            try:
                out: list[torch.Tensor] = []
                for lo in range(0, k, step):
                    chunk = columns[lo : lo + step]
                    out.extend(self._backward_batched(grads, leaves, chunk))
                return out
            except RuntimeError:  # an operation without a batching rule: loop from now on
                self.hvp_block_mode = "loop"
        return [
            self._backward(grads, leaves, v, retain=keep_graph or j < k - 1)
            for j, v in enumerate(columns)
        ]

    def _backward_batched(
        self,
        grads: list[torch.Tensor],
        leaves: list[torch.Tensor],
        columns: list[list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        k = len(columns)
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        if not live:
            zero = torch.zeros(self.num_parameters, device=self.device, dtype=self.dtype)
            return [zero.clone() for _ in range(k)]
        with warnings.catch_warnings():  # vmap's "performance drop" notes are not for users
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            hv = torch.autograd.grad(
                [grads[i] for i in live],
                leaves,
                grad_outputs=[torch.stack([v[i] for v in columns]) for i in live],
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=True,
            )
        flat = torch.cat(
            [
                h.reshape(k, -1)
                if h is not None
                else torch.zeros(k, numel, device=self.device, dtype=self.dtype)
                for h, numel in zip(hv, self._numels, strict=True)
            ],
            dim=1,
        )
        return list(flat.unbind(0))
