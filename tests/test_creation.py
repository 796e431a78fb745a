"""A study command stopped while it creates a group's studies (a kill, a full disk) leaves
nothing, or studies the same command finishes; workers never trip on a half-written one.

The fault tests SIGKILL ``study --create-only`` at random instants of the creation (before
a random one of its database statements, several seeds, SQLite and PostgreSQL), then run
the same command again and the group to its exact budget.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from tests.conftest import TINY_TASK

States = optuna.trial.TrialState


#: Runs ``lrtune ARGS`` and SIGKILLs itself before its $KILL_AT-th database statement (0:
#: never; it then prints how many statements it made).
KILL_AT = """
import atexit, os, signal, sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

at = int(os.environ["KILL_AT"])
count = 0


@event.listens_for(Engine, "before_cursor_execute")
def _statement(*_args):
    global count
    count += 1
    if count == at:
        os.kill(os.getpid(), signal.SIGKILL)


atexit.register(lambda: print(f"statements: {count}", file=sys.stderr))
from lrtune.cli import main

sys.exit(main(sys.argv[1:]))
"""

HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "2"]


@pytest.fixture
def task(tmp_path: Path) -> str:
    path = tmp_path / "tiny_task.py"
    path.write_text(TINY_TASK)
    return f"{path}:ok"


def _flags(task: str, url: str, prior: str = "none", trials: int = 2) -> list[str]:
    return [
        "--task", task, "--prior", prior, "--samplers", "random,tpe", "--trials", str(trials),
        "--confirm", "0", "--pruner", "none", "--device", "cpu", "--rangetest-steps", "20",
        "--rangetest-seeds", "1", "--group", "g", "--storage", url,
    ]  # fmt: skip


def _run(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capfd.readouterr()
    code = main(list(args))
    return code, capfd.readouterr().err


def _assert_budget(url: str, names: list[str], trials: int) -> None:
    """Every study of ``g`` is fully created, has exactly ``trials`` finished trials and
    nothing running or waiting; the range-test studies hold one plot each."""
    from lrtune.dashboard import artifact_dir_for
    from lrtune.search.states import group_study_names, unfinished_studies

    storage = optuna.storages.RDBStorage(url)
    try:
        assert sorted(group_study_names(storage, "g")) == sorted(names)
        assert unfinished_studies(storage, "g") == []
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            assert states.count(States.COMPLETE) + states.count(States.PRUNED) == trials, states
            assert States.RUNNING not in states and States.WAITING not in states, states
            if name.endswith(".rangetest"):
                plots = [
                    m
                    for m in optuna.artifacts.get_all_artifact_meta(study)
                    if m.filename.endswith(".png")
                ]
                assert len(plots) == 1, plots
                assert study.user_attrs["rangetest_plot_artifact"] == plots[0].artifact_id
                assert (artifact_dir_for(url) / plots[0].artifact_id).is_file()
    finally:
        storage.engine.dispose()


NONE_STUDIES = ["g.random.none", "g.tpe.none"]


@pytest.mark.slow
def test_a_bare_study_row_is_finished_by_the_same_command(
    task: str, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A kill right after the first study row was written: every rerun said the study
    exists with a different epochs, and the worker found no studies."""
    storage = optuna.storages.RDBStorage(sqlite_url)
    optuna.create_study(storage=storage, study_name="g.random.none")
    storage.engine.dispose()
    code, err = _run(capfd, "study", *_flags(task, sqlite_url), "--create-only")
    assert code == 0, err
    code, err = _run(capfd, "worker", "--group", "g", "--storage", sqlite_url, *HEARTBEAT)
    assert code == 0, err
    _assert_budget(sqlite_url, NONE_STUDIES, 2)


@pytest.mark.slow
def test_a_half_written_study_is_waited_for_then_finished_by_the_same_command(
    task: str, sqlite_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A kill (or a full disk) after a few attrs: the worker crashed with KeyError 'bounds'
    and ``--create-only`` skipped the study. The worker now waits a grace period, then
    says in one line to run the study command again, which finishes the study."""
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert _run(capfd, "study", *_flags(task, other), "--create-only")[0] == 0
    source = optuna.storages.RDBStorage(other)
    attrs = optuna.load_study(study_name="g.random.none", storage=source).user_attrs
    source.engine.dispose()
    storage = optuna.storages.RDBStorage(sqlite_url)
    half = optuna.create_study(storage=storage, study_name="g.random.none")
    for key in ("lrtune_version", "group", "task", "spec"):  # the order lrtune wrote them in
        half.set_user_attr(key, attrs[key])
    storage.engine.dispose()
    code, err = _run(capfd, "worker", "--group", "g", "--storage", sqlite_url, *HEARTBEAT)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "g.random.none" in err and "run that `lrtune study` command again" in err, err
    code, err = _run(capfd, "study", *_flags(task, sqlite_url), "--create-only")
    assert code == 0, err
    code, err = _run(capfd, "study", *_flags(task, sqlite_url))
    assert code == 0, err
    _assert_budget(sqlite_url, NONE_STUDIES, 2)


def _kill_runs(
    task: str, tmp_path: Path, new_url: Callable[[int], str], capfd: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)

    def create(url: str, kill_at: int) -> subprocess.CompletedProcess[str]:
        flags = _flags(task, url, prior="rangetest,none")
        return subprocess.run(
            [sys.executable, str(script), "study", *flags, "--create-only"],
            env=dict(os.environ, OMP_NUM_THREADS="1", KILL_AT=str(kill_at)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    # How many statements a whole creation makes, on a storage of its own.
    full = create(new_url(0), 0)
    assert full.returncode == 0, full.stderr
    total = int(re.findall(r"statements: (\d+)", full.stderr)[-1])
    names = ["g.random.rangetest", "g.tpe.rangetest", *NONE_STUDIES]
    seeds = 4
    for seed in range(seeds):  # one instant in each quarter of the creation
        url = new_url(seed + 1)
        kill_at = random.Random(seed).randint(
            1 + seed * total // seeds, (seed + 1) * total // seeds
        )
        killed = create(url, kill_at)
        assert killed.returncode == -9, (kill_at, killed.stderr)
        # A worker started now never trips: it runs a whole group, or says what to do.
        code, err = _run(capfd, "worker", "--group", "g", "--storage", url, *HEARTBEAT)
        assert "Traceback" not in err, (kill_at, err)
        assert code == 0 or len(err.strip().splitlines()) == 1, (kill_at, err)
        flags = _flags(task, url, prior="rangetest,none")
        code, err = _run(capfd, "study", *flags, "--create-only")
        assert code == 0, (kill_at, err)
        code, err = _run(capfd, "study", *flags)
        assert code == 0, (kill_at, err)
        _assert_budget(url, names, 2)


@pytest.mark.slow
def test_study_creation_killed_at_random_instants_on_sqlite(
    task: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _kill_runs(task, tmp_path, lambda seed: f"sqlite:///{tmp_path / f'kill{seed}.db'}", capfd)


@pytest.mark.slow
@pytest.mark.postgres
def test_study_creation_killed_at_random_instants_on_postgres(
    task: str,
    tmp_path: Path,
    pg_urls: Callable[[], str],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LRTUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    _kill_runs(task, tmp_path, lambda _seed: pg_urls(), capfd)
