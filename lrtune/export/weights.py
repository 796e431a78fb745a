"""``export --weights PATH``: the exported trial's final ``state_dict``, kept in the artifact
store beside the storage when the trial finished (trial user attr ``weights``; trials of
lrtune's own loop with checkpoints on keep them, :mod:`lrtune.training.checkpoint`).
Unless ``--keep-checkpoints``, the other finished trials' weights of the group are then
removed from the store.

Everything is checked before anything is written: the weights are read and copied to a
temporary file beside ``PATH`` (:func:`prepare_weights`), then the config is written, then
:meth:`PendingWeights.commit` moves the file into place and prunes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrtune.errors import UserError

log = logging.getLogger(__name__)

#: The trial user attr naming a finished trial's weights artifact.
WEIGHTS_ATTR = "weights"


@dataclass(kw_only=True)
class PendingWeights:
    """Weights copied next to their destination, not yet moved into place."""

    path: Path
    temp: Path
    storage_url: str
    group: str | None
    keep: str
    keep_all: bool

    def commit(self) -> int:
        """Move the weights into place; unless ``keep_all``, remove the group's other
        trials' weights. Returns how many were removed."""
        os.replace(self.temp, self.path)
        if self.keep_all or self.group is None:
            return 0
        return _prune(self.storage_url, self.group, self.keep)

    def abort(self) -> None:
        """Remove the temporary copy (the config could not be written)."""
        self.temp.unlink(missing_ok=True)


def prepare_weights(
    storage_url: str, source: dict[str, Any], path: str, *, keep_all: bool = False
) -> PendingWeights:
    """Read the weights of the trial ``source`` names (``study``, ``trial``: what the export
    took) and copy them to a temporary file beside ``path``. A one-line :class:`UserError`
    when the trial kept none, they are gone, or ``path`` cannot be written."""
    import optuna

    from lrtune.dashboard import artifact_location, artifact_store
    from lrtune.storage import open_storage

    storage = open_storage(storage_url, readonly=True)
    study = optuna.load_study(study_name=str(source["study"]), storage=storage)
    number = int(source["trial"])
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    artifact = trials[0].user_attrs.get(WEIGHTS_ATTR) if trials else None
    where = f"trial {number} of {study.study_name}"
    if not isinstance(artifact, str):
        raise UserError(
            f"{where} kept no weights: trials of lrtune's own loop keep their final weights "
            "unless the study ran with --checkpoint-every 0 (a fit task's loop keeps none); "
            "export without --weights, or run the study again"
        )
    try:
        with artifact_store(storage_url, create=False).open_reader(artifact) as reader:
            data = reader.read()
    except Exception as exc:
        raise UserError(
            f"{where}: its weights {artifact} are not in {artifact_location(storage_url)} ({exc}): "
            "removed by an earlier export without --keep-checkpoints, or $LRTUNE_ARTIFACTS "
            "points elsewhere"
        ) from None
    target = Path(path).expanduser()
    try:
        if target.is_dir():
            raise IsADirectoryError("a directory")
        handle, temp = tempfile.mkstemp(prefix=".lrtune-", suffix=".pt", dir=target.parent or ".")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except OSError as exc:
        raise UserError(f"--weights {path}: cannot write it: {exc.strerror or exc}") from None
    group = study.user_attrs.get("group")
    return PendingWeights(
        path=target,
        temp=Path(temp),
        storage_url=storage_url,
        group=group,
        keep=artifact,
        keep_all=keep_all,
    )


def _prune(storage_url: str, group: str, keep: str) -> int:
    import optuna

    from lrtune.dashboard import artifact_store
    from lrtune.search.states import group_study_names
    from lrtune.storage import open_storage

    storage = open_storage(storage_url, readonly=True)
    store = artifact_store(storage_url, create=False)
    removed = 0
    for name in group_study_names(storage, group):
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        ):
            artifact = trial.user_attrs.get(WEIGHTS_ATTR)
            if not isinstance(artifact, str) or artifact == keep:
                continue
            try:
                store.remove(artifact)
                removed += 1
            except Exception as exc:  # already removed by an earlier export
                log.debug("weights %s not removed: %s", artifact, exc)
    return removed
