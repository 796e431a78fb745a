"""A prior that can be wrong: bounds grow past an edge where the best trials crowd."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from lrtune.cli import main
from lrtune.search.widen import STEP_DECADES, edge_position, maybe_widen, next_step, widened

LIMITS = (1e-6, 10.0)


def test_widened_moves_only_the_crowded_edge() -> None:
    bounds = (1e-3, 1e-1)
    assert widened(bounds, 9e-2, LIMITS) == pytest.approx((1e-3, 1e-1 * 10**STEP_DECADES))
    assert widened(bounds, 1.1e-3, LIMITS) == pytest.approx((1e-3 / 10**STEP_DECADES, 1e-1))
    assert widened(bounds, 1e-2, LIMITS) == bounds  # in the middle: nothing moves
    assert widened((1e-3, 8.0), 7.9, LIMITS) == (1e-3, 10.0)  # never past the wide bounds
    assert edge_position(1e-2, bounds) == pytest.approx(0.5)


def test_next_step_doubles_while_the_same_edge_keeps_moving() -> None:
    history = [[1e-3, 1e-2]]
    assert next_step(history, moving_high=True) == STEP_DECADES
    history.append([1e-3, 1e-2 * 10**0.5])
    assert next_step(history, moving_high=True) == 2 * STEP_DECADES
    history.append([1e-3, 1e-2 * 10**1.5])
    assert next_step(history, moving_high=True) == 4 * STEP_DECADES
    assert next_step(history, moving_high=False) == STEP_DECADES  # the other edge starts over
    history.append([1e-3 / 10**0.5, 1e-2 * 10**1.5])
    assert next_step(history, moving_high=True) == STEP_DECADES


def _prior_study(budget: int | None) -> optuna.Study:
    study = optuna.create_study()
    attrs = {
        "prior": "rangetest",
        "sampler": "tpe",
        "spec": {"widen": True, "lr_low": 1e-6, "lr_high": 10.0},
        "bounds": [1e-3, 1e-2],
    }
    if budget is not None:
        attrs["budget"] = budget
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
        "schedule": optuna.distributions.CategoricalDistribution(["cosine", "wsd"]),
    }
    for lr, schedule, value in [(2e-3, "cosine", 0.5), (4e-3, "cosine", 0.4), (9e-3, "wsd", 0.3)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "schedule": schedule}, distributions=dists, value=value
            )
        )
    return study


def test_a_move_enqueues_a_probe_past_the_old_edge() -> None:
    study = _prior_study(budget=10)
    new = maybe_widen(study)
    assert new == pytest.approx((1e-3, 1e-2 * 10**STEP_DECADES))
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1
    probe = waiting[0]
    fixed = probe.system_attrs["fixed_params"]  # an enqueued trial's params, until it runs
    # In the middle (log) of the strip gained, with the best trial's schedule.
    assert fixed["lr"] == pytest.approx(1e-2 * 10 ** (STEP_DECADES / 2))
    assert fixed["schedule"] == "wsd"
    assert probe.user_attrs["probe"] == "widen"


def test_no_probe_once_the_budget_is_taken() -> None:
    study = _prior_study(budget=3)
    assert maybe_widen(study) is not None  # the bounds still move
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def _run(url: str, *extra: str) -> optuna.Study:
    common = [
        "--storage",
        url,
        "--prior",
        "rangetest",
        "--samplers",
        "tpe",
        "--trials",
        "16",
        "--epochs",
        "3",
        "--schedules",
        "cosine",
        "--pruner",
        "none",
        *extra,
    ]
    assert main(["study", *common, "--create-only"]) == 0
    study = optuna.load_study(study_name="digits.tpe.rangetest", storage=url)
    low, high = study.user_attrs["bounds"]
    # A misleading range test: bounds two decades below what it found.
    study.set_user_attr("bounds", [low / 100, high / 100])
    assert main(["worker", "--group", "digits", "--storage", url]) == 0
    return optuna.load_study(study_name="digits.tpe.rangetest", storage=url)


@pytest.mark.slow
def test_shifted_prior_recovers(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = _run(sqlite_url)
    shifted_high = study.user_attrs["bounds_history"][0][1]
    final_low, final_high = study.user_attrs["bounds"]
    assert final_high >= shifted_high * 10  # grew at least a decade, in 0.5-decade steps
    assert study.best_trial.params["lr"] > shifted_high * 3  # the best is past the old edge
    # Each move enqueued a probe past the old edge; they ran, none is left waiting.
    probes = [t for t in study.trials if t.user_attrs.get("probe") == "widen"]
    assert probes and all(t.params["lr"] > shifted_high for t in probes)
    # The range-test graph on the dashboard shows every move (one graph, redrawn each time).
    attrs = study._storage.get_study_system_attrs(study._study_id)
    graphs = get_plotly_graph_objects(attrs)
    # (Beside it, the worker's per-trial graphs: lrtune.dashboard.trial_graphs.)
    assert sorted(graphs) == ["lrtune-importance", "lrtune-intermediate", "lrtune-rangetest"]
    shapes = json.loads(graphs["lrtune-rangetest"])["layout"]["shapes"]
    moves = len(study.user_attrs["bounds_history"]) - 1
    assert sum(s["name"].startswith("widened") and "edge" not in s["name"] for s in shapes) == moves
    assert shapes[-1]["x0"] == pytest.approx(final_high)  # the line at the last moved edge
    assert all(t.state != optuna.trial.TrialState.WAITING for t in study.trials)
    # Every trial stayed inside the bounds in force when it ran, never past the wide ones.
    lrs = [t.params["lr"] for t in study.trials if "lr" in t.params]
    assert min(lrs) >= final_low and max(lrs) <= min(final_high, 10.0)


@pytest.mark.slow
def test_no_widen_keeps_the_bounds(sqlite_url: str) -> None:
    study = _run(sqlite_url, "--no-widen")
    assert "bounds_history" not in study.user_attrs
    high = study.user_attrs["bounds"][1]
    assert all(t.params["lr"] <= high for t in study.trials if "lr" in t.params)
