"""Divergence pruning: a trial whose smoothed training loss rises above a multiple of its
first loss (``Task.divergence_factor``, default 4) is pruned with the reason, not scored."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import optuna
import pytest

from lrtune.errors import UserError
from lrtune.search.objective import make_objective
from lrtune.search.spec import StudySpec
from lrtune.training.tasks import check_task, digits
from lrtune.training.trainer import TrainConfig, train
from lrtune.training.watch import DIVERGENCE_FACTOR, DivergenceWatch

# On digits (SGD, seed 0) wsd at lr 0.3 ends at val_loss ~23 after its decay, no single batch
# ever 100x the first loss: only the smoothed-loss check sees that it diverged.
DIVERGING = TrainConfig(lr=0.3, schedule="wsd", device="cpu")


def test_a_diverging_run_stops_with_the_reason() -> None:
    result = train("digits", DIVERGING)
    assert result.diverged and math.isnan(result.value)
    assert result.reason is not None
    assert "smoothed training loss" in result.reason
    assert f"above {DIVERGENCE_FACTOR:g}x its first value" in result.reason


def test_the_task_can_turn_it_off() -> None:
    watched = train("digits", DIVERGING)
    result = train(replace(digits(0), divergence_factor=None), DIVERGING)
    # Off, the smoothed-loss rule never stops the run: it trains on past where the watch
    # stopped it, to the end or to a batch that is non-finite or 100x the first (those two
    # rules stay on; which one this run meets depends on its exact trajectory).
    assert "smoothed training loss" in (watched.reason or "")
    assert "smoothed training loss" not in (result.reason or "")
    assert _stop_step(result.reason) > _stop_step(watched.reason)
    assert max(result.history) > 10  # what the check keeps from the samplers


def _stop_step(reason: str | None) -> float:
    """The step a diverged run stopped at (its reason says), ``inf`` for a run to the end."""
    found = re.search(r"at step (\d+)", reason or "")
    return float(found.group(1)) if found else math.inf


def test_healthy_runs_are_not_touched() -> None:
    for schedule, lr in (("cosine", 0.1), ("onecycle", 0.2), ("constant", 0.2)):
        result = train("digits", TrainConfig(lr=lr, schedule=schedule, device="cpu"))
        assert not result.diverged and result.value < 0.5, (schedule, lr, result.reason)


def test_a_diverging_trial_is_pruned_with_the_reason() -> None:
    spec = StudySpec(task="digits", samplers=("random",), prior=("none",), schedules=("wsd",))
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.3, "schedule": "wsd"})
    study.optimize(make_objective(spec, (1e-3, 1.0), budget=1, device="cpu"), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["diverged"] is True
    assert trial.user_attrs["prune_reason"].startswith("diverged: smoothed training loss")


def test_the_watch_on_numbers() -> None:
    watch = DivergenceWatch(4.0)
    assert watch.check(2.0, 0, 0.1) is None
    assert all(watch.check(2.0, i, 0.1) is None for i in range(1, 50))
    reasons = [watch.check(20.0, i, 0.1) for i in range(50, 80)]
    assert reasons[0] is None  # one bad batch moves the smoothed loss a little
    assert any(r is not None and "above 4x" in r for r in reasons)
    spike = DivergenceWatch(None)
    spike.check(1.0, 0, 1.0)
    assert "exploded to 200" in (spike.check(200.0, 1, 1.0) or "")
    assert "non-finite" in (spike.check(math.nan, 2, 1.0) or "")
    negative = DivergenceWatch(4.0)  # a log-likelihood: no scale to multiply
    assert all(negative.check(v, i, 1.0) is None for i, v in enumerate([-5.0, 50.0, 500.0]))


@pytest.mark.parametrize("bad", [1.0, 0.5, -2, math.inf, math.nan, "4", True])
def test_a_bad_divergence_factor_is_one_line(bad: object) -> None:
    with pytest.raises(UserError, match="divergence_factor must be a number above 1"):
        check_task(replace(digits(0), divergence_factor=bad))  # type: ignore[arg-type]
