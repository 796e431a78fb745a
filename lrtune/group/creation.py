"""Writing one study of a group so that a crash at any instant leaves nothing, or a study
the same ``lrtune study`` command finishes.

Optuna writes a study's row and each of its attributes in a transaction of their own, so a
kill (or a full disk) between two writes leaves a study with some of them. The ``group``
user attr is written last, after every other attr, the range test with its plot and the
dashboard note: until then the study is no member of its group
(:func:`lrtune.search.states.group_study_names`), so workers, the comparison and the
confirm study pass it by, and ``lrtune study`` writes it again from the start. Every write
here replaces what an earlier, cut-short one wrote (the range-test plot uploaded before is
reused), so writing a study twice leaves what writing it once does; two identical commands
at once write the same values.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lrtune import interrupt
from lrtune.dashboard.graphs import set_metric_name
from lrtune.errors import UserError
from lrtune.search.spec import StudySpec
from lrtune.search.states import is_created, unfinished_studies

if TYPE_CHECKING:
    from lrtune.rangetest import RangeTestResult

log = logging.getLogger(__name__)

#: The file name of the range-test plot among a study's artifacts.
PLOT_NAME = "rangetest.png"


def write_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    direction: str,
    metric: str,
    attrs: dict[str, Any],
    storage_url: str,
    rangetest: RangeTestResult | None,
    plot_path: Path | None,
    note: str,
) -> optuna.Study:
    """Create study ``name``, or finish one a crash left half-written, with user ``attrs``
    (``group`` among them, written last), the range test (when given) and the dashboard
    ``note``."""
    from lrtune.dashboard import write_study_note

    study = _create_or_load(storage, name, direction)
    set_metric_name(study, metric)  # the dashboard says val_loss, not Objective 0
    for key, value in attrs.items():
        if key != "group":
            study.set_user_attr(key, value)
    if rangetest is not None:
        record_range_test(study, rangetest, storage_url, plot_path=plot_path)
    write_study_note(study, note)
    # Last: from here on the study belongs to its group (see the module docstring).
    study.set_user_attr("group", attrs["group"])
    return study


def _create_or_load(
    storage: optuna.storages.BaseStorage, name: str, direction: str
) -> optuna.Study:
    wanted = optuna.study.StudyDirection[direction.upper()]
    try:
        return optuna.create_study(storage=storage, study_name=name, direction=wanted)
    except optuna.exceptions.DuplicatedStudyError:
        pass  # half-written by a command that stopped, or being written by a twin now
    study = optuna.load_study(study_name=name, storage=storage)
    if study.direction == wanted:
        return study
    if study.get_trials(deepcopy=False):
        raise UserError(
            f"study {name} exists to {study.direction.name.lower()}, the task now to "
            f"{direction}: pass --group NAME to start a new set"
        )
    # A half-written study with no trial and the other direction: a study's direction is
    # fixed at creation, so make it again.
    optuna.delete_study(study_name=name, storage=storage)
    return optuna.create_study(storage=storage, study_name=name, direction=wanted)


def spec_difference(name: str, stored: dict[str, Any], spec: StudySpec) -> str | None:
    """Why study ``name``, made with spec ``stored`` (its ``spec`` attr), cannot be resumed
    with ``spec`` (one line), or None when it can."""
    current = spec.to_dict()
    base = StudySpec().to_dict()  # a key stored before it existed had its default
    # trials may grow or shrink (the budget), repeats and priors/samplers add studies.
    free = {
        "trials",
        "repeats",
        "prior",
        "samplers",
        "group",
        "confirm",
        "confirm_seeds",
        "baseline",
    }
    differs = [k for k in current if k not in free and stored.get(k, base[k]) != current[k]]
    if not differs:
        return None
    return (
        f"study {name} exists with a different {differs[0]} ({stored.get(differs[0])!r} "
        f"there, {current[differs[0]]!r} now): re-run with the same settings to resume, "
        "or pass --group NAME to start a new set"
    )


def plot_png(result: RangeTestResult, path: Path) -> Path:
    """The range test's PNG at ``path`` (a ``.png`` file, or a directory to put it in as
    :data:`PLOT_NAME`): the file the study's artifact is made from."""
    from lrtune.report import plot_range_test

    return plot_range_test(result, path if path.suffix == ".png" else path / PLOT_NAME)


def record_range_test(
    study: optuna.Study,
    result: RangeTestResult,
    storage_url: str,
    *,
    plot_path: Path | None = None,
) -> None:
    """Store ``result`` on ``study`` (user attr ``rangetest``), its plot as an artifact
    (user attr ``rangetest_plot_artifact``) and its interactive graph on the dashboard's
    study page. A plot already uploaded for this same result (by a run cut short before
    it named the artifact) is reused, not uploaded again."""
    from lrtune.dashboard import artifact_store
    from lrtune.dashboard.graphs import save_rangetest_graph

    data = result.to_dict()
    store = artifact_store(storage_url)
    filename = plot_path.name if plot_path is not None else PLOT_NAME
    artifact_id = _uploaded_plot(study, data, filename, store)
    study.set_user_attr("rangetest", data)
    if artifact_id is None:
        with tempfile.TemporaryDirectory(prefix="lrtune-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            path = plot_path or plot_png(result, Path(tmp))
            artifact_id = optuna.artifacts.upload_artifact(
                study_or_trial=study, file_path=str(path), artifact_store=store
            )
    study.set_user_attr("rangetest_plot_artifact", artifact_id)
    save_rangetest_graph(study, result)


def _uploaded_plot(
    study: optuna.Study, data: dict[str, Any], filename: str, store: Any
) -> str | None:
    """The id of the plot ``filename`` of range test ``data`` that ``study`` already lists
    and the artifact ``store`` holds (a directory of this machine, or a bucket), else
    None."""
    stored = study.user_attrs.get("rangetest")
    if stored is None or json.dumps(stored, sort_keys=True) != json.dumps(data, sort_keys=True):
        return None  # no plot yet, or one of another range test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        metas = optuna.artifacts.get_all_artifact_meta(study)
    listed = [m.artifact_id for m in metas if m.filename == filename]
    named = study.user_attrs.get("rangetest_plot_artifact")
    for artifact_id in sorted(listed, key=lambda a: a != named):
        try:
            store.open_reader(artifact_id).close()
        except Exception:  # not there: uploaded to another machine's folder, or removed
            continue
        return artifact_id
    return None


def wait_created(
    storage: optuna.storages.BaseStorage,
    names: list[str],
    group: str | None,
    seconds: float,
    *,
    poll: float = 1.0,
) -> None:
    """Wait up to ``seconds`` for the studies ``lrtune study`` has not finished creating:
    those of ``group`` (:func:`~lrtune.search.states.unfinished_studies`) and any of
    ``names`` that is half-written. One still unfinished after that was left so by a
    command that stopped: a one-line :class:`UserError` says to run it again."""
    deadline = time.monotonic() + seconds
    while True:
        pending = unfinished_studies(storage, group) if group is not None else []
        for name in names:
            attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
            if not is_created(attrs) and "confirm_of" not in attrs and name not in pending:
                pending.append(name)
        if not pending:
            return
        if time.monotonic() >= deadline:
            more = f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""
            raise UserError(
                f"study {pending[0]}{more} is not fully created (an `lrtune study` stopped "
                "while creating it): run that `lrtune study` command again to finish it, "
                "then the worker"
            )
        log.info("waiting for `lrtune study` to finish creating %s", ", ".join(pending))
        interrupt.check()
        time.sleep(poll)
