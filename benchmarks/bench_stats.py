"""Statistics and formatting shared by the search benchmarks: medians with IQRs that keep
censored (never reached) and diverged (``inf``) repeats, percentages, strict-JSON floats."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any


def log(msg: str) -> None:
    """Progress on stderr (stdout is the result)."""
    print(msg, file=sys.stderr, flush=True)


def per_task(option: str, task: str) -> int:
    """``36`` or ``36,charlm=21,finetune=21``: the value for ``task``."""
    default, special = None, {}
    for part in option.split(","):
        name, sep, value = part.rpartition("=")
        if sep:
            special[name] = int(value)
        else:
            default = int(value)
    return special.get(task, default if default is not None else 36)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile that keeps ``inf`` (censored or diverged) as ``inf``."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(v[lo]) or math.isinf(v[hi]):
        return v[hi]
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def med_iqr(values: list[float], fmt: Callable[[float], str], floor: float | None = None) -> str:
    """``median [q1–q3]``. ``inf`` is censored (never reached: counted as ``floor``) or,
    without a floor, diverged; a quantile that leans on one is a lower bound, shown ≥."""
    if not values:
        return "-"
    v = sorted(values)

    def at(q: float) -> str:
        pos = q * (len(v) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        if not math.isinf(v[hi]):
            return fmt(v[lo] + (v[hi] - v[lo]) * (pos - lo))
        if math.isinf(v[lo]) and floor is None:
            return "diverged"
        low = floor if math.isinf(v[lo]) else v[lo]
        top = floor if floor is not None else v[lo]
        return "≥" + fmt(low + (top - low) * (pos - lo))  # type: ignore[operator]

    return f"{at(0.5)} [{at(0.25)}–{at(0.75)}]"


def pct(x: float) -> str:
    if math.isinf(x):
        return "diverged"
    return f"{100 * x:.1f}%" if abs(x) < 10 else f"{x:.3g}×"


def num(x: float) -> str:
    return f"{x:.3g}"


def finite(obj: Any) -> Any:
    """JSON-safe: a censored or diverged ``inf`` becomes the string "inf" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj if isinstance(obj, (int, float, str, bool, type(None))) else str(obj)


def unfinite(obj: Any) -> Any:
    """The inverse of :func:`finite`: "inf", "-inf" and "nan" strings become floats."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: unfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unfinite(v) for v in obj]
    return obj
