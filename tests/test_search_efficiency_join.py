"""The search-efficiency benchmark joins a slow task's repeats run by several processes
(``--first-repeat``, then ``--from-json``): on hand-built results (no training), the joined
statistics are those of all repeats, and runs that cannot be joined stay apart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import search_efficiency as se  # benchmarks/ is not a package

BUDGET = 4


def run(regrets: list[float], ttt: list[float], rt: list[float], spans: list[float]) -> dict:
    """One run of task "t": per repeat, the arms' regret curve (flat at the given value)."""
    arms: dict[str, dict[str, Any]] = {}
    for label, shift in (("tpe / none", 0.0), ("tpe / rangetest", 0.1)):
        curves = [[r + shift] * BUDGET for r in regrets]
        arms[label] = {
            "curve": curves,
            **{f"r{k}": [c[k - 1] for c in curves] for k in (2, BUDGET)},
            "ttt": ttt,
            "cost": [t + 1 for t in ttt],
        }
    return {
        "task": "t",
        "oracle": {"lrs": 21, "seeds": 3},
        "checkpoints": [2, BUDGET],
        "arms": arms,
        "rt_trials": rt,
        "coverage": [1.0] * len(regrets),
        "spans": spans,
        "seconds": 10.0,
    }


def test_two_halves_join_into_the_statistics_of_all_repeats() -> None:
    a = run([0.1, 0.3], [1, 5], [0.5, 0.7], [2.0, 1.5])
    b = run([0.2, 0.4, 0.5], [2, 3, 5], [0.9, 1.1, 1.3], [1.0, 1.8, 1.9])
    whole = run([0.1, 0.3, 0.2, 0.4, 0.5], [1, 5, 2, 3, 5], [0.5, 0.7, 0.9, 1.1, 1.3],
                [2.0, 1.5, 1.0, 1.8, 1.9])  # fmt: skip
    (joined,) = se.join_repeats([a, b], BUDGET)
    assert joined["arms"]["tpe / none"][f"r{BUDGET}"] == [0.1, 0.3, 0.2, 0.4, 0.5]
    assert joined["rt_trial_equivalents"] == 0.9
    assert joined["bounds_decades_median"] == 1.8 and joined["bounds_decades_max"] == 2.0
    assert joined["summary"] == se.summarize(whole, BUDGET)
    assert joined["summary"]["reached"] == {"tpe / none": 3, "tpe / rangetest": 3}  # 5: censored
    assert joined["summary"]["regret_median"]["tpe / none"][BUDGET] == 0.3


def test_runs_without_per_repeat_lists_stay_apart() -> None:
    old = run([0.1], [1], [0.5], [2.0])
    del old["spans"]
    assert len(se.join_repeats([old, run([0.2], [2], [0.6], [1.0])], BUDGET)) == 2


def test_runs_on_different_oracles_are_refused() -> None:
    other = run([0.2], [2], [0.6], [1.0])
    other["oracle"] = {"lrs": 36, "seeds": 3}
    with pytest.raises(SystemExit, match="different oracles"):
        se.join_repeats([run([0.1], [1], [0.5], [2.0]), other], BUDGET)
