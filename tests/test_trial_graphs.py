"""lrtune's per-trial views on optuna-dashboard: the metric per epoch, the importances
with readable labels, and each trial's config as indented JSON in its note."""

from __future__ import annotations

import json

import optuna
from optuna_dashboard import get_note

from lrtune.dashboard.trial_graphs import (
    IMPORTANCE_GRAPH,
    INTERMEDIATE_GRAPH,
    importance_figure,
    intermediate_figure,
    save_trial_graphs,
    save_trial_notes,
)


def _study() -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        schedule = trial.suggest_categorical("schedule", ["cosine", "constant"])
        for epoch in range(3):
            trial.report(lr * (3 - epoch), epoch)
        trial.set_user_attr("config", {"optimizer": {"name": "sgd", "lr": lr}, "schedule": {}})
        return lr + (schedule == "constant")

    study.optimize(objective, n_trials=6)
    return study


def test_intermediate_figure_names_the_metric_and_epochs() -> None:
    study = _study()
    fig = intermediate_figure(study.trials, metric="val_loss", study="s")
    assert fig.layout.yaxis.title.text == "val_loss"
    assert fig.layout.xaxis.title.text == "epoch"
    assert len(fig.data) == 6 and list(fig.data[0].x) == [1, 2, 3]
    assert fig.data[0].name.startswith("#0 ")


def test_importance_figure_keeps_labels_outside_the_bars() -> None:
    fig = importance_figure({"lr": 0.9, "cosine.final_factor": 0.1}, study="s")
    (bar,) = fig.data
    assert list(bar.y) == ["cosine.final_factor", "lr"]  # most important on top
    assert bar.textposition == "outside" and bar.cliponaxis is False
    assert fig.layout.yaxis.automargin is True
    assert fig.layout.xaxis.range[1] > 0.9  # room for the value printed after the bar


def test_saved_on_the_study_with_a_json_note_per_trial() -> None:
    study = _study()
    save_trial_graphs(study, "val_loss")
    keys = study._storage.get_study_system_attrs(study._study_id)
    assert any(INTERMEDIATE_GRAPH in k for k in keys)
    assert any(IMPORTANCE_GRAPH in k for k in keys)
    save_trial_notes(study)
    note = get_note(optuna.Trial(study, study.trials[0]._trial_id))
    body = note.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(body) == study.trials[0].user_attrs["config"]
    assert '\n  "optimizer": {' in body  # indented, one key a line
    save_trial_notes(study)  # a second pass leaves the notes as they are
    assert get_note(optuna.Trial(study, study.trials[0]._trial_id)) == note
