"""``lrtune proxy``: Optuna's gRPC storage proxy over one database, with few connections
(clients: :mod:`lrtune.proxy`).

Optuna's proxy carries no heartbeat; lrtune's clients send theirs as the trial system
attr :data:`lrtune.proxy.BEAT`, which the proxy records as the trial's heartbeat row (the
database's clock) instead of storing it. A thread of the proxy then does what a worker on
the database URL does: every ``heartbeat_interval`` seconds it fails the running trials of
lrtune's studies whose heartbeat stopped ``grace_period`` seconds ago (or never came),
with their ``fail_reason``, and re-queues them (:class:`lrtune.faults.StaleWatch`). So a
proxied worker that is killed mid-trial hands its trial to the next worker within about
``grace_period + heartbeat_interval`` seconds.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna

from lrtune.dberrors import is_connection_error
from lrtune.errors import UserError
from lrtune.faults import StaleWatch
from lrtune.proxy import BEAT, is_grpc
from lrtune.storage import open_storage

log = logging.getLogger(__name__)

#: Database connections the proxy keeps (plus one overflow connection while it is busy).
POOL_SIZE = 4
#: Threads serving the workers' requests; each holds a connection only while it queries.
THREADS = 8


def serve(
    url: str,
    *,
    host: str,
    port: int,
    heartbeat_interval: int,
    grace_period: int,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the database at ``url`` on ``host:port`` until interrupted (Ctrl-C, SIGTERM),
    failing and re-queueing the trials whose worker stopped beating."""
    if is_grpc(url):
        raise UserError("lrtune proxy --storage takes the database URL, not another proxy")
    storage = open_storage(
        url, pool_size=POOL_SIZE, heartbeat_interval=heartbeat_interval, grace_period=grace_period
    )
    cached = optuna.storages.get_storage(storage)  # Optuna's cache, as its docs advise
    _check_port_free(host, port)
    _record_beats(cached, storage)
    stop = threading.Event()
    watch = threading.Thread(
        target=_fail_stale,
        args=(cached, StaleWatches(heartbeat_interval, grace_period), stop),
        name="lrtune-proxy-stale",
        daemon=True,
    )
    watch.start()
    if on_ready is not None:
        on_ready()
    try:
        with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=THREADS) as pool:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(cached, host=host, port=port, thread_pool=pool)
    finally:
        stop.set()


def _record_beats(cached: Any, storage: optuna.storages.RDBStorage) -> None:
    """A client's :data:`BEAT` attr becomes the trial's heartbeat row (Optuna's servicer
    calls the storage's ``set_trial_system_attr``; every other key is stored as before)."""
    store = cached.set_trial_system_attr

    def set_trial_system_attr(trial_id: int, key: str, value: Any) -> None:
        if key == BEAT:
            storage.record_heartbeat(trial_id)
        else:
            store(trial_id, key, value)

    cached.set_trial_system_attr = set_trial_system_attr


class StaleWatches:
    """One :class:`StaleWatch` per lrtune study (it remembers trials seen without a beat)."""

    def __init__(self, heartbeat_interval: int, grace_period: int) -> None:
        self.interval = heartbeat_interval
        self.grace = grace_period
        self._watches: dict[int, StaleWatch] = {}

    def fail_stale(self, storage: Any) -> list[int]:
        """Fail the stale running trials of every lrtune study (a study with the
        ``lrtune_version`` attr: other programs' studies in the database are left alone)."""
        failed = []
        for frozen in storage.get_all_studies():
            if "lrtune_version" not in frozen.user_attrs:
                continue
            study = optuna.load_study(study_name=frozen.study_name, storage=storage)
            watch = self._watches.setdefault(
                frozen._study_id, StaleWatch(self.interval, self.grace)
            )
            failed += watch.fail_stale(study)
        return failed


def _fail_stale(storage: Any, watches: StaleWatches, stop: threading.Event) -> None:
    while not stop.wait(watches.interval):
        try:
            watches.fail_stale(storage)
        except Exception as exc:  # the database away for a moment: look again later
            if not is_connection_error(exc):
                log.warning("lrtune proxy: looking for stale trials failed: %s", exc)


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
