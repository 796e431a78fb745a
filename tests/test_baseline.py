"""``study --baseline schedulefree``: a schedule-free arm beside the schedule search."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from lrtune.export import export_config
from lrtune.group.baseline import baseline_spec
from lrtune.search.spec import StudySpec, resolve_spec

pytest.importorskip("schedulefree", reason="the schedulefree extra is not installed")


def test_baseline_spec_keeps_what_the_schedule_free_optimizer_takes() -> None:
    spec = resolve_spec(
        {
            "task": "digits",
            "optimizer": {"name": "adam", "eps": 1e-7},
            "params": {"optimizer": {"weight_decay": [1e-5, 0.1]}},
            "schedules": ["cosine", "onecycle"],
            "samplers": ["grid", "random"],
        }
    )
    free = baseline_spec(spec)
    assert free.optimizer == "schedulefree_adamw"
    assert free.optimizer_params == {"eps": 1e-7}  # adam's weight decay is searched here
    assert free.params == {
        "constant": {"warmup_frac": ["float", 0.0, 0.2, False]},
        "optimizer": {"weight_decay": ["float", 1e-5, 0.1, True]},
    }
    assert free.schedules == ("constant",) and free.samplers == ("tpe",)
    assert StudySpec.from_dict(free.to_dict()) == free  # what a worker reads back
    sgd = baseline_spec(resolve_spec({"task": "digits", "optimizer": "sgd"}))
    assert sgd.optimizer == "schedulefree_sgd" and sgd.optimizer_params == {}


@pytest.mark.slow
def test_the_baseline_is_a_row_of_the_comparison_and_exports_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    argv = [
        "study",
        "--task",
        "digits",
        "--trials",
        "3",
        "--samplers",
        "random",
        "--prior",
        "rangetest,none",
        "--baseline",
        "schedulefree",
        "--epochs",
        "2",
        "--confirm",
        "1",
        "--confirm-seeds",
        "1",
        "--rangetest-seeds",
        "1",
        "--device",
        "cpu",
        "--storage",
        url,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digits.schedulefree.rangetest" in out and "digits.schedulefree.none" in out
    assert "schedule worth it? tuned schedules' best val_loss" in out
    assert "baseline schedulefree (schedulefree_sgd), prior rangetest: lr in" in out
    free = optuna.load_study(study_name="digits.schedulefree.rangetest", storage=url)
    tuned = optuna.load_study(study_name="digits.random.rangetest", storage=url)
    assert free.user_attrs["baseline"] == "schedulefree"
    assert free.user_attrs["rangetest"]["optimizer"] == "schedulefree_sgd"
    assert tuned.user_attrs["rangetest"]["optimizer"] == "sgd"
    assert free.user_attrs["bounds"] != tuned.user_attrs["bounds"]
    trials = free.get_trials()
    assert len(trials) == 3
    assert {t.user_attrs["config"]["optimizer"]["name"] for t in trials} == {"schedulefree_sgd"}
    assert {t.params["schedule"] for t in trials} == {"constant"}
    assert all(0.0 <= t.params["constant.warmup_frac"] <= 0.2 for t in trials)
    # The confirmation re-trains the search's configurations only (they share its optimizer).
    confirm = optuna.load_study(study_name="digits.confirm", storage=url)
    sources = {t.user_attrs["source"]["study"] for t in confirm.get_trials()}
    assert sources and not any("schedulefree" in s for s in sources)
    # Export of the baseline study: its own best trial, a schedule-free config.
    config = export_config(url, "digits.schedulefree.rangetest")
    assert config["optimizer"]["name"] == "schedulefree_sgd"
    assert config["schedule"]["name"] == "constant" and "warmup_frac" in config["schedule"]
    # The same command resumes: nothing new runs.
    assert main(argv) == 0
    assert len(optuna.load_study(study_name=free.study_name, storage=url).get_trials()) == 3


def test_baseline_without_the_package_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "schedulefree", None)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/g.db"
    code = main(["study", "--baseline", "schedulefree", "--storage", url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'lrtune[schedulefree]'" in err
    assert list(tmp_path.iterdir()) == []
