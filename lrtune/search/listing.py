"""What ``lrtune ls`` shows: the studies in a storage with their progress and best value,
read without torch."""

from __future__ import annotations

from typing import Any

import optuna

from lrtune.search.ladder import Ladder, is_result, usage
from lrtune.storage import open_storage


def list_studies(storage_url: str, group: str | None = None) -> list[dict[str, Any]]:
    """One dict per study: name, sampler, prior, done, budget, best value.

    ``done`` counts finished trials; with rungs it is the compute they trained in
    full-trial equivalents (``unit`` ``eq``), and ``best`` is the top rung's."""
    storage = open_storage(storage_url, readonly=True)
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = s.user_attrs
        if group is not None and group not in (attrs.get("group"), attrs.get("confirm_of")):
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        ladder = Ladder.from_attrs(attrs)
        trials = study.get_trials(deepcopy=False)
        done, _running = usage(trials, ladder)
        values = [float(t.value or 0.0) for t in trials if is_result(t, ladder)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        rows.append(
            {
                "study": s.study_name,
                "sampler": attrs.get("sampler", "-"),
                "prior": attrs.get("prior", "-"),
                "done": int(done) if ladder is None else float(f"{done:.3g}"),
                "budget": attrs.get("budget", "-"),
                "unit": "" if ladder is None else " eq",
                "best": f"{pick(values):.4g}" if values else "-",
            }
        )
    return rows
