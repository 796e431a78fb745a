"""Which trials count, and which studies form a group: read from a storage, without torch.

The comparison, the progress display, the widening of bounds and the read-only commands
(``lrtune ls`` lists a storage with :func:`list_studies`) need these; keeping them here
(Optuna only) lets them run without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import optuna

from lrtune.storage import open_storage

#: Trials that count toward a study's budget: complete or pruned (a pruned trial was a
#: real, if short, training run). FAIL trials (errors, surplus) do not count.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def finished(trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The finished trials of ``trials``, in the order they were started (trial number)."""
    return sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number)


def group_study_names(storage: optuna.storages.BaseStorage, group: str) -> list[str]:
    """Names of the studies of ``group`` in ``storage``, in creation order."""
    return [
        s.study_name
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.user_attrs.get("group") == group
    ]


def counts(study: optuna.Study) -> tuple[int, int]:
    """``(finished, running)`` trials; finished = complete or pruned."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return done, running


def list_studies(storage_url: str, group: str | None = None) -> list[dict[str, Any]]:
    """One dict per study: name, sampler, prior, done, budget, best value."""
    storage = open_storage(storage_url, readonly=True)
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=True):
        attrs = s.user_attrs
        if group is not None and group not in (attrs.get("group"), attrs.get("confirm_of")):
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        done, _running = counts(study)
        best = s.best_trial.value if s.best_trial is not None else None
        rows.append(
            {
                "study": s.study_name,
                "sampler": attrs.get("sampler", "-"),
                "prior": attrs.get("prior", "-"),
                "done": done,
                "budget": attrs.get("budget", "-"),
                "best": "-" if best is None else f"{best:.4g}",
            }
        )
    return rows
