"""Shared fixtures: small CPU settings, temporary SQLite and PostgreSQL storages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
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


#: A task file whose factory ``ok(seed)`` trains a linear classifier on 64 fixed points for
#: one epoch (task name ``tiny``): a trial costs next to nothing.
TINY_TASK = """
import torch
from torch import nn

from lrtune import Task


def ok(seed):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    return Task(nn.Linear(4, 2), (x, y), (x, y), nn.CrossEntropyLoss(), batch_size=16,
                epochs=1, name="tiny")
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def lrtune_env(**extra: str) -> dict[str, str]:
    """The environment of an lrtune subprocess: this checkout's ``lrtune`` first on the
    path (an editable install may point at another clone), one torch thread, unbuffered
    output (a test reads it as it comes), none of the shell's ``LRTUNE_*`` settings (a
    developer's ``LRTUNE_STORAGE`` must not leak into a test); then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def spawn_lrtune(args: list[str], cwd: Path, **extra_env: str) -> subprocess.Popen[str]:
    """``python -m lrtune ARGS`` in a subprocess (:func:`lrtune_env` + ``extra_env``),
    output captured.

    A non-interactive shell starts background jobs with SIGINT ignored and a child inherits
    that (CI may run the suite so): the child gets the default disposition a terminal gives
    it, as Ctrl-C in a user's shell would find it.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=lrtune_env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def own_loop_source(name: str, fit: str, imports: str = "") -> str:
    """The source of a task module: the task of the shipped ``studies/own_loop.py``, named
    ``name``, whose ``fit`` is the given source of a ``def fit(hp, report)`` (it may call
    ``own_loop.fit``); ``imports`` go at the top. Write it to a file, pass ``FILE.py:make``."""
    loop = REPO / "studies" / "own_loop.py"
    return f"""
import importlib.util
{imports}
spec = importlib.util.spec_from_file_location("own_loop", {str(loop)!r})
own_loop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(own_loop)

{fit.strip()}


def make(seed):
    task = own_loop.make(seed)
    task.fit, task.name = fit, {json.dumps(name)}
    return task
"""


def run_lrtune(
    args: list[str], cwd: Path, *, timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m lrtune ARGS`` run to its end (bounded by ``timeout`` seconds) in the
    environment :func:`spawn_lrtune` gives, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=lrtune_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_running(url: str, study: str, want: int = 1, seconds: float = 300) -> list[str]:
    """Wait until ``want`` trials of ``study`` run; their ``worker`` attrs (host:pid). The
    bound is generous: on a busy 2-core machine two workers on PostgreSQL take over a minute
    to start."""
    import optuna

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=study, storage=url).trials
        except KeyError:  # not created yet
            continue
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        workers = [str(t.user_attrs.get("worker", "")) for t in running]
        if len(running) >= want and all(workers):
            return workers
    pytest.fail(f"{want} trials of {study} should be running")


def signal_when_running(
    proc: subprocess.Popen[str], url: str, study: str, signum: int, want: int = 1
) -> tuple[str, str]:
    """Send ``signum`` to ``proc`` (an lrtune command) once ``want`` trials of ``study`` run
    (:func:`wait_running`); its stdout and stderr once it has exited. A command still up
    after a bounded wait, or when the wait fails, is killed."""
    try:
        wait_running(url, study, want)
        proc.send_signal(signum)
        return proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tiny_spec(
    *, trials: int, epochs: int, schedules: Sequence[str] = ("constant", "cosine")
) -> str:
    """A small study spec's TOML: digits, random sampler, no prior, no pruner, no confirmation,
    LR bounds well below divergence (every trial trains all its epochs)."""
    return "\n".join(
        [
            'task = "digits"',
            'samplers = ["random"]',
            'prior = "none"',
            f"schedules = {json.dumps(list(schedules))}",
            "lr_low = 0.001",
            "lr_high = 0.1",
            f"trials = {trials}",
            f"epochs = {epochs}",
            'pruner = "none"',
            "confirm = 0",
            "",
        ]
    )


def create_tiny_group(
    cwd: Path,
    url: str,
    group: str,
    *,
    trials: int,
    epochs: int,
    schedules: Sequence[str] = ("constant", "cosine"),
) -> None:
    """``lrtune study --create-only`` of :func:`tiny_spec` (written to ``cwd/spec.toml``) as
    the group ``group`` in ``url``, in a subprocess as a cluster's create job runs it."""
    (cwd / "spec.toml").write_text(tiny_spec(trials=trials, epochs=epochs, schedules=schedules))
    args = ["study", "--spec", "spec.toml", "--group", group, "--create-only"]
    done = run_lrtune([*args, "--storage", url, "--device", "cpu"], cwd, timeout=300)
    assert done.returncode == 0, done.stderr


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file, and on a PostgreSQL database of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lrtune.db'}"
    return str(request.getfixturevalue("pg_url"))


def copy_sqlite(src: str | Path, dst: str | Path) -> None:
    """Copy a SQLite storage with SQLite's backup API: lrtune runs its files in WAL mode, and
    a plain file copy misses commits still in the ``-wal`` file while a connection (of this
    test process) has the database open."""
    import sqlite3

    with sqlite3.connect(str(src)) as source, sqlite3.connect(str(dst)) as target:
        source.backup(target)
