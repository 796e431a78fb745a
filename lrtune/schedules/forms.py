"""Closed-form learning-rate schedules.

Every schedule is a pure function of the optimizer step (nanoGPT ``get_lr(it)`` style): the
LR at step ``s`` depends only on ``s``, ``total_steps`` (``T``), the peak ``lr`` and the
schedule's own parameters, never on what was computed before. ``lr`` is always the PEAK LR
of the schedule, so a study can search ``lr`` on one log scale whatever the schedule.

Steps count optimizer steps from 0; a run of ``T`` steps uses steps ``0 .. T-1``.

Parameters that are durations are fractions of ``T`` (``*_frac``), turned into steps with
``max(1, round(frac * T))`` (Python's ``round``: halves go to the even integer), so an
exported config carries over to a run of another length.

Steps ``>= T``: the decaying schedules (``step``, ``exponential``, ``poly``, ``cosine``,
``warmup_cosine``, ``wsd``) clamp the step to ``T`` and keep their final value;
``onecycle`` clamps to ``T - 1`` (torch's ``OneCycleLR`` is defined on ``0 .. T-1`` only);
``cyclic`` and ``sgdr`` just continue their cycles; ``constant`` stays at ``lr``.

Each :class:`ScheduleInfo` ``fn`` is the closed form of the LR FACTOR (the LR divided by the
peak ``lr``), called as ``fn(step, total_steps, **params)`` with resolved params (see
:func:`resolve_params`); it does no validation. :func:`build_scheduler` hands the factor to
:class:`torch.optim.lr_scheduler.LambdaLR`, which multiplies each param group's own
initial LR by it, so several param groups keep their LR ratios.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "ParamValue",
    "ScheduleInfo",
    "SpaceEntry",
    "build_scheduler",
    "lr_factor",
    "resolve_params",
    "schedule_curve",
    "schedule_lr",
]

ParamValue: TypeAlias = float | int | str
"""A schedule parameter's value (bools are ints: ``three_phase``)."""

SpaceEntry: TypeAlias = tuple[Any, ...]
"""A search range: ``("float", low: float, high: float, log: bool)``,
``("int", low: int, high: int)`` or ``("categorical", (choice, ...))``."""


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule: its closed form, every parameter's default, and its search space.

    ``fn(step, total_steps, **params) -> float`` is the LR factor (LR / peak ``lr``) for
    resolved ``params``. ``defaults`` lists every parameter in order. ``space`` gives the
    search range of each parameter a study may search (a subset of ``defaults``).
    """

    name: str
    fn: Callable[..., float]
    defaults: dict[str, ParamValue]
    space: dict[str, SpaceEntry]


# --------------------------------------------------------------------------- helpers


def _frac_steps(frac: float, total_steps: int) -> int:
    """A duration given as a fraction of ``total_steps``, in steps (at least 1)."""
    return max(1, round(frac * total_steps))


def _warmup_steps(warmup_frac: float, total_steps: int, cap: int) -> int:
    """Warmup length: 0 when ``warmup_frac == 0``, else ``max(1, round(frac * T))``, capped."""
    if warmup_frac == 0:
        return 0
    return max(0, min(_frac_steps(warmup_frac, total_steps), cap))


def _cos_anneal(frac_done: float) -> float:
    """``(1 + cos(pi * p)) / 2``: 1 at ``p = 0``, 0 at ``p = 1``."""
    return (1.0 + math.cos(math.pi * frac_done)) / 2.0


# --------------------------------------------------------------------------- closed forms


def _constant(step: int, total_steps: int) -> float:
    """``lr`` at every step."""
    return 1.0


def _step(step: int, total_steps: int, *, step_frac: float, gamma: float) -> float:
    """``lr * gamma ** floor(min(step, T) / step_size)``.

    ``step_size = max(1, round(step_frac * T))``.
    Equals ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` on steps ``0 .. T-1``.
    """
    size = _frac_steps(step_frac, total_steps)
    return float(gamma ** (min(step, total_steps) // size))


def _exponential(step: int, total_steps: int, *, final_factor: float) -> float:
    """``lr * gamma ** min(step, T)`` with ``gamma = final_factor ** (1 / T)``.

    Reaches ``lr * final_factor`` at step ``T``. Equals ``ExponentialLR(gamma)``.
    """
    gamma = final_factor ** (1.0 / total_steps)
    return float(gamma ** min(step, total_steps))


def _poly(step: int, total_steps: int, *, power: float, final_factor: float) -> float:
    """``(lr - lr_end) * (1 - min(step, T) / T) ** power + lr_end``, ``lr_end = lr*final_factor``.

    With ``final_factor = 0`` equals ``PolynomialLR(total_iters=T, power)``.
    """
    s = min(step, total_steps)
    return float((1.0 - final_factor) * (1.0 - s / total_steps) ** power + final_factor)


def _cosine(step: int, total_steps: int, *, final_factor: float) -> float:
    """``eta_min + (lr - eta_min) * (1 + cos(pi * min(step, T) / T)) / 2``.

    ``eta_min = lr * final_factor``.
    Equals ``CosineAnnealingLR(T_max=T, eta_min)``.
    """
    s = min(step, total_steps)
    return final_factor + (1.0 - final_factor) * _cos_anneal(s / total_steps)


def _warmup_cosine(
    step: int, total_steps: int, *, warmup_frac: float, final_factor: float
) -> float:
    """Linear warmup for ``W`` steps, then cosine from ``lr`` to ``eta_min`` at step ``T``.

    ``W = max(1, round(warmup_frac * T))`` capped at ``T - 1`` (``W = 0``: no warmup when
    ``warmup_frac == 0``); ``eta_min = lr * final_factor``.

    - ``step < W``:  ``lr * (step + 1) / (W + 1)`` (starts above 0, never 0);
    - ``step >= W``: ``eta_min + (lr - eta_min) * (1 + cos(pi * p)) / 2`` with
      ``p = (min(step, T) - W) / (T - W)``, which is ``lr`` at step ``W``.
    """
    w = _warmup_steps(warmup_frac, total_steps, total_steps - 1)
    if step < w:
        return (step + 1) / (w + 1)
    s = min(step, total_steps)
    return final_factor + (1.0 - final_factor) * _cos_anneal((s - w) / (total_steps - w))


def _onecycle(
    step: int,
    total_steps: int,
    *,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
    anneal: str,
    three_phase: bool,
) -> float:
    """torch's ``OneCycleLR(max_lr=lr, total_steps=T, ...)``, phase for phase.

    ``initial = lr / div_factor``, ``min = initial / final_div_factor``. Phases end at
    (float) steps ``e1 = pct_start*T - 1`` and ``T - 1`` (two phases: initial -> lr -> min),
    or ``e1``, ``e2 = 2*pct_start*T - 2`` and ``T - 1`` (three phases:
    initial -> lr -> initial -> min). In the phase ``(start, end]`` holding ``step``
    (the first phase starts at 0), ``p = (step - start) / (end - start)`` and the LR is
    ``b + (a - b) * (1 + cos(pi * p)) / 2`` (``anneal='cos'``) or ``a + (b - a) * p``
    (``'linear'``) from ``a`` to ``b``. The LR is ``lr`` exactly at step ``e1`` when
    ``pct_start * T`` is an integer; otherwise the peak lies between two steps and the
    largest LR used is slightly below ``lr`` (as in torch). Steps ``>= T`` are clamped to
    ``T - 1`` (``lr / div_factor / final_div_factor``).
    """
    initial = 1.0 / div_factor
    final = initial / final_div_factor
    t = total_steps
    phases: list[tuple[float, float, float]]
    if three_phase:
        phases = [
            (float(pct_start * t) - 1, initial, 1.0),
            (float(2 * pct_start * t) - 2, 1.0, initial),
            (t - 1, initial, final),
        ]
    else:
        phases = [(float(pct_start * t) - 1, initial, 1.0), (t - 1, 1.0, final)]
    s = min(step, t - 1)
    start = 0.0
    for i, (end, a, b) in enumerate(phases):
        if s <= end or i == len(phases) - 1:
            span = end - start
            # torch divides by zero here (pct_start * T == 1): the phase is a single point.
            p = (s - start) / span if span != 0 else 1.0
            if anneal == "cos":
                return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1)
            return (b - a) * p + a
        start = end
    raise AssertionError("unreachable")  # pragma: no cover


def _cyclic(
    step: int,
    total_steps: int,
    *,
    mode: str,
    base_factor: float,
    cycle_frac: float,
    gamma: float,
) -> float:
    """torch's ``CyclicLR(base_lr=lr*base_factor, max_lr=lr, step_size_up, mode, gamma)``.

    ``step_size_up = max(1, round(cycle_frac * T / 2))`` (half a cycle; the cycle is
    symmetric). ``cycle = floor(1 + step / (2 * up))``, ``x = 1 + step / (2 * up) - cycle``,
    ``h = 2x`` if ``x <= 1/2`` else ``2 - 2x`` (the triangle, 0 -> 1 -> 0), and
    ``LR = base_lr + (lr - base_lr) * h * scale`` with ``scale = 1`` (``triangular``),
    ``1 / 2 ** (cycle - 1)`` (``triangular2``) or ``gamma ** step`` (``exp_range``; ``gamma``
    is per step and ignored by the other modes). The peak ``lr`` is reached at step ``up``
    (``triangular``, ``triangular2``); ``exp_range`` peaks below ``lr`` once ``gamma < 1``.
    Continues cycling past ``T``.
    """
    up = float(max(1, round(cycle_frac * total_steps / 2)))
    size = up + up
    ratio = up / size
    cycle = math.floor(1 + step / size)
    x = 1.0 + step / size - cycle
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:
        scale = float(gamma**step)
    return base_factor + (1.0 - base_factor) * height * scale


def _sgdr(
    step: int, total_steps: int, *, cycle_frac: float, t_mult: int, final_factor: float
) -> float:
    """torch's ``CosineAnnealingWarmRestarts(T_0, T_mult=t_mult, eta_min=lr*final_factor)``.

    ``T_0 = max(1, round(cycle_frac * T))``; cycle ``i`` lasts ``T_i = T_0 * t_mult ** i``
    steps. With ``t_cur`` the step within its cycle:
    ``eta_min + (lr - eta_min) * (1 + cos(pi * t_cur / T_i)) / 2``. Restarts at ``lr``
    and continues cycling past ``T``.
    """
    t_i = _frac_steps(cycle_frac, total_steps)
    if t_mult == 1:
        t_cur = step % t_i
    else:
        t_cur = step
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
    return final_factor + (1.0 - final_factor) * _cos_anneal(t_cur / t_i)


def _wsd(
    step: int,
    total_steps: int,
    *,
    warmup_frac: float,
    decay_frac: float,
    decay: str,
    final_factor: float,
) -> float:
    """Warmup-stable-decay: linear warmup, ``lr`` held, then decay to ``lr * final_factor``.

    ``D = min(T, max(1, round(decay_frac * T)))`` decay steps starting at ``S = T - D``;
    ``W = max(1, round(warmup_frac * T))`` capped at ``S`` (0 when ``warmup_frac == 0``).

    - ``step < W``:      ``lr * (step + 1) / (W + 1)``;
    - ``W <= step < S``: ``lr``;
    - ``step >= S``:     with ``p = (min(step, T) - S) / D`` (0 -> 1 at step ``T``),
      ``lr_end + (lr - lr_end) * g(p)``, ``g = 1 - p`` (``linear``),
      ``(1 + cos(pi * p)) / 2`` (``cosine``) or ``1 - sqrt(p)`` (``sqrt``).
    """
    d = min(total_steps, _frac_steps(decay_frac, total_steps))
    decay_start = total_steps - d
    w = _warmup_steps(warmup_frac, total_steps, decay_start)
    if step < w:
        return (step + 1) / (w + 1)
    if step < decay_start:
        return 1.0
    p = (min(step, total_steps) - decay_start) / d
    if decay == "linear":
        g = 1.0 - p
    elif decay == "cosine":
        g = _cos_anneal(p)
    else:
        g = 1.0 - math.sqrt(p)
    return final_factor + (1.0 - final_factor) * g


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Check:
    """How one parameter is validated: its kind and its allowed range or choices."""

    kind: str  # "float" | "int" | "bool" | "choice"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """``in (0, 1]``, ``>= 1``..."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "a number"  # pragma: no cover

    def contains(self, value: float) -> bool:
        """Whether ``value`` is in range (NaN never is)."""
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _unit(low_open: bool = False, high_open: bool = False) -> _Check:
    return _Check("float", 0.0, 1.0, low_open, high_open)


_FRAC = _unit(low_open=True)  # (0, 1]
_FACTOR = _unit()  # [0, 1]
_WARMUP = _unit(high_open=True)  # [0, 1)
_AT_LEAST_ONE = _Check("float", 1.0)

_CHECKS: dict[str, dict[str, _Check]] = {
    "constant": {},
    "step": {"step_frac": _FRAC, "gamma": _FRAC},
    "exponential": {"final_factor": _FRAC},
    "poly": {"power": _Check("float", 0.0, low_open=True), "final_factor": _FACTOR},
    "cosine": {"final_factor": _FACTOR},
    "warmup_cosine": {"warmup_frac": _WARMUP, "final_factor": _FACTOR},
    "onecycle": {
        "pct_start": _unit(low_open=True, high_open=True),
        "div_factor": _AT_LEAST_ONE,
        "final_div_factor": _AT_LEAST_ONE,
        "anneal": _Check("choice", choices=("cos", "linear")),
        "three_phase": _Check("bool"),
    },
    "cyclic": {
        "mode": _Check("choice", choices=("triangular", "triangular2", "exp_range")),
        "base_factor": _FACTOR,
        "cycle_frac": _FRAC,
        "gamma": _FRAC,
    },
    "sgdr": {"cycle_frac": _FRAC, "t_mult": _Check("int", 1.0), "final_factor": _FACTOR},
    "wsd": {
        "warmup_frac": _WARMUP,
        "decay_frac": _FRAC,
        "decay": _Check("choice", choices=("linear", "cosine", "sqrt")),
        "final_factor": _FACTOR,
    },
}

SCHEDULES: dict[str, ScheduleInfo] = {
    "constant": ScheduleInfo("constant", _constant, {}, {}),
    "step": ScheduleInfo(
        "step",
        _step,
        {"step_frac": 0.33, "gamma": 0.1},
        {"step_frac": ("float", 0.2, 0.5, False), "gamma": ("float", 0.1, 0.5, False)},
    ),
    "exponential": ScheduleInfo(
        "exponential",
        _exponential,
        {"final_factor": 0.01},
        {"final_factor": ("float", 0.001, 0.1, True)},
    ),
    "poly": ScheduleInfo(
        "poly",
        _poly,
        {"power": 1.0, "final_factor": 0.0},
        {"power": ("float", 0.5, 3.0, False)},
    ),
    "cosine": ScheduleInfo("cosine", _cosine, {"final_factor": 0.0}, {}),
    "warmup_cosine": ScheduleInfo(
        "warmup_cosine",
        _warmup_cosine,
        {"warmup_frac": 0.05, "final_factor": 0.0},
        {"warmup_frac": ("float", 0.0, 0.2, False)},
    ),
    "onecycle": ScheduleInfo(
        "onecycle",
        _onecycle,
        {
            "pct_start": 0.3,
            "div_factor": 25.0,
            "final_div_factor": 1e4,
            "anneal": "cos",
            "three_phase": False,
        },
        {
            "pct_start": ("float", 0.1, 0.5, False),
            "div_factor": ("float", 5.0, 100.0, True),
            "anneal": ("categorical", ("cos", "linear")),
        },
    ),
    "cyclic": ScheduleInfo(
        "cyclic",
        _cyclic,
        {"mode": "triangular", "base_factor": 0.1, "cycle_frac": 0.25, "gamma": 0.999},
        {
            "mode": ("categorical", ("triangular", "triangular2", "exp_range")),
            "base_factor": ("float", 0.01, 0.5, True),
            "cycle_frac": ("float", 0.1, 0.5, False),
        },
    ),
    "sgdr": ScheduleInfo(
        "sgdr",
        _sgdr,
        {"cycle_frac": 0.25, "t_mult": 1, "final_factor": 0.0},
        {"cycle_frac": ("float", 0.1, 0.5, False), "t_mult": ("int", 1, 2)},
    ),
    "wsd": ScheduleInfo(
        "wsd",
        _wsd,
        {"warmup_frac": 0.05, "decay_frac": 0.2, "decay": "linear", "final_factor": 0.0},
        {
            "warmup_frac": ("float", 0.0, 0.2, False),
            "decay_frac": ("float", 0.1, 0.5, False),
            "decay": ("categorical", ("linear", "cosine", "sqrt")),
        },
    ),
}

SCHEDULE_NAMES: tuple[str, ...] = tuple(SCHEDULES)


# --------------------------------------------------------------------------- validation


def _fmt(value: object) -> str:
    """A value as it appears after ``got`` in messages."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return repr(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_total_steps(total_steps: object) -> int:
    if not _is_int(total_steps) or int(total_steps) < 1:  # type: ignore[call-overload]
        raise ValueError(f"total_steps must be an int >= 1, got {_fmt(total_steps)}")
    return int(total_steps)  # type: ignore[call-overload]


def _check_value(schedule: str, pname: str, check: _Check, value: object) -> ParamValue:
    where = f"schedule {schedule!r}: {pname}"
    if check.kind == "choice":
        if not isinstance(value, str) or value not in check.choices:
            raise ValueError(
                f"{where} must be one of {', '.join(check.choices)}, got {_fmt(value)}"
            )
        return value
    if check.kind == "bool":
        if isinstance(value, bool):
            return value
        if _is_int(value) and int(value) in (0, 1):  # type: ignore[call-overload]
            return bool(value)
        raise ValueError(f"{where} must be a bool (or 0/1), got {_fmt(value)}")
    if check.kind == "int":
        if not _is_int(value) or not check.contains(int(value)):  # type: ignore[call-overload]
            raise ValueError(f"{where} must be an int {check.describe()}, got {_fmt(value)}")
        return int(value)  # type: ignore[call-overload]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where} must be a number, got {_fmt(value)}")
    number = float(value)
    if math.isinf(number) and check.high is None:
        raise ValueError(f"{where} must be a finite number {check.describe()}, got {_fmt(value)}")
    if not check.contains(number):  # NaN is never contained
        raise ValueError(f"{where} must be {check.describe()}, got {_fmt(value)}")
    return number


def _check_name(name: object) -> ScheduleInfo:
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULE_NAMES)}")
    return SCHEDULES[name]


def param_kind(name: str, param: str) -> str:
    """The type of schedule ``name``'s parameter ``param``: ``float``, ``int``, ``bool`` or
    ``choice`` (``KeyError`` for an unknown schedule or parameter)."""
    return _CHECKS[name][param].kind


def resolve_params(name: str, total_steps: int, **params: Any) -> dict[str, ParamValue]:
    """Validate ``name``, ``total_steps`` and ``params``; return every parameter, defaults filled.

    Values are normalised (floats as ``float``, ``t_mult`` as ``int``, ``three_phase`` as
    ``bool``) and returned in the order of ``SCHEDULES[name].defaults``. Raises
    ``ValueError`` with a one-line message for an unknown schedule or parameter, a value of
    the wrong type or out of range, a bad ``total_steps``, or a ``wsd`` whose
    ``warmup_frac + decay_frac`` exceeds 1.
    """
    info = _check_name(name)
    _check_total_steps(total_steps)
    checks = _CHECKS[name]
    for pname in sorted(params):
        if pname not in checks:
            expected = ", ".join(sorted(checks)) or "no parameters"
            raise ValueError(f"schedule {name!r}: unknown parameter {pname!r}: expected {expected}")
    resolved: dict[str, ParamValue] = {}
    for pname, default in info.defaults.items():
        value = params.get(pname, default)
        resolved[pname] = _check_value(name, pname, checks[pname], value)
    if name == "onecycle" and resolved["three_phase"] and float(resolved["pct_start"]) > 0.5:
        raise ValueError(
            f"schedule 'onecycle': pct_start must be <= 0.5 when three_phase is true, "
            f"got {_fmt(resolved['pct_start'])}"
        )
    if name == "wsd":
        warmup, decay = float(resolved["warmup_frac"]), float(resolved["decay_frac"])
        if warmup + decay > 1.0 + 1e-12:
            raise ValueError(
                f"schedule 'wsd': warmup_frac + decay_frac must be <= 1, "
                f"got {_fmt(warmup)} + {_fmt(decay)}"
            )
    return resolved


def _check_step(step: object) -> int:
    if not _is_int(step) or int(step) < 0:  # type: ignore[call-overload]
        raise ValueError(f"step must be an int >= 0, got {_fmt(step)}")
    return int(step)  # type: ignore[call-overload]


def _check_lr(lr: object) -> float:
    if (
        isinstance(lr, bool)
        or not isinstance(lr, numbers.Real)
        or not math.isfinite(float(lr))
        or float(lr) <= 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {_fmt(lr)}")
    return float(lr)


# --------------------------------------------------------------------------- public API


def lr_factor(name: str, step: int, total_steps: int, **params: Any) -> float:
    """The LR of schedule ``name`` at ``step`` divided by the peak ``lr``.

    This is what :class:`~torch.optim.lr_scheduler.LambdaLR` multiplies each param
    group's initial LR by. Validates everything (see :func:`resolve_params`).
    """
    resolved = resolve_params(name, total_steps, **params)
    return SCHEDULES[name].fn(_check_step(step), int(total_steps), **resolved)


def schedule_lr(name: str, step: int, total_steps: int, lr: float, **params: Any) -> float:
    """The LR of schedule ``name`` with peak ``lr`` at optimizer step ``step`` (from 0).

    ``lr * lr_factor(name, step, total_steps, **params)``. Pure: depends on nothing but its
    arguments. See the module docstring for steps ``>= total_steps``.
    """
    peak = _check_lr(lr)
    return peak * lr_factor(name, step, total_steps, **params)


def schedule_curve(name: str, total_steps: int, lr: float, **params: Any) -> list[float]:
    """The LR at every step ``0 .. total_steps - 1`` (for plots); validates once."""
    peak = _check_lr(lr)
    resolved = resolve_params(name, total_steps, **params)
    fn = SCHEDULES[name].fn
    return [peak * fn(step, total_steps, **resolved) for step in range(total_steps)]


class _Factor:
    """The picklable LR-factor callable of :func:`build_scheduler`.

    A plain class (not a closure) so ``LambdaLR.state_dict()`` saves its attributes: the
    schedule's name, ``total_steps`` and resolved params.
    """

    def __init__(self, name: str, total_steps: int, params: Mapping[str, ParamValue]) -> None:
        self.name = name
        self.total_steps = total_steps
        self.params = dict(params)

    def __call__(self, step: int) -> float:
        return SCHEDULES[self.name].fn(step, self.total_steps, **self.params)

    def __repr__(self) -> str:
        return f"_Factor({self.name!r}, {self.total_steps}, {self.params!r})"


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, **params: Any
) -> LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following schedule ``name``.

    Its lambda is :func:`lr_factor` (params resolved and validated once, up front), so each
    param group's LR is its own initial LR (its peak) times the factor: after ``k`` calls
    of ``scheduler.step()`` group ``g`` has ``schedule_lr(name, k, total_steps, lr_g)``,
    and several groups keep their LR ratios. Call ``scheduler.step()`` once per optimizer
    step.
    """
    resolved = resolve_params(name, total_steps, **params)
    return LambdaLR(optimizer, lr_lambda=_Factor(name, int(total_steps), resolved))
