"""What the report reads from a group's studies: finished trials, best-so-far curves,
the bounds each prior started from, and parameter importances. Nothing is written.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lrtune.direction import sign as direction_sign

if TYPE_CHECKING:
    import optuna

MIN_IMPORTANCE_TRIALS = 4
"""Complete trials a study needs before its parameter importances are computed."""


def finished_trials(study: Any) -> list[Any]:
    """The study's finished (complete or pruned) trials, by number."""
    from lrtune.search.states import FINISHED

    return sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state in FINISHED),
        key=lambda t: t.number,
    )


def value_of(trial: Any) -> float | None:
    """A complete trial's value; ``None`` for pruned trials or non-finite values."""
    import optuna

    if trial.state != optuna.trial.TrialState.COMPLETE or trial.value is None:
        return None
    return float(trial.value) if math.isfinite(trial.value) else None


def last_reported(trial: Any) -> float | None:
    """The last finite intermediate value a (pruned) trial reported, or ``None``."""
    values = [v for _, v in sorted(trial.intermediate_values.items()) if math.isfinite(v)]
    return float(values[-1]) if values else None


def param_importances(
    cmp: Any, studies: dict[str, Any]
) -> tuple[str | None, dict[str, float] | None, str]:
    """``(study, importances, note)`` for the best study with enough complete trials."""
    import optuna

    sign = direction_sign(cmp.direction)
    rows = sorted((r for r in cmp.rows if r.best is not None), key=lambda r: sign * r.best)
    for row in rows:
        study = studies[row.study]
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < MIN_IMPORTANCE_TRIALS:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
                )
            except (RuntimeError, ValueError) as exc:
                return row.study, None, f"Optuna could not compute importances: {exc}"
        degenerate = [
            w for w in caught if "too small" in str(w.message) or "equal" in str(w.message)
        ]
        if degenerate or not values:
            reason = str(degenerate[0].message) if degenerate else "no parameters varied"
            return row.study, None, f"{row.study}: {reason}"
        note = (
            "Optuna's `get_param_importances` with the PED-ANOVA evaluator (Optuna 5's "
            f"default) on **{row.study}**, the best study with at least "
            f"{MIN_IMPORTANCE_TRIALS} complete trials ({len(complete)} complete). "
            "With few trials these are rough; inside narrow range-test bounds the LR "
            "matters less than across the wide space."
        )
        return row.study, {k: float(v) for k, v in values.items()}, note
    most = max((r.done for r in cmp.rows), default=0)
    return (
        None,
        None,
        f"not computed: no study has {MIN_IMPORTANCE_TRIALS} complete trials yet "
        f"(most finished: {most}); run more trials (`--trials`) for importances",
    )


def start_bounds(studies: Iterable[optuna.Study]) -> dict[str, tuple[float, float]]:
    """The LR bounds each prior started from, by prior name.

    Widening moves a study's ``bounds`` (each study its own way); the first entry of its
    ``bounds_history`` is what the range test gave, the same for every study of the prior.
    """
    out: dict[str, tuple[float, float]] = {}
    for s in studies:
        attrs = s.user_attrs
        if attrs.get("bounds"):
            first = attrs.get("bounds_history", [attrs["bounds"]])[0]
            out[str(attrs.get("prior"))] = (float(first[0]), float(first[1]))
    return out
