"""``lrtune proxy`` (SPEC "Clusters"): Optuna's gRPC storage proxy in front of PostgreSQL,
with real processes: workers on ``grpc://`` finish the budget and hold no database
connection (the proxy holds a few); a proxy killed mid-run makes the workers retry for a
bounded time and stop with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from lrtune.proxy_server import POOL_SIZE

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("LRTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SPEC = """\
task = "digits"
samplers = ["random"]
prior = "none"
schedules = ["constant"]
lr_low = 0.001
lr_high = 0.1
trials = {trials}
epochs = {epochs}
pruner = "none"
confirm = 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lrtune(*args: str, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def connections(admin: sqlalchemy.Engine, database: str) -> dict[str, int]:
    """Connections to ``database`` now, by application name."""
    with admin.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = :d GROUP BY application_name"
            ),
            {"d": database},
        ).all()
    return {str(name): int(n) for name, n in rows}


def start_proxy(pg_url: str, port: int, cwd: Path) -> subprocess.Popen[str]:
    proxy = lrtune("proxy", "--storage", pg_url, "--port", str(port), cwd=cwd)
    assert proxy.stdout is not None
    line = proxy.stdout.readline()
    assert f"grpc://127.0.0.1:{port}" in line, (line, proxy.stderr and proxy.stderr.read())
    return proxy


def create(pg_url: str, tmp_path: Path, trials: int, epochs: int) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(trials=trials, epochs=epochs))
    proc = lrtune(
        *("study", "--spec", "spec.toml", "--group", "px", "--create-only"),
        *("--storage", pg_url, "--device", "cpu"),
        cwd=tmp_path,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_through_the_proxy_hold_no_connection(pg_url: str, tmp_path: Path) -> None:
    create(pg_url, tmp_path, trials=4, epochs=2)
    port = free_port()
    proxy = start_proxy(pg_url, port, tmp_path)
    database = pg_url.rsplit("/", 1)[1]
    admin = sqlalchemy.create_engine(PG_ADMIN, poolclass=sqlalchemy.NullPool)
    try:
        workers = [
            lrtune("worker", "--group", "px", "--storage", f"grpc://127.0.0.1:{port}", cwd=tmp_path)
            for _ in range(2)
        ]
        peak: dict[str, int] = {}
        deadline = time.monotonic() + 400
        while any(w.poll() is None for w in workers):
            assert time.monotonic() < deadline, "workers did not finish"
            for name, n in connections(admin, database).items():
                peak[name] = max(peak.get(name, 0), n)
            time.sleep(0.2)
        for w in workers:
            _, err = w.communicate()
            assert w.returncode == 0, err
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        admin.dispose()
    study = optuna.load_study(study_name="px.random.none", storage=pg_url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4  # the exact budget
    assert {w.pid for w in workers}.isdisjoint(
        int(name.split(":")[1]) for name in peak if name.startswith("lrtune:")
    )  # no worker opened a connection of its own
    assert peak.get(f"lrtune:{proxy.pid}", 0) <= POOL_SIZE + 1, peak


@pytest.mark.postgres
@pytest.mark.slow
def test_proxy_killed_mid_run_workers_stop_with_one_line(pg_url: str, tmp_path: Path) -> None:
    create(pg_url, tmp_path, trials=50, epochs=3)
    port = free_port()
    proxy = start_proxy(pg_url, port, tmp_path)
    worker = lrtune(
        *("worker", "--group", "px", "--storage", f"grpc://127.0.0.1:{port}"),
        cwd=tmp_path,
        LRTUNE_STORAGE_RETRY_SECONDS="5",
    )
    try:
        study = optuna.load_study(study_name="px.random.none", storage=pg_url)
        deadline = time.monotonic() + 300
        while not any(t.state.is_finished() for t in study.get_trials()):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "no trial finished"
            time.sleep(0.5)
        proxy.kill()
        proxy.wait()
        killed = time.monotonic()
        _, err = worker.communicate(timeout=120)
        waited = time.monotonic() - killed
    finally:
        worker.kill()
        proxy.kill()
    assert worker.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("lrtune worker: error:")]
    assert len(errors) == 1 and "unreachable" in errors[0], err
    assert "the proxy does not answer" in errors[0], err
    assert "Traceback" not in err
    assert waited < 90  # the retry bound (5 s) plus a trial's end, not a hang


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_proxied_worker_has_its_trial_failed_and_requeued(
    pg_url: str, tmp_path: Path
) -> None:
    """Optuna's proxy carries no heartbeat: lrtune's clients send theirs through it, the
    proxy records them, and fails and re-queues the trial of a worker killed mid-trial
    within its grace period (plus a look), while a live trial is never failed."""
    create(pg_url, tmp_path, trials=1, epochs=5000)
    port = free_port()
    beats = ("--heartbeat-interval", "2", "--grace-period", "6")
    proxy = lrtune("proxy", "--storage", pg_url, "--port", str(port), *beats, cwd=tmp_path)
    assert proxy.stdout is not None and "grpc://" in proxy.stdout.readline()
    worker = lrtune(
        *("worker", "--group", "px", "--storage", f"grpc://127.0.0.1:{port}", *beats),
        cwd=tmp_path,
    )
    engine = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.NullPool)
    study = optuna.load_study(study_name="px.random.none", storage=pg_url)
    States = optuna.trial.TrialState
    try:
        deadline = time.monotonic() + 300
        while not any(t.state == States.RUNNING for t in study.get_trials()):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.5)
        time.sleep(12)  # twice the grace period: a live trial must not be failed
        (trial,) = study.get_trials()
        assert trial.state == States.RUNNING
        with engine.connect() as conn:
            beat = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                {"t": trial._trial_id},
            ).scalar_one()
        assert beat == 1  # the worker's beats, recorded by the proxy
        worker.kill()
        worker.wait()
        killed = time.monotonic()
        # Failed, then re-queued as a WAITING copy (two writes: wait for both).
        while study.get_trials()[0].state == States.RUNNING or len(study.get_trials()) < 2:
            assert time.monotonic() - killed < 60, "the killed worker's trial stayed RUNNING"
            time.sleep(0.5)
    finally:
        worker.kill()
        proxy.terminate()
        _, proxy_err = proxy.communicate(timeout=30)
        engine.dispose()
    first, *retries = study.get_trials()
    assert "Traceback" not in proxy_err, proxy_err
    assert first.state == States.FAIL
    assert (
        "heartbeat" in first.user_attrs["fail_reason"] or "died" in first.user_attrs["fail_reason"]
    )
    assert len(retries) == 1 and retries[0].state == States.WAITING  # re-queued
    assert retries[0].params == first.params
