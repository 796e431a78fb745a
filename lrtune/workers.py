"""Workers: processes that run the trials of a group's studies until each has its budget.

Optuna's RDB storage is the only coordination: any number of workers, on one machine or
many, load the same studies and each picks the study furthest from its budget. Heartbeats
let a live worker fail (and re-queue) the trial of a worker that died.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from lrtune import interrupt, preempt
from lrtune.dashboard.graphs import show_widened
from lrtune.dashboard.trial_graphs import show_trial
from lrtune.errors import UserError
from lrtune.faults import DEVICE_ASSERT_HINT, StaleWatch
from lrtune.group import confirm
from lrtune.group.creation import wait_created
from lrtune.group.prepare import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    MAX_CONSECUTIVE_FAILURES,
)
from lrtune.joining import Loaded, checkpoint_store, load_for_work
from lrtune.search import ladder as rungs
from lrtune.search.objective import Surplus, TrialFailed
from lrtune.search.states import group_study_names
from lrtune.search.widen import can_widen, maybe_widen
from lrtune.storage import is_connection_error, mask_url, open_storage, require_existing
from lrtune.storage_retry import StorageRetry, storage_retry_seconds
from lrtune.training import ranks

log = logging.getLogger(__name__)


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
    patience = storage_retry_seconds()  # a busy server at start-up too (many workers at once)
    storage = open_storage(
        storage_url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        patience=patience,
    )
    names = _studies_to_run(storage, storage_url, group, studies, grace_period)
    store = checkpoint_store(storage_url)

    def load(name: str) -> Loaded:
        return load_for_work(storage, name, worker, device, task, store)

    loaded = {n: load(n) for n in names}
    report = WorkerReport(trials=dict.fromkeys(names, 0))
    start = time.perf_counter()
    run = _Run(
        storage=storage,
        names=names,
        loaded=loaded,
        load=load,
        # Whether a study has rungs is fixed at creation, like its budget's unit.
        ladders={n: rungs.Ladder.from_attrs(loaded[n][0].user_attrs) for n in names},
        # Whether a study widens is fixed at creation: ask once, not after every trial (a
        # storage read per trial for the studies that never widen).
        widens={n: can_widen(loaded[n][0].user_attrs) for n in names},  # confirm: never
        report=report,
        # The clock starts with the trials, once the studies (and their task) are loaded.
        deadline=None if timeout is None else time.monotonic() + timeout,
        retry=StorageRetry(storage_url, patience),
        stale=StaleWatch(heartbeat_interval, grace_period),
        poll=poll,
        on_trial=on_trial,
    )
    while run.step():
        pass
    report.seconds = time.perf_counter() - start
    return report


@dataclass(kw_only=True)
class _Run:
    """One worker's run over its studies: what each round of :func:`run_worker` reads
    and updates."""

    storage: optuna.storages.BaseStorage
    names: list[str]
    loaded: dict[str, Loaded]
    load: Callable[[str], Loaded]
    ladders: dict[str, rungs.Ladder | None]
    widens: dict[str, bool]
    report: WorkerReport
    deadline: float | None
    retry: StorageRetry
    stale: StaleWatch
    poll: float
    on_trial: Callable[[str, optuna.trial.FrozenTrial], None] | None
    failures: int = 0

    def step(self) -> bool:
        """One round: run a trial, wait for one, or confirm; ``False`` once done."""
        if preempt.requested():
            raise preempt.Preempted()  # SIGTERM between trials: nothing to hand back
        interrupt.check()
        name: str | None = None
        try:
            state, work, open_slots = self._survey()
            late = self.deadline is not None and time.monotonic() >= self.deadline
            if not open_slots:
                return self._idle(state, late)
            if late:  # past the timeout: no new trial (one running elsewhere finishes)
                self.report.timed_out = True
                return False
            budget = {n: self.loaded[n][2] for n in open_slots}
            name = min(open_slots, key=lambda n: (sum(state[n]) / budget[n], self.names.index(n)))
            ran = self._run_one(name, work[name])
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                raise
            # This process was starved past the grace period and another worker failed (and
            # re-queued) its trial meanwhile; that retry counts, this result is dropped.
            log.warning(STARVED, name, exc)
            return True
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # The trial that was running (if any) stays RUNNING in the storage; its
            # heartbeat stops, so a worker fails and retries it after the grace period.
            self.retry.wait(exc)
            return True
        self.retry.ok()
        if ran:
            study, mine = self.loaded[name][0], ran[0]
            widens = self.widens.get(name, False)
            self.failures = _record(self.report, study, mine, self.failures, widens=widens)
            if self.on_trial is not None:
                self.on_trial(name, mine)
            if ranks.current() is not None:  # --nproc-per-trial: a failure ends the ranks
                ranks.stop_on_failure(name, mine)
        return True

    def _survey(self) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """Each study's usage and next work, and the studies that can start a trial."""
        # Before counting: a trial whose worker died holds a slot until it is failed.
        # (The only check: Optuna's own, at the start of a trial, is switched off in
        # lrtune.storage; it misses trials that never beat and records no reason.)
        for n in self.names:
            self.stale.fail_stale(self.loaded[n][0])
        state, work = {}, {}
        for n in self.names:
            state[n], work[n] = _assess(self.loaded[n][0], self.ladders.get(n))
        budget = {n: self.loaded[n][2] for n in self.names}
        return state, work, [n for n in self.names if _has_slot(state[n], budget[n], work[n])]

    def _idle(self, state: dict[str, Any], late: bool) -> bool:
        """No study can start a trial: confirm once the budgets are met, else wait."""
        if all(state[n][0] >= self.loaded[n][2] for n in self.names):
            # Budgets met: confirm the group's best configurations (once).
            if confirm.join(self.storage, self.names, self.loaded, load_study=self.load):
                trials = self.report.trials
                trials.update(dict.fromkeys(set(self.names) - set(trials), 0))
                return True
            return False
        if late:  # the others' running trials are theirs to finish
            self.report.timed_out = True
            return False
        self.retry.ok()
        time.sleep(self.poll)
        return True

    def _run_one(self, name: str, chosen: Any) -> list[optuna.trial.FrozenTrial]:
        """Run one trial of ``name`` (a promotion first, with rungs); what it ran."""
        study, objective, _ = self.loaded[name]
        ladder = self.ladders.get(name)
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
        return ran


#: Logged when another worker failed this one's trial while it ran (its retry counts).
STARVED = (
    "a trial of %s was failed by another worker while it ran (heartbeat late: raise "
    "--grace-period on a busy machine): %s"
)


def _studies_to_run(
    storage: optuna.storages.BaseStorage,
    storage_url: str,
    group: str | None,
    studies: Sequence[str] | None,
    grace_period: int,
) -> list[str]:
    """The named ``studies`` and those of ``group``; one line when there are none."""
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
    return names


def _has_slot(state: tuple[float, ...], budget: float, work: object) -> bool:
    """Whether a study can start a trial: under its budget and not waiting on rungs."""
    return sum(state) < budget and work not in ("wait", "full")


def _record(
    report: WorkerReport,
    study: optuna.Study,
    mine: optuna.trial.FrozenTrial,
    failures: int,
    *,
    widens: bool,
) -> int:
    """Count the trial this worker ran, widen and show it; the failures in a row after it
    (too many: one line naming the error)."""
    name = study.study_name
    reason = str(mine.user_attrs.get("fail_reason", ""))
    if mine.state == optuna.trial.TrialState.FAIL and not reason.startswith("surplus"):
        failures += 1
        report.failed += 1
        log.warning("trial %d of %s failed: %s", mine.number, name, reason)
        if DEVICE_ASSERT_HINT in reason:
            # CUDA's error is sticky: every later trial of this process would fail at its
            # first kernel. A new process (the same command again) has a fresh context.
            raise UserError(
                f"trial {mine.number} failed with a CUDA device-side assert, which leaves "
                f"this process unable to use the GPU (start it again once fixed): {reason}"
            )
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise UserError(
                f"{failures} trials failed in a row: {reason or 'error'} (fix the task, "
                "then run the same command again)"
            )
    elif mine.state != optuna.trial.TrialState.FAIL:
        failures = 0
        report.trials[name] += 1
        complete = mine.state == optuna.trial.TrialState.COMPLETE
        if complete and widens and maybe_widen(study) is not None:
            show_widened(study)  # the moved edge on the dashboard's graph
        show_trial(study, mine)  # the dashboard: config note, per-epoch and importance
    return failures


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


def _collect(
    into: list[optuna.trial.FrozenTrial],
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    # optimize() does not return the trial it ran; its callback receives it.
    def callback(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        into.append(trial)

    return callback


def worker_index() -> int:
    """This worker's index: ``$LRTUNE_WORKER_INDEX`` (set for local workers), else one drawn
    from the host name and process id, so workers on different machines seed differently."""
    env = os.environ.get("LRTUNE_WORKER_INDEX")
    if env and env.isdigit():
        return int(env)
    import socket
    import zlib

    return 1 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 100_000
