"""Faults: errors raised by task code, and trials whose worker died.

Task code (the factory, the model, the loss, the metric; a task's own training loop later)
is the user's: whatever it raises, ``sys.exit`` included, becomes one line. Inside a trial
that line is the trial's ``fail_reason`` (see :func:`lrtune.search.objective.trial_errors`);
outside one (the range test, building the task) it is a :class:`UserError`.

A trial whose worker died stays RUNNING in the storage. Optuna's own check fails it once
its heartbeat is older than the grace period, but records no reason, and a worker killed
between creating the trial and its first heartbeat leaves a trial with no heartbeat at all,
which Optuna never fails: the budget's last slot would then stay taken for ever.
:meth:`StaleWatch.fail_stale` fails both kinds, with a reason, and re-queues them through
the storage's retry callback as Optuna does; lrtune's storage switches Optuna's check off
(:class:`lrtune.storage._Storage`) so that the two never race.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar

import optuna

from lrtune.errors import MAX_LINE, UserError, one_line

log = logging.getLogger(__name__)

#: The longest first line kept of an error message.
MAX_REASON = MAX_LINE

P = ParamSpec("P")
R = TypeVar("R")


def describe(exc: BaseException) -> str:
    """One line for an error from task code: ``Type: first line of the message``
    (:func:`lrtune.errors.one_line`).

    A :class:`UserError` is already a sentence for the user (its message only); a
    ``SystemExit`` says the task called ``sys.exit``.
    """
    if isinstance(exc, SystemExit):
        return f"SystemExit: the task called sys.exit({exc.code!r})"
    line = one_line(exc, with_type=not isinstance(exc, UserError))
    if "device-side assert triggered" in line:
        # The kernel printed its own assertion above; Python only learns that one failed.
        line += f" ({DEVICE_ASSERT_HINT})"
    return line


#: What a CUDA device-side assert means for the user; its cause is in the kernel's own
#: lines printed before, and in the Python error the same code raises on the CPU.
DEVICE_ASSERT_HINT = (
    "a CUDA kernel's assertion, printed above; run it with --device cpu for the error it "
    "stands for, e.g. a label outside the model's classes"
)


@contextmanager
def task_errors(what: str) -> Iterator[None]:
    """Run task code outside a trial: any error from it (``sys.exit`` and ``GeneratorExit``
    too: it is the task's whatever its type) becomes a one-line :class:`UserError`
    ``"{what}: Type: message"``. Ctrl-C passes through."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise UserError(f"{what}: {describe(exc)}") from exc


def call_task(what: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` under :func:`task_errors` ``(what)``."""
    with task_errors(what):
        return fn(*args, **kwargs)
    raise AssertionError("unreachable: task_errors re-raises")


class StaleWatch:
    """Fails the running trials of a study whose worker died, remembering across calls
    which trials it has seen with no heartbeat yet.

    A trial with a heartbeat is stale when the last one is older than ``grace_period``
    (the database's clock, as Optuna counts it). A trial with none is stale when it started
    more than ``grace_period`` ago, and this watch saw it without a heartbeat at least
    ``heartbeat_interval`` seconds earlier: a live worker writes its first heartbeat within
    a fraction of a second of creating the trial, so two looks that far apart tell a dead
    one from a live one even when the clocks of two machines disagree. Its start is the
    ``datetime_start`` column (UTC, written with the creating machine's clock); a trial
    seen without a heartbeat for longer than the grace period is stale whatever its start
    says, so a skewed clock can delay a retry but never block it.
    """

    def __init__(self, heartbeat_interval: int, grace_period: int) -> None:
        self.interval = heartbeat_interval
        self.grace = grace_period
        self._seen: dict[int, float] = {}  # trial id -> monotonic time first seen beatless

    def fail_stale(self, study: optuna.Study) -> list[int]:
        """Fail the stale trials of ``study`` with a ``fail_reason`` and hand each to the
        storage's retry callback (a WAITING copy with the same parameters). Returns the
        numbers of the trials this call failed."""
        storage = study._storage  # Optuna's cache in front of the RDB storage: write through it
        backend = getattr(storage, "_backend", storage)
        if not isinstance(backend, optuna.storages.RDBStorage):
            return []
        failed = []
        for trial_id, number, reason in self._stale(backend, study._study_id):
            try:
                # The reason first: a finished trial's attributes can no longer be set.
                storage.set_trial_user_attr(trial_id, "fail_reason", reason)
                if not storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first (and re-queued it)
            self._seen.pop(trial_id, None)
            failed.append(number)
            log.warning("trial %d of %s failed: %s", number, study.study_name, reason)
            callback = backend.get_heartbeat_stale_trial_callback()
            if callback is not None:
                frozen = storage.get_trial(trial_id)
                # The retry copies the user attrs; it has not failed (yet).
                frozen.user_attrs = {
                    k: v for k, v in frozen.user_attrs.items() if k != "fail_reason"
                }
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    callback(study, frozen)
        return failed

    def _stale(
        self, storage: optuna.storages.RDBStorage, study_id: int
    ) -> list[tuple[int, int, str]]:
        import sqlalchemy
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        # Optuna's own check (RDBStorage._get_stale_trial_ids) skips trials with no
        # heartbeat row; this one reads the same tables and includes them.
        with _create_scoped_session(storage.scoped_session) as session:
            db_now = session.execute(sqlalchemy.func.now()).scalar()
            columns: list[Any] = [  # Optuna's models are untyped for mypy
                models.TrialModel.trial_id,
                models.TrialModel.number,
                # the column: Optuna 5 stores naive UTC there (the attribute is local time)
                models.TrialModel.__table__.c.datetime_start,
                models.TrialHeartbeatModel.heartbeat,
            ]
            rows = (
                session.query(*columns)
                .outerjoin(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                .all()
            )
        assert db_now is not None
        db_now = db_now.replace(tzinfo=None)  # PostgreSQL's now() is aware, the column not
        utc_now, mono = datetime.now(timezone.utc).replace(tzinfo=None), time.monotonic()
        running = {row[0] for row in rows}
        self._seen = {k: v for k, v in self._seen.items() if k in running}
        stale = []
        for trial_id, number, started, beat in rows:
            if beat is not None:
                silent = (db_now - beat).total_seconds()
                if silent > self.grace:
                    reason = f"worker died: no heartbeat for {silent:.0f} s"
                    stale.append((trial_id, number, reason))
                continue
            seen = self._seen.setdefault(trial_id, mono)
            watched = mono - seen
            age = (utc_now - started).total_seconds() if started is not None else 0.0
            if watched >= self.interval and max(age, watched) > self.grace:
                stale.append(
                    (
                        trial_id,
                        number,
                        f"worker died: no heartbeat at all, {max(age, watched):.0f} s after "
                        "the trial started",
                    )
                )
        return stale
