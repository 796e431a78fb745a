"""What a group writes for people to read beside its trials: the range test (user attr,
PNG artifact, dashboard graph) and the comparison (user attr, notes, graphs)."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna

from lrtune.rangetest import RangeTestResult

__all__ = ["range_test_png", "record_range_test", "save_comparison"]


def range_test_png(result: RangeTestResult, path: Path) -> Path:
    """The range test's PNG at ``path`` (a ``.png`` file, or a directory to put it in)."""
    from lrtune.report import plot_range_test

    return plot_range_test(result, path if path.suffix == ".png" else path / "rangetest.png")


def record_range_test(
    study: optuna.Study,
    result: RangeTestResult,
    storage_url: str,
    *,
    plot_path: Path | None = None,
) -> None:
    """Store ``result`` on ``study`` (user attr ``rangetest``), its plot as an artifact and
    its interactive graph on the dashboard's study page."""
    from lrtune.dashboard import artifact_store
    from lrtune.dashboard.graphs import save_rangetest_graph

    study.set_user_attr("rangetest", result.to_dict())
    with tempfile.TemporaryDirectory(prefix="lrtune-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        path = plot_path or range_test_png(result, Path(tmp))
        artifact_id = optuna.artifacts.upload_artifact(
            study_or_trial=study, file_path=str(path), artifact_store=artifact_store(storage_url)
        )
    study.set_user_attr("rangetest_plot_artifact", artifact_id)
    save_rangetest_graph(study, result)


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
                    f"- budget: {attrs.get('budget')} finished trials",
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
