"""A DataLoader-of-dicts task: text-like token ids, an embedding-bag model, a custom loss.

Each item is ``{"tokens": LongTensor[SEQ], "label": int}``, as a tokenised text dataset
gives; the ``DataLoader`` collates them into a dict batch, which lrtune moves to the device
as it is. ``step_loss`` says how to get a loss out of such a batch (here cross-entropy with
label smoothing); the validation metric is then the mean ``step_loss`` over the validation
batches. Run it with::

    python -m lrtune rangetest --task studies/dict_task.py:make
    python -m lrtune study --spec studies/dict-task.toml
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lrtune import Task

VOCAB = 500
SEQ = 24


class Reviews(Dataset):
    """Synthetic "reviews": two classes, each with its own slightly favoured words."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        # Fixed word preferences (seed 0 for both splits): class c favours words
        # 50c .. 50c+49 a little; everything else is shared noise.
        prefs = np.ones((2, VOCAB))
        prefs[0, :50] += 3.0
        prefs[1, 50:100] += 3.0
        prefs /= prefs.sum(axis=1, keepdims=True)
        self.labels = rng.integers(0, 2, size=n)
        self.tokens = np.stack([rng.choice(VOCAB, size=SEQ, p=prefs[c]) for c in self.labels])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"tokens": torch.as_tensor(self.tokens[i]), "label": int(self.labels[i])}


class BagOfWords(nn.Module):
    """Mean of the token embeddings, then a linear classifier."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def step_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss of one dict batch."""
    return F.cross_entropy(model(batch["tokens"]), batch["label"], label_smoothing=0.1)


TRAIN, VAL = Reviews(1024, seed=1), Reviews(256, seed=2)


def make(seed: int) -> Task:
    torch.manual_seed(seed)  # the seed sets the initial weights
    return Task(
        model=BagOfWords(),
        train=DataLoader(TRAIN, batch_size=32, shuffle=True),
        val=DataLoader(VAL, batch_size=256),
        loss_fn=F.cross_entropy,  # unused: step_loss gives the loss of a dict batch
        step_loss=step_loss,
        batch_size=32,
        epochs=3,
        name="dict-task",
        optimizer="adam",
    )
