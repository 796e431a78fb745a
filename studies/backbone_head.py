"""A backbone and a head, the fine-tuning shape: the head trains at 10x the backbone's LR
(discriminative LRs), and the factory takes two dimensions of its own, ``dropout`` and
``width``, that a study can search (``[params.task]``). The specs beside it search the head's
multiplier (groups.toml), the batch size (batch-size.toml) and those dimensions
(task-dims.toml); see docs/how-to/training-setup.md. Run it with::

    lrtune study --spec studies/groups.toml
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import lrtune


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Torch's param groups, named; ``lr_mult`` scales the base LR lrtune searches."""
    return [
        {"params": model.backbone.parameters(), "name": "backbone"},
        {"params": model.head.parameters(), "name": "head", "lr_mult": 10.0},
    ]


class Net(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make(seed: int, dropout: float = 0.1, width: int = 128) -> lrtune.Task:
    """``dropout`` and ``width`` are the task's own: a study passes the sampled values."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    # A fixed split (not seeded by `seed`) so every trial is scored on the same data.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    torch.manual_seed(seed)  # the seed sets the initial weights
    return lrtune.Task(
        model=Net(width, dropout),
        train=(x[train], y[train]),
        val=(x[val], y[val]),
        loss_fn=nn.CrossEntropyLoss(),
        batch_size=32,
        epochs=4,
        name="backbone-head",
        param_groups=param_groups,
    )
