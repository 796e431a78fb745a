"""``lrtune proxy``: Optuna's gRPC storage proxy over one database, with few connections
(clients: :mod:`lrtune.proxy`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import optuna

from lrtune.errors import UserError
from lrtune.proxy import is_grpc
from lrtune.storage import open_storage

#: Database connections the proxy keeps (plus one overflow connection while it is busy).
POOL_SIZE = 4
#: Threads serving the workers' requests; each holds a connection only while it queries.
THREADS = 8


def serve(url: str, *, host: str, port: int, on_ready: Callable[[], None] | None = None) -> None:
    """Serve the database at ``url`` on ``host:port`` until interrupted (Ctrl-C, SIGTERM)."""
    if is_grpc(url):
        raise UserError("lrtune proxy --storage takes the database URL, not another proxy")
    storage = open_storage(url, pool_size=POOL_SIZE)
    cached = optuna.storages.get_storage(storage)  # Optuna's cache, as its docs advise
    _check_port_free(host, port)
    if on_ready is not None:
        on_ready()
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=THREADS) as pool:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.run_grpc_proxy_server(cached, host=host, port=port, thread_pool=pool)


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
