"""Which trials count, and which studies form a group: read from a storage, without torch.

The comparison, the progress display, the widening of bounds and the read-only commands
(``lrtune ls``, :mod:`lrtune.search.listing`) need these; keeping them here (Optuna only)
lets them run without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna

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
