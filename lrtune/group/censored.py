"""Statistics over repeats where some values are censored: a repeat that never reached the
target counts at a lower bound of its true value (:mod:`lrtune.group.compare`). Pure Python."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Bound:
    """A statistic over repeats; ``at_least`` when it rests on a censored repeat, so the
    true value is at least ``value``."""

    value: float
    at_least: bool = False

    def text(self, spec: str = ".4g") -> str:
        """``value`` formatted, with ``≥`` in front of a lower bound."""
        return ("≥" if self.at_least else "") + format(self.value, spec)


@dataclass(frozen=True, kw_only=True)
class Stat:
    """Median and quartiles (inclusive method) of ``n`` values, ``censored`` of them
    counted at their lower bound."""

    median: Bound
    q1: Bound
    q3: Bound
    n: int
    censored: int = 0

    def text(self, spec: str = ".4g") -> str:
        """``median [q1-q3]``, or the one value when ``n`` is 1."""
        if self.n == 1:
            return self.median.text(spec)
        return f"{self.median.text(spec)} [{self.q1.text('.3g')}-{self.q3.text('.3g')}]"


def summarize(values: list[tuple[float, bool]]) -> Stat | None:
    """Median and IQR of ``(value, censored)`` pairs; ``None`` for no values.

    A censored value is a lower bound. Raising any value never lowers an order statistic,
    so every quantile here is a lower bound of the true one; it is exact when no censored
    value sorts at or before the order statistics it interpolates, else marked ``≥``.
    """
    if not values:
        return None
    data = sorted(values, key=lambda v: (v[0], v[1]))  # ties: the exact value first

    def quantile(p: float) -> Bound:
        h = (len(data) - 1) * p
        lo, hi = math.floor(h), math.ceil(h)
        value = data[lo][0] + (h - lo) * (data[hi][0] - data[lo][0])
        return Bound(value=value, at_least=any(c for _, c in data[: hi + 1]))

    return Stat(
        median=quantile(0.5),
        q1=quantile(0.25),
        q3=quantile(0.75),
        n=len(data),
        censored=sum(c for _, c in data),
    )
