"""What a trial's training gives back (:class:`TrainResult`) and the ``report`` callback a
trial's loop calls; shared by lrtune's loop and a task's own ``fit``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: ``report(value, step)``: record an intermediate value (may raise ``optuna.TrialPruned``).
Report = Callable[[float, int], None]


@dataclass
class TrainResult:
    """The outcome of :func:`train` or :func:`run_trial`.

    ``value`` is the task's metric after the last epoch (``nan`` when diverged);
    ``history`` the metric after each epoch (what ``fit`` reported, for a ``fit`` task);
    ``config`` the resolved training config in the form ``lrtune export`` writes; ``model``
    the trained model (for a :class:`Task` instance a copy: the task's own model is not
    trained; ``None`` for a ``fit`` task). ``steps`` counts optimizer updates (0 for
    ``fit``); ``total_steps`` is ``None`` when a ``fit`` task's data has no length.
    ``final_lr`` is the LR of the last update (``None`` for ``fit`` or no update): the
    schedule's final LR when the run trained its whole length.
    """

    value: float
    history: list[float]
    diverged: bool
    reason: str | None
    steps: int
    total_steps: int | None
    seconds: float
    config: dict[str, Any]
    metric_name: str = "val_loss"
    direction: str = "minimize"
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    final_lr: float | None = None
