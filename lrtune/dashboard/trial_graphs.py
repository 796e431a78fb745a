"""What optuna-dashboard 0.21 shows of a study's trials, in lrtune's words.

The dashboard's own "Intermediate values" plot says "Objective Value" against "Step" and
its "Hyperparameter Importance" bars clip their labels; both are drawn by its bundled
JavaScript, which lrtune leaves alone. Instead lrtune adds its own Plotly graphs through
the dashboard's extension point (:func:`optuna_dashboard.save_plotly_graph_object`, fixed
ids so a re-save replaces them) and a note per trial (:func:`optuna_dashboard.save_note`):

- :data:`INTERMEDIATE_GRAPH`: each trial's metric after every epoch, the axes named after
  the metric (``val_loss``) and ``epoch``;
- :data:`IMPORTANCE_GRAPH`: the parameters' importances (PED-ANOVA, as ``lrtune report``)
  with the names left of the bars and the values outside them;
- each finished trial's note: its training config as indented JSON (the ``config`` user
  attr is one line there; the note reads like the file ``lrtune export`` writes).

Plotly and optuna-dashboard are imported inside the functions.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "IMPORTANCE_GRAPH",
    "INTERMEDIATE_GRAPH",
    "importance_figure",
    "intermediate_figure",
    "save_trial_graphs",
    "save_trial_notes",
    "show_trial",
]

INTERMEDIATE_GRAPH = "lrtune-intermediate"
"""Graph id of the per-epoch metric of every trial (one per study, replaced on update)."""

IMPORTANCE_GRAPH = "lrtune-importance"
"""Graph id of the parameter importances (one per study, replaced on update)."""

#: Complete trials before importances mean anything (as ``lrtune report``).
MIN_TRIALS_FOR_IMPORTANCE = 4
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _label(trial: optuna.trial.FrozenTrial) -> str:
    lr = trial.params.get("lr")
    schedule = trial.params.get("schedule", "")
    return (
        f"#{trial.number} {schedule} lr {lr:.3g}" if isinstance(lr, float) else f"#{trial.number}"
    )


def intermediate_figure(
    trials: list[optuna.trial.FrozenTrial], *, metric: str, study: str
) -> go.Figure:
    """One line per finished trial: ``metric`` after epoch 1, 2, ... (a pruned trial's
    line stops where it was pruned)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for trial in sorted((t for t in trials if t.state in _FINISHED), key=lambda t: t.number):
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        fig.add_trace(
            go.Scatter(
                x=[s + 1 for s in steps],
                y=[v if math.isfinite(v) else None for v in values],
                mode="lines+markers",
                name=_label(trial),
                hovertemplate="epoch %{x}: %{y:.4g}<extra>" + _label(trial) + "</extra>",
            )
        )
    fig.update_layout(
        title={"text": f"{metric} per epoch: {study}", "font": {"size": 14}},
        xaxis={"title": {"text": "epoch"}, "dtick": 1},
        yaxis={"title": {"text": metric}},
        showlegend=len(fig.data) <= 20,
        legend={"font": {"size": 10}},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def importance_figure(importances: dict[str, float], *, study: str) -> go.Figure:
    """Horizontal bars, most important on top, names left of the bars (never clipped:
    the margin grows with them), values printed outside the bars."""
    import plotly.graph_objects as go

    names = list(reversed(importances))
    values = [importances[n] for n in names]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            text=[f"{v:.2f}" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": f"Parameter importance (PED-ANOVA): {study}", "font": {"size": 14}},
        xaxis={"title": {"text": "importance"}, "range": [0, max(values, default=1.0) * 1.2]},
        yaxis={"automargin": True, "tickfont": {"size": 12}},
        height=max(250, 60 + 40 * len(names)),
        margin={"l": 20, "r": 40, "t": 50, "b": 50},
    )
    return fig


def _importances(study: optuna.Study) -> dict[str, float] | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
    except (RuntimeError, ValueError):  # one distinct value, a single parameter...
        return None
    return dict(found) or None


def save_trial_graphs(study: optuna.Study, metric: str) -> None:
    """Save (or replace) :data:`INTERMEDIATE_GRAPH` and, with enough complete trials,
    :data:`IMPORTANCE_GRAPH` on ``study``."""
    from optuna_dashboard import save_plotly_graph_object

    trials = study.get_trials(deepcopy=False)
    fig = intermediate_figure(trials, metric=metric, study=study.study_name)
    save_plotly_graph_object(study, fig, graph_object_id=INTERMEDIATE_GRAPH)
    importances = _importances(study)
    if importances is not None:
        fig = importance_figure(importances, study=study.study_name)
        save_plotly_graph_object(study, fig, graph_object_id=IMPORTANCE_GRAPH)


def config_note(trial: optuna.trial.FrozenTrial) -> str | None:
    """A trial's note: its ``config`` as indented JSON; ``None`` without one."""
    config: Any = trial.user_attrs.get("config")
    if not isinstance(config, dict):
        return None
    body = json.dumps(config, indent=2)
    return f"### Trial {trial.number}: training config\n\n```json\n{body}\n```\n"


def save_trial_notes(study: optuna.Study) -> None:
    """Write :func:`config_note` as the note of each finished trial that has none yet."""
    from optuna_dashboard import get_note, save_note

    for frozen in study.get_trials(deepcopy=False, states=_FINISHED):
        text = config_note(frozen)
        if text is None:
            continue
        trial = optuna.Trial(study, frozen._trial_id)
        if not get_note(trial):
            save_note(trial, text)


def show_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After a worker finished ``trial``: its config note and the study's trial graphs.

    The dashboard is a view: a failure here is logged, never the worker's.
    """
    import logging

    metric = str(study.user_attrs.get("metric", "value"))
    try:
        text = config_note(trial)
        if text is not None:
            from optuna_dashboard import save_note

            save_note(optuna.Trial(study, trial._trial_id), text)
        save_trial_graphs(study, metric)
    except Exception as exc:  # a view must not stop the trials
        from lrtune.dberrors import is_connection_error

        # A database lost mid-run is the storage retry's to report (one line, not a
        # misleading "invalid data in the commit" from Optuna); the next trial rewrites
        # the graphs.
        level = logging.INFO if is_connection_error(exc) else logging.WARNING
        logging.getLogger(__name__).log(level, "dashboard graphs of %s: %s", study.study_name, exc)
