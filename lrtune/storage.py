"""Optuna storages: URLs, masking passwords, engine options for many workers."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import optuna

from lrtune.dberrors import first_line, is_busy_server, is_connection_error
from lrtune.errors import UserError, mask_url
from lrtune.sqlite_file import AsFoundConnection, StorageGone, WalConnection, check_path, watch
from lrtune.storage_retry import StorageRetry

log = logging.getLogger(__name__)

#: Tables every Optuna RDB storage has; a database without them is not an lrtune storage.
OPTUNA_TABLES = frozenset({"studies", "version_info"})

#: Longest study name an Optuna RDB storage holds (``studies.study_name`` is varchar 512).
MAX_STUDY_NAME = 512


def sqlite_path(storage_url: str) -> Path | None:
    """The database file of a file-backed ``sqlite://`` URL, else None.

    Opening an RDB storage creates a missing SQLite file with empty tables, so commands that
    only read a storage check this path exists first.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage_url)
    except (ArgumentError, ValueError):  # a bad port is a ValueError
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
        raise _missing(db)


def new_sqlite_file(storage_url: str) -> Path | None:
    """The SQLite file ``storage_url`` names when it does not exist yet and could be
    created, else None; a one-line :class:`UserError` when it could not be created (no
    directory, read-only directory). Nothing is created: ``lrtune study`` creates the file
    only once its range test passed, so a command that fails leaves no empty file behind.
    """
    url = check_url(storage_url)
    db = sqlite_path(url)
    if db is None or db.exists():
        return None
    _check_sqlite_file(db, create=True, readonly=False)
    return db


def _missing(db: Path) -> UserError:
    return UserError(
        f"no storage at {db}: run `lrtune study` first or pass --storage URL of an existing storage"
    )


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs (SQLAlchemy would
    otherwise look for psycopg2, which lrtune does not install)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_kwargs(url: str, *, pool_size: int = 1, wal: bool = True) -> dict[str, Any]:
    """SQLAlchemy engine options for one lrtune process.

    SQLite: wait up to a minute for a write lock instead of failing with "database is
    locked" when several local workers write at once, in WAL mode with
    ``synchronous=NORMAL`` (see :class:`lrtune.sqlite_file.WalConnection`). PostgreSQL: a pool of
    ``pool_size`` connections per process plus one overflow connection that is closed as
    soon as it is given back: a worker holds one connection at rest and two while a trial
    runs (its heartbeat thread writes beside the trial), so a hundred workers stay near the
    server's default ``max_connections`` of 100 only at their busiest (SPEC "Clusters";
    more workers: ``lrtune proxy``). Pre-ping to survive server restarts, a connect timeout
    so an unreachable server fails fast, ``synchronous_commit=off`` for lrtune's own
    sessions, and ``application_name=lrtune:PID`` so that ``pg_stat_activity`` tells
    which process holds which connection.

    Why the last two: a trial makes about ten small commits (ask, two params, heartbeat,
    one report per epoch, user attrs, tell), and a commit that waits for the disk cost
    18 ms on SQLite and 20 ms on PostgreSQL on the benchmark machine (0.3 and 7 ms
    without; docs/benchmarks.md). Neither setting risks corruption or breaks isolation
    between workers: a crash of the machine (SQLite) or of the database server
    (PostgreSQL) may lose the last commits from before the crash, which the heartbeat
    then handles like any dead worker (the trial is failed and retried). A process crash
    loses nothing.

    Only ``wal=True`` (``lrtune study``, which creates the storage) switches a SQLite file
    to WAL: the mode is stored in the file, and every other command must leave a file as it
    found it. They take ``synchronous=NORMAL`` only on a file already in WAL mode.
    """
    if url.startswith("sqlite"):
        factory = WalConnection if wal else AsFoundConnection
        return {"connect_args": {"timeout": 60, "factory": factory}}
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if "options=" not in url:  # the user's own server options win
            connect_args["options"] = "-c synchronous_commit=off"
        if "application_name=" not in url:
            connect_args["application_name"] = f"lrtune:{os.getpid()}"
        return {
            "pool_size": pool_size,
            "max_overflow": 1,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "connect_args": connect_args,
        }
    return {"pool_pre_ping": True}


def check_url(url: str) -> str:
    """``url`` normalized (:func:`normalize_url`) after checking its form, or a one-line
    :class:`UserError` naming the fault: empty, no scheme, a raw ``@`` in the password, a
    port that is not a number, a PostgreSQL URL without a database, or anything else
    SQLAlchemy cannot parse. Nothing is opened."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "expected sqlite:///FILE.db or postgresql://USER:PASSWORD@HOST/DB"
    if not url.strip():
        raise UserError(f"the storage URL is empty: {example}")
    url = normalize_url(url)
    shown = mask_url(url)
    if "://" not in url:
        raise UserError(f"storage {shown!r} is not a URL: {example}")
    if url.startswith("grpc://"):  # an `lrtune proxy` (lrtune.proxy)
        from lrtune.proxy import parse

        parse(url)
        return url
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    if netloc.count("@") > 1:
        raise UserError(f"storage URL {shown!r} has a raw '@' in its password: write it as %40")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # a port that is no number: ValueError
        port = netloc.rpartition("@")[2].rpartition(":")[2]
        if not isinstance(exc, ArgumentError) and port and not port.isdigit():
            raise UserError(f"storage URL {shown!r}: port {port!r} is not a number") from None
        raise UserError(f"storage {shown!r} is not a URL: {example}") from None
    if parsed.get_backend_name() == "postgresql" and not (
        parsed.database or parsed.query.get("dbname")
    ):
        # libpq would connect to the database named like the user, and lrtune would
        # create Optuna's tables there.
        raise UserError(
            f"storage URL {shown!r} names no database: add /DBNAME "
            "(postgresql://USER@HOST/lrtune); create it first with createdb"
        )
    return url


def open_storage(
    url: str,
    *,
    create: bool = False,
    readonly: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 3,
    pool_size: int = 1,
    patience: float = 0.0,
) -> optuna.storages.RDBStorage:
    """The one way lrtune opens a storage: the RDB storage at ``url``, or a one-line
    :class:`UserError` that names the URL (password masked) and the cause.

    Nothing is created or altered unless ``create`` (``lrtune study``): without it the
    storage must exist and hold Optuna's tables, and a SQLite file of some other program is
    refused either way. Unless ``readonly`` (ls, export, report, dashboard), a SQLite file
    must be writable: a read-only file is reported at once instead of failing at the first
    commit. ``pool_size`` is the connections per process (PostgreSQL).

    With ``heartbeat_interval``, a trial whose process stopped beating for
    ``grace_period`` seconds is failed by the next worker and re-queued with the same
    parameters (Optuna's ``RetryFailedTrialCallback``), up to ``max_retry`` times.

    With ``patience`` (seconds; ``lrtune worker`` gives ``$LRTUNE_STORAGE_RETRY_SECONDS``),
    a PostgreSQL server that is there but busy or restarting (a connect timeout, too many
    clients: :func:`lrtune.dberrors.is_busy_server`) is retried with backoff for that long,
    as a storage lost mid-run is: many workers starting at once on a loaded machine or
    cluster must not die of it. A refused connection, unknown database or bad password
    still fails at once.
    """
    retry = StorageRetry(url, patience)
    while True:
        try:
            return _open_storage(
                url,
                create=create,
                readonly=readonly,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                max_retry=max_retry,
                pool_size=pool_size,
            )
        except _BusyServer as busy:
            if not patience:
                raise UserError(str(busy)) from None
            retry.wait(busy.__cause__ or busy)


class _BusyServer(UserError):
    """Opening the storage failed on a busy or restarting server (worth retrying)."""


def _open_storage(
    url: str,
    *,
    create: bool,
    readonly: bool,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int,
    pool_size: int,
) -> optuna.storages.RDBStorage:
    """:func:`open_storage`'s one attempt; :class:`_BusyServer` when it may be retried."""
    url = check_url(url)
    if url.startswith("grpc://"):
        # Through `lrtune proxy`: the proxy holds the database (and its connections) and
        # records the heartbeats its clients send (lrtune.proxy).
        from lrtune.proxy import connect

        return connect(url, heartbeat_interval)
    shown = mask_url(url)
    db = sqlite_path(url)
    if db is not None:
        check_path(db)  # deleted or replaced under a storage this process has open
        _check_sqlite_file(db, create=create, readonly=readonly)
    kwargs = engine_kwargs(url, pool_size=pool_size, wal=create)
    try:
        probe = engine_kwargs(url, pool_size=pool_size, wal=False)  # alters nothing
        tables = _table_names(url, probe) if db is None or db.is_file() else set()
        _check_tables(tables, shown, db, create=create)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = (
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                if heartbeat_interval
                else None
            )
            storage = _Storage(
                url,
                engine_kwargs=kwargs,
                skip_table_creation=not create,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
        if db is not None:
            watch(storage, db)  # the file deleted or replaced mid-run: lrtune.sqlite_file
        return storage
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(
            f"no database driver for {shown}: {exc}; install it (PostgreSQL: pip install "
            "'psycopg[binary]')"
        ) from None
    except Exception as exc:  # SQLAlchemy/driver errors, Optuna's schema check (RuntimeError)
        message = f"cannot open storage {shown}: {first_line(exc)}"
        if is_busy_server(exc):
            raise _BusyServer(message) from exc  # open_storage retries it, or says this line
        raise UserError(message) from None


def _check_sqlite_file(db: Path, *, create: bool, readonly: bool) -> None:
    """Faults of a SQLite file the file system shows, before SQLite is asked."""
    if db.exists() and not db.is_file():
        raise UserError(f"storage {db} is not a file")
    if not db.exists():
        if not create:
            raise _missing(db)
        if not db.parent.is_dir():
            raise UserError(f"cannot create the storage {db}: no directory {db.parent}")
        if not os.access(db.parent, os.W_OK):
            raise UserError(f"cannot create the storage {db}: directory {db.parent} is read-only")
        return
    if readonly:
        return
    if not os.access(db, os.W_OK):
        raise UserError(
            f"the storage {db} is read-only: make it writable (chmod u+w) or work on a copy"
        )
    if not os.access(db.parent, os.W_OK):
        raise UserError(
            f"the directory of the storage {db} is read-only: SQLite writes its journal "
            "beside the file, so make the directory writable or work on a copy"
        )


def _table_names(url: str, kwargs: dict[str, Any]) -> set[str]:
    """The tables of the database at ``url``, read without creating anything."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _check_tables(tables: set[str], shown: str, db: Path | None, *, create: bool) -> None:
    if tables >= OPTUNA_TABLES:
        return
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    if tables and db is not None:
        raise UserError(
            f"{db} is a SQLite database of another program (tables: {listed}), not an "
            "lrtune storage: lrtune leaves it alone; pass another --storage"
        )
    if create:
        return
    if tables:
        raise UserError(
            f"{shown} holds no Optuna tables (it has {listed}): not an lrtune storage; "
            "pass the --storage of `lrtune study`"
        )
    raise UserError(
        f"{shown} is empty (no Optuna tables): run `lrtune study` first or pass the "
        "--storage URL of an existing storage"
    )


def check_study_name(name: str) -> None:
    """Raise a one-line :class:`UserError` when ``name`` is too long for any RDB storage."""
    if len(name) > MAX_STUDY_NAME:
        raise UserError(
            f"study name {name[:40]}... is {len(name)} characters long: storages hold at "
            f"most {MAX_STUDY_NAME}; use a shorter --group"
        )


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat survives a lost connection.

    Optuna records heartbeats in a thread that dies on the first database error (printing a
    traceback), after which the live trial looks stale and another worker would fail it. Here
    a failed beat is logged and the next one tried: when the database comes back within the
    grace period the trial goes on; when it does not, the worker's own retry loop gives up.

    Stale trials are failed by :class:`lrtune.faults.StaleWatch` alone, which records why.
    Optuna's own check (run at the start of every trial) would race it: a trial that turns
    stale between the two checks would be failed by Optuna, with no ``fail_reason``.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return []  # see the class docstring: lrtune.faults.StaleWatch fails them

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except StorageGone:
            return  # the file is gone: the main thread says so at its next storage call
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.debug("heartbeat of trial %d not recorded: %s", trial_id, first_line(exc))
