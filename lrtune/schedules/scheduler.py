"""Applying a schedule: the LR at a step, a run's curve, and the torch ``LambdaLR``.

Two ways in, one closed form (:mod:`lrtune.schedules.forms`) behind both:

- :func:`lr_factor`, :func:`schedule_lr` and :func:`schedule_curve` validate every
  argument on every call (one-off questions: ``lr_at``, plots, tests);
- :class:`Schedule` validates once and then answers :meth:`Schedule.factor` from a table
  of per-step factors, with no validation: what the trainer calls every optimizer step,
  and the ``lr_lambda`` that :func:`build_scheduler` hands to ``LambdaLR`` (what exported
  configs use), so a trial and a production run follow the same numbers.

torch is imported only by :func:`build_scheduler`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from lrtune.schedules.forms import Form
from lrtune.schedules.params import (
    SCHEDULES,
    ParamValue,
    check_total_steps,
    fmt_value,
    resolve_params,
)

if TYPE_CHECKING:
    import torch
    from torch.optim.lr_scheduler import LambdaLR

__all__ = ["Schedule", "build_scheduler", "lr_factor", "schedule_curve", "schedule_lr"]

TABLE_STEPS = 1 << 17
"""Steps whose factor a :class:`Schedule` precomputes (about 0.2 s and 4 MiB at most);
later steps are computed from the closed form on each call (about 1 µs)."""


def _check_step(step: object) -> int:
    if not isinstance(step, numbers.Integral) or isinstance(step, bool) or int(step) < 0:
        raise ValueError(f"step must be an int >= 0, got {fmt_value(step)}")
    return int(step)


def _check_lr(lr: object) -> float:
    if (
        isinstance(lr, bool)
        or not isinstance(lr, numbers.Real)
        or not math.isfinite(float(lr))
        or float(lr) <= 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {fmt_value(lr)}")
    return float(lr)


# --------------------------------------------------------------------------- one-off calls


def lr_factor(name: str, step: int, total_steps: int, **params: Any) -> float:
    """The LR of schedule ``name`` at ``step`` divided by the peak ``lr``.

    This is what :class:`~torch.optim.lr_scheduler.LambdaLR` multiplies each param
    group's initial LR by. Validates everything (see :func:`resolve_params`); for a factor
    at every step of a run, make a :class:`Schedule` once instead.
    """
    resolved = resolve_params(name, total_steps, **params)
    return SCHEDULES[name].fn(_check_step(step), int(total_steps), **resolved)


def schedule_lr(name: str, step: int, total_steps: int, lr: float, **params: Any) -> float:
    """The LR of schedule ``name`` with peak ``lr`` at optimizer step ``step`` (from 0).

    ``lr * lr_factor(name, step, total_steps, **params)``. Pure: depends on nothing but its
    arguments. See :mod:`lrtune.schedules.forms` for steps ``>= total_steps``.
    """
    peak = _check_lr(lr)
    return peak * lr_factor(name, step, total_steps, **params)


def schedule_curve(name: str, total_steps: int, lr: float, **params: Any) -> list[float]:
    """The LR at every step ``0 .. total_steps - 1`` (for plots); validates once."""
    peak = _check_lr(lr)
    resolved = resolve_params(name, total_steps, **params)
    fn = SCHEDULES[name].fn
    return [peak * fn(step, total_steps, **resolved) for step in range(total_steps)]


# --------------------------------------------------------------------------- the fast path


class Schedule:
    """Schedule ``name`` for a run of ``total_steps``, validated once, then cheap per step.

    ``Schedule(name, total_steps, **params)`` raises the one-line ``ValueError`` of
    :func:`resolve_params`; ``params`` then holds every parameter, defaults filled.
    :meth:`factor` (also the call ``schedule(step)``) does no validation: it reads a table
    of the factors of steps ``0 .. min(total_steps, TABLE_STEPS)``, built on the first call,
    and computes later steps from the closed form.

    A schedule is the ``lr_lambda`` of :func:`build_scheduler`: ``LambdaLR.state_dict()``
    saves its ``__dict__`` (``name``, ``total_steps``, ``params``), and after
    ``load_state_dict`` replaces them the table is rebuilt for the loaded schedule.
    """

    # The table lives in slots, outside __dict__, so a scheduler's state_dict holds the
    # schedule and not up to 2**17 floats.
    __slots__ = ("__dict__", "_fn", "_for", "_table")

    def __init__(self, name: str, total_steps: int, **params: Any) -> None:
        self.params: dict[str, ParamValue] = resolve_params(name, total_steps, **params)
        self.name = name
        self.total_steps = check_total_steps(total_steps)
        self._for: dict[str, ParamValue] | None = None

    def _build(self) -> None:
        fn: Form = SCHEDULES[self.name].fn
        total, params = self.total_steps, self.params
        self._fn = fn
        self._table = [fn(s, total, **params) for s in range(min(total, TABLE_STEPS) + 1)]
        self._for = params

    def factor(self, step: int) -> float:
        """The LR at optimizer step ``step`` (an int ``>= 0``, not checked) over the peak."""
        # `params` is replaced (never mutated) by LambdaLR.load_state_dict: then rebuild.
        if self.params is not self._for:
            self._build()
        table = self._table
        if 0 <= step < len(table):
            return table[step]
        return self._fn(step, self.total_steps, **self.params)

    __call__ = factor

    def lr(self, step: int, peak: float) -> float:
        """The LR at ``step`` for peak LR ``peak``: ``peak * factor(step)``."""
        return peak * self.factor(step)

    def __repr__(self) -> str:
        return f"Schedule({self.name!r}, {self.total_steps}, {self.params!r})"


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, **params: Any
) -> LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following schedule ``name``.

    Its lambda is a :class:`Schedule` (params resolved and validated once, up front), so
    each param group's LR is its own initial LR (its peak) times the factor: after ``k``
    calls of ``scheduler.step()`` group ``g`` has ``schedule_lr(name, k, total_steps, lr_g)``,
    and several groups keep their LR ratios. Call ``scheduler.step()`` once per optimizer
    step.
    """
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lr_lambda=Schedule(name, total_steps, **params))
