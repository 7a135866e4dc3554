"""Layers whose output depends on the module mode (train or eval), and the note that says so."""

from __future__ import annotations

from torch import nn

_KINDS = (
    ("BatchNorm", nn.modules.batchnorm._BatchNorm),
    ("InstanceNorm", nn.modules.instancenorm._InstanceNorm),
    ("Dropout", nn.modules.dropout._DropoutNd),
)


def mode_dependent_layers(model: nn.Module) -> dict[str, int]:
    """How many layers of each kind behave differently in train and eval mode (BatchNorm and
    InstanceNorm with running statistics, Dropout with ``p > 0``), by kind."""
    counts: dict[str, int] = {}
    for module in model.modules():
        for kind, cls in _KINDS:
            if not isinstance(module, cls):
                continue
            if kind == "Dropout" and not getattr(module, "p", 0.0) > 0:
                continue
            if kind != "Dropout" and not getattr(module, "track_running_stats", False):
                continue  # normalised by the batch's own statistics in both modes
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def mode_note(model: nn.Module, mode: str) -> str | None:
    """A sentence for the results' notes when ``model`` has layers whose behaviour depends on the
    module mode: which, how the analysed ``mode`` treats them, and that the other mode is another
    objective. Its curvature can differ severalfold (the bundled BatchNorm CNN: λ_max 14.3 in
    eval mode, 3.37 in train mode) while the two losses agree to 1 %, so no cheap measurement
    can tell when it does not matter. ``None`` for a model without such layers."""
    layers = mode_dependent_layers(model)
    if not layers:
        return None
    kinds = " and ".join(f"{count} {kind}" for kind, count in layers.items())
    if mode == "eval":
        return (
            f"analysed in eval mode (running statistics, no dropout); with {kinds} layer(s) the "
            "train-mode objective the optimizer steps on is another function, whose curvature "
            "can differ severalfold: `--mode train` analyses it, and the edge-of-stability "
            "numbers concern it"
        )
    return (
        f"analysed in train mode (batch statistics, dropout on); with {kinds} layer(s) the "
        "eval-mode objective of inference is another function: `--mode eval` analyses it"
    )
