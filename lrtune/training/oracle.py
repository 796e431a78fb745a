"""A dense grid of real training runs over LR × schedule: the ground truth that the range
test's bounds are checked against, and the oracle of the search-efficiency benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lrtune.direction import sign as direction_sign
from lrtune.logspace import log_grid as log_grid  # benchmarks import it from here
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.training.tasks import Task, TaskFactory
from lrtune.training.trainer import TrainConfig, train


@dataclass
class GridResult:
    """Mean metric over seeds for every (schedule, lr) of the grid (``nan``: diverged).

    ``runs[schedule][i]`` holds each seed's value at ``lrs[i]`` (in the order of the seeds
    given to :func:`dense_grid`), so a single seed's grid can be taken with :meth:`seed`.
    """

    lrs: list[float]
    values: dict[str, list[float]]
    direction: str
    runs: dict[str, list[list[float]]] = field(default_factory=dict)

    def seed(self, k: int) -> GridResult:
        """The grid of the ``k``-th seed alone (what a trial trained with that seed sees)."""
        values = {s: [float(r[k]) for r in rows] for s, rows in self.runs.items()}
        return GridResult(self.lrs, values, self.direction, {s: [] for s in values})

    def best_lr(self, schedule: str) -> float:
        """The grid LR with the best mean value for ``schedule``."""
        vals = np.asarray(self.values[schedule], dtype=float)
        worst = np.inf if self.direction == "minimize" else -np.inf
        vals = np.where(np.isfinite(vals), vals, worst)
        i = int(np.argmin(vals) if self.direction == "minimize" else np.argmax(vals))
        return self.lrs[i]

    def robust_best_lr(self, schedule: str) -> float:
        """The grid LR whose worst value over itself and its two neighbours is best.

        Near divergence a single lucky run can score best between two that blew up; such an
        LR is not one a user can train at, so each LR is judged with its neighbours.
        """
        vals = np.asarray(self.values[schedule], dtype=float)
        worst = np.inf if self.direction == "minimize" else -np.inf
        vals = np.where(np.isfinite(vals), vals, worst)
        padded = np.concatenate([[worst], vals, [worst]])
        windows = np.stack([padded[:-2], padded[1:-1], padded[2:]])
        if self.direction == "minimize":
            return self.lrs[int(np.argmin(windows.max(axis=0)))]
        return self.lrs[int(np.argmax(windows.min(axis=0)))]

    def best(self) -> tuple[str, float, float]:
        """``(schedule, lr, value)`` of the best cell of the whole grid."""
        sign = direction_sign(self.direction)
        cells = [
            (sign * v, s, self.lrs[i])
            for s, vs in self.values.items()
            for i, v in enumerate(vs)
            if math.isfinite(v)
        ]
        v, s, lr = min(cells)
        return s, lr, sign * v


def dense_grid(
    task: str | TaskFactory | Task,
    lrs: Sequence[float],
    *,
    schedules: Sequence[str] = SCHEDULE_NAMES,
    seeds: Sequence[int] = (0, 1),
    optimizer: str = "sgd",
    epochs: int | None = None,
    device: str = "cpu",
) -> GridResult:
    """Train every (schedule, lr) with every seed and average the final metric.

    Every run starts from fresh weights: a name or factory builds the model with each
    seed; a :class:`Task` instance is copied by :func:`lrtune.training.trainer.train` each time, so
    its seeds differ only in batch order (and dropout).
    """
    values: dict[str, list[float]] = {}
    runs_of: dict[str, list[list[float]]] = {}
    direction = "minimize"
    for schedule in schedules:
        row = []
        row_runs = []
        for lr in lrs:
            runs = []
            for seed in seeds:
                cfg = TrainConfig(
                    lr=lr,
                    optimizer=optimizer,
                    schedule=schedule,
                    epochs=epochs,
                    seed=seed,
                    device=device,
                )
                res = train(task, cfg)
                runs.append(res.value)
                direction = res.direction
            row.append(float(np.mean(runs)) if all(math.isfinite(r) for r in runs) else math.nan)
            row_runs.append([float(r) for r in runs])
        values[schedule] = row
        runs_of[schedule] = row_runs
    return GridResult(list(lrs), values, direction, runs_of)
