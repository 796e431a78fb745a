"""A prior that can be wrong: bounds grow past an edge where the best trials crowd."""

from __future__ import annotations

import optuna
import pytest

from lrtune.cli import main
from lrtune.widen import STEP_DECADES, edge_position, widened

LIMITS = (1e-6, 10.0)


def test_widened_moves_only_the_crowded_edge() -> None:
    bounds = (1e-3, 1e-1)
    assert widened(bounds, 9e-2, LIMITS) == pytest.approx((1e-3, 1e-1 * 10**STEP_DECADES))
    assert widened(bounds, 1.1e-3, LIMITS) == pytest.approx((1e-3 / 10**STEP_DECADES, 1e-1))
    assert widened(bounds, 1e-2, LIMITS) == bounds  # in the middle: nothing moves
    assert widened((1e-3, 8.0), 7.9, LIMITS) == (1e-3, 10.0)  # never past the wide bounds
    assert edge_position(1e-2, bounds) == pytest.approx(0.5)


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


def test_shifted_prior_recovers(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = _run(sqlite_url)
    shifted_high = study.user_attrs["bounds_history"][0][1]
    final_low, final_high = study.user_attrs["bounds"]
    assert final_high >= shifted_high * 10  # grew at least a decade, in 0.5-decade steps
    assert study.best_trial.params["lr"] > shifted_high * 3  # the best is past the old edge
    # Every trial stayed inside the bounds in force when it ran, never past the wide ones.
    lrs = [t.params["lr"] for t in study.trials if "lr" in t.params]
    assert min(lrs) >= final_low and max(lrs) <= min(final_high, 10.0)


def test_no_widen_keeps_the_bounds(sqlite_url: str) -> None:
    study = _run(sqlite_url, "--no-widen")
    assert "bounds_history" not in study.user_attrs
    high = study.user_attrs["bounds"][1]
    assert all(t.params["lr"] <= high for t in study.trials if "lr" in t.params)
