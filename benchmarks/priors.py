"""Candidate better priors (issue 10, item 4) for ``search_efficiency.py --arms``: warm
starts, the first trials of a study with the range-test prior placed where the range test
points instead of drawn at random. Measured and dropped (docs/benchmarks.md, "Better
priors"): ``lrtune study`` uses neither; they live here to re-run the experiment.

Both kinds are lists of trial params for Optuna's ``enqueue_trial``; they stand in for the
TPE sampler's random start-up trials (enqueued trials count toward its start-up count), so a
study runs no more trials than without them.

- ``suggestions``: the range test's own suggestions (valley, then steep, then min/10),
  clipped into the bounds, paired with the searched schedules in turn.
- ``soft``: a soft prior, as in πBO (Hvarfner et al., 2022), instead of hard bounds: the
  study searches the wide bounds, and its start-up LRs are drawn from a log-normal centred
  on the middle of the range test's bounds (sd: half their span). Once TPE models the
  trials, the prior's weight fades as trials accrue: it is only those first points.

``search_efficiency.py`` measures both against plain hard bounds (arms ``tpe / warm`` and
``tpe / soft``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from lrtune.rangetest.result import RangeTestResult

WARM_STARTS: tuple[str, ...] = ("none", "suggestions", "soft")


def warm_start_params(
    kind: str,
    result: RangeTestResult,
    schedules: Sequence[str],
    bounds: tuple[float, float],
    n: int,
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The ``n`` trial params (``lr``, ``schedule``) a warm start of ``kind`` enqueues.

    Args:
        kind: one of :data:`WARM_STARTS` (``none`` gives no trials).
        result: the group's range test.
        schedules: the searched schedules, in the spec's order.
        bounds: the study's LR bounds; every LR is clipped into them.
        n: how many trials (the sampler's start-up count).
        seed: seeds the ``soft`` kind's draws and schedule choice.
    """
    if kind not in WARM_STARTS:
        raise ValueError(f"unknown warm start {kind!r}; choose from {', '.join(WARM_STARTS)}")
    if kind == "none" or n <= 0 or not schedules:
        return []
    low, high = bounds

    def clip(lr: float) -> float:
        return min(max(lr, low), high)

    if kind == "suggestions":
        found = (result.valley, result.steep, result.min10)
        lrs = list(dict.fromkeys(clip(lr) for lr in found if math.isfinite(lr) and lr > 0))
        if not lrs:
            return []
        return [
            {"lr": lrs[(i // len(schedules)) % len(lrs)], "schedule": schedules[i % len(schedules)]}
            for i in range(n)
        ]
    rng = random.Random(seed)
    centre = 0.5 * (math.log10(result.lr_low) + math.log10(result.lr_high))
    sd = max(0.5 * math.log10(result.lr_high / result.lr_low), 0.1)
    return [
        {"lr": clip(10 ** rng.gauss(centre, sd)), "schedule": rng.choice(list(schedules))}
        for _ in range(n)
    ]
