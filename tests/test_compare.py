"""The comparison table's numbers on hand-built groups whose right answer is known.

Each group is real Optuna studies (in memory or SQLite) with trials added by hand, no
training: trials-to-target, cost, winner, median/IQR with censored repeats, maximize,
pruned and failed trials. Every expected figure is worked out in the comments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from lrtune.group.censored import Bound, summarize
from lrtune.group.compare import compare_group
from lrtune.group.comparison import Comparison
from lrtune.group.present import format_table
from tests.conftest import REPO

P, F = "pruned", "fail"
LR = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)


def _storage(kind: str, url: str) -> optuna.storages.BaseStorage:
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    return optuna.storages.RDBStorage(url)


def _study(
    storage: optuna.storages.BaseStorage,
    name: str,
    values: list[float | str],
    *,
    seconds: list[float] | None = None,
    direction: str = "minimize",
    repeat: int = 1,
    budget: int | None = None,
    rangetest_seconds: float | None = None,
    metric: str = "val_loss",
    confirm: dict[int, dict] | None = None,
) -> None:
    """Study ``g.{sampler}.{prior}[.rK]`` as lrtune stores it; ``values`` in trial order:
    a number is a COMPLETE trial, ``P`` a pruned one, ``F`` a failed one."""
    study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    _, sampler, prior = name.split(".")[:3]
    attrs: dict = {
        "sampler": sampler,
        "prior": prior,
        "repeat": repeat,
        "seed": repeat,
        "bounds": [1e-5, 1.0],
        "budget": budget if budget is not None else sum(v != F for v in values),
        "epochs": 1,
        "metric": metric,
        "spec": {"tolerance": 0.02},
    }
    if rangetest_seconds is not None or prior == "rangetest":
        attrs["rangetest"] = {"seconds": rangetest_seconds or 0.0}
    attrs["group"] = "g"  # last, as lrtune writes it: only then is the study created
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    seconds = seconds or [1.0] * len(values)
    for i, (v, sec) in enumerate(zip(values, seconds, strict=True)):
        state = {
            P: optuna.trial.TrialState.PRUNED,
            F: optuna.trial.TrialState.FAIL,
        }.get(v if isinstance(v, str) else "", optuna.trial.TrialState.COMPLETE)
        user_attrs: dict = {"seconds": sec}
        if confirm and i in confirm:  # its confirmation, in the group's confirm study
            _confirmation(storage, name, i, v, confirm[i])
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=None if isinstance(v, str) else v,
                params={"lr": 0.01 * (i + 1)},
                distributions={"lr": LR},
                user_attrs=user_attrs,
                # A pruned trial's last report beats every value: it must not count.
                intermediate_values={0: 1e-9} if v == P else {},
            )
        )


def _confirmation(
    storage: optuna.storages.BaseStorage, name: str, number: int, value: object, record: dict
) -> None:
    """A trial of ``g.confirm`` (as :mod:`lrtune.group.confirm` stores it) confirming trial
    ``number`` of study ``name``."""
    study = optuna.create_study(storage=storage, study_name="g.confirm", load_if_exists=True)
    study.set_user_attr("confirm_of", "g")
    params = {"lr": 0.01 * (number + 1)}
    study.add_trial(
        optuna.trial.create_trial(
            value=record["mean"],
            params=params,
            distributions={"lr": LR},
            user_attrs={
                "source": {"study": name, "trial": number, "value": value},
                "params": params,
                "confirm": record,
            },
        )
    )


def _row(cmp: Comparison, study: str):  # type: ignore[no-untyped-def]
    return next(r for r in cmp.rows if r.study == study)


def test_trials_to_target_cost_and_winner() -> None:
    storage = optuna.storages.InMemoryStorage()
    # Range test 3 s; the 12 trials' seconds sorted: 1 1 2 2 2 2 2 2 2 2 3 4 -> median 2 s,
    # so the range test costs 3 / 2 = 1.5 trials.
    _study(
        storage,
        "g.tpe.rangetest",
        [0.101, 0.3, 0.2, 0.5],
        seconds=[1, 2, 2, 3],
        rangetest_seconds=3.0,
    )
    _study(storage, "g.tpe.none", [0.4, 0.100, 0.35, 0.45], seconds=[2, 2, 4, 1])
    _study(storage, "g.random.none", [0.2, 0.3, 0.25, 0.22], seconds=[2] * 4)
    cmp = compare_group(storage, "g")
    assert cmp.rangetest_seconds == 3.0 and cmp.rangetest_trials == pytest.approx(1.5)
    # Group best 0.100, target 0.100 * 1.02 = 0.102.
    assert cmp.best == 0.100 and cmp.target == pytest.approx(0.102)
    prior, none, rand = (_row(cmp, n) for n in ("g.tpe.rangetest", "g.tpe.none", "g.random.none"))
    # The prior arm hits 0.101 <= 0.102 at its 1st trial: cost 1 + 1.5 = 2.5.
    assert (prior.to_target, prior.cost) == (1, pytest.approx(2.5))
    # Without the prior: 0.100 at the 2nd trial, no range test to pay: cost 2 -> it wins.
    assert (none.to_target, none.cost) == (2, 2.0)
    assert (rand.to_target, rand.cost) == (None, None)
    assert (prior.done, prior.budget, prior.seconds) == (4, 4, 8.0)
    assert (prior.best, prior.best_trial, prior.lr) == (0.101, 0, 0.01)
    assert cmp.winner is not None and cmp.winner.study == "g.tpe.none"
    assert (cmp.winner.to_target, cmp.winner.cost) == (2, 2.0)
    best = cmp.best_row
    assert best is not None and (best.study, best.best_trial) == ("g.tpe.none", 1)

    text = format_table(cmp)
    lines = text.splitlines()
    assert lines[0].split() == [
        "study", "trials", "best", "val_loss", "lr", "schedule", "to", "target", "cost", "seconds"
    ]  # fmt: skip
    assert lines[1].split() == ["g.tpe.rangetest", "4/4", "0.101", "0.01", "-", "1", "2.5", "8.0"]
    assert "the range test (1.50 trial-equivalents of optimizer updates, 3.0 s)" in text
    assert lines[2].split() == ["*", "g.tpe.none", "4/4", "0.1", "0.02", "-", "2", "2", "9.0"]
    assert lines[3].split()[-3:] == ["-", "-", "8.0"]
    assert "i.e. <= 0.102" in text
    assert "winner (*): g.tpe.none, reached the target at cost 2 trial-equivalents" in text
    assert "('-': never)" in text
    assert "median [IQR]" not in text and "censored" not in text


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_pruned_trials_count_failed_trials_do_not(kind: str, sqlite_url: str) -> None:
    storage = _storage(kind, sqlite_url)
    # Finished in order: P(1) 0.3(2) P(3) 0.1(4); the FAILs are skipped, and the pruned
    # trials' reports of 1e-9 are neither the best value nor within target.
    _study(
        storage,
        "g.tpe.none",
        [P, F, 0.3, P, 0.1, F],
        seconds=[1.0, 100.0, 1.0, 3.0, 3.0, 100.0],
        budget=4,
    )
    _study(storage, "g.random.rangetest", [0.2, 0.1015], seconds=[1.0, 1.0])
    optuna.load_study(study_name="g.random.rangetest", storage=storage).set_user_attr(
        "rangetest", {"seconds": 0.5}
    )
    cmp = compare_group(storage, "g")
    row = _row(cmp, "g.tpe.none")
    assert (row.done, row.best, row.best_trial) == (4, 0.1, 4)
    assert row.to_target == 4 and row.cost == 4.0
    # Seconds of finished trials only: 1 + 1 + 3 + 3 = 8; the failed trials' 100 s are not
    # in the median either: 1 1 3 3 1 1 -> sorted 1 1 1 1 3 3, median 1 s.
    assert row.seconds == 8.0
    assert cmp.rangetest_trials == pytest.approx(0.5)
    # 0.1015 <= 0.102 at the 2nd trial: cost 2 + 0.5 = 2.5 < 4, so it wins.
    other = _row(cmp, "g.random.rangetest")
    assert (other.to_target, other.cost) == (2, pytest.approx(2.5))
    assert cmp.winner is not None and cmp.winner.study == "g.random.rangetest"


def test_maximize() -> None:
    storage = optuna.storages.InMemoryStorage()
    kw = {"direction": "maximize", "metric": "accuracy"}
    # Best 0.95; target 0.95 - 0.02 * 0.95 = 0.931.
    _study(storage, "g.grid.none", [0.90, 0.935, 0.95], **kw)  # type: ignore[arg-type]
    _study(storage, "g.random.none", [0.93, 0.92, 0.94], **kw)  # type: ignore[arg-type]
    cmp = compare_group(storage, "g")
    assert cmp.direction == "maximize" and cmp.metric == "accuracy"
    assert cmp.best == 0.95 and cmp.target == pytest.approx(0.931)
    grid, rand = _row(cmp, "g.grid.none"), _row(cmp, "g.random.none")
    assert (grid.best, grid.to_target) == (0.95, 2)  # 0.935 >= 0.931
    assert (rand.best, rand.to_target) == (0.94, 3)  # 0.93 < 0.931, then 0.94
    assert cmp.winner is not None and cmp.winner.study == "g.grid.none"
    best = cmp.best_row
    assert best is not None and best.study == "g.grid.none"
    text = format_table(cmp)
    assert "best accuracy" in text and "i.e. >= 0.931" in text
    # No study used the range-test prior: no range-test cost to speak of.
    assert "cost: compute to target (no range test was run)" in text
    assert "rangetest prior" not in text
    # A looser tolerance: 0.95 - 0.1 * 0.95 = 0.855, reached by every first trial; equal
    # cost 1, so the better best value (0.95) breaks the tie.
    loose = compare_group(storage, "g", tolerance=0.1)
    assert [r.to_target for r in loose.rows] == [1, 1]
    assert loose.winner is not None and loose.winner.study == "g.grid.none"


def _reach_at(k: int | None, value: float, n: int = 15) -> list[float | str]:
    """``n`` trials of 1.0 with ``value`` (within target) at trial ``k`` (1-based)."""
    return [value if i + 1 == k else 1.0 for i in range(n)]


def test_censored_repeats_median_iqr_and_winner() -> None:
    """The misreport of issue 10: tpe/none reached the target in 1 repeat of 3 (at its first
    trial); the other 2 never did. Its median must be censored, not 1."""
    storage = optuna.storages.InMemoryStorage()
    # Budget 8, every trial 0.5 s; the range test 1 s = 2 trial-equivalents.
    for repeat, (none_k, prior_k) in enumerate([(1, 4), (None, 6), (None, 8)], start=1):
        suffix = "" if repeat == 1 else f".r{repeat}"
        for name, k, value in [("none", none_k, 0.100), ("rangetest", prior_k, 0.101)]:
            _study(
                storage,
                f"g.tpe.{name}{suffix}",
                _reach_at(k, value, 8),
                seconds=[0.5] * 8,
                repeat=repeat,
                rangetest_seconds=1.0 if name == "rangetest" else None,
            )
    cmp = compare_group(storage, "g")
    assert cmp.rangetest_trials == pytest.approx(2.0) and cmp.repeats == 3
    none, prior = cmp.arms
    assert (none.sampler, none.prior, none.reached) == ("tpe", "none", 1)
    assert none.studies == ["g.tpe.none", "g.tpe.none.r2", "g.tpe.none.r3"]
    # tpe/none to target: 1, and 9 = budget + 1 twice (censored). Sorted 1, 9c, 9c:
    # median = 9 (censored), q1 at position 0.5 = (1 + 9) / 2 = 5, q3 at 1.5 = 9; each
    # rests on a censored repeat, so each is a lower bound.
    assert none.to_target is not None and none.to_target.censored == 2
    assert none.to_target.median == Bound(value=9, at_least=True)
    assert none.to_target.q1 == Bound(value=5, at_least=True)
    assert none.to_target.q3 == Bound(value=9, at_least=True)
    assert none.cost == none.to_target  # no range test to add
    # tpe/rangetest: 4, 6, 8 -> median 6, q1 5, q3 7, exact; cost + 2 -> 8 [7-9].
    assert prior.to_target is not None and prior.cost is not None
    assert (prior.to_target.median, prior.to_target.q1, prior.to_target.q3) == (
        Bound(value=6),
        Bound(value=5),
        Bound(value=7),
    )
    assert (prior.cost.median, prior.cost.q1, prior.cost.q3) == (
        Bound(value=8),
        Bound(value=7),
        Bound(value=9),
    )
    # The winner is judged on medians: tpe/rangetest (8), not tpe/none's lucky repeat (1).
    winner = cmp.winner
    assert winner is not None
    assert (winner.study, winner.sampler, winner.prior) == ("g.tpe.rangetest", "tpe", "rangetest")
    assert (winner.repeats, winner.reached, winner.to_target, winner.cost) == (3, 3, 6, 8.0)
    assert json.loads(json.dumps(cmp.to_dict()))["winner"] == "g.tpe.rangetest"

    text = format_table(cmp)
    lines = text.splitlines()
    # best: 0.1 (r1) and 1.0 twice -> median 1, q1 0.55, q3 1; seconds 8 x 0.5 = 4 each.
    assert lines[1].split() == [
        "tpe", "none", "3", "(1", "reached)", "1", "[0.55-1]", "≥9", "[≥5-≥9]",
        "≥9", "[≥5-≥9]", "4", "[4-4]",
    ]  # fmt: skip
    assert lines[2].split() == [
        "*", "tpe", "rangetest", "3", "(3", "reached)", "0.101", "[0.101-0.101]", "6", "[5-7]",
        "8", "[7-9]", "4", "[4-4]",
    ]  # fmt: skip
    assert "median [IQR] over 3 repeats" in text
    assert "censored: 2 of 6 studies never reached the target" in text
    assert "budget + 1" in text and "shown with ≥" in text
    assert (
        "winner (*): tpe × rangetest, median cost 8 trial-equivalents over 3 repeats "
        "(3 reached the target)" in text
    )
    md = format_table(cmp, markdown=True)
    assert "| * tpe | rangetest | 3 (3 reached) | 0.101 [0.101-0.101] | 6 [5-7] | 8 [7-9] |" in md


def test_no_winner_when_every_median_is_censored() -> None:
    storage = optuna.storages.InMemoryStorage()
    # Two repeats each, budget 5; one repeat of each arm reaches (at 3 and at 1).
    _study(storage, "g.random.none", _reach_at(3, 0.1, 5))
    _study(storage, "g.random.none.r2", _reach_at(None, 0.1, 5), repeat=2)
    _study(storage, "g.grid.none", _reach_at(1, 0.1, 5))
    _study(storage, "g.grid.none.r2", _reach_at(None, 0.1, 5), repeat=2)
    cmp = compare_group(storage, "g")
    rand, grid = cmp.arms
    # An even count: median = mean of 3 and the censored 6 = 4.5, a lower bound.
    assert rand.to_target is not None and rand.to_target.median == Bound(value=4.5, at_least=True)
    assert grid.to_target is not None and grid.to_target.median == Bound(value=3.5, at_least=True)
    assert cmp.winner is None
    text = format_table(cmp)
    assert "winner (*)" not in text and "* " not in text.split("\n\n")[0]
    assert "no winner: no sampler × prior reached the target in enough repeats" in text
    assert "≥4.5 [≥3.75-≥5.25]" in text  # q1 = 3 + 0.25 * 3, q3 = 3 + 0.75 * 3


def test_summarize_marks_what_rests_on_a_censored_value() -> None:
    assert summarize([]) is None
    one = summarize([(7.0, False)])
    assert one is not None and one.text() == "7" and one.n == 1
    # 3, 5 exact and 16 censored: median 5 exact; q1 at 0.5 = 4 exact; q3 at 1.5 = 10.5
    # interpolates toward the censored 16, so it is a lower bound.
    stat = summarize([(16.0, True), (5.0, False), (3.0, False)])
    assert stat is not None
    assert (stat.median, stat.q1, stat.q3) == (
        Bound(value=5),
        Bound(value=4),
        Bound(value=10.5, at_least=True),
    )
    assert stat.text() == "5 [4-≥10.5]" and stat.censored == 1
    # A study still running, censored at 3 below a finished 5: 5's rank is not sure.
    mixed = summarize([(5.0, False), (3.0, True), (8.0, False)])
    assert mixed is not None and mixed.median == Bound(value=5, at_least=True)
    # Ties: the exact value sorts first, so a median on it stays exact.
    tie = summarize([(4.0, True), (4.0, False), (2.0, False)])
    assert tie is not None and tie.median == Bound(value=4)


def test_confirmed_values_break_a_tie_and_show_on_the_winner() -> None:
    storage = optuna.storages.InMemoryStorage()
    # Both reach at trial 1 (cost 1). By single seed random/none is better (0.100 < 0.101);
    # re-trained on 2 seeds tpe/none holds up better (mean 0.104 < 0.110).
    _study(
        storage,
        "g.random.none",
        [0.100, 0.3],
        confirm={0: {"seeds": [1, 2], "values": [0.105, 0.115], "mean": 0.110, "sd": 0.007}},
    )
    _study(
        storage,
        "g.tpe.none",
        [0.101, 0.3],
        confirm={0: {"seeds": [1, 2], "values": [0.103, 0.105], "mean": 0.104, "sd": 0.0014}},
    )
    cmp = compare_group(storage, "g")
    assert [r.cost for r in cmp.rows] == [1.0, 1.0]
    assert cmp.winner is not None and cmp.winner.study == "g.tpe.none"
    assert cmp.winner.confirmed is not None and cmp.winner.confirmed.mean == 0.104
    assert "confirmed val_loss 0.104 ± 0.0014 over 2 seeds" in format_table(cmp)
    # The confirm study is no row, and the table names the confirmed winner.
    assert [r.study for r in cmp.rows] == ["g.random.none", "g.tpe.none"]
    assert "confirmed winner: val_loss 0.104 ± 0.0014 over 2 fresh seeds" in format_table(cmp)


def test_unknown_group() -> None:
    with pytest.raises(ValueError, match="no studies of group 'g'"):
        compare_group(optuna.storages.InMemoryStorage(), "g")


def test_imports_neither_torch_nor_study() -> None:
    code = (
        "import sys, lrtune.group.compare, lrtune.group.present, lrtune.search.states, "
        "lrtune.progress, lrtune.search.widen; "
        "bad = [m for m in ('torch', 'lrtune.group.prepare', 'lrtune.search.objective') "
        "if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()


def test_the_range_test_costs_its_updates_not_its_seconds() -> None:
    """3 seeds x 100 updates against trials of 110 updates: 300 / 110 trial-equivalents,
    whatever the seconds say (accumulation made each sweep update cost 4 micro-batches, as
    it does each trial update); a sweep at another batch size counts its rows."""
    from lrtune.group.compare import rangetest_trials

    rt = {"seconds": 50.0, "lrs": [[0.1] * 100] * 3}
    configs = [{"total_steps": 110, "batch_size": 128}] * 5
    assert rangetest_trials(rt, configs, 2.0) == pytest.approx(300 / 110)
    assert rangetest_trials({**rt, "updates": 300, "batch_size": 64}, configs, 2.0) == (
        pytest.approx(300 * 64 / (110 * 128))
    )
    # No total_steps recorded (a fit task over data without a length): seconds.
    assert rangetest_trials(rt, [{"total_steps": None}], 2.0) == pytest.approx(25.0)
    assert rangetest_trials(None, configs, 2.0) == 0.0
