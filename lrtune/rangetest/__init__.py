"""The LR range test (Smith 2015; fastai's ``lr_find``) and the search bounds it gives.

- :mod:`~lrtune.rangetest.sweep`: :func:`range_test`, the sweep itself;
- :mod:`~lrtune.rangetest.restore`: :func:`preserved_state`, which gives the model and
  optimizer back exactly as they were;
- :mod:`~lrtune.rangetest.suggest`: the one smoothing (:class:`Ema`), the stop rule,
  :func:`diagnose`, the suggestions and :func:`bounds_from`;
- :mod:`~lrtune.rangetest.result`: :class:`RangeTestResult` (frozen), its JSON and table.

``result`` and ``suggest`` are torch-free; the sweep's names are imported on first use, so
reading a stored result (``lrtune report``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lrtune.rangetest.result import SPREAD_WARN, RangeTestResult
from lrtune.rangetest.suggest import (
    BOUNDS_HIGH_MUL,
    BOUNDS_LOW_MUL,
    DIAG_DIVERGED_AT_ONCE,
    DIAG_FLAT,
    DIAG_NEVER_DIVERGED,
    DIAG_NO_DESCENT,
    DIAG_OK,
    bounds_from,
    diagnose,
    lr_at,
    should_stop,
)
from lrtune.smoothing import BETA, Ema

if TYPE_CHECKING:
    from lrtune.rangetest.restore import preserved_rng, preserved_state
    from lrtune.rangetest.sweep import lr_find, range_test

_LAZY = {
    "range_test": "sweep",
    "lr_find": "sweep",
    "preserved_state": "restore",
    "preserved_rng": "restore",
}

__all__ = [
    "BETA",
    "BOUNDS_HIGH_MUL",
    "BOUNDS_LOW_MUL",
    "DIAG_DIVERGED_AT_ONCE",
    "DIAG_FLAT",
    "DIAG_NEVER_DIVERGED",
    "DIAG_NO_DESCENT",
    "DIAG_OK",
    "SPREAD_WARN",
    "Ema",
    "RangeTestResult",
    "bounds_from",
    "diagnose",
    "lr_at",
    "lr_find",
    "preserved_rng",
    "preserved_state",
    "range_test",
    "should_stop",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"lrtune.rangetest.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
