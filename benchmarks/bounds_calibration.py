"""Calibrate the range test's bounds rule against dense grids of real training.

For each built-in task: the oracle of ``search_efficiency.py`` (36 log-spaced LRs from 1e-6
to 10 × every schedule × 3 training seeds, its runs cached in benchmarks/.cache) gives each
schedule's robust best LR; 20 range tests of 3 seeds each (seeds 500, 510, …: disjoint from
the benchmark's 0, 10, …) give the valley and the minimum of the smoothed loss. Prints, per
task, where the best LRs sit relative to the valley and to the minimum, and how often each
rule's bounds hold every schedule's best LR; last line JSON.

Run by hand:  python benchmarks/bounds_calibration.py
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import warnings
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import CANDIDATES, available_tasks, oracle, task_optimizer

from lrtune.rangetest import bounds_from, range_test
from lrtune.schedules import SCHEDULE_NAMES

REPEATS = 20
FIRST_SEED = 500


def old_rule(min_lr: float) -> tuple[float, float]:
    """The rule before this calibration: ``[min/50, min/1.5]``."""
    return min_lr / 50, min_lr / 1.5


def main() -> None:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    print(
        "| task | valley (median) | bounds (median) | best LR per schedule | "
        "best ÷ valley | held, valley rule | held, old min rule |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = {}
    tasks, notes = available_tasks(CANDIDATES)
    for note in notes:
        print(note, file=sys.stderr)
    for task in tasks:
        grid = oracle(task, 36, 3)
        optimizer = task_optimizer(task)
        best = [grid.robust_best_lr(s) for s in SCHEDULE_NAMES]
        lo_best, hi_best = min(best), max(best)
        valleys, lows, highs, ratios_lo, ratios_hi = [], [], [], [], []
        held_new = held_old = 0
        for r in range(REPEATS):
            rt = range_test(
                task,
                optimizer=optimizer,
                seeds=3,
                device="cpu",
                seed=FIRST_SEED + 10 * r,
            )
            min_lr = math.exp(statistics.median(math.log(p["min_lr"]) for p in rt.per_seed))
            low, high = bounds_from(rt.valley, min_lr)
            assert math.isclose(low, rt.lr_low) and math.isclose(high, rt.lr_high)
            o_low, o_high = old_rule(min_lr)
            held_new += low <= lo_best and hi_best <= high
            held_old += o_low <= lo_best and hi_best <= o_high
            valleys.append(rt.valley)
            lows.append(low)
            highs.append(high)
            ratios_lo.append(lo_best / rt.valley)
            ratios_hi.append(hi_best / rt.valley)
        med = statistics.median
        print(
            f"| {task} | {med(valleys):.3g} | [{med(lows):.3g}, {med(highs):.3g}] | "
            f"{lo_best:.3g} … {hi_best:.3g} | {min(ratios_lo):.2f} … {max(ratios_hi):.1f} | "
            f"{held_new}/{REPEATS} | {held_old}/{REPEATS} |"
        )
        summary[task] = {
            "held_valley_rule": held_new / REPEATS,
            "held_old_rule": held_old / REPEATS,
            "best_over_valley": [min(ratios_lo), max(ratios_hi)],
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
