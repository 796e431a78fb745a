"""Benchmark-only tasks whose full trial is much longer than a first rung.

``charlm-long`` (``benchmarks/long_tasks.py:charlm_long``): the built-in ``charlm`` (same
transformer, data and AdamW) trained for 12 epochs instead of 4, so a full trial is 12× a
one-epoch rung (960 optimizer steps against 80), the ratio multi-fidelity search is for.
Its validation loss still falls at epoch 12 at good LRs (no overfitting: 1.86 after 12
epochs, 2.35 after 4, cosine at lr 0.0158), so a longer horizon is a different problem,
not a padded one. Kept out of ``lrtune/training`` because only the benchmarks use it.
"""

from __future__ import annotations

from lrtune.training.tasks import Task
from lrtune.training.zoo import charlm

#: Epochs of a full ``charlm-long`` trial.
EPOCHS = 12


def charlm_long(seed: int) -> Task:
    """``charlm`` trained for :data:`EPOCHS` epochs."""
    task = charlm(seed)
    task.epochs = EPOCHS
    task.name = "charlm-long"
    return task
