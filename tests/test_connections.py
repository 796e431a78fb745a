"""The connection budget (SPEC "Clusters"): a worker process holds at most one PostgreSQL
connection at rest and two while a trial runs, counted in ``pg_stat_activity`` by the
``application_name`` lrtune sets (``lrtune:PID``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from lrtune.cli import main
from tests.conftest import spawn_lrtune

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("LRTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
States = optuna.trial.TrialState


def connections(admin: sqlalchemy.Engine, pid: int) -> int:
    """Connections the lrtune process ``pid`` holds now."""
    with admin.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
                ),
                {"a": f"lrtune:{pid}"},
            ).scalar_one()
        )


def sample_until(
    admin: sqlalchemy.Engine, pid: int, done: Callable[[], bool], timeout: float
) -> list[int]:
    """``pid``'s connection count, sampled every 50 ms until ``done()`` (bounded)."""
    seen = []
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; connections seen: {seen}"
        seen.append(connections(admin, pid))
        time.sleep(0.05)
    return seen


@pytest.mark.postgres
@pytest.mark.slow
def test_a_worker_holds_one_connection_at_rest_and_two_in_a_trial(pg_url: str) -> None:
    created = main(
        [
            *("study", "--task", "digits", "--samplers", "random", "--prior", "none"),
            *("--trials", "2", "--epochs", "25", "--pruner", "none", "--storage", pg_url),
            *("--lr-low", "0.001", "--lr-high", "0.1", "--create-only", "--device", "cpu"),
            *("--confirm", "0"),
        ]
    )
    assert created == 0
    storage = optuna.storages.RDBStorage(pg_url)
    study = optuna.load_study(study_name="digits.random.none", storage=storage)
    # This test holds one of the two slots: the worker runs the other, then waits at rest.
    held = study.ask()
    args = ["worker", "--group", "digits", "--heartbeat-interval", "1", "--grace-period", "120"]
    worker = spawn_lrtune(args, REPO, LRTUNE_STORAGE=pg_url)
    admin = sqlalchemy.create_engine(PG_ADMIN, poolclass=sqlalchemy.NullPool)
    try:

        def states() -> list[States]:
            return [t.state for t in study.get_trials(deepcopy=False) if t.number != held.number]

        def training() -> bool:
            assert worker.poll() is None, worker.communicate()
            return [t for t in study.get_trials(deepcopy=False) if "lr" in t.params] != []

        sample_until(admin, worker.pid, training, 120)
        in_trial = sample_until(admin, worker.pid, lambda: States.COMPLETE in states(), 120)
        # At rest: its trial is done, the other slot is held here; it polls the storage.
        rest_until = time.monotonic() + 4
        at_rest = sample_until(admin, worker.pid, lambda: time.monotonic() > rest_until, 30)
        study.tell(held, 1.0)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        admin.dispose()
        storage.engine.dispose()
    assert worker.returncode == 0, out + err
    assert in_trial and max(in_trial) <= 2, in_trial
    assert at_rest and max(at_rest) == 1, at_rest
