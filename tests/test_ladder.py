"""The ladder of a study with rungs (lrtune.search.ladder): ASHA's promotions, the budget in
compute, duplicates and surplus, and what the sampler sees. Synthetic trials, no training."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from lrtune.errors import UserError
from lrtune.group.compare import compare_group
from lrtune.search.ladder import (
    Ladder,
    Promotion,
    compute,
    next_work,
    surplus_reason,
    usage,
)
from lrtune.search.rung_flags import parse_rungs
from lrtune.search.samplers import BottomRungView

LR = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
LADDER = Ladder(rungs=(1, 3, 9), eta=3, budget=10.0)
State = optuna.trial.TrialState


def _trial(
    number: int,
    rung: int = 0,
    value: float | None = 1.0,
    state: State = State.COMPLETE,
    source: int | None = None,
    reason: str | None = None,
) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"rung": rung, "epochs": LADDER.rungs[rung]}
    if source is not None:
        attrs["promotion"] = {"from": source, "rule": "top", "rank": 1, "of": 3}
    if reason is not None:
        attrs["fail_reason"] = reason
    finished = state in (State.COMPLETE,)
    pending = state in (State.RUNNING, State.WAITING)
    trial = optuna.trial.create_trial(
        state=State.COMPLETE if pending else state,
        value=value if finished else (0.0 if pending else None),
        params={"lr": 0.001 * (number + 1)},
        distributions={"lr": LR},
        user_attrs=attrs,
    )
    trial.number = number
    trial.state = state  # create_trial refuses RUNNING/WAITING; the ladder only reads it
    if not finished:
        trial.value = None
    return trial


def test_parse_rungs_takes_ascending_whole_epochs() -> None:
    assert parse_rungs("1,3,9", "--rungs") == (1, 3, 9)
    assert parse_rungs([2, 4], "rungs") == (2, 4)
    for bad, says in [
        ("3,1,9", "ascending"),
        ("1,1,9", "ascending"),
        ("0,9", ">= 1"),
        ("1,2.5,9", "whole number"),
        ("9", "two or more"),
        ([1, True], "whole number"),
        ("1,,9", "whole number"),
    ]:
        with pytest.raises(UserError, match=says):
            parse_rungs(bad, "--rungs")


def test_costs_and_the_budget_in_full_trial_equivalents() -> None:
    assert [LADDER.cost(k) for k in range(3)] == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert LADDER.climb(-1) == pytest.approx(1 / 9 + 1 / 3 + 1)
    assert LADDER.climb(1) == pytest.approx(1.0)
    # One configuration costs 1/9 + (1/3)/3 + 1/9 = 1/3 in expectation: 30 for 10.
    assert LADDER.bottom_trials() == 30
    trials = [_trial(0), _trial(1, rung=1), _trial(2, rung=2, state=State.RUNNING)]
    trials.append(_trial(3, state=State.WAITING))
    trials.append(_trial(4, state=State.FAIL, reason="ValueError: boom"))
    assert usage(trials, LADDER) == pytest.approx((1 / 9 + 1 / 3, 1 + 1 / 9))
    # A diverged trial trained the epochs it reported and the one it stopped in.
    diverged = _trial(5, rung=2, state=State.PRUNED)
    diverged.intermediate_values = {0: 1.0, 1: 0.9}
    diverged.user_attrs["diverged"] = True
    assert compute(diverged, LADDER) == pytest.approx(3 / 9)


def test_asha_promotes_the_top_third_highest_rung_first() -> None:
    # Two bottom trials: nothing to promote yet (2 // 3 = 0): a new configuration.
    trials = [_trial(0, value=0.5), _trial(1, value=0.4)]
    assert next_work(trials, LADDER, minimize=True) == "new"
    # Three: the best (trial 1, 0.4) goes to rung 1 (index 1: 3 epochs).
    trials.append(_trial(2, value=0.6))
    work = next_work(trials, LADDER, minimize=True)
    assert isinstance(work, Promotion)
    assert (work.source, work.rung, work.rule, work.rank, work.of) == (1, 1, "top", 1, 3)
    assert work.params == {"lr": pytest.approx(0.002)}
    assert work.attrs(LADDER)["epochs"] == 3
    # Once it is queued (no params yet, only its source), the rung has nothing more due.
    queued = _trial(3, rung=1, state=State.WAITING, source=1)
    queued.params = {}
    assert next_work([*trials, queued], LADDER, minimize=True) == "new"
    # Maximize: the largest value is the best.
    work = next_work(trials, LADDER, minimize=False)
    assert isinstance(work, Promotion) and work.source == 2
    # Rung 1 with three finished trials is promoted before rung 0's next due one.
    more = [_trial(n, value=0.1 * n) for n in range(4, 10)]  # 9 bottom: top 3 due
    middle = [
        _trial(10 + k, rung=1, value=v, source=s)
        for k, (v, s) in enumerate([(0.3, 1), (0.2, 0), (0.25, 4)])
    ]
    work = next_work([*trials, *more, *middle], LADDER, minimize=True)
    assert isinstance(work, Promotion) and (work.rung, work.source) == (2, 11)


def test_a_horizon_correction_moves_a_promotions_lr_by_the_epochs_ratio() -> None:
    ladder = Ladder(rungs=(1, 3, 9), eta=3, budget=10.0, beta=0.5)
    assert ladder.carry({"lr": 0.3, "schedule": "wsd"}, 0) == {
        "lr": pytest.approx(0.3 / 3**0.5),
        "schedule": "wsd",
    }
    assert LADDER.carry({"lr": 0.3}, 1) == {"lr": 0.3}  # beta 0: the same configuration
    trials = [_trial(0, value=0.5), _trial(1, value=0.4), _trial(2, value=0.6)]
    work = next_work(trials, ladder, minimize=True)
    assert isinstance(work, Promotion) and work.source == 1
    assert work.params == {"lr": pytest.approx(0.002 / 3**0.5)}
    assert work.attrs(ladder)["promotion"]["beta"] == 0.5
    assert "beta" not in next_work(trials, LADDER, minimize=True).attrs(LADDER)["promotion"]  # type: ignore[union-attr]
    # Read back from a study's attrs (old studies: no key, no correction).
    attrs = {"spec": {"rungs": [1, 3, 9], "reduction_factor": 3, "horizon_beta": 0.5}}
    assert Ladder.from_attrs({**attrs, "budget": 4}) == Ladder(
        rungs=(1, 3, 9), eta=3, budget=4.0, beta=0.5
    )
    assert Ladder.from_attrs({"spec": {"rungs": [1, 3]}, "budget": 2}).beta == 0.0  # type: ignore[union-attr]


def test_a_diverged_trial_ranks_last_and_is_never_promoted() -> None:
    trials = [
        _trial(0, value=None, state=State.PRUNED),
        _trial(1, value=0.9),
        _trial(2, value=0.8),
    ]
    work = next_work(trials, LADDER, minimize=True)
    assert isinstance(work, Promotion) and (work.source, work.rank) == (2, 1)
    trials[1] = _trial(1, value=None, state=State.PRUNED)
    trials[2] = _trial(2, value=None, state=State.PRUNED)
    assert next_work(trials, LADDER, minimize=True) == "new"


def test_a_promotion_that_never_trained_is_due_again() -> None:
    trials = [_trial(0, value=0.5), _trial(1, value=0.4), _trial(2, value=0.6)]
    for reason, due in [
        ("surplus: trial 3 trains this configuration", True),
        ("interrupted (Ctrl-C)", True),
        ("worker died: no heartbeat for 30 s", False),  # its retry holds it
        ("RuntimeError: out of data", False),  # it failed on this rung: not again
    ]:
        failed = _trial(3, rung=1, state=State.FAIL, source=1, reason=reason)
        work = next_work([*trials, failed], LADDER, minimize=True)
        assert isinstance(work, Promotion) == due, reason


def test_the_end_of_the_budget_climbs_instead_of_starting_new_configurations() -> None:
    small = Ladder(rungs=(1, 3, 9), eta=3, budget=1.0)
    # Less left than a climb from the bottom (1/9 + 1/3 + 1): nothing finished, nothing
    # running: start one anyway (there is nothing else to do).
    assert next_work([], small, minimize=True) == "new"
    # One running: wait for it instead of starting a configuration that cannot climb.
    running = [_trial(0, state=State.RUNNING)]
    assert next_work(running, small, minimize=True) == "wait"
    # It finished: it climbs although a rung of one is no top third (rule "budget").
    done = [_trial(0, value=0.7)]
    work = next_work(done, small, minimize=True)
    assert isinstance(work, Promotion) and (work.rule, work.rung, work.source) == ("budget", 1, 0)
    done.append(_trial(1, rung=1, value=0.5, source=0))
    work = next_work(done, small, minimize=True)
    assert isinstance(work, Promotion) and (work.rule, work.rung, work.source) == ("budget", 2, 1)
    done.append(_trial(2, rung=2, value=0.4, source=1))
    # 1/9 + 1/3 + 1 >= 1: the budget is held, over it by less than one full trial.
    assert next_work(done, small, minimize=True) == "full"


def test_surplus_the_later_duplicate_and_the_trial_past_the_budget() -> None:
    trials = [_trial(0, value=0.5), _trial(1, rung=1, state=State.RUNNING, source=0)]
    duplicate = _trial(2, rung=1, state=State.RUNNING, source=0)
    reason = surplus_reason([*trials, duplicate], duplicate, LADDER)
    assert reason is not None and "trial 1 trains this configuration" in reason
    # The earlier one trains: no trial before it holds its configuration.
    assert surplus_reason([*trials, duplicate], trials[1], LADDER) is None
    # A retry of a trial whose worker died (FAIL) is no duplicate of it.
    dead = _trial(1, rung=1, state=State.FAIL, source=0, reason="worker died: ...")
    assert surplus_reason([trials[0], dead, duplicate], duplicate, LADDER) is None
    tight = Ladder(rungs=(1, 3, 9), eta=3, budget=1.0)
    full = [_trial(0, rung=2, value=0.1), _trial(1, state=State.RUNNING)]
    reason = surplus_reason(full, full[1], tight)
    assert reason is not None and "hold the budget (1 of 1" in reason


def test_the_sampler_sees_the_bottom_rung_only() -> None:
    study = optuna.create_study(pruner=BottomRungView())
    for n in range(4):
        study.add_trial(_trial(n, rung=n % 2, value=0.1 * n))
    seen: list[list[int]] = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            # What TPE and GP read (Optuna's bracket study filters get_trials only).
            states = (State.COMPLETE, State.PRUNED)
            trials = study._get_trials(deepcopy=False, states=states, use_cache=True)
            seen.append([t.number for t in trials])
            assert [t.number for t in study.get_trials(deepcopy=False, states=states)] == seen[-1]
            return super().sample_independent(study, trial, name, dist)

    study.sampler = Spy(seed=0)
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1.0, log=True)
    assert seen == [[0, 2]]  # the bottom rung's two, not rung 1's
    assert trial.should_prune() is False
    # A promotion (enqueued with its rung) gets its fixed params, whatever the view.
    study.enqueue_trial({"lr": 0.5}, user_attrs={"rung": 1})
    promoted = study.ask()
    assert promoted.suggest_float("lr", 1e-4, 1.0, log=True) == 0.5


def test_the_comparison_counts_compute_and_top_rung_results_only() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="g.tpe.none")
    # as lrtune.group.prepare writes them
    created = {"repeat": 1, "seed": 0, "bounds": [1e-4, 1.0], "epochs": 9}
    for key, value in {
        **created,
        "sampler": "tpe",
        "prior": "none",
        "budget": 2,
        "spec": {"rungs": [1, 3, 9], "reduction_factor": 3, "tolerance": 0.02},
        "group": "g",
    }.items():
        study.set_user_attr(key, value)
    # Bottom trials beat the top-rung one in value (a short run's loss is no result).
    for t in [
        _trial(0, value=0.01),
        _trial(1, value=0.02),
        _trial(2, value=0.03),
        _trial(3, rung=1, value=0.5, source=0),
        _trial(4, rung=2, value=0.9, source=3),
    ]:
        study.add_trial(t)
    plain = optuna.create_study(storage=storage, study_name="g.random.none")
    for key, value in {
        **created,
        "sampler": "random",
        "prior": "none",
        "budget": 3,
        "spec": {"tolerance": 0.02},
        "group": "g",
    }.items():
        plain.set_user_attr(key, value)
    pruned = optuna.trial.create_trial(
        state=State.PRUNED, intermediate_values={0: 2.0, 1: 1.9, 2: 1.8}
    )
    for t in [pruned, optuna.trial.create_trial(value=0.95), optuna.trial.create_trial(value=0.9)]:
        plain.add_trial(t)
    cmp = compare_group(storage, "g")
    rung = next(r for r in cmp.rows if r.study == "g.tpe.none")
    assert (rung.best, rung.best_trial, rung.rungs) == (0.9, 4, (1, 3, 9))
    assert cmp.best == 0.9
    # 3 x 1/9 + 1/3 + 1 = 5/3 full-trial equivalents up to the top-rung trial at target.
    assert rung.to_target == 5
    assert (rung.cost, rung.spent) == (pytest.approx(5 / 3), pytest.approx(5 / 3))
    other = next(r for r in cmp.rows if r.study == "g.random.none")
    # The pruned trial trained 3 of 9 epochs: 1/3 + 1 + 1.
    assert other.cost == pytest.approx(1 / 3 + 2) and other.to_target == 3
    assert cmp.winner is not None and cmp.winner.study == "g.tpe.none"
