"""landscape: loss-landscape analysis of trained PyTorch checkpoints."""

__version__ = "0.1.0"
