"""Log-spaced LR points with exact ends: the grid sampler's LRs (``search.space``) and the
dense grids of real training (``training.oracle``) are the same points. numpy only.
"""

from __future__ import annotations

import math

import numpy as np


def log_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` log-spaced values from ``low`` to ``high`` inclusive.

    The ends are exactly ``low`` and ``high``: 10**log10(x) can miss x by an ulp, and
    Optuna's GridSampler warns when a grid point falls outside the trial's distribution.
    """
    points = [float(x) for x in np.logspace(math.log10(low), math.log10(high), n)]
    if n >= 1:
        points[0] = float(low)
    if n >= 2:
        points[-1] = float(high)
    return points
