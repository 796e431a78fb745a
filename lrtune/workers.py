"""Workers: processes that run the trials of a group's studies until each has its budget.

Optuna's RDB storage is the only coordination: any number of workers, on one machine or
many, load the same studies and each picks the study furthest from its budget. Heartbeats
let a live worker fail (and re-queue) the trial of a worker that died.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from lrtune import confirm, interrupt, preempt
from lrtune.creation import wait_created
from lrtune.dashboard.graphs import show_widened
from lrtune.dashboard.trial_graphs import show_trial
from lrtune.errors import UserError
from lrtune.faults import StaleWatch
from lrtune.search import ladder as rungs
from lrtune.search.objective import Surplus, TrialFailed, make_objective
from lrtune.search.samplers import BottomRungView, make_pruner, make_sampler
from lrtune.search.space import grid_space
from lrtune.search.spec import StudySpec
from lrtune.search.states import group_study_names
from lrtune.search.widen import can_widen, maybe_widen
from lrtune.storage import (
    first_line,
    is_connection_error,
    mask_url,
    open_storage,
    require_existing,
)
from lrtune.study import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    MAX_CONSECUTIVE_FAILURES,
    WORKER_SEED_STRIDE,
)
from lrtune.training.checkpoint import ArtifactStore
from lrtune.training.loading import locate_task

log = logging.getLogger(__name__)

#: How long a worker keeps retrying when the storage stops answering mid-run
#: (``$LRTUNE_STORAGE_RETRY_SECONDS`` overrides it).
STORAGE_RETRY_SECONDS = 120.0
STORAGE_RETRY_ENV = "LRTUNE_STORAGE_RETRY_SECONDS"


@dataclass
class WorkerReport:
    """What one worker did."""

    trials: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0
    timed_out: bool = False  # stopped by ``timeout`` with work left


#: torch threads of a trial process on the CPU unless ``--threads`` or ``$OMP_NUM_THREADS``
#: says otherwise. One: the small models lrtune searches over gain little from more, and on
#: a machine busy with other work (or with the other workers) more threads than free cores
#: make every step wait for the slowest thread: 6 digits trials took 15 s of training with
#: 1 thread and 210 s with 2 on 2 loaded cores (docs/benchmarks.md, "Threads"). Use the
#: cores with ``--workers N`` (trials in parallel) instead.
DEFAULT_THREADS = 1


def limit_cpu_threads(threads: int | None = None) -> int:
    """Set the torch threads of this process; returns the count torch then uses.

    ``threads``: the ``--threads`` flag; 0 leaves torch's own choice (one per core, or
    ``$OMP_NUM_THREADS``). ``None`` (no flag): ``$OMP_NUM_THREADS`` when set (the user or a
    test harness chose), else :data:`DEFAULT_THREADS`.
    """
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_THREADS
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _load(
    storage: optuna.storages.BaseStorage,
    name: str,
    worker: int,
    device: str,
    task: str | None = None,
    checkpoint_store: ArtifactStore | None = None,
) -> tuple[optuna.Study, Callable[[optuna.Trial], float], int]:
    # The sampler is built from what the study stores, so read its attrs before loading it.
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    trusted = trusted_task(name, attrs, task)  # every study, search and confirm alike
    if confirm.is_confirm_study(attrs):
        return confirm.load(storage, name, task=trusted, device=device, worker=worker_id())
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
    cannot be made (the trials then run without checkpoints)."""
    from lrtune.dashboard import artifact_store

    try:
        return artifact_store(storage_url)
    except UserError as exc:
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


def run_worker(
    storage_url: str,
    *,
    group: str | None = None,
    studies: Sequence[str] | None = None,
    worker: int = 0,
    device: str = "auto",
    task: str | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    poll: float = 1.0,
    timeout: float | None = None,
    on_trial: Callable[[str, optuna.trial.FrozenTrial], None] | None = None,
) -> WorkerReport:
    """Run trials of ``group`` (or the named ``studies``) until every study has its budget.

    Each round picks the study with the smallest share of its budget finished or running.
    When every remaining slot is taken by a running trial, the worker waits, and fails
    trials whose heartbeat stopped (or never started) so that their retry runs here. With
    ``task``, every study must run that task (checked for all of them before any trial; see
    :func:`check_task_pin`). With ``timeout`` (seconds from the first trial) it starts no trial
    (nor the confirmation) after that long, as Optuna's ``optimize(timeout=...)``: a trial
    running then finishes, and ``report.timed_out`` says that work was left.
    """
    require_existing(storage_url)
    storage = open_storage(
        storage_url, heartbeat_interval=heartbeat_interval, grace_period=grace_period
    )
    names = list(studies or [])
    known = set(optuna.get_all_study_names(storage))
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"no study {missing[0]!r} in {mask_url(storage_url)} (see `lrtune ls`)")
    # A study `lrtune study` is still writing (or stopped writing) is no member of its
    # group yet: wait for it as long as for a silent trial, then say to run study again.
    wait_created(storage, names, group, grace_period)
    if group is not None:
        names += [n for n in group_study_names(storage, group) if n not in names]
    if not names:
        what = f"group {group!r}" if group else "those studies"
        raise UserError(
            f"no studies for {what} in {mask_url(storage_url)}: create them with "
            "`lrtune study ... --create-only` (see `lrtune ls`)"
        )
    store = checkpoint_store(storage_url)
    loaded = {n: _load(storage, n, worker, device, task, store) for n in names}
    # Whether a study has rungs is fixed at creation, like its budget's unit.
    ladders = {n: rungs.Ladder.from_attrs(loaded[n][0].user_attrs) for n in names}
    # Whether a study widens is fixed at creation: ask once, not after every trial (a
    # storage read per trial for the studies that never widen).
    widens = {n: can_widen(loaded[n][0].user_attrs) for n in names}  # confirm: never
    report = WorkerReport(trials=dict.fromkeys(names, 0))
    start = time.perf_counter()
    # The clock starts with the trials, once the studies (and their task) are loaded.
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    retry = _StorageRetry(storage_url, storage_retry_seconds())
    stale = StaleWatch(heartbeat_interval, grace_period)
    while True:
        if preempt.requested():
            raise preempt.Preempted()  # SIGTERM between trials: nothing to hand back
        interrupt.check()
        try:
            # Before counting: a trial whose worker died holds a slot until it is failed.
            # (The only check: Optuna's own, at the start of a trial, is switched off in
            # lrtune.storage; it misses trials that never beat and records no reason.)
            for n in names:
                stale.fail_stale(loaded[n][0])
            state, work = {}, {}
            for n in names:
                state[n], work[n] = _assess(loaded[n][0], ladders.get(n))
            open_slots = [
                n for n in names if sum(state[n]) < loaded[n][2] and work[n] not in ("wait", "full")
            ]
            late = deadline is not None and time.monotonic() >= deadline
            if not open_slots:
                if all(state[n][0] >= loaded[n][2] for n in names):
                    # Budgets met: confirm the group's best configurations (once).
                    if confirm.join(
                        storage,
                        names,
                        loaded,
                        load_study=lambda n: _load(storage, n, worker, device, task, store),
                    ):
                        report.trials.update(dict.fromkeys(set(names) - set(report.trials), 0))
                        continue
                    break
                if late:  # the others' running trials are theirs to finish
                    report.timed_out = True
                    break
                retry.ok()
                time.sleep(poll)
                continue
            if late:  # past the timeout: no new trial (one running elsewhere finishes)
                report.timed_out = True
                break
            name = min(open_slots, key=lambda n: (sum(state[n]) / loaded[n][2], names.index(n)))
            study, objective, _ = loaded[name]
            chosen, ladder = work[name], ladders.get(name)
            if isinstance(chosen, rungs.Promotion) and ladder is not None:
                rungs.promote(study, chosen, ladder)  # the optimize below runs it (or another)
            ran: list[optuna.trial.FrozenTrial] = []
            study.optimize(
                objective,
                n_trials=1,
                catch=(TrialFailed, Surplus),
                gc_after_trial=False,
                callbacks=[_collect(ran)],
            )
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                raise
            # This process was starved past the grace period and another worker failed (and
            # re-queued) its trial meanwhile; that retry counts, this result is dropped.
            log.warning(
                "a trial of %s was failed by another worker while it ran (heartbeat "
                "late: raise --grace-period on a busy machine): %s",
                name,
                exc,
            )
            continue
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # The trial that was running (if any) stays RUNNING in the storage; its
            # heartbeat stops, so a worker fails and retries it after the grace period.
            retry.wait(exc)
            continue
        retry.ok()
        if not ran:
            continue
        mine = ran[0]
        reason = str(mine.user_attrs.get("fail_reason", ""))
        if mine.state == optuna.trial.TrialState.FAIL and not reason.startswith("surplus"):
            failures += 1
            report.failed += 1
            log.warning("trial %d of %s failed: %s", mine.number, name, reason)
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise UserError(
                    f"{failures} trials failed in a row: {reason or 'error'} (fix the task, "
                    "then run the same command again)"
                )
        elif mine.state != optuna.trial.TrialState.FAIL:
            failures = 0
            report.trials[name] += 1
            complete = mine.state == optuna.trial.TrialState.COMPLETE
            if complete and widens.get(name, False) and maybe_widen(study) is not None:
                show_widened(study)  # the moved edge on the dashboard's graph
            show_trial(study, mine)  # the dashboard: config note, per-epoch and importance
        if on_trial is not None:
            on_trial(name, mine)
    report.seconds = time.perf_counter() - start
    return report


def _assess(
    study: optuna.Study, ladder: rungs.Ladder | None
) -> tuple[tuple[float, float], rungs.Work | None]:
    """``((done, in_flight), work)`` of ``study`` from one read of its trials: its usage in
    budget units and, with rungs, what to run next (:func:`lrtune.search.ladder.next_work`)."""
    trials = study.get_trials(deepcopy=False)
    usage = rungs.usage(trials, ladder)
    if ladder is None:
        return usage, None
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    return usage, rungs.next_work(trials, ladder, minimize=minimize)


def storage_retry_seconds() -> float:
    """How long a worker retries a lost storage: ``$LRTUNE_STORAGE_RETRY_SECONDS`` or
    :data:`STORAGE_RETRY_SECONDS`."""
    text = os.environ.get(STORAGE_RETRY_ENV)
    if not text:
        return STORAGE_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UserError(f"${STORAGE_RETRY_ENV}={text!r}: expected a number of seconds >= 0")
    return value


class StorageLost(UserError):
    """The storage stopped answering for longer than the retry time."""


class _StorageRetry:
    """Backoff (1, 2, 4 ... 15 s) while the storage is unreachable, for at most
    ``seconds`` from the first failure of a streak; then :class:`StorageLost`."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.seconds = seconds
        self.since: float | None = None
        self.delay = 1.0

    def ok(self) -> None:
        if self.since is not None:
            log.warning("storage %s is back; going on", mask_url(self.url))
        self.since = None
        self.delay = 1.0

    def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "storage %s unreachable (%s); retrying for up to %.0f s",
                mask_url(self.url),
                first_line(exc),
                self.seconds,
            )
        elapsed = now - self.since
        if elapsed >= self.seconds:
            raise StorageLost(
                f"storage {mask_url(self.url)} unreachable for {elapsed:.0f} s "
                f"({first_line(exc)}); gave up. Nothing is lost: a trial left running is "
                "failed by heartbeat and retried when a worker runs again; run the same "
                "command when the database is back"
            ) from None
        pause = min(self.delay, self.seconds - elapsed)
        log.debug("storage retry in %.1f s", pause)
        time.sleep(pause)
        self.delay = min(self.delay * 2, 15.0)


def _collect(
    into: list[optuna.trial.FrozenTrial],
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    # optimize() does not return the trial it ran; its callback receives it.
    def callback(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        into.append(trial)

    return callback


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def worker_index() -> int:
    """This worker's index: ``$LRTUNE_WORKER_INDEX`` (set for local workers), else one drawn
    from the host name and process id, so workers on different machines seed differently."""
    env = os.environ.get("LRTUNE_WORKER_INDEX")
    if env and env.isdigit():
        return int(env)
    import socket
    import zlib

    return 1 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 100_000
