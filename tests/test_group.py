"""``lrtune.group.run.run_group``, the library call behind ``lrtune study``: called directly on a
tiny task into a real SQLite storage, it prints nothing and returns the comparison."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from lrtune.group.comparison import Comparison
from lrtune.group.prepare import Group
from lrtune.group.run import run_group
from lrtune.search.spec import StudySpec

SPEC = StudySpec(
    task="digits",
    group="g",
    samplers=("random",),
    prior=("none",),
    trials=3,
    epochs=2,
    schedules=("constant", "cosine"),
    pruner="none",
    confirm=0,  # confirmation is tested in test_confirm.py
)


def test_run_group_returns_the_comparison_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    prepared: list[Group] = []
    updates: list[int] = []
    cmp = run_group(
        SPEC,
        url,
        device="cpu",
        on_prepared=prepared.append,
        on_progress=lambda group, _storage: updates.append(len(group.refs)),
    )
    assert capsys.readouterr() == ("", "")  # the library shows nothing itself
    assert isinstance(cmp, Comparison)
    assert [g.created for g in prepared] == [["g.random.none"]]
    assert updates == [1] * 4  # before the first trial and after each of the 3
    trials = optuna.load_study(study_name="g.random.none", storage=url).get_trials()
    values = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3 and values and all(v is not None for v in values)
    best = min(v for v in values if v is not None)
    assert cmp.group == "g" and cmp.direction == "minimize" and cmp.best == best
    (row,) = cmp.rows
    assert (row.study, row.sampler, row.prior, row.done, row.budget) == (
        "g.random.none",
        "random",
        "none",
        3,
        3,
    )
    assert row.best == best and row.best_trial is not None
    assert trials[row.best_trial].value == best
    assert row.lr == trials[row.best_trial].params["lr"]
    assert row.to_target is not None and 1 <= row.to_target <= 3
    assert row.cost == row.to_target  # no range test, no extra cost
    assert cmp.winner is not None and cmp.winner.study == "g.random.none"
    assert math.isclose(row.seconds, sum(t.user_attrs["seconds"] for t in trials))
    # ... and saved on the study, as `lrtune study` does.
    stored = optuna.load_study(study_name="g.random.none", storage=url).user_attrs
    assert stored["comparison"]["winner"] == "g.random.none"


def test_run_group_create_only_runs_no_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    cmp = run_group(SPEC, url, device="cpu", create_only=True)
    assert [(r.study, r.done, r.best) for r in cmp.rows] == [("g.random.none", 0, None)]
    study = optuna.load_study(study_name="g.random.none", storage=url)
    assert study.get_trials() == [] and "comparison" not in study.user_attrs
