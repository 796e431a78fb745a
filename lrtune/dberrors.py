"""What a database error says: one line for the user (:func:`first_line`,
:func:`storage_failure`), whether the connection was lost (:func:`is_connection_error`) and
whether a failure to connect is worth retrying (:func:`is_busy_server`).

Optuna wraps SQLAlchemy's errors and SQLAlchemy the driver's; these read the driver's own
exception in the cause chain. SQLAlchemy is only looked at when it is already imported.
"""

from __future__ import annotations

import re
import sys

from lrtune.errors import causes, one_line


def _dbapi_error(exc: BaseException) -> BaseException | None:
    """The driver's own exception inside ``exc``'s cause chain (Optuna wraps SQLAlchemy's
    errors, SQLAlchemy wraps the driver's), else None."""
    import sqlalchemy.exc

    for current in causes(exc):
        if isinstance(current, sqlalchemy.exc.DBAPIError) and isinstance(
            current.orig, BaseException
        ):
            return current.orig
    return None


#: SQLite result codes (primary, ``code & 0xFF``) that say what is wrong with the file.
_SQLITE_FAULTS = {
    3: "no permission to the database file",
    8: "the database file is read-only (or its directory is)",
    11: "the database file is corrupt",
    13: "the disk is full",
    14: "cannot open the database file (missing, or its directory is read-only)",
    26: "the file is not a SQLite database",
}


def first_line(exc: BaseException) -> str:
    """What went wrong, in one line with passwords masked (:func:`lrtune.errors.one_line`):
    for a database error the cause the driver gave (never Optuna's generic "exceeding max
    length" wrapper text), and for a SQLite fault what is wrong with the file."""
    import sqlite3

    if _grpc_unavailable(exc):  # gRPC's own text starts with its class: say what failed
        return f"the proxy does not answer: {exc.details()}"  # type: ignore[attr-defined]
    cause = _dbapi_error(exc) if "sqlalchemy" in sys.modules else None
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_FAULTS:
            return f"{_SQLITE_FAULTS[code & 0xFF]} ({one_line(cause)})"
    line = one_line(cause if cause is not None else exc)
    # SQLAlchemy prefixes the DBAPI class, e.g. "(psycopg.OperationalError) ..."
    return re.sub(r"^\([\w.]+\)\s*", "", line) or type(exc).__name__


def storage_failure(exc: BaseException) -> str | None:
    """One line for a database error that escaped the command (the database became
    read-only, full, corrupt... mid-run), else None (the exception is not a storage one)."""
    from lrtune.sqlite_file import gone_in

    gone = gone_in(exc)
    if gone is not None:
        return str(gone)  # the SQLite file deleted or replaced (lrtune.sqlite_file)
    if "sqlalchemy" not in sys.modules:
        return None
    import optuna

    if _dbapi_error(exc) is None and not isinstance(exc, optuna.exceptions.StorageInternalError):
        return None
    return f"storage error: {first_line(exc)}"


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database connection failed or was
    lost: the server is down, restarting, refusing this database, or dropped the
    connection. Optuna wraps failed commits in ``StorageInternalError``, so the cause chain
    is followed. A SQLite file that is read-only, full or corrupt is no lost connection:
    waiting would not help."""
    import sqlite3

    import sqlalchemy.exc

    cause = _dbapi_error(exc)
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", 0) or 0
        if code & 0xFF in _SQLITE_FAULTS:
            return False
    for current in causes(exc):
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if _grpc_unavailable(current):  # `lrtune proxy` down or restarting
            return True
    return False


#: What a PostgreSQL server (or libpq) says when it is there but cannot take this
#: connection now: overloaded (the connect timeout of a server or machine under load, a full
#: ``max_connections`` or a role's connection limit) or starting, stopping or recovering.
#: Waiting helps with these; it does not with a refused connection, an unknown host or
#: database, or a bad password, which are typos that should fail at once.
_BUSY = re.compile(
    r"timeout expired|too many (clients|connections)|remaining connection slots"
    r"|the database system is (starting up|shutting down|in recovery mode)",
    re.IGNORECASE,
)


def is_busy_server(exc: BaseException) -> bool:
    """True when connecting failed because the server is busy or restarting
    (:data:`_BUSY`), the failures a worker starting among many others retries."""
    if "sqlalchemy" not in sys.modules:
        return False
    cause = _dbapi_error(exc)
    return cause is not None and _BUSY.search(str(cause)) is not None


def _grpc_unavailable(exc: BaseException) -> bool:
    if "grpc" not in sys.modules:
        return False
    import grpc

    return isinstance(exc, grpc.RpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
