"""A short, deterministic training run of the sample MLP, saved as a series of checkpoints.

    python -m landscape_cli.sample_models.run OUT_DIR [--checkpoints 5]

Full-batch SGD with momentum (lr 0.05) on :func:`landscape_cli.sample_models.data.blobs` from the MLP's seeded
initialisation; every ``steps_per_checkpoint`` steps a nested training checkpoint
``{"model", "optimizer", "step"}`` is written as ``mlp_step_<step>.pt``. Generated on demand (a
second or two) rather than shipped: ``landscape track`` and its tests use it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import data, mlp


def training_run(
    out_dir: str | Path, checkpoints: int = 5, steps_per_checkpoint: int = 40, lr: float = 0.05
) -> list[Path]:
    """Write ``checkpoints`` checkpoints of one SGD run into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = mlp.build()
    x, y = data.blobs()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    paths = []
    step = 0
    for _ in range(checkpoints):
        for _ in range(steps_per_checkpoint):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        path = out / f"mlp_step_{step}.pt"
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path
        )
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--checkpoints", type=int, default=5)
    args = parser.parse_args(argv)
    for path in training_run(args.out_dir, args.checkpoints):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
