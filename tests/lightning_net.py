"""A LightningModule holding its network as ``self.net``, and the bare network's factory, for
the Lightning checkpoint tests (imported only where lightning is installed)."""

from __future__ import annotations

import lightning
import torch
from torch import nn


def network(hidden: int = 6) -> nn.Module:
    """The bare network: 4 features in, 3 classes out."""
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3))


class LitNet(lightning.LightningModule):
    """``network(hidden)`` as ``self.net``, trained by SGD at ``lr``; ``save_hyperparameters``
    puts ``hidden`` and ``lr`` into the checkpoint."""

    def __init__(self, hidden: int = 6, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = network(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
