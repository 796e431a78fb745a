"""A worked pytorch-lightning task: your LightningModule and loaders, lrtune's LR schedule.

``lightning_task`` turns a module factory plus loaders into a task factory. In each trial
lrtune runs ``Trainer.fit`` with its own optimizer and closed-form schedule in place of
``configure_optimizers`` and reports ``val_loss`` after every epoch (so pruning works);
the range test runs on ``training_step``. Needs ``pip install 'lrtune[lightning]'``.
Run it with::

    python -m lrtune study --spec studies/lightning.toml
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrtune.lightning import lightning_task


class DigitsClassifier(pl.LightningModule):
    """An MLP on 8×8 digits, written as for any Lightning project."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        # Used when you train on your own; in lrtune trials the tuned optimizer and schedule
        # take its place.
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loaders() -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    # A fixed split (not seeded per trial) so every trial is scored on the same data.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=64, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=256),
    )


train_loader, val_loader = _loaders()

make = lightning_task(
    DigitsClassifier,
    train_loader,
    val_loader,
    monitor="val_loss",
    epochs=5,
    name="lightning-digits",
)
