"""The compute axis of the search-efficiency benchmark (benchmarks/compute_axis.py) reads
what a user would export after c full-trial equivalents: on hand-built trials and results
(no training), the prefix counts each trial's compute (a pruned one: the epochs it
trained; a rung trial: its rung's), and the goals are read off the medians."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compute_axis as ca  # benchmarks/ is not a package
import compute_report as cr

EPOCHS = 4
PRUNED = optuna.trial.TrialState.PRUNED
COMPLETE = optuna.trial.TrialState.COMPLETE


def trial(number: int, value: float, *, epochs: int | None = None, reported: int = EPOCHS,
          state: optuna.trial.TrialState = COMPLETE) -> optuna.trial.FrozenTrial:  # fmt: skip
    made = optuna.trial.create_trial(
        state=state,
        value=value if state == COMPLETE else None,
        params={"lr": 0.01 * (number + 1), "schedule": "cosine"},
        distributions={
            "lr": optuna.distributions.FloatDistribution(1e-6, 10.0, log=True),
            "schedule": optuna.distributions.CategoricalDistribution(["cosine"]),
        },
        intermediate_values={e: value for e in range(reported)},
        user_attrs={} if epochs is None else {"epochs": epochs, "rung": int(epochs == EPOCHS)},
    )
    made.number = number
    return made


def test_prefix_counts_pruned_and_rung_trials_by_the_epochs_they_trained() -> None:
    trials = [
        trial(0, 0.5),  # 1.0
        trial(1, 0.9, reported=1, state=PRUNED),  # 0.25
        trial(2, 0.4, epochs=1),  # a bottom-rung trial: 0.25
        trial(3, 0.3),  # 1.0 -> 2.5 in all
    ]
    assert [t.number for t in ca.prefix(trials, 1.5, EPOCHS)] == [0, 1, 2]
    assert [t.number for t in ca.prefix(trials, 2.5, EPOCHS)] == [0, 1, 2, 3]
    assert ca.prefix(trials, 0.5, EPOCHS) == []
    assert ca.best_config(ca.prefix(trials, 1.5, EPOCHS), 1.0) == ("cosine", 0.03)
    assert ca.best_config([trials[1]], 1.0) is None  # nothing complete: nothing to export


def result(rungs: list[float], full: list[float], hyperband: list[float]) -> dict[str, Any]:
    """One task: per repeat, the same regret at every budget (and the own-budget study)."""

    def arm(values: list[float]) -> dict[str, Any]:
        out: dict[str, Any] = {"pruned": [0.0] * len(values)}
        for b in (5, 20):
            out |= {f"r{b}": values, f"spent{b}": [float(b)] * len(values)}
            out[f"trials{b}"] = [b] * len(values)
        return out

    arms = {"tpe+prior rungs": arm(rungs) | {"own5": rungs, "ownspent5": [5.0] * len(rungs)}}
    arms |= {"tpe+prior full": arm(full), "tpe+prior hyperband": arm(hyperband)}
    return {
        "task": "t",
        "optimizer": "adamw",
        "direction": "minimize",
        "epochs": EPOCHS,
        "rungs": [1, EPOCHS],
        "eta": 3,
        "budgets": [5, 20],
        "oracle": {
            "lrs": 11,
            "seeds": 3,
            "schedules": ["cosine"],
            "best": 1.0,
            "best_lr": 0.01,
            "best_schedule": "cosine",
        },
        "rt_fte": [1.0, 1.0, 1.0],
        "arms": arms,
    }


def test_goals_compare_medians_and_count_repeats() -> None:
    inf = float("inf")
    lines = cr.goals(result([0.01, 0.02, inf], [0.03, 0.01, 0.02], [0.05, 0.05, 0.05]))
    assert lines[0].startswith("rungs at 5 (29% of the compute, range test included)")
    assert "2.0% vs 2.0% (met; rungs not worse in 1/3 repeats)" in lines[0]
    assert "a rung study of `--trials 5`" in lines[1]
    assert "5: 2.0% vs 5.0% (2/3)" in lines[2]  # an export that diverged (inf) loses
    text = cr.markdown([result([0.01, 0.02, inf], [0.03] * 3, [0.05] * 3)], ["run"])
    assert "| tpe+prior rungs | 2.0% [1.5%–≥2.0%] | 2.0% [1.5%–≥2.0%] | 20.0 (20.00) |" in text
    assert "| tpe+prior rungs, a study of `--trials 5` | 2.0% [1.5%–≥2.0%] | - | (5.00) |" in text
