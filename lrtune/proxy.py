"""``grpc://`` storages: the client side of Optuna's gRPC storage proxy (``lrtune proxy``,
served by :mod:`lrtune.proxy_server`).

Hundreds of workers each holding a PostgreSQL connection exhaust the server's
``max_connections``; through the proxy they hold none: one ``lrtune proxy`` process keeps a
small pool (:data:`lrtune.proxy_server.POOL_SIZE` plus one overflow connection) behind Optuna's
``run_grpc_proxy_server`` and its cache, and workers take ``--storage grpc://HOST:PORT``
(Optuna's ``GrpcStorageProxy``). What the proxy cannot carry: trial heartbeats (Optuna's
proxy does not forward them), so a worker that dies mid-trial leaves its trial RUNNING
until a worker on the database URL (or ``lrtune study`` resuming) fails and retries it.
"""

from __future__ import annotations

import re
import warnings

import optuna

from lrtune.errors import UserError

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


def connect(url: str) -> optuna.storages.BaseStorage:
    """A client of the proxy at ``url``, checked with one request: a proxy that is not
    there is a one-line :class:`UserError`."""
    host, port = parse(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.GrpcStorageProxy(host=host, port=port)
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
