"""The range test's bounds checked against dense grids of real training.

For the small built-in tasks (MLP on digits, breast cancer, wine; regression on synthetic
data; Adam fine-tuning a pretrained body) and every schedule, the best peak LR of a
quarter-decade grid of real training runs must lie inside the range test's
``[lr_low, lr_high]``, and the bounds span at most 2 decades.
"""

from __future__ import annotations

import math

import pytest

from lrtune.rangetest import range_test
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.spec import task_optimizer
from lrtune.training.oracle import dense_grid, log_grid

# (task, training seeds of the grid): the two smallest data sets are noisy, so they get two
# seeds averaged; they are also the cheapest to train.
TASKS = [
    ("digits", (0,)),
    ("synthetic", (0,)),
    ("breast-cancer", (0, 1)),
    ("wine", (0, 1)),
    ("finetune", (0,)),  # Adam: its best LRs sit near the valley, not above it as SGD's do
]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "seeds"), TASKS, ids=[t for t, _ in TASKS])
def test_best_lr_of_every_schedule_lies_inside_the_bounds(task: str, seeds: tuple[int, ...]):
    rt = range_test(task, optimizer=task_optimizer(task), seeds=3, device="cpu")
    assert rt.diagnosis == "ok"
    span = math.log10(rt.lr_high / rt.lr_low)
    assert span <= 2.0 + 1e-9
    # The grid reaches a decade beyond each bound, so a best LR outside them would show.
    grid = dense_grid(
        task,
        log_grid(rt.lr_low / 10, rt.lr_high * 10, 17),
        seeds=seeds,
        optimizer=task_optimizer(task),
    )
    outside = {}
    for schedule in SCHEDULE_NAMES:
        best = grid.robust_best_lr(schedule)
        # A grid point on a bound (up to float rounding) counts as inside it.
        if not rt.lr_low * (1 - 1e-9) <= best <= rt.lr_high * (1 + 1e-9):
            outside[schedule] = best
    assert not outside, f"bounds [{rt.lr_low:.3g}, {rt.lr_high:.3g}], best outside: {outside}"
