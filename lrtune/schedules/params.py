"""Every schedule's parameters in one table, and their validation (:func:`resolve_params`).

:data:`SCHEDULES` maps each schedule name to a :class:`ScheduleInfo`: its closed form (from
:mod:`lrtune.schedules.forms`) and one :class:`Param` per parameter, holding

- the default (what a run uses when nothing is given);
- the check: the kind (``float``, ``int``, ``bool``, ``choice``) and the allowed range or
  choices, which :func:`resolve_params` enforces with a one-line ``ValueError``;
- the search range (``Param.search``): what a study searches when its spec asks for
  ``[params.<schedule>] <param> = true``; ``None`` when lrtune has no default range.

A rule over several parameters (``onecycle``'s three phases, ``wsd``'s warmup + decay)
is the schedule's ``rule``. Torch-free.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from lrtune.schedules.forms import FORMS, Form

__all__ = [
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "Param",
    "ParamValue",
    "ScheduleInfo",
    "SpaceEntry",
    "param_kind",
    "resolve_params",
]

ParamValue: TypeAlias = float | int | str
"""A schedule parameter's value (bools are ints: ``three_phase``)."""

SpaceEntry: TypeAlias = tuple[Any, ...]
"""A search range: ``("float", low: float, high: float, log: bool)``,
``("int", low: int, high: int)`` or ``("categorical", (choice, ...))``."""


def fmt_value(value: object) -> str:
    """A value as it appears after ``got`` in messages (``0``, ``1.5``, ``'cos'``, ``True``)."""
    if _is_int(value):
        return repr(int(value))  # type: ignore[call-overload]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class Param:
    """One schedule parameter: its default, the values it accepts, and its search range.

    ``kind`` is ``float``, ``int``, ``bool`` or ``choice``. Numbers must lie in
    ``low .. high`` (an end is excluded when ``low_open`` / ``high_open``; ``None``: no
    bound); a ``choice`` must be one of ``choices``. ``search`` is the default search range
    (a :data:`SpaceEntry`) or ``None``.
    """

    default: ParamValue
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    search: SpaceEntry | None = None

    def describe(self) -> str:
        """The allowed range as text: ``in (0, 1]``, ``>= 1``..."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "a number"  # pragma: no cover

    def contains(self, value: float) -> bool:
        """Whether the number ``value`` is in range (NaN never is)."""
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, where: str, value: object) -> ParamValue:
        """``value`` normalised (``float``, ``int``, ``bool``, ``str``), or ``ValueError``.

        ``where`` starts the message: ``schedule 'step': gamma``.
        """
        got = fmt_value(value)
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(self.choices)}, got {got}")
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if _is_int(value) and int(value) in (0, 1):  # type: ignore[call-overload]
                return bool(value)
            raise ValueError(f"{where} must be a bool (or 0/1), got {got}")
        if self.kind == "int":
            if not _is_int(value) or not self.contains(int(value)):  # type: ignore[call-overload]
                raise ValueError(f"{where} must be an int {self.describe()}, got {got}")
            return int(value)  # type: ignore[call-overload]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where} must be a number, got {got}")
        number = float(value)
        if math.isinf(number) and self.high is None:
            raise ValueError(f"{where} must be a finite number {self.describe()}, got {got}")
        if not self.contains(number):  # NaN is never contained
            raise ValueError(f"{where} must be {self.describe()}, got {got}")
        return number


Rule: TypeAlias = Callable[[Mapping[str, ParamValue]], str | None]
"""A check over several resolved parameters: the problem as text, or ``None``."""


@dataclass(frozen=True, kw_only=True)
class ScheduleInfo:
    """One schedule: its closed form and its parameter table.

    ``fn(step, total_steps, **params) -> float`` is the LR factor (LR / peak ``lr``) for
    resolved ``params``. ``params`` lists every parameter, in order; ``rule`` checks
    combinations of them.
    """

    name: str
    fn: Form
    params: Mapping[str, Param] = field(default_factory=dict)
    rule: Rule | None = None

    @property
    def defaults(self) -> dict[str, ParamValue]:
        """Every parameter's default, in order."""
        return {pname: p.default for pname, p in self.params.items()}

    @property
    def space(self) -> dict[str, SpaceEntry]:
        """The default search range of each parameter that has one (a subset of ``defaults``)."""
        return {pname: p.search for pname, p in self.params.items() if p.search is not None}


# --------------------------------------------------------------------------- the table


def _lin(low: float, high: float) -> SpaceEntry:
    return ("float", low, high, False)


def _log(low: float, high: float) -> SpaceEntry:
    return ("float", low, high, True)


def _frac(default: float, search: SpaceEntry | None = None) -> Param:
    """A fraction of the run in ``(0, 1]``."""
    return Param(default=default, kind="float", low=0.0, high=1.0, low_open=True, search=search)


def _factor(default: float, search: SpaceEntry | None = None) -> Param:
    """A factor of the peak LR in ``[0, 1]``."""
    return Param(default=default, kind="float", low=0.0, high=1.0, search=search)


def _warmup(default: float, search: SpaceEntry | None = None) -> Param:
    """A warmup fraction in ``[0, 1)`` (0: no warmup)."""
    return Param(default=default, kind="float", low=0.0, high=1.0, high_open=True, search=search)


def _at_least_one(default: float, search: SpaceEntry | None = None) -> Param:
    return Param(default=default, kind="float", low=1.0, search=search)


def _choice(default: str, *choices: str, searched: bool = True) -> Param:
    search = ("categorical", choices) if searched else None
    return Param(default=default, kind="choice", choices=choices, search=search)


def _onecycle_rule(p: Mapping[str, ParamValue]) -> str | None:
    if p["three_phase"] and float(p["pct_start"]) > 0.5:
        return f"pct_start must be <= 0.5 when three_phase is true, got {fmt_value(p['pct_start'])}"
    return None


def _wsd_rule(p: Mapping[str, ParamValue]) -> str | None:
    warmup, decay = float(p["warmup_frac"]), float(p["decay_frac"])
    if warmup + decay > 1.0 + 1e-12:
        return (
            f"warmup_frac + decay_frac must be <= 1, got {fmt_value(warmup)} + {fmt_value(decay)}"
        )
    return None


def _schedule(name: str, rule: Rule | None = None, **params: Param) -> ScheduleInfo:
    return ScheduleInfo(name=name, fn=FORMS[name], params=params, rule=rule)


SCHEDULES: dict[str, ScheduleInfo] = {
    info.name: info
    for info in (
        _schedule("constant", warmup_frac=_warmup(0.0, _lin(0.0, 0.2))),
        _schedule(
            "step",
            step_frac=_frac(0.33, _lin(0.2, 0.5)),
            gamma=_frac(0.1, _lin(0.1, 0.5)),
        ),
        _schedule("exponential", final_factor=_frac(0.01, _log(0.001, 0.1))),
        _schedule(
            "poly",
            power=Param(default=1.0, kind="float", low=0.0, low_open=True, search=_lin(0.5, 3.0)),
            final_factor=_factor(0.0),
        ),
        _schedule("cosine", final_factor=_factor(0.0)),
        _schedule(
            "warmup_cosine",
            warmup_frac=_warmup(0.05, _lin(0.0, 0.2)),
            final_factor=_factor(0.0),
        ),
        _schedule(
            "onecycle",
            _onecycle_rule,
            pct_start=Param(
                default=0.3,
                kind="float",
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=True,
                search=_lin(0.1, 0.5),
            ),
            div_factor=_at_least_one(25.0, _log(5.0, 100.0)),
            final_div_factor=_at_least_one(1e4),
            anneal=_choice("cos", "cos", "linear"),
            three_phase=Param(default=False, kind="bool"),
        ),
        _schedule(
            "cyclic",
            mode=_choice("triangular", "triangular", "triangular2", "exp_range"),
            base_factor=_factor(0.1, _log(0.01, 0.5)),
            cycle_frac=_frac(0.25, _lin(0.1, 0.5)),
            gamma=_frac(0.999),
        ),
        _schedule(
            "sgdr",
            cycle_frac=_frac(0.25, _lin(0.1, 0.5)),
            t_mult=Param(default=1, kind="int", low=1.0, search=("int", 1, 2)),
            final_factor=_factor(0.0),
        ),
        _schedule(
            "wsd",
            _wsd_rule,
            warmup_frac=_warmup(0.05, _lin(0.0, 0.2)),
            decay_frac=_frac(0.2, _lin(0.1, 0.5)),
            decay=_choice("linear", "linear", "cosine", "sqrt"),
            final_factor=_factor(0.0),
        ),
    )
}
"""Every schedule by name, in a fixed order (the order of :data:`SCHEDULE_NAMES`)."""

SCHEDULE_NAMES: tuple[str, ...] = tuple(SCHEDULES)


# --------------------------------------------------------------------------- validation


def check_total_steps(total_steps: object) -> int:
    """``total_steps`` as an ``int >= 1``, or ``ValueError``."""
    if not _is_int(total_steps) or int(total_steps) < 1:  # type: ignore[call-overload]
        raise ValueError(f"total_steps must be an int >= 1, got {fmt_value(total_steps)}")
    return int(total_steps)  # type: ignore[call-overload]


def schedule_info(name: object) -> ScheduleInfo:
    """The table entry of schedule ``name``, or ``ValueError`` naming the known ones."""
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULE_NAMES)}")
    return SCHEDULES[name]


def param_kind(name: str, param: str) -> str:
    """The type of schedule ``name``'s parameter ``param``: ``float``, ``int``, ``bool`` or
    ``choice`` (``KeyError`` for an unknown schedule or parameter)."""
    return SCHEDULES[name].params[param].kind


def resolve_params(name: str, total_steps: int, **params: Any) -> dict[str, ParamValue]:
    """Validate ``name``, ``total_steps`` and ``params``; return every parameter, defaults filled.

    Values are normalised (floats as ``float``, ``t_mult`` as ``int``, ``three_phase`` as
    ``bool``) and returned in the table's order (that of ``SCHEDULES[name].defaults``).
    Raises ``ValueError`` with a one-line message for an unknown schedule or parameter, a
    value of the wrong type or out of range, a bad ``total_steps``, or a combination the
    schedule's rule refuses (``wsd``'s ``warmup_frac + decay_frac`` above 1...).
    """
    info = schedule_info(name)
    check_total_steps(total_steps)
    table = info.params
    for pname in sorted(params):
        if pname not in table:
            expected = ", ".join(sorted(table)) or "no parameters"
            raise ValueError(f"schedule {name!r}: unknown parameter {pname!r}: expected {expected}")
    resolved: dict[str, ParamValue] = {
        pname: p.check(f"schedule {name!r}: {pname}", params.get(pname, p.default))
        for pname, p in table.items()
    }
    problem = info.rule(resolved) if info.rule is not None else None
    if problem is not None:
        raise ValueError(f"schedule {name!r}: {problem}")
    return resolved
