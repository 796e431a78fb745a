"""The search-efficiency benchmark's candidate priors (benchmarks/priors.py) on a hand-built
range-test result (no training): which LRs and schedules each kind enqueues, clipping into
the bounds, and bad kinds. Their measured verdict is in docs/benchmarks.md."""

from __future__ import annotations

import math

import pytest

from benchmarks.priors import WARM_STARTS, warm_start_params
from lrtune.rangetest.result import RangeTestResult


def result(valley: float = 0.01, steep: float = 0.003, min10: float = 0.02) -> RangeTestResult:
    return RangeTestResult(
        lr_low=1e-3,
        lr_high=1e-1,
        steep=steep,
        valley=valley,
        min10=min10,
        diverged_at=1.0,
        diagnosis="ok",
        spread_decades=0.1,
        seconds=1.0,
        lrs=[],
        losses=[],
        smoothed=[],
    )


def test_suggestions_pair_each_schedule_with_the_valley_first() -> None:
    got = warm_start_params("suggestions", result(), ["constant", "cosine"], (1e-3, 1e-1), 5)
    assert got == [
        {"lr": 0.01, "schedule": "constant"},
        {"lr": 0.01, "schedule": "cosine"},
        {"lr": 0.003, "schedule": "constant"},  # then steep, then min/10
        {"lr": 0.003, "schedule": "cosine"},
        {"lr": 0.02, "schedule": "constant"},
    ]


def test_suggestions_are_clipped_into_the_bounds_and_deduplicated() -> None:
    # steep 1e-5 and valley 1e-4 both clip to the low bound: one LR, then min/10.
    rt = result(valley=1e-4, steep=1e-5, min10=0.05)
    got = warm_start_params("suggestions", rt, ["wsd"], (1e-3, 1e-1), 3)
    assert [p["lr"] for p in got] == [1e-3, 0.05, 1e-3]


def test_non_finite_suggestions_are_skipped() -> None:
    rt = result(valley=math.nan, steep=math.inf, min10=math.nan)
    assert warm_start_params("suggestions", rt, ["constant"], (1e-3, 1e-1), 3) == []


def test_soft_draws_are_seeded_and_inside_the_wide_bounds() -> None:
    wide = (1e-6, 10.0)
    a = warm_start_params("soft", result(), ["constant", "cosine"], wide, 200, seed=1)
    b = warm_start_params("soft", result(), ["constant", "cosine"], wide, 200, seed=1)
    c = warm_start_params("soft", result(), ["constant", "cosine"], wide, 200, seed=2)
    assert a == b and a != c
    logs = [math.log10(p["lr"]) for p in a]
    assert all(wide[0] <= p["lr"] <= wide[1] for p in a)
    # Centred on the middle of the range test's bounds (1e-2), sd 1 decade.
    assert abs(sum(logs) / len(logs) + 2) < 0.3
    assert {p["schedule"] for p in a} == {"constant", "cosine"}


@pytest.mark.parametrize("kind", WARM_STARTS)
def test_zero_trials_or_no_schedules_give_none(kind: str) -> None:
    assert warm_start_params(kind, result(), ["constant"], (1e-3, 1e-1), 0) == []
    assert warm_start_params(kind, result(), [], (1e-3, 1e-1), 3) == []


def test_none_enqueues_nothing_and_an_unknown_kind_is_refused() -> None:
    assert warm_start_params("none", result(), ["constant"], (1e-3, 1e-1), 3) == []
    with pytest.raises(ValueError, match="unknown warm start 'hot'"):
        warm_start_params("hot", result(), ["constant"], (1e-3, 1e-1), 3)
