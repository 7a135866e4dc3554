"""What to analyse and how the loss is evaluated: the options every analysis command shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..options import option

# The commands whose learning rate matters (edge of stability); the other problem options are
# offered by every analysis command.
LR_COMMANDS = ("spectrum", "classify", "report", "check", "track", "kfac")


@dataclass(frozen=True)
class ProblemSettings:
    """The checkpoint, model, data and loss, and how the mean loss is evaluated."""

    checkpoint: str | None = option(
        None,
        "Checkpoint (.pt/.pth/.bin/.ckpt state_dict or training checkpoint, .safetensors, "
        "TorchScript or torch.export .pt2 with --trust-checkpoint, a Hugging Face model "
        "directory) or sample:NAME; none: the "
        "bundled sample, or the model as its factory builds it.",
        flag=False,
    )
    model: str | None = option(
        None,
        "Model factory: package.module:callable or path/file.py:callable returning an nn.Module "
        "(or a LightningModule class), or timm:NAME; none with a TorchScript or torch.export "
        "archive: the archive's own module.",
    )
    model_kwargs: Mapping[str, Any] | None = option(
        {}, "Keyword arguments of the model factory (model.kwargs in a config).", flag=False
    )
    model_args: tuple[str, ...] = option(
        (),
        "KEY=VALUE keyword argument of the model factory, the value read as YAML (10, true, "
        "[64, 64]); repeatable; over model.kwargs.",
        flag="--model-arg",
        default_text="none",
    )
    data: str | None = option(
        None,
        "Data: .pt/.npz/.h5 file with x and y (or input_ids, attention_mask, labels), a "
        "Hugging Face dataset folder (save_to_disk), package.module:callable, or sample:NAME; "
        "none: an analytic loss fn(model, None).",
    )
    loss: str | None = option(
        None,
        "cross_entropy, mse, bce_with_logits, nll, lm (next-token), sequence_classification, "
        "or package.module:callable(model, batch) returning the batch-mean loss.",
        default_text="cross_entropy; for a Hugging Face model, lm or sequence_classification "
        "by its architecture",
    )
    batch_size: int = option(256, "Samples per forward pass.", minimum=1)
    max_samples: int | None = option(
        None, "Average the loss over the first N samples.", minimum=1, default_text="all"
    )
    seed: int = option(0, "Seed of every random choice (start vectors, probes).", minimum=0)
    device: str = option("auto", "auto, cpu, cuda or cuda:INDEX.")
    threads: int | None = option(
        None,
        "CPU threads for torch; 1 helps on a busy machine.",
        minimum=1,
        default_text="torch's choice",
    )
    dtype: str = option("float32", "Floating-point precision.", choices=("float32", "float64"))
    mode: str = option(
        "eval",
        "Module mode during analysis (BatchNorm statistics, Dropout).",
        choices=("eval", "train"),
    )
    hvp_mode: str = option(
        "auto",
        "cached: keep one differentiable gradient graph; streaming: recompute batch by batch.",
        choices=("auto", "cached", "streaming"),
    )
    hvp_block: str = option(
        "auto",
        "Products of a block of vectors: batched (one vmapped backward over as many columns as "
        "the memory budget holds graphs) or loop (one backward per column); auto: batched "
        "unless the model has convolutions or its graph is too large to batch 16 columns.",
        choices=("auto", "batched", "loop"),
    )
    compile: bool = option(
        False,
        "torch.compile the loss for loss and gradient evaluations (surface grids, sharpness); "
        "curvature products stay eager (compiled graphs have no double backward).",
    )
    lr: float | None = option(
        None,
        "Learning rate for the edge-of-stability numbers.",
        positive=True,
        commands=LR_COMMANDS,
        default_text="from the checkpoint's optimizer state",
    )
    trust_checkpoint: bool = option(
        False,
        "Allow full pickles (torch.load weights_only=False), TorchScript archives and "
        "torch.export programs; all can run code from the file.",
        flag="--trust-checkpoint",
    )
