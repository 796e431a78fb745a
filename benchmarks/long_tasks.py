"""Benchmark-only tasks whose full trial is much longer than a first rung.

``charlm-long`` (``benchmarks/long_tasks.py:charlm_long``): the built-in ``charlm`` (same
transformer, AdamW, validation windows) on the first half of its training windows (640,
40 optimizer steps an epoch) for 12 epochs, so a full trial is 12× a one-epoch rung (480
steps against 40), the ratio multi-fidelity search is for. Its validation loss still falls
at epoch 12 at good LRs (cosine, lr 0.0158: 2.48 after 4 epochs, 2.30 after 12), so a
longer horizon is a different problem, not a padded one. Half the windows keep a full trial
near charlm's cost (about 3.5 s on one CPU thread): the benchmark runs thousands.
Kept out of ``lrtune/training`` because only the benchmarks use it.
"""

from __future__ import annotations

from lrtune.training.tasks import Task
from lrtune.training.zoo import charlm

#: Epochs of a full ``charlm-long`` trial.
EPOCHS = 12
#: Training windows it keeps (of charlm's 1280).
WINDOWS = 640


def charlm_long(seed: int) -> Task:
    """``charlm`` on its first :data:`WINDOWS` training windows for :data:`EPOCHS` epochs."""
    task = charlm(seed)
    x, y = task.train
    task.train = (x[:WINDOWS], y[:WINDOWS])
    task.epochs = EPOCHS
    task.name = "charlm-long"
    return task
