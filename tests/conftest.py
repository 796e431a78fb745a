"""Shared fixtures: small CPU settings, temporary SQLite and PostgreSQL storages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# Tests train tiny models; one thread per process avoids oversubscribing CI's 2 cores when
# a test starts worker subprocesses beside the pytest process.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The range-test JSON fields SPEC fixes (`rangetest --json`, `RangeTestResult.to_dict`).
SPEC_FIELDS = (
    "lr_low",
    "lr_high",
    "steep",
    "valley",
    "min10",
    "diverged_at",
    "diagnosis",
    "spread_decades",
    "seconds",
    "lrs",
    "losses",
    "smoothed",
)
REPO = Path(__file__).resolve().parents[1]

#: A study slow enough (60 epochs a trial) to be interrupted mid-trial: append
#: ``--storage URL --trials N`` and any other flags.
SLOW_STUDY = [
    "study",
    "--prior",
    "none",
    "--samplers",
    "random",
    "--epochs",
    "60",
    "--pruner",
    "none",
    "--schedules",
    "cosine",
    "--confirm",  # 60-epoch confirmations would only slow the re-runs down
    "0",
]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_lrtune(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m lrtune ARGS`` in a subprocess (1 torch thread), output captured.

    A non-interactive shell starts background jobs with SIGINT ignored and a child inherits
    that (CI may run the suite so): the child gets the default disposition a terminal gives
    it, as Ctrl-C in a user's shell would find it.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


PG_ADMIN = os.environ.get("LRTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite storage URL in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'lrtune.db'}"


def _pg_create(engine: Any) -> str:
    """A new database on the test server (skip the test when the server is not up)."""
    import sqlalchemy

    name = f"lrtune_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL at {PG_ADMIN} is not reachable ({exc.orig}); start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    return name


def _pg_drop(engine: Any, name: str) -> None:
    import sqlalchemy

    with engine.connect() as conn:
        conn.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
            ),
            {"n": name},
        )
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
def pg_urls() -> Iterator[Callable[[], str]]:
    """Make PostgreSQL databases for this test (each call a new one), dropped after it."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        names.append(_pg_create(engine))
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{names[-1]}"

    try:
        yield make
    finally:
        for name in names:
            _pg_drop(engine, name)
        engine.dispose()


@pytest.fixture
def pg_url(pg_urls: Callable[[], str]) -> str:
    """A PostgreSQL database created for this test and dropped after it."""
    return pg_urls()


def copy_sqlite(src: str | Path, dst: str | Path) -> None:
    """Copy a SQLite storage with SQLite's backup API: lrtune runs its files in WAL mode, and
    a plain file copy misses commits still in the ``-wal`` file while a connection (of this
    test process) has the database open."""
    import sqlite3

    with sqlite3.connect(str(src)) as source, sqlite3.connect(str(dst)) as target:
        source.backup(target)
