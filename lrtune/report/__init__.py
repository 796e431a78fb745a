"""``lrtune report`` and the figures: a group's comparison as ``report.md`` and PNGs.

- :mod:`~lrtune.report.build`: :func:`write_report` (the report written atomically);
- :mod:`~lrtune.report.sections`: report.md's sections, each with its figure, and the
  report's file names;
- :mod:`~lrtune.report.gather`: what it reads from the studies (:func:`start_bounds`,
  importances; the best-so-far curve is :func:`lrtune.search.best.best_so_far`);
- :mod:`~lrtune.report.figures`: the report's plots (best so far, schedule, importances,
  LR against value);
- :func:`plot_range_test`, the range test's figure, from :mod:`lrtune.rangetest.plot`;
- figures go through :mod:`lrtune.canvas` (matplotlib's object API, ``Figure`` + Agg
  canvas, no pyplot, no ``matplotlib.use``), imported lazily: importing this package
  imports neither matplotlib nor torch.
"""

from __future__ import annotations

from lrtune.rangetest.plot import plot_range_test
from lrtune.report.build import REPORT_FILES, write_report
from lrtune.report.figures import (
    plot_best_so_far,
    plot_importances,
    plot_lr_scatter,
    plot_schedule,
)
from lrtune.report.gather import MIN_IMPORTANCE_TRIALS, start_bounds
from lrtune.report.sections import (
    BEST_SO_FAR_PNG,
    IMPORTANCES_PNG,
    RANGETEST_PNG,
    REPORT_FILE,
    SCATTER_PNG,
    SCHEDULE_PNG,
)
from lrtune.search.best import best_so_far

__all__ = [
    "BEST_SO_FAR_PNG",
    "IMPORTANCES_PNG",
    "MIN_IMPORTANCE_TRIALS",
    "RANGETEST_PNG",
    "REPORT_FILE",
    "REPORT_FILES",
    "SCATTER_PNG",
    "SCHEDULE_PNG",
    "best_so_far",
    "plot_best_so_far",
    "plot_importances",
    "plot_lr_scatter",
    "plot_range_test",
    "plot_schedule",
    "start_bounds",
    "write_report",
]
