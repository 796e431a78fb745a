"""A temporary PostgreSQL database for the benchmarks that measure storage, created and
dropped here (``$LRTUNE_BENCH_PG``, default the local server, user postgres)."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator

import sqlalchemy

PG_ADMIN = os.environ.get(
    "LRTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def temporary_database(optional: bool = False) -> Iterator[str | None]:
    """The URL of a new database, dropped on exit (its open connections ended first).

    ``optional``: an unreachable server yields ``None`` with one line on stderr (the caller
    skips its PostgreSQL part) instead of raising."""
    name = f"lrtune_bench_{uuid.uuid4().hex[:8]}"
    # pre-ping: a benchmark that restarts the server mid-run still drops its database
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        if not optional:
            raise
        print(f"(PostgreSQL skipped: {str(exc.orig).splitlines()[0]})", file=sys.stderr)
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            # a worker killed mid-run may still hold a connection: DROP would refuse
            conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
