"""A worked user task: bring your own model, data, loss and metric.

lrtune calls ``make(seed)`` for every trial and every range-test seed; build a fresh model
there. Run it with::

    python -m lrtune study --spec studies/my-task.toml
    python -m lrtune rangetest --task studies/my_task.py:make
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

import lrtune


class DigitImages(Dataset):
    """Your own torch Dataset: lrtune stacks it onto the device once when it fits."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def make(seed: int) -> lrtune.Task:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    # A fixed split (not seeded by `seed`) so every trial is scored on the same data.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    torch.manual_seed(seed)  # the seed sets the initial weights
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    return lrtune.Task(
        model=model,
        train=DigitImages(x[train], y[train]),
        val=(x[val], y[val]),
        loss_fn=nn.CrossEntropyLoss(),
        metric=accuracy,
        metric_name="accuracy",
        direction="maximize",
        batch_size=32,
        epochs=8,
        name="my-task",
    )
