"""Training runs shared by the benchmarks: cached on disk, and the oracle grid built from them.

Every run of a task (schedule, peak LR, training seed, epochs) is trained once with
lrtune's own ``train()`` and kept in benchmarks/.cache: its final value and its per-epoch
history (the history of a full-length run is what a truncated, pruned-style rung sees).
A run of fewer epochs than the task's trains the *whole* schedule over its own steps
(``TrainConfig.epochs``): a compressed rung.

The cache file is keyed by the task, torch's version, :data:`BENCH_VERSION` and a
**fingerprint** of the training code's behaviour: the exact values of one short run (2
epochs, lr 1e-3, seed 0) per schedule. Runs are deterministic on CPU, so a change to
lrtune that alters any of those values starts a fresh cache, while a change that does not
(new flags, refactors, other engineers' features) keeps days of oracle runs valid. A
source hash would throw them away on every edit of ``trainer.py``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.spec import task_optimizer
from lrtune.training.loading import resolve_task
from lrtune.training.oracle import GridResult, log_grid
from lrtune.training.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
#: Bump when the benchmark changes how a cached run is trained.
BENCH_VERSION = "3"
WIDE = (1e-6, 10.0)
#: Benchmark-only tasks by short name (``resolve_task`` takes the path form).
ALIASES = {"charlm-long": f"{ROOT / 'benchmarks' / 'long_tasks.py'}:charlm_long"}
Config = tuple[str, float]  # (schedule, lr): the default spec searches no schedule params


def task_ref(name: str) -> str:
    """What ``resolve_task`` and ``lrtune --task`` take for a benchmark's task name."""
    return ALIASES.get(name, name)


def full_epochs(task: str) -> int:
    """A full trial's epochs (the task's own)."""
    return int(resolve_task(task_ref(task))(0).epochs)


def ladder(full: int, eta: int) -> list[int]:
    """The geometric ladder EN, EN/η, EN/η², … (rounded, ≥ 1, distinct), ascending."""
    out: list[int] = []
    e = float(full)
    while round(e) >= 1 and (not out or round(e) < out[-1]):
        out.append(round(e))
        e /= eta
    return sorted(out)


def fingerprint(task: str, optimizer: str) -> str:
    """A hash of what the training code does on ``task``: 2-epoch runs, one per schedule."""
    h = hashlib.sha256(f"{BENCH_VERSION} {task} {optimizer} {torch.__version__}".encode())
    for schedule in SCHEDULE_NAMES:
        cfg = TrainConfig(
            lr=1e-3, optimizer=optimizer, schedule=schedule, epochs=2, seed=0, device="cpu"
        )
        res = train(task_ref(task), cfg)
        h.update(f"{schedule} {res.history!r} {res.steps}".encode())
    return h.hexdigest()[:12]


class Runs:
    """Every training run of one task, cached on disk by schedule, LR, seed and epochs."""

    def __init__(self, task: str, optimizer: str | None = None) -> None:
        self.task = task
        self.optimizer = optimizer or task_optimizer(task_ref(task))
        self.epochs = full_epochs(task)
        self.path = CACHE / f"runs-{task}-{self.optimizer}-{fingerprint(task, self.optimizer)}.json"
        self.data: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )
        self.trained = self.unsaved = 0
        self.direction = resolve_task(task_ref(task))(0).direction

    def run(self, schedule: str, lr: float, seed: int, epochs: int | None = None) -> dict[str, Any]:
        """``{"v": final value or None (diverged), "h": per-epoch history}``."""
        epochs = epochs or self.epochs
        key = f"{schedule}|{lr:.10g}|{seed}|{epochs}"
        if key not in self.data:
            cfg = TrainConfig(
                lr=lr,
                optimizer=self.optimizer,
                schedule=schedule,
                seed=seed,
                epochs=epochs,
                device="cpu",
            )
            res = train(task_ref(self.task), cfg)
            ok = not res.diverged and math.isfinite(res.value)
            self.data[key] = {"v": res.value if ok else None, "h": res.history}
            self.trained += 1
            self.unsaved += 1
            if self.unsaved >= 20:
                self.save()
        return self.data[key]

    def value(self, schedule: str, lr: float, seed: int, epochs: int | None = None) -> float:
        """The run's final value (``nan`` when it diverged)."""
        v = self.run(schedule, lr, seed, epochs)["v"]
        return math.nan if v is None else float(v)

    def truncated(self, schedule: str, lr: float, seed: int, epoch: int) -> float:
        """The value after ``epoch`` epochs of the *full-length* run (``nan``: diverged
        by then): what a pruner comparing intermediate values sees."""
        h = self.run(schedule, lr, seed)["h"]
        assert isinstance(h, list)
        return float(h[epoch - 1]) if len(h) >= epoch and math.isfinite(h[epoch - 1]) else math.nan

    def mean(self, config: Config, seeds: Sequence[int], epochs: int | None = None) -> float:
        """Seed mean (``nan`` when any seed diverged: it counts as the worst)."""
        vals = [self.value(config[0], config[1], s, epochs) for s in seeds]
        return statistics.fmean(vals) if all(math.isfinite(v) for v in vals) else math.nan

    def save(self) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")  # processes may share the cache
        if self.path.exists():  # keep what another process saved meanwhile
            self.data = json.loads(self.path.read_text()) | self.data
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
        self.unsaved = 0


def oracle(
    task: str,
    n_lrs: int,
    seeds: int,
    schedules: Sequence[str] = SCHEDULE_NAMES,
    runs: Runs | None = None,
    epochs: int | None = None,
) -> GridResult:
    """The dense grid over the wide space (every run cached): mean and per-seed values per
    cell, of full-length runs or, with ``epochs``, of runs compressed to that many epochs."""
    if runs is None:
        runs = Runs(task)
    lrs = log_grid(*WIDE, n_lrs)
    values: dict[str, list[float]] = {}
    per_seed: dict[str, list[list[float]]] = {}
    for s in schedules:
        per_seed[s] = [[runs.value(s, lr, k, epochs) for k in range(seeds)] for lr in lrs]
        values[s] = [runs.mean((s, lr), range(seeds), epochs) for lr in lrs]
        runs.save()
    return GridResult(lrs, values, runs.direction, per_seed)


def seed_noise(grid: GridResult, top: int = 10) -> tuple[float, float]:
    """Median relative sd and half-range of the seeds over the ``top`` best cells."""
    sign = 1.0 if grid.direction == "minimize" else -1.0
    cells = sorted(
        (sign * v, s, i)
        for s, vs in grid.values.items()
        for i, v in enumerate(vs)
        if math.isfinite(v)
    )[:top]
    runs = [grid.runs[s][i] for _, s, i in cells]
    den = [max(abs(statistics.fmean(r)), 1e-12) for r in runs]
    sd = [statistics.stdev(r) / d for r, d in zip(runs, den, strict=True) if len(r) > 1]
    half = [(max(r) - min(r)) / 2 / d for r, d in zip(runs, den, strict=True)]
    return (statistics.median(sd) if sd else math.nan), statistics.median(half)


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: the figures are read against them."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    """Where and when a benchmark ran: machine, cores, torch threads and version, date."""
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "date": str(datetime.date.today()),
    }


def run_meta(args: argparse.Namespace, tasks: list[Any], load_start: str) -> dict[str, Any]:
    """A benchmark run's JSON header: :func:`machine`, load at its start and end, its
    arguments, and the per-task ``tasks`` results."""
    return machine() | {
        "load_start": load_start,
        "load_end": load_average(),
        "args": vars(args),
        "tasks": tasks,
    }
