"""Storage faults and bad storage inputs (issue 11, items 3-7): each is one line on stderr,
exit 2, and leaves the storage exactly as it was.

Read-only files are checked in a subprocess: as root, chmod 444 is ignored, so there the
subprocess runs without the capabilities that bypass file permissions (as any user would).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from lrtune.dberrors import first_line, is_connection_error
from lrtune.storage import mask_url, open_storage

CREATE = ["study", "--prior", "none", "--samplers", "random", "--trials", "2", "--epochs", "1",
          "--schedules", "cosine", "--device", "cpu"]  # fmt: skip

#: One command line per read-only-or-joining command; ``{url}`` is the storage.
JOINING = {
    "ls": ["ls"],
    "export": ["export", "--study", "digits.random.none"],
    "report": ["report", "--group", "digits", "--out", "{tmp}/report"],
    "dashboard": ["dashboard", "--port", "8799"],
    "worker": ["worker", "--group", "digits", "--device", "cpu"],
    "rangetest": ["rangetest", "--study", "digits.random.none", "--device", "cpu"],
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))


def _pg_tables(url: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        return sorted(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"lrtune {command}: error: "), err
    return err


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def _unprivileged() -> list[str]:
    """A command prefix that makes file permissions apply (root bypasses them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only file cannot be simulated")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _lrtune(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=dict(os.environ, OMP_NUM_THREADS="1", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """A SQLite storage holding group ``digits`` (created, no trial run yet)."""
    db = tmp_path / "made" / "lrtune.db"
    db.parent.mkdir()
    assert main([*CREATE, "--create-only", "--storage", f"sqlite:///{db}"]) == 0
    capsys.readouterr()
    yield db
    db.parent.chmod(0o755)
    db.chmod(0o644)


# --- 3. read-only SQLite ------------------------------------------------------------------


@pytest.mark.slow
def test_a_read_only_sqlite_file_is_one_line_at_once(created: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{created}"
    created.chmod(0o444)
    before = _digest(created)
    study = _lrtune([*CREATE, "--storage", url], tmp_path)
    # Retrying as if the database were unreachable would outlast _lrtune's bound (300 s).
    worker = _lrtune(["worker", "--group", "digits", "--storage", url], tmp_path,
                     LRTUNE_STORAGE_RETRY_SECONDS="3600")  # fmt: skip
    for name, proc in (("study", study), ("worker", worker)):
        assert proc.returncode == 2, proc.stderr
        assert "retrying" not in proc.stderr, proc.stderr
        err = _one_error_line(proc.stderr, name)
        assert "read-only" in err and str(created) in err and "max length" not in err
        assert "unreachable" not in err
    assert _digest(created) == before
    listed = _lrtune(["ls", "--storage", url], tmp_path)  # reading a read-only file is fine
    assert listed.returncode == 0 and "digits.random.none" in listed.stdout, listed.stderr


@pytest.mark.slow
def test_a_sqlite_file_in_a_read_only_directory_is_one_line(created: Path, tmp_path: Path) -> None:
    created.parent.chmod(0o555)  # SQLite cannot write its journal beside the file
    before = _digest(created)
    proc = _lrtune(["worker", "--group", "digits", "--storage", f"sqlite:///{created}"],
                   tmp_path, LRTUNE_STORAGE_RETRY_SECONDS="2")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = _one_error_line(proc.stderr, "worker")
    assert "directory" in err and "read-only" in err and "unreachable" not in err
    assert _digest(created) == before


@pytest.mark.slow
def test_a_storage_that_turns_read_only_mid_command_names_the_cause(
    created: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own read-only mode: lrtune's checks pass, the first commit fails. That is no
    # lost connection (waiting would not help) and not "exceeding max length".
    monkeypatch.setenv("LRTUNE_STORAGE_RETRY_SECONDS", "30")
    url = f"sqlite:///file:{created}?mode=ro&uri=true"
    before = _digest(created)
    code, text = _run(["worker", "--group", "digits", "--device", "cpu", "--storage", url], capsys)
    assert code == 2 and "retrying" not in text, text
    err = _one_error_line(text, "worker")
    assert "read-only" in err and "max length" not in err and "unreachable" not in err
    assert _digest(created) == before


def test_storage_errors_name_their_cause(created: Path) -> None:
    import optuna

    storage = open_storage(f"sqlite:///file:{created}?mode=ro&uri=true", readonly=True)
    with pytest.raises(optuna.exceptions.StorageInternalError) as info:
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "x")
    assert "max length" in str(info.value)  # Optuna's generic text for every commit error
    line = first_line(info.value)
    assert "read-only" in line and "max length" not in line, line
    assert not is_connection_error(info.value)


# --- 4. foreign and empty SQLite files ----------------------------------------------------


def _foreign(tmp_path: Path) -> Path:
    db = tmp_path / "notoptuna.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")
        conn.execute("INSERT INTO foo VALUES (1)")
    return db


@pytest.mark.parametrize("command", [*JOINING, "study"])
def test_a_foreign_sqlite_file_is_never_written(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _foreign(tmp_path)
    before = _digest(db)
    args = CREATE if command == "study" else JOINING[command]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, text = _run([*args, "--storage", f"sqlite:///{db}"], capsys)
    assert code == 2
    err = _one_error_line(text, command)
    assert "another program" in err and "foo" in err
    assert _digest(db) == before and _tables(db) == ["foo"]


@pytest.mark.parametrize("command", list(JOINING))
def test_an_empty_sqlite_file_gets_no_tables_from_a_joining_command(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    args = [a.replace("{tmp}", str(tmp_path)) for a in JOINING[command]]
    code, text = _run([*args, "--storage", f"sqlite:///{db}"], capsys)
    assert code == 2
    assert "no Optuna tables" in _one_error_line(text, command)
    assert db.stat().st_size == 0


def test_a_file_that_is_not_sqlite_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "binary.db"
    db.write_bytes(bytes(range(256)) * 16)
    before = _digest(db)
    for args in (["ls"], CREATE):
        code, text = _run([*args, "--storage", f"sqlite:///{db}"], capsys)
        assert code == 2
        assert "not a SQLite database" in _one_error_line(text, args[0])
    assert _digest(db) == before


def test_joining_commands_create_no_tables_in_an_empty_postgresql_database(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command, args in JOINING.items():
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        code, text = _run([*args, "--storage", pg_url], capsys)
        assert code == 2, text
        assert "no Optuna tables" in _one_error_line(text, command)
        assert _pg_tables(pg_url) == [], command
    # `study` may create them: it is the command that makes a storage
    assert main([*CREATE, "--create-only", "--storage", pg_url]) == 0
    assert {"studies", "trials", "version_info"} <= set(_pg_tables(pg_url))


# --- 5. passwords ---------------------------------------------------------------------------

SECRET = "S3cretPw"


@pytest.mark.parametrize(
    "url",
    [
        f"root:{SECRET}@127.0.0.1/db",  # no scheme
        f"postgresql://u:{SECRET}@x@127.0.0.1:1/db",  # a raw @ in the password
        f"postgresql://u:pa@{SECRET}@127.0.0.1:1/db",
    ],
)
@pytest.mark.parametrize("command", ["ls", "dashboard", "worker", "export", "study"])
def test_odd_urls_never_show_the_password(
    url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = CREATE if command == "study" else JOINING[command]
    code, text = _run([*args, "--storage", url], capsys)
    assert code == 2
    err = _one_error_line(text, command)
    assert SECRET not in err and "***" in err, err


def test_mask_url_hides_every_password_form() -> None:
    assert mask_url(f"root:{SECRET}@host/db") == "root:***@host/db"
    assert mask_url(f"postgresql://u:p@{SECRET}@host/db") == "postgresql://u:***@host/db"
    assert mask_url(f"open 'mysql://u:{SECRET}@h/db': no") == "open 'mysql://u:***@h/db': no"
    assert mask_url("sqlite:///a@b.db") == "sqlite:///a@b.db"
    assert mask_url("postgresql://u@host/db") == "postgresql://u@host/db"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # what libpq reads as a password or secret, in the query
        (f"postgresql://h/db?user=u&password={SECRET}", "postgresql://h/db?user=u&password=***"),
        (f"postgresql://h/db?pass%77ord={SECRET}", "postgresql://h/db?pass%77ord=***"),
        (f"postgresql://h/db?sslpassword={SECRET}&sslmode=require",
         "postgresql://h/db?sslpassword=***&sslmode=require"),
        (f"postgresql://h/db?passfile=/home/{SECRET}/.pgpass", "postgresql://h/db?passfile=***"),
        (f"postgresql://h/db?oauth_client_secret={SECRET}",
         "postgresql://h/db?oauth_client_secret=***"),
        (f"postgresql://h/db?dbname=host%3Dx%20password%3D{SECRET}", "postgresql://h/db?dbname=***"),
        # a raw "&" or "@" in a query value
        (f"postgresql://h/db?password=a&{SECRET}&user=u", "postgresql://h/db?password=***&***&user=u"),
        (f"postgresql://h:5432/db?password=a@{SECRET}", "postgresql://h:***"),
        # user info and query together, quoted in a message
        (f"open 'postgresql://u:{SECRET}@h/db?password={SECRET}': no",
         "open 'postgresql://u:***@h/db?password=***': no"),
        (f"(root:{SECRET}@h/db?password={SECRET}),", "(root:***@h/db?password=***),"),
        (f"postgresql://u:pa?s={SECRET}@h/db", "postgresql://u:***"),
        # libpq's key=value connection strings, environment lines
        (f"host=db password='a {SECRET} b' user=u", "host=db password=*** user=u"),
        (f"PGPASSWORD={SECRET} lrtune ls", "PGPASSWORD=*** lrtune ls"),
        # harmless settings and prose stay as they are
        ("sqlite:///x.db?mode=ro&uri=true", "sqlite:///x.db?mode=ro&uri=true"),
        ("postgresql://h/db?sslmode=require&connect_timeout=5",
         "postgresql://h/db?sslmode=require&connect_timeout=5"),
        ("is it running? a?b", "is it running? a?b"),
    ],
)  # fmt: skip
def test_mask_url_hides_secrets_in_the_query(text: str, shown: str) -> None:
    assert mask_url(text) == shown
    assert SECRET not in mask_url(text)


# --- 6. and 7. other bad storage inputs -----------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "export", "report", "ls", "dashboard", "study"])
def test_a_port_that_is_no_number_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = CREATE if command == "study" else JOINING[command]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, text = _run([*args, "--storage", "postgresql://u@127.0.0.1:abc/db"], capsys)
    assert code == 2
    assert "port 'abc' is not a number" in _one_error_line(text, command)


def test_a_group_too_long_for_the_storage_writes_nothing(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "long.db"
    for url in (pg_url, f"sqlite:///{db}"):
        code, text = _run([*CREATE, "--group", "g" * 600, "--storage", url], capsys)
        assert code == 2
        err = _one_error_line(text, "study")
        assert "612 characters" in err and "at most 512" in err and "--group" in err
    assert _pg_tables(pg_url) == []
    assert not db.exists()


@pytest.mark.parametrize("command", ["ls", "study", "worker"])
def test_an_empty_storage_flag_is_one_line(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = CREATE if command == "study" else JOINING[command]
    code, text = _run([*args, "--storage", ""], capsys)
    assert code == 2
    assert "--storage is empty" in _one_error_line(text, command)
    assert list(tmp_path.iterdir()) == []  # no lrtune.db behind the user's back


def test_an_unwritable_new_storage_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _run([*CREATE, "--storage", f"sqlite:///{tmp_path}/nodir/x.db"], capsys)
    assert code == 2
    assert "no directory" in _one_error_line(text, "study")
    assert not (tmp_path / "nodir").exists()


# --- issue 22 item 10: the SQLite file deleted or replaced mid-run --------------------------


def _running_trials(db: Path) -> int:
    """RUNNING trials in ``db``, read through a connection closed at once (a pooled one of
    this process would hold the old file and its WAL)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet
        return 0
    finally:
        conn.close()


def _start_and_wait_for_a_trial(db: Path, tmp_path: Path) -> subprocess.Popen[str]:
    from tests.conftest import SLOW_STUDY, spawn_lrtune

    proc = spawn_lrtune([*SLOW_STUDY, "--trials", "1", "--storage", f"sqlite:///{db}"], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.is_file() and _running_trials(db):
            return proc
    proc.kill()
    pytest.fail(f"no trial started: {proc.communicate()[1][-2000:]}")


def _gone_line(proc: subprocess.Popen[str], what: str) -> str:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out + err
    assert "watch:" not in out and "export:" not in out, out
    line = _one_error_line(err, "study")
    assert what in line, line
    return line


@pytest.mark.slow
def test_a_sqlite_file_deleted_mid_run_is_one_line_and_leaves_no_wal(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    proc = _start_and_wait_for_a_trial(db, tmp_path)
    db.unlink()  # `rm run.db`: the -wal and -shm files stay
    assert "run the command again" in _gone_line(proc, "was deleted")
    # Nothing of the lost run is left for the next storage made at this path to read.
    wal = db.with_name(db.name + "-wal")
    assert not db.exists() and (not wal.exists() or wal.stat().st_size == 0)


@pytest.mark.slow
def test_a_sqlite_file_replaced_mid_run_is_left_intact(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{other}")
    optuna.create_study(study_name="keep", storage=storage).enqueue_trial({"x": 1.0})
    storage.engine.dispose()
    db = tmp_path / "run.db"
    proc = _start_and_wait_for_a_trial(db, tmp_path)
    os.replace(other, db)  # `mv other.db run.db`, a backup restored...
    _gone_line(proc, "was replaced")
    # The new file holds what it held, not the pages of the run's WAL left beside it.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT study_name FROM studies").fetchall() == [("keep",)]
        assert conn.execute("SELECT count(*) FROM trials").fetchone() == (1,)
    finally:
        conn.close()
