"""optuna-dashboard for lrtune: serving it (:mod:`~lrtune.dashboard.app`) and lrtune's
own graphs and notes on the study page (:mod:`~lrtune.dashboard.graphs`).

``optuna``, ``optuna_dashboard`` and plotly are imported inside the functions that use them.
"""

from lrtune.dashboard.app import (
    ARTIFACT_SUFFIX,
    ARTIFACTS_ENV,
    DEFAULT_ARTIFACT_DIR,
    artifact_dir_for,
    artifact_location,
    artifact_store,
    dashboard_url,
    serve,
    write_study_note,
)

__all__ = [
    "ARTIFACTS_ENV",
    "ARTIFACT_SUFFIX",
    "DEFAULT_ARTIFACT_DIR",
    "artifact_dir_for",
    "artifact_location",
    "artifact_store",
    "dashboard_url",
    "serve",
    "write_study_note",
]
