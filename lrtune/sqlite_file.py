"""The SQLite file under a storage: its connections, and the file watched while a command runs.

An open SQLite connection keeps the file it opened, not its path. When that file is deleted
(``rm lrtune.db``) or replaced (``mv other.db lrtune.db``, a backup restored) while lrtune
runs, the run would go on writing to a file no one can open any more and end as a success.
Worse, in WAL mode it leaves ``lrtune.db-wal`` and ``-shm`` beside the path: SQLite does not
checkpoint or delete the WAL of a database file that moved, and the next process that
opens the new file reads that WAL's pages as its own (SQLite's "How To Corrupt": a database
and a WAL that do not belong together).

So a storage's engine checks that the path still names the file it opened (device and
inode; :func:`watch`): before each new connection and whenever a connection is taken from
its pool, which every storage call does. A file that is gone or replaced raises
:class:`StorageGone` (one line, exit 2), and nothing more is written. Whenever a connection
meets a changed file (taken from the pool or given back to it), it first checkpoints the
WAL into the file the WAL belongs to and truncates it, so nothing of the old database is
left for the new file. The cost is one ``stat`` per storage call.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import weakref
from pathlib import Path
from typing import Any

from lrtune.errors import UserError, causes

log = logging.getLogger(__name__)

#: A file's identity: ``(st_dev, st_ino)``.
Identity = tuple[int, int]

#: How long the WAL checkpoint of a changed file waits for other processes' locks (ms):
#: the storage's own busy timeout (a minute) would hold the command up that long.
CHECKPOINT_WAIT_MS = 2000


class StorageGone(UserError):
    """The SQLite file of a storage was deleted or replaced while a command ran."""


def gone_in(exc: BaseException) -> StorageGone | None:
    """The :class:`StorageGone` in ``exc``'s chain of causes, if any (Optuna's ``optimize``
    replaces an error raised while it records a trial by an ``UnboundLocalError``)."""
    return next((e for e in causes(exc) if isinstance(e, StorageGone)), None)


def identity(path: Path) -> Identity | None:
    """The identity of the file at ``path`` (through symlinks), ``None`` when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _gone(db: Path, now: Identity | None) -> StorageGone:
    if now is None:
        return StorageGone(
            f"the storage {db} was deleted while this command ran: the trials it held, this "
            "run's included, went with it, and nothing more is written; run the command "
            "again to start a new storage"
        )
    return StorageGone(
        f"the storage {db} was replaced by another file while this command ran: nothing "
        "more is written to either (the new file is left as it is); run the command again "
        "to use the new file"
    )


# The files this process has open as storages: path -> (identity, the storages on it). A
# storage opened later on the same path must find the same file while any of them lives.
_opened: dict[str, tuple[Identity, weakref.WeakSet[Any]]] = {}


def check_path(db: Path) -> None:
    """Raise :class:`StorageGone` when a storage of this process has ``db`` open and the
    path no longer names that file (before ``open_storage`` opens it again)."""
    key = os.path.abspath(db)
    known = _opened.get(key)
    if known is None or not known[1]:
        return
    now = identity(db)
    if now != known[0]:
        raise _gone(db, now)


def check_open() -> None:
    """Raise :class:`StorageGone` when the file of any storage this process has open was
    deleted or replaced (before a command says where its results are)."""
    for key, (opened, storages) in list(_opened.items()):
        now = identity(Path(key))
        if storages and now != opened:
            raise _gone(Path(key), now)


def watch(storage: Any, db: Path) -> None:
    """Watch ``db`` for ``storage`` (an Optuna ``RDBStorage`` on it, just opened): every
    new connection and every connection taken from the pool checks the file is still the
    one opened here; see the module's docstring."""
    from sqlalchemy import event

    check_path(db)
    opened = identity(db)
    if opened is None:
        raise _gone(db, None)
    key = os.path.abspath(db)
    if key not in _opened or not _opened[key][1]:
        _opened[key] = (opened, weakref.WeakSet())
    _opened[key][1].add(storage)

    def before_connect(*_args: Any) -> None:
        now = identity(db)
        if now != opened:  # SQLite would create an empty file, or pair the new one with
            raise _gone(db, now)  # the old WAL

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        now = identity(db)
        if now != opened:
            release_wal(dbapi_conn)
            raise _gone(db, now)

    def on_checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None and identity(db) != opened:
            release_wal(dbapi_conn)  # this process's last write left frames there

    engine = storage.engine
    event.listen(engine, "do_connect", before_connect)
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)


def release_wal(conn: Any) -> None:
    """Checkpoint the WAL of ``conn`` (a SQLite connection whose file moved) into that
    file and truncate it: a WAL left beside the path must hold nothing a new file there
    would read as its own. Best effort (another process may hold the WAL a while longer;
    it does the same when it next touches the storage)."""
    try:
        conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}").close()
        busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.debug("WAL checkpoint of a moved storage file: busy, left for later")
    except sqlite3.Error as exc:
        log.debug("WAL checkpoint of a moved storage file failed: %s", exc)


class WalConnection(sqlite3.Connection):
    """A SQLite connection in WAL mode with ``synchronous=NORMAL`` (``lrtune study``).

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
        _normal_sync_if_wal(self)


class AsFoundConnection(sqlite3.Connection):
    """A SQLite connection that leaves the file's journal mode as it is (every command but
    ``study``); ``synchronous=NORMAL`` only in WAL mode, where SQLite calls it safe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _normal_sync_if_wal(self)


def _normal_sync_if_wal(conn: sqlite3.Connection) -> None:
    try:
        row = conn.execute("PRAGMA journal_mode").fetchone()
    except sqlite3.DatabaseError:  # not a database: the caller's checks say so
        return
    if row and str(row[0]).lower() == "wal":
        conn.execute("PRAGMA synchronous=NORMAL").close()
