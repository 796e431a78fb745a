"""Optuna storages: URLs, masking passwords, engine options for many workers."""

from __future__ import annotations

import logging
import re
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import optuna

from lrtune.errors import UserError

log = logging.getLogger(__name__)

_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)")


def mask_url(text: str) -> str:
    """Replace the password of every ``scheme://user:password@host`` in ``text`` by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


def sqlite_path(storage_url: str) -> Path | None:
    """The database file of a file-backed ``sqlite://`` URL, else None.

    Opening an RDB storage creates a missing SQLite file with empty tables, so commands that
    only read a storage check this path exists first.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def require_existing(storage_url: str) -> None:
    """Raise a one-line :class:`UserError` when ``storage_url`` names a missing SQLite file.

    For commands that read a storage (ls, worker, export, dashboard, report, rangetest
    --study): opening it would create an empty database, and a typo in --storage would leave
    that file behind and report "no studies" instead of the typo.
    """
    db = sqlite_path(storage_url)
    if db is not None and not db.is_file():
        raise UserError(
            f"no storage at {db}: run `lrtune study` first or pass --storage URL of an "
            "existing storage"
        )


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs (SQLAlchemy would
    otherwise look for psycopg2, which lrtune does not install)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_kwargs(url: str, *, pool_size: int = 2) -> dict[str, Any]:
    """SQLAlchemy engine options for one lrtune process.

    SQLite: wait up to a minute for a write lock instead of failing with "database is
    locked" when several local workers write at once, in WAL mode with
    ``synchronous=NORMAL`` (see :class:`_SQLiteConnection`). PostgreSQL: a pool of
    ``pool_size`` (+1 overflow) connections per process, so dozens of workers stay under the
    server's default ``max_connections`` of 100, pre-ping to survive server restarts, a
    connect timeout so an unreachable server fails fast, and ``synchronous_commit=off``
    for lrtune's own sessions.

    Why the last two: a trial makes about ten small commits (ask, two params, heartbeat,
    one report per epoch, user attrs, tell), and a commit that waits for the disk cost
    18 ms on SQLite and 20 ms on PostgreSQL on the benchmark machine (0.3 and 7 ms
    without; docs/benchmarks.md). Neither setting risks corruption or breaks isolation
    between workers: a crash of the machine (SQLite) or of the database server
    (PostgreSQL) may lose the last commits from before the crash, which the heartbeat
    then handles like any dead worker (the trial is failed and retried). A process crash
    loses nothing.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60, "factory": _SQLiteConnection}}
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if "options=" not in url:  # the user's own server options win
            connect_args["options"] = "-c synchronous_commit=off"
        return {
            "pool_size": pool_size,
            "max_overflow": 1,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "connect_args": connect_args,
        }
    return {"pool_pre_ping": True}


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> optuna.storages.RDBStorage:
    """Open the RDB storage at ``url`` (creating its tables) or raise a one-line
    :class:`UserError` that names the URL with its password masked.

    With ``heartbeat_interval``, a trial whose process stopped beating for
    ``grace_period`` seconds is failed by the next worker and re-queued with the same
    parameters (Optuna's ``RetryFailedTrialCallback``), up to ``max_retry`` times.
    """
    import sqlalchemy.exc

    url = normalize_url(url)
    if "://" not in url:
        raise UserError(
            f"storage {mask_url(url)!r} is not a URL: expected sqlite:///FILE.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = (
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                if heartbeat_interval
                else None
            )
            storage = _Storage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
            return storage
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        raise UserError(f"cannot open storage {mask_url(url)}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = mask_url(str(exc)).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("(Background"):
            # SQLAlchemy prefixes the DBAPI class, e.g. "(psycopg.OperationalError) ..."
            return re.sub(r"^\([\w.]+\)\s*", "", line)
    return type(exc).__name__


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database connection failed or was
    lost: the server is down, restarting, refusing this database, or dropped the
    connection. Optuna wraps failed commits in ``StorageInternalError``, so the cause chain
    is followed."""
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


class _SQLiteConnection(sqlite3.Connection):
    """A SQLite connection in WAL mode with ``synchronous=NORMAL``.

    WAL lets readers (the dashboard, ``lrtune ls``) go on while a worker writes, and with
    ``synchronous=NORMAL`` a commit no longer waits for the disk: the WAL is synced at
    checkpoints. SQLite documents this pair as safe from corruption; a power loss or OS
    crash may roll back the last commits, an application crash loses nothing. WAL needs
    every process on one host (SQLite over a network filesystem is unsafe either way).
    The mode is stored in the database file; a file that cannot be switched (read-only)
    is read in the mode it has.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.execute("PRAGMA journal_mode=WAL").close()
        except sqlite3.DatabaseError as exc:
            log.debug("SQLite journal_mode=WAL not set: %s", exc)
        self.execute("PRAGMA synchronous=NORMAL").close()


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat survives a lost connection.

    Optuna records heartbeats in a thread that dies on the first database error (printing a
    traceback), after which the live trial looks stale and another worker would fail it. Here
    a failed beat is logged and the next one tried: when the database comes back within the
    grace period the trial goes on; when it does not, the worker's own retry loop gives up.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.debug("heartbeat of trial %d not recorded: %s", trial_id, first_line(exc))
