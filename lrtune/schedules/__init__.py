"""Closed-form learning-rate schedules.

Every schedule is a pure function of the optimizer step: the LR at step ``s`` depends only
on ``s``, ``total_steps``, the peak ``lr`` and the schedule's own parameters. The package:

- :mod:`~lrtune.schedules.forms`: the closed forms, each with its formula (``FORMS``);
- :mod:`~lrtune.schedules.params`: the one parameter table (defaults, checks, search ranges;
  ``SCHEDULES``) and :func:`resolve_params`;
- :mod:`~lrtune.schedules.scheduler`: the LR at a step (:func:`schedule_lr`,
  :func:`lr_factor`, :func:`schedule_curve`), :class:`Schedule` (validated once, a table
  per step: the trainer's path) and :func:`build_scheduler` (a ``LambdaLR`` over it).

Importing the package does not import torch; :func:`build_scheduler` does.
"""

from __future__ import annotations

from lrtune.schedules.params import (
    SCHEDULE_NAMES,
    SCHEDULES,
    Param,
    ParamValue,
    ScheduleInfo,
    SpaceEntry,
    param_kind,
    resolve_params,
)
from lrtune.schedules.scheduler import (
    Schedule,
    build_scheduler,
    lr_factor,
    schedule_curve,
    schedule_lr,
)

__all__ = [
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "Param",
    "ParamValue",
    "Schedule",
    "ScheduleInfo",
    "SpaceEntry",
    "build_scheduler",
    "lr_factor",
    "param_kind",
    "resolve_params",
    "schedule_curve",
    "schedule_lr",
]
