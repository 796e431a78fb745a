"""``grpc://`` storages: the client side of Optuna's gRPC storage proxy (``lrtune proxy``,
served by :mod:`lrtune.proxy_server`).

Hundreds of workers each holding a PostgreSQL connection exhaust the server's
``max_connections``; through the proxy they hold none: one ``lrtune proxy`` process keeps a
small pool (:data:`lrtune.proxy_server.POOL_SIZE` plus one overflow connection) behind Optuna's
``run_grpc_proxy_server`` and its cache, and workers take ``--storage grpc://HOST:PORT``
(Optuna's ``GrpcStorageProxy``). Optuna's proxy carries no heartbeat, so a proxied worker
beats through it as a trial system attr (:data:`BEAT`, every ``heartbeat_interval``
seconds), which the proxy records as the trial's heartbeat row; the proxy then fails (and
re-queues) the trials whose worker died, as a worker on the database URL would
(:mod:`lrtune.proxy_server`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat

from lrtune.errors import UserError

log = logging.getLogger(__name__)

#: The trial system attr a proxied worker's heartbeat is sent as; the proxy records a
#: heartbeat instead of storing it.
BEAT = "lrtune:heartbeat"

_URL = re.compile(r"grpc://(?P<host>\[[^\]]*\]|[^:/\s]*)(?::(?P<port>[^/\s]*))?/?")


def is_grpc(url: str) -> bool:
    """True for a ``grpc://HOST:PORT`` storage URL (``lrtune proxy``)."""
    return url.startswith("grpc://")


def parse(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``grpc://HOST:PORT``, or a one-line :class:`UserError`."""
    m = _URL.fullmatch(url)
    if m is None or not m["host"]:
        raise UserError(f"storage {url!r}: expected grpc://HOST:PORT (an `lrtune proxy`)")
    port = m["port"]
    if port is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"storage {url!r}: the port must be a number 1..65535 (grpc://HOST:PORT)")
    return m["host"].strip("[]"), int(port)


class BeatingProxy(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """Optuna's proxy client whose trials beat: Optuna's ``optimize`` runs a heartbeat
    thread for a storage that is a :class:`BaseHeartbeat`; each beat is one request."""

    def __init__(self, *, host: str, port: int, heartbeat_interval: int | None) -> None:
        super().__init__(host=host, port=port)
        self._interval = heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        from lrtune.dberrors import is_connection_error

        try:
            self.set_trial_system_attr(trial_id, BEAT, True)
        except Exception as exc:  # the proxy away for a moment: the next beat goes on
            if not is_connection_error(exc):
                raise
            log.debug("heartbeat of trial %d not sent: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return []  # the proxy fails them (lrtune.proxy_server)

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None:
        return None


def connect(url: str, heartbeat_interval: int | None = None) -> Any:
    """A client of the proxy at ``url`` (its trials beating every ``heartbeat_interval``
    seconds, if given), checked with one request: a proxy that is not there is a one-line
    :class:`UserError`."""
    host, port = parse(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = BeatingProxy(host=host, port=port, heartbeat_interval=heartbeat_interval)
    try:
        storage.get_all_studies()
    except Exception as exc:
        storage.close()
        detail = getattr(exc, "details", lambda: None)() or str(exc).splitlines()[0]
        raise UserError(
            f"cannot reach the lrtune proxy at {url}: {detail}; start it with "
            "`lrtune proxy --storage DATABASE_URL --port PORT`"
        ) from None
    return storage
