"""The ``[params]`` tables of a study spec: the searched ranges, checked and normalised to
the form stored on studies (``["float", low, high, log]``, ``["int", low, high]``,
``["categorical", [choices]]``).

``[params.<schedule>]`` and ``[params.optimizer]`` search the schedules' and the optimizer's
parameters; ``[params.lr_mult]`` the parameter groups' multipliers, ``[params] batch_size``
the effective batch size (powers of two) and ``[params.task]`` the task's own parameters
(:mod:`lrtune.search.dims`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lrtune.errors import UserError
from lrtune.schedules import SCHEDULE_NAMES, SCHEDULES, param_kind, resolve_params
from lrtune.training.optimizers import SEARCH_SPACE


def check_params(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a table of [params.<schedule>] tables")
    out: dict[str, dict[str, Any]] = {}
    for sched, table in value.items():
        if sched in SETUP_TABLES and sched != "optimizer":
            out[sched] = check_setup_table(sched, table, f"{where}.{sched}")
            continue
        if sched == "optimizer" and isinstance(table, Mapping):
            out[sched] = {}
            for pname, rng in table.items():
                if pname not in SEARCH_SPACE:
                    raise UserError(
                        f"{where}.optimizer.{pname}: not searchable: searchable are "
                        f"{', '.join(SEARCH_SPACE)} (fix betas under [optimizer])"
                    )
                checked = check_range(
                    rng, SEARCH_SPACE[pname], "float", f"{where}.optimizer.{pname}"
                )
                if checked[0] != "float":
                    raise UserError(f"{where}.optimizer.{pname}: expected [low, high] numbers")
                out[sched][pname] = checked
            continue
        if sched not in SCHEDULES:
            raise UserError(
                f"{where}.{sched}: unknown table: allowed are the schedules "
                f"({', '.join(SCHEDULE_NAMES)}) and {', '.join(SETUP_TABLES)}"
            )
        if not isinstance(table, Mapping):
            raise UserError(f"{where}.{sched}: expected a table of parameter ranges")
        space = SCHEDULES[sched].space
        out[sched] = {}
        for pname, rng in table.items():
            if pname not in SCHEDULES[sched].defaults:
                raise UserError(
                    f"{where}.{sched}.{pname}: unknown parameter: allowed are "
                    f"{', '.join(SCHEDULES[sched].defaults) or 'none'}"
                )
            checked = check_range(
                rng, space.get(pname), param_kind(sched, pname), f"{where}.{sched}.{pname}"
            )
            ends = checked[1] if checked[0] == "categorical" else checked[1:3]
            for v in ends:  # each end of the range must itself be a valid value
                try:
                    resolve_params(sched, 1000, **{pname: v})
                except ValueError as exc:
                    raise UserError(f"{where}.{sched}.{pname}: {exc}") from None
            out[sched][pname] = checked
    return out


def check_resolved(rng: list[Any], where: str) -> list[Any]:
    """A range in the form stored on studies (``["float", low, high, log]``, ``["int", low,
    high]``, ``["categorical", [...]]``), read back from a spec file or a study."""
    kind = rng[0]
    if kind == "categorical" and len(rng) == 2 and isinstance(rng[1], list) and rng[1]:
        return [kind, list(rng[1])]
    numbers = all(_number(v) for v in rng[1:3])
    if kind == "int" and len(rng) == 3 and numbers and rng[1] < rng[2]:
        return [kind, int(rng[1]), int(rng[2])]
    if kind == "float" and len(rng) == 4 and numbers and rng[1] < rng[2]:
        check_ends(rng[1], rng[2], bool(rng[3]), where)
        return [kind, float(rng[1]), float(rng[2]), bool(rng[3])]
    raise UserError(f"{where}: malformed range {rng}")


def check_ends(low: float, high: float, log: bool, where: str) -> None:
    """Both ends finite, and ``low > 0`` on a log scale (Optuna would fail every trial)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{where}: the ends of a range must be finite, got [{low}, {high}]")
    if log and low <= 0:
        raise UserError(f"{where}: a log-scale range needs low > 0, got {low:g}")


def check_range(rng: Any, default: tuple[Any, ...] | None, kind: str, where: str) -> list[Any]:
    # `true` asks for lrtune's default range of that parameter.
    if rng is True:
        if default is None:
            raise UserError(f"{where}: has no default range; give [low, high] or choices")
        return ["categorical", list(default[1])] if default[0] == "categorical" else list(default)
    if not isinstance(rng, list) or not rng:
        raise UserError(f"{where}: expected [low, high], a list of choices, or true")
    if rng[0] in ("float", "int", "categorical"):
        return check_resolved(rng, where)  # the form stored on studies, read back
    if all(isinstance(v, str) for v in rng):
        return ["categorical", list(rng)]
    if len(rng) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng
    ):
        raise UserError(f"{where}: expected [low, high] numbers or a list of strings, got {rng}")
    low, high = rng
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    # The parameter's type decides, not how the ends are written: `[5, 100]` for a float
    # parameter (div_factor) is a float range, not 96 integers.
    if kind != "float" and isinstance(low, int) and isinstance(high, int):
        return ["int", low, high]
    log = default is not None and len(default) > 3 and bool(default[3])
    return ["float", float(low), float(high), log]


#: ``[params]`` keys that are not schedules: lrtune's own dimensions of the user's setup.
SETUP_TABLES: tuple[str, ...] = ("optimizer", "lr_mult", "task", "batch_size")


def check_setup_table(name: str, table: Any, where: str) -> Any:
    """``[params.lr_mult]``, ``[params.task]`` or ``[params] batch_size``, normalised."""
    if name == "batch_size":
        return check_batch_range(table, where)
    if not isinstance(table, Mapping) or not table:
        raise UserError(f"{where}: expected a table of NAME = range")
    check = check_lr_mult_range if name == "lr_mult" else check_task_range
    return {str(k): check(v, f"{where}.{k}") for k, v in table.items()}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_lr_mult_range(rng: Any, where: str) -> list[Any]:
    """A group's multiplier range: ``[low, high]`` positive numbers, searched on a log
    scale (``["float", low, high, true]``)."""
    if isinstance(rng, list) and rng and rng[0] == "float":
        rng = rng[1:3]
    if not (isinstance(rng, list) and len(rng) == 2 and all(_number(v) for v in rng)):
        raise UserError(f"{where}: expected [low, high] positive numbers, got {rng!r}")
    low, high = (float(v) for v in rng)
    if not (math.isfinite(low) and math.isfinite(high) and low > 0 and high > 0):
        raise UserError(f"{where}: lr_mult must be a positive number, got [{low:g}, {high:g}]")
    if not low < high:
        raise UserError(f"{where}: low ({low:g}) must be below high ({high:g})")
    return ["float", low, high, True]


def check_batch_range(rng: Any, where: str) -> list[Any]:
    """The effective batch sizes searched: ``[low, high]`` positive integers, the powers of
    two between them (``["categorical", [32, 64, ...]]``)."""
    if isinstance(rng, list) and len(rng) == 2 and rng[0] == "categorical":
        sizes = rng[1]
        if isinstance(sizes, list) and sizes and all(_power_of_two(v) for v in sizes):
            return ["categorical", [int(v) for v in sizes]]
        raise UserError(f"{where}: malformed range {rng}")
    ints = isinstance(rng, list) and len(rng) == 2 and all(_number(v) for v in rng)
    if not ints or not all(float(v).is_integer() and v > 0 for v in rng):
        raise UserError(
            f"{where}: expected [low, high] positive integers (effective batch sizes), got {rng!r}"
        )
    low, high = int(rng[0]), int(rng[1])
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    sizes = [2**k for k in range(0, 40) if low <= 2**k <= high]
    if len(sizes) < 2:
        raise UserError(
            f"{where}: [{low}, {high}] holds fewer than two powers of two; widen it "
            "(e.g. [32, 512])"
        )
    return ["categorical", sizes]


def _power_of_two(value: Any) -> bool:
    return (
        _number(value)
        and float(value).is_integer()
        and value > 0
        and (int(value) & (int(value) - 1)) == 0
    )


def check_task_range(rng: Any, where: str) -> list[Any]:
    """One of the task's own dimensions: ``[low, high]`` (floats, or ints when both ends
    are), ``{low = .., high = .., log = true}``, or a list of choices (strings, numbers or
    booleans; more than two numbers, or any string, are choices)."""
    if isinstance(rng, Mapping):
        unknown = set(rng) - {"low", "high", "log"}
        if unknown or "low" not in rng or "high" not in rng:
            raise UserError(f"{where}: expected {{low = .., high = .., log = true|false}}")
        log = rng.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"{where}: log must be true or false, got {log!r}")
        out = check_task_range([rng["low"], rng["high"]], where)
        if log and out[1] <= 0:
            raise UserError(f"{where}: a log-scale range needs low > 0, got {out[1]}")
        return [*out[:3], log]
    if isinstance(rng, list) and rng and rng[0] in ("float", "int", "categorical"):
        kind = rng[0]
        if kind == "categorical" and len(rng) == 2 and isinstance(rng[1], list) and rng[1]:
            return ["categorical", list(rng[1])]
        if len(rng) == 4 and all(_number(v) for v in rng[1:3]) and rng[1] < rng[2]:
            check_ends(rng[1], rng[2], bool(rng[3]), where)
            cast = int if kind == "int" else float
            return [kind, cast(rng[1]), cast(rng[2]), bool(rng[3])]
        raise UserError(f"{where}: malformed range {rng}")
    if not isinstance(rng, list) or not rng:
        raise UserError(f"{where}: expected [low, high], a list of choices, or a table")
    if not all(isinstance(v, (str, int, float, bool)) for v in rng):
        raise UserError(f"{where}: choices must be strings, numbers or booleans, got {rng!r}")
    if len(rng) != 2 or not all(_number(v) for v in rng):
        if len(set(map(repr, rng))) != len(rng):
            raise UserError(f"{where}: {rng!r} lists a choice twice")
        return ["categorical", list(rng)]
    low, high = rng
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high}), both finite")
    if isinstance(low, int) and isinstance(high, int):
        return ["int", low, high, False]
    return ["float", float(low), float(high), False]
