"""Calibrate the range test's bounds rule against dense grids of real training.

For each built-in task: the oracle of ``search_efficiency.py`` (``--oracle-lrs`` log-spaced
LRs from 1e-6 to 10 × ``--schedules`` × 3 training seeds, its runs cached in
benchmarks/.cache) gives each schedule's robust best LR; ``--repeats`` range tests of 3 seeds
each (seeds 500, 510, …: disjoint from the search-efficiency benchmark's 5000, 5010, …) give
the valley and the minimum of the smoothed loss. Prints, per task, where the best LRs sit
relative to the valley, and how often the current rule's bounds (and the previous rule's,
``[2.4 × valley, 80 × valley]``) hold every schedule's best LR; last line JSON.

Run by hand (the slow tasks with the coarser oracle their search-efficiency run used):
    OMP_NUM_THREADS=1 python benchmarks/bounds_calibration.py
    OMP_NUM_THREADS=1 python benchmarks/bounds_calibration.py --tasks charlm --oracle-lrs 21 \
        --schedules constant,cosine,warmup_cosine,wsd
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import warnings
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import CANDIDATES, available_tasks, oracle, per_task, task_optimizer

from lrtune.rangetest import bounds_from, range_test
from lrtune.schedules import SCHEDULE_NAMES

FIRST_SEED = 500


def old_rule(valley: float, high: float) -> tuple[float, float]:
    """The previous rule, ``[2.4 × valley, 80 × valley]``: the same top (``high``, from
    :func:`bounds_from`), only the bottom differs."""
    return min(valley * 2.4, high / 10), high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(CANDIDATES), help="comma list")
    parser.add_argument("--repeats", type=int, default=10, help="range tests per task")
    parser.add_argument("--oracle-lrs", default="36", help="as search_efficiency.py's")
    parser.add_argument("--schedules", help="comma list (default all)")
    args = parser.parse_args()
    schedules = tuple(args.schedules.split(",")) if args.schedules else SCHEDULE_NAMES
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    print(
        "| task | valley (median) | bounds (median) | best LR per schedule | "
        "best ÷ valley | held, rule | held, previous rule (2.4 ×) |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = {}
    tasks, notes = available_tasks(args.tasks.split(","))
    for note in notes:
        print(note, file=sys.stderr)
    for task in tasks:
        grid = oracle(task, per_task(args.oracle_lrs, task), 3, schedules)
        optimizer = task_optimizer(task)
        best = [grid.robust_best_lr(s) for s in schedules]
        lo_best, hi_best = min(best), max(best)
        valleys, lows, highs, ratios_lo, ratios_hi = [], [], [], [], []
        held_new = held_old = 0
        for r in range(args.repeats):
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
            o_low, o_high = old_rule(rt.valley, high)
            held_new += low <= lo_best and hi_best <= high
            held_old += o_low <= lo_best and hi_best <= o_high
            valleys.append(rt.valley)
            lows.append(low)
            highs.append(high)
            ratios_lo.append(lo_best / rt.valley)
            ratios_hi.append(hi_best / rt.valley)
        med = statistics.median
        print(
            f"| {task} ({optimizer}) | {med(valleys):.3g} | [{med(lows):.3g}, {med(highs):.3g}] | "
            f"{lo_best:.3g} … {hi_best:.3g} | {min(ratios_lo):.2f} … {max(ratios_hi):.1f} | "
            f"{held_new}/{args.repeats} | {held_old}/{args.repeats} |"
        )
        summary[task] = {
            "optimizer": optimizer,
            "held_rule": held_new / args.repeats,
            "held_previous_rule": held_old / args.repeats,
            "best_over_valley": [min(ratios_lo), max(ratios_hi)],
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
