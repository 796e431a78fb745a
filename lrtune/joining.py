"""A study as a worker loads it to run trials: the one trust check of the task it names
(:func:`trusted_task`, the ``--task`` pin), its sampler, pruner and objective rebuilt from
what the study stores (:func:`load_for_work`), the artifact store trials checkpoint into.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import optuna

from lrtune.errors import UserError
from lrtune.group import confirm, confirm_trial
from lrtune.group.prepare import WORKER_SEED_STRIDE
from lrtune.search import ladder as rungs
from lrtune.search.objective import make_objective
from lrtune.search.samplers import BottomRungView, make_pruner, make_sampler
from lrtune.search.space import grid_space
from lrtune.search.spec import StudySpec
from lrtune.training.checkpoint import ArtifactStore
from lrtune.training.loading import locate_task

log = logging.getLogger(__name__)

#: A loaded study: ``(study, objective, budget)``.
Loaded = tuple[optuna.Study, Callable[[optuna.Trial], float], int]


def load_for_work(
    storage: optuna.storages.BaseStorage,
    name: str,
    worker: int,
    device: str,
    task: str | None = None,
    checkpoint_store: ArtifactStore | None = None,
) -> Loaded:
    """``name`` as this worker runs it: ``(study, objective, budget)``, its task through
    the trust check (:func:`trusted_task`), its sampler seeded per worker (``worker``)."""
    # The sampler is built from what the study stores, so read its attrs before loading it.
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    trusted = trusted_task(name, attrs, task)  # every study, search and confirm alike
    if confirm.is_confirm_study(attrs):
        return confirm_trial.load(storage, name, task=trusted, device=device, worker=worker_id())
    spec = dataclasses.replace(StudySpec.from_dict(attrs["spec"]), task=trusted)
    bounds = (float(attrs["bounds"][0]), float(attrs["bounds"][1]))
    budget = int(attrs["budget"])
    ladder = rungs.Ladder.from_attrs(attrs)
    sampler = make_sampler(
        attrs["sampler"],
        seed=int(attrs["seed"]) + WORKER_SEED_STRIDE * worker,
        # With rungs the sampler proposes the bottom rung's configurations: many more.
        budget=budget if ladder is None else ladder.bottom_trials(),
        grid=grid_space(spec, bounds),
    )
    pruner = (
        make_pruner(spec.pruner, epochs=int(attrs["epochs"]))
        if ladder is None
        else BottomRungView()
    )
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    objective = make_objective(
        spec,
        bounds,
        budget=budget,
        device=device,
        worker=worker_id(),
        follow_bounds=attrs["prior"] == "rangetest" and spec.widen and attrs["sampler"] != "grid",
        ladder=ladder,
        reference_batch=reference_batch(attrs),
        checkpoint_store=checkpoint_store,
    )
    return study, objective, budget


def checkpoint_store(storage_url: str) -> ArtifactStore | None:
    """The artifact store trials checkpoint into: the one beside the storage
    (:func:`lrtune.dashboard.artifact_store`); ``None``, with one warning, when its directory
    cannot be made (the trials then run without checkpoints). An S3 location that cannot
    be used (no boto3, no such bucket, no credentials) is the user's to fix: its one-line
    :class:`UserError` stops the worker before any trial."""
    from lrtune.dashboard import ARTIFACTS_ENV, artifact_store
    from lrtune.dashboard.s3 import is_s3

    try:
        return artifact_store(storage_url)
    except UserError as exc:
        if is_s3(os.environ.get(ARTIFACTS_ENV, "")):
            raise
        log.warning("trials run without checkpoints: %s", exc)
        return None


def trusted_task(study: str, attrs: dict[str, Any], pinned: str | None) -> str:
    """The task a worker may import for ``study`` (its user ``attrs``; a search or a
    confirm study): the one trust check of every study a worker loads, made before anything
    of the study is imported.

    With ``pinned`` (``worker --task``) the study must name that task, and the pinned name
    is what is imported, as the operator wrote it (a relative task file from the worker's
    folder: the ``task_dir`` the study names does not move it). Unpinned, a relative task
    file is found from the folder the study was created in
    (:func:`~lrtune.training.loading.locate_task`).
    """
    spec = attrs.get("spec")
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(task, str):
        raise UserError(f"study {study} names no task: not an lrtune study; nothing was imported")
    check_task_pin(study, task, pinned)
    return task if pinned is not None else locate_task(task, attrs.get("task_dir"))


def reference_batch(attrs: dict) -> int | None:
    """The batch size a ``rangetest``-prior study's bounds were measured at (its range
    test's); ``None`` for fixed bounds (prior ``none``, or a range test that did not record
    it)."""
    if attrs.get("prior") != "rangetest":
        return None
    batch = (attrs.get("rangetest") or {}).get("batch_size")
    return int(batch) if isinstance(batch, int) else None


def check_task_pin(study: str, task: str, pinned: str | None) -> None:
    """Refuse a study whose task is not ``pinned`` (``worker --task``), before importing it.

    A worker imports the task a study names, so whoever can write to the storage chooses
    the code workers run; a pinned worker runs only the task its operator named.
    """
    if pinned is not None and task != pinned:
        raise UserError(
            f"study {study} runs task {task!r}, not the pinned --task {pinned!r}; "
            "nothing was imported"
        )


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
