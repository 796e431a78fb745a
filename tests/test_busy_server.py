"""Workers starting against a busy PostgreSQL server (issue 18): a connect timeout or a full
connection limit is waited out for ``$LRTUNE_STORAGE_RETRY_SECONDS`` like a storage lost
mid-run; a refused connection, unknown database or bad password still fails at once.

The busy server is a real one: a role whose connection limit is 0 (``too many connections
for role``), raised while the worker waits; and a socket that accepts and never answers
(libpq's connect timeout).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from lrtune.dberrors import first_line, is_busy_server
from lrtune.errors import UserError
from lrtune.storage import open_storage
from tests.conftest import PG_ADMIN, create_tiny_group, run_lrtune, spawn_lrtune

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[1]


def _admin(url: str, *statements: str) -> None:
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def limited_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """A login role allowed no connection at all (``CONNECTION LIMIT 0``) that may use the
    test database's tables once they exist; its name and its URL to that database."""
    role = f"busy_{uuid.uuid4().hex[:10]}"
    _admin(PG_ADMIN, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        yield role, pg_url.replace("://postgres@", f"://{role}@")
    finally:
        _admin(pg_url, f"DROP OWNED BY {role}")
        _admin(PG_ADMIN, f"DROP ROLE {role}")


def _grant_tables(pg_url: str, role: str) -> None:
    _admin(
        pg_url,
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
    )


def _connect_error(url: str) -> BaseException:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 1})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{url} connected")


def test_busy_server_is_told_from_a_typo(limited_role: tuple[str, str]) -> None:
    _role, limited_url = limited_role
    with socket.socket() as silent:  # accepts (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        timeout = _connect_error(f"postgresql+psycopg://u@127.0.0.1:{silent.getsockname()[1]}/x")
    assert is_busy_server(timeout), first_line(timeout)
    assert "timeout expired" in first_line(timeout)
    full = _connect_error(limited_url)
    assert is_busy_server(full), first_line(full)
    assert "too many connections" in first_line(full)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_url = f"postgresql+psycopg://u@127.0.0.1:{closed.getsockname()[1]}/x"
    no_database = PG_ADMIN.rsplit("/", 1)[0] + "/no_such_database_here"
    for url in (refused_url, no_database):
        error = _connect_error(url)
        assert not is_busy_server(error), first_line(error)


def test_open_storage_without_patience_says_one_line(limited_role: tuple[str, str]) -> None:
    _role, limited_url = limited_role
    with pytest.raises(UserError, match=r"cannot open storage .*too many connections") as raised:
        open_storage(limited_url)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_worker_waits_for_a_busy_server_then_runs(
    tmp_path: Path, pg_url: str, limited_role: tuple[str, str]
) -> None:
    role, limited_url = limited_role
    create_tiny_group(tmp_path, pg_url, "busy", trials=2, epochs=2)
    _grant_tables(pg_url, role)
    proc = spawn_lrtune(
        ["worker", "--group", "busy", "--storage", limited_url, "--device", "cpu"],
        tmp_path,
        LRTUNE_STORAGE_RETRY_SECONDS="300",
    )
    try:
        assert proc.stderr is not None
        warning = proc.stderr.readline()  # blocks until the worker says it waits
        assert "unreachable" in warning and "retrying for up to 300 s" in warning, warning
        assert proc.poll() is None
        _admin(PG_ADMIN, f"ALTER ROLE {role} CONNECTION LIMIT -1")  # the server frees up
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "worker done: 2 trials" in out, out
    assert "Traceback" not in err, err
    study = optuna.load_study(study_name="busy.random.none", storage=pg_url)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2, states


def test_worker_gives_up_on_a_busy_server_in_one_line(
    tmp_path: Path, pg_url: str, limited_role: tuple[str, str]
) -> None:
    role, limited_url = limited_role
    create_tiny_group(tmp_path, pg_url, "busy", trials=1, epochs=1)
    _grant_tables(pg_url, role)
    done = run_lrtune(
        ["worker", "--group", "busy", "--storage", limited_url, "--device", "cpu"],
        tmp_path,
        LRTUNE_STORAGE_RETRY_SECONDS="2",
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith(f"lrtune worker: error: storage postgresql+psycopg://{role}@")
    assert "too many connections" in lines[-1] and "gave up" in lines[-1], lines[-1]
    assert "retrying for up to 2 s" in done.stderr, done.stderr
    study = optuna.load_study(study_name="busy.random.none", storage=pg_url)
    assert study.trials == []  # it never started one
