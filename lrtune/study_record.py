"""What a group writes for people to read once its comparison is computed: the comparison
on every study (user attr, dashboard note), the group's best-so-far graph, each study's
per-trial graphs and notes (:mod:`lrtune.dashboard.trial_graphs`)."""

from __future__ import annotations

import math
from typing import Any

import optuna

__all__ = ["save_comparison"]


def _budget(attrs: dict[str, Any]) -> str:
    """A study's stored budget in words (with rungs: full-trial equivalents)."""
    from lrtune.search.ladder import Ladder, budget_text

    ladder = Ladder.from_attrs(attrs)
    rungs, eta = (ladder.rungs, ladder.eta) if ladder is not None else ((), 3)
    return budget_text(attrs.get("budget"), rungs, eta)


def save_comparison(storage: optuna.storages.BaseStorage, cmp: Any) -> None:
    """Store the comparison on every study of its group (user attr, dashboard note and the
    group's best-so-far graph)."""
    from lrtune.dashboard import write_study_note
    from lrtune.dashboard.graphs import save_best_so_far_graph
    from lrtune.dashboard.trial_graphs import save_trial_graphs, save_trial_notes
    from lrtune.table import format_table

    data = cmp.to_dict()
    table, _, notes = format_table(cmp, markdown=True).partition("\n\n")
    table += "\n\n" + "\n".join(f"- {line}" for line in notes.splitlines())
    studies = []
    for row in cmp.rows:
        study = optuna.load_study(study_name=row.study, storage=storage)
        studies.append(study)
        save_trial_graphs(study, cmp.metric)
        save_trial_notes(study)  # trials of workers that predate the notes, too
        study.set_user_attr("comparison", data)
        attrs = study.user_attrs
        low, high = attrs.get("bounds", [math.nan, math.nan])
        write_study_note(
            study,
            "\n".join(
                [
                    f"## {row.study}",
                    f"- task: `{attrs.get('task')}`, sampler **{attrs.get('sampler')}**, "
                    f"prior **{attrs.get('prior')}**, LR bounds {low:.3g} … {high:.3g}",
                    f"- budget: {_budget(attrs)}",
                    "",
                    "### Comparison of the group",
                    "",
                    table,
                ]
            ),
        )
    save_best_so_far_graph(
        studies, group=cmp.group, metric=cmp.metric, direction=cmp.direction, target=cmp.target
    )
    from lrtune.confirmed import write_note

    write_note(storage, cmp.group, cmp.confirm)  # the confirm study's own note
