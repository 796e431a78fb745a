"""Many workers on one PostgreSQL, direct and through ``lrtune proxy``: exact budget,
database connections (peak, and per idle worker), trials per second, RUNNING left; and
the same with the PostgreSQL server restarted once mid-run.

    python benchmarks/workers_scale.py --workers 64 --trials 96 --restart direct
    python benchmarks/workers_scale.py --workers 16 --trials 48

``--workers`` separate ``lrtune worker`` processes (``--threads 1``, digits, 1 epoch)
join one random-sampler study of ``--trials`` trials. The benchmark itself holds one of
the slots as a RUNNING trial (with a heartbeat), so once the others are done every worker
waits idle; the connections are sampled from ``pg_stat_activity`` (by ``application_name =
lrtune:PID``) throughout and during that idle phase; then the held trial is told and the
workers exit. ``--restart direct|proxy|both`` restarts the server (``--restart-cmd``) once
half the budget is done in that run. ``--conn-limit L`` caps the temporary database's
connections (``ALTER DATABASE ... CONNECTION LIMIT``) so that a direct run past the
server's ``max_connections`` leaves room for everyone else on a shared server; a worker
refused a connection waits and retries (counted from its log).
Each worker process imports torch (about 215 MB private memory), so 64 need about 14 GB:
workers are started only while ``MemAvailable`` stays above ``--min-free-gb`` (the run
records how many started). PostgreSQL: a temporary database on ``$LRTUNE_BENCH_PG``
(default the local server). The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from typing import Any

import optuna
import sqlalchemy
from bench_pg import PG_ADMIN, temporary_database

optuna.logging.set_verbosity(optuna.logging.ERROR)


def by_process(admin: sqlalchemy.Engine, db: str) -> dict[int, int]:
    """Connections to ``db`` now, per lrtune process id."""
    with admin.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = :d AND application_name LIKE 'lrtune:%' "
                "GROUP BY application_name"
            ),
            {"d": db},
        ).all()
    return {int(str(name).split(":")[1]): int(n) for name, n in rows}


def lrtune(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def mem_available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def keep_alive(storage: optuna.storages.RDBStorage, trial_id: int, stop: threading.Event) -> None:
    """The held trial's heartbeat, so workers may use a normal grace period."""
    while not stop.wait(5):
        with contextlib.suppress(Exception):  # the server restarting: the next beat reconnects
            storage.record_heartbeat(trial_id)


def start_workers(n: int, storage: str, min_free_gb: float) -> list[subprocess.Popen[str]]:
    workers = []
    for _ in range(n):
        if mem_available_gb() < min_free_gb:
            print(f"# memory: {mem_available_gb():.1f} GB available, stopped at {len(workers)}")
            break
        workers.append(
            lrtune(
                *("worker", "--group", "sc", "--storage", storage, "--device", "cpu"),
                *("--threads", "1", "--heartbeat-interval", "10", "--grace-period", "120"),
            )
        )
        time.sleep(0.3)  # let each start reading torch before the next
    return workers


def fail_reasons(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """The distinct ``fail_reason``s of the FAILED ``trials``, cut to 60 characters."""
    return sorted(
        {
            str(t.user_attrs.get("fail_reason", "?"))[:60]
            for t in trials
            if t.state == optuna.trial.TrialState.FAIL
        }
    )


def leftover(url: str, trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    """The RUNNING trials left: number, seconds since their start and since their last
    heartbeat (None: they never beat)."""
    out = []
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as conn:
        for t in trials:
            if t.state != optuna.trial.TrialState.RUNNING or t.datetime_start is None:
                continue
            beat = conn.execute(
                sqlalchemy.text("SELECT max(heartbeat) FROM trial_heartbeats WHERE trial_id = :i"),
                {"i": t._trial_id},
            ).scalar()
            age = time.time() - t.datetime_start.timestamp()
            silent = age if beat is None else time.time() - beat.timestamp()
            out.append(
                {
                    "number": t.number,
                    "age_s": round(age, 1),
                    "silent_s": round(silent, 1),
                    "heartbeat": beat is not None,
                }
            )
    engine.dispose()
    return out


def restart_server(cmd: str) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, shell=True, check=False, timeout=120)
    return round(time.perf_counter() - began, 1)


def run(n: int, trials: int, via_proxy: bool, opts: argparse.Namespace) -> dict[str, Any]:
    with temporary_database() as url:
        assert url is not None
        create = lrtune(
            *("study", "--task", "digits", "--group", "sc", "--samplers", "random"),
            *("--prior", "none", "--pruner", "none", "--trials", str(trials), "--confirm", "0"),
            *("--epochs", "1", "--lr-low", "0.001", "--lr-high", "0.1"),
            *("--create-only", "--device", "cpu", "--storage", url),
        )
        _, err = create.communicate()
        assert create.returncode == 0, err
        admin = sqlalchemy.create_engine(PG_ADMIN, poolclass=sqlalchemy.NullPool)
        db = url.rsplit("/", 1)[1]
        if opts.conn_limit:
            with admin.connect() as conn:
                conn.execute(
                    sqlalchemy.text(f'ALTER DATABASE "{db}" CONNECTION LIMIT {opts.conn_limit}')
                )
                conn.commit()
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=120)
        study = optuna.load_study(study_name="sc.random.none", storage=rdb)
        held = study.ask()  # one slot: the workers end up waiting idle for it
        stop = threading.Event()
        beat = threading.Thread(target=keep_alive, args=(rdb, held._trial_id, stop), daemon=True)
        beat.start()
        proxy = None
        storage = url
        if via_proxy:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proxy = lrtune(
                *("proxy", "--storage", url, "--port", str(port)),
                *("--heartbeat-interval", "10", "--grace-period", "120"),
            )
            assert proxy.stdout is not None and "serving" in proxy.stdout.readline()
            storage = f"grpc://127.0.0.1:{port}"
        restart = opts.restart in ("both", "proxy" if via_proxy else "direct")
        start = time.perf_counter()
        workers = start_workers(n, storage, opts.min_free_gb)
        pids = {w.pid for w in workers}
        peak_total, restarted, idle = 0, None, []
        deadline = start + opts.deadline
        while time.perf_counter() < deadline:
            try:
                now = by_process(admin, db)
                peak_total = max(peak_total, sum(now.values()))
                finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            except sqlalchemy.exc.OperationalError:  # the server restarting
                time.sleep(1)
                continue
            if restart and restarted is None and len(finished) >= trials // 2:
                restarted = {
                    "at_finished": len(finished),
                    "seconds": restart_server(opts.restart_cmd),
                }
            if len(finished) >= trials - 1:
                time.sleep(5)  # every worker now polls for a free slot: idle
                idle = [by_process(admin, db) for _ in range(10) if time.sleep(0.5) is None]
                break
            if not any(w.poll() is None for w in workers):
                break
            time.sleep(0.5)
        idle_workers = max(
            (max((c.get(p, 0) for p in pids), default=0) for c in idle), default=None
        )
        idle_total = max((sum(c.values()) for c in idle), default=None)
        study.tell(held, 1.0)
        stop.set()
        outs = []
        for w in workers:
            try:
                _, err = w.communicate(timeout=max(30.0, deadline + 300 - time.perf_counter()))
            except subprocess.TimeoutExpired:
                w.terminate()
                _, err = w.communicate(timeout=60)
            outs.append((w.returncode, err))
        wall = time.perf_counter() - start
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        admin.dispose()
        trials_now = study.get_trials()
        orphans = leftover(url, trials_now)
        if orphans:
            # Every worker left once the budget was met; a trial whose worker lost it to
            # the restart may still be inside its grace period. The next lrtune process
            # on the study fails it: start one worker after the grace period and count.
            time.sleep(max(0.0, 135 - min(o["silent_s"] for o in orphans)))
            sweep = start_workers(1, url, 0)[0]  # the proxy is gone by now
            _, err = sweep.communicate(timeout=600)
            after = study.get_trials()
            numbers = {o["number"] for o in orphans}
            swept = {
                "exit_code": sweep.returncode,
                "running_left": sum(t.state == optuna.trial.TrialState.RUNNING for t in after),
                "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in after),
                "fail_reasons": fail_reasons([t for t in after if t.number in numbers]),
            }
        else:
            swept = None
        done = [t for t in trials_now if t.state == optuna.trial.TrialState.COMPLETE]
        ends = sorted(t.datetime_complete.timestamp() for t in done if t.datetime_complete)
        return {
            "workers": len(workers),
            "asked_workers": n,
            "via": "proxy" if via_proxy else "direct",
            "budget": trials,
            "complete": len(done),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials_now),
            "fail_reasons": fail_reasons(trials_now),
            "running_left": sum(t.state == optuna.trial.TrialState.RUNNING for t in trials_now),
            "peak_connections": peak_total,
            "idle_connections_total": idle_total,
            "idle_connections_per_worker_max": idle_workers,
            "trials_per_s": (len(ends) - 2) / (ends[-2] - ends[0]) if len(ends) > 2 else None,
            "wall_s": round(wall, 1),
            "restart": restarted,
            "conn_limit": opts.conn_limit,
            "exit_codes": sorted({rc for rc, _ in outs}),
            "workers_that_retried": sum(
                "retry" in err.lower() or "unreachable" in err.lower() for _, err in outs
            ),
            "running_left_detail": orphans,
            "after_one_more_worker": swept,
            "first_error": next(
                (err.strip().splitlines()[-1] for rc, err in outs if rc and err.strip()), None
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--trials", type=int, default=None, help="default: 2 per worker")
    parser.add_argument("--via", choices=("direct", "proxy", "both"), default="both")
    parser.add_argument("--restart", choices=("none", "direct", "proxy", "both"), default="none")
    parser.add_argument(
        "--restart-cmd", default="pg_ctlcluster --skip-systemctl-redirect 15 main restart"
    )
    parser.add_argument("--conn-limit", type=int, default=0, help="0: no database limit")
    parser.add_argument("--min-free-gb", type=float, default=3.0)
    parser.add_argument("--deadline", type=float, default=1200, help="seconds per run")
    args = parser.parse_args()
    trials = args.trials or 2 * args.workers
    vias = {"direct": [False], "proxy": [True], "both": [True, False]}[args.via]
    results = []
    for via in vias:
        results.append(run(args.workers, trials, via, args))
        print(json.dumps(results[-1]), flush=True)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {date.today()}")
    print(
        "| via | workers | restart | budget | complete | RUNNING left | peak conns | idle conns "
        "(all) | idle conns per worker | trials/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        tps = f"{r['trials_per_s']:.2f}" if r["trials_per_s"] else "-"
        print(
            f"| {r['via']} | {r['workers']} | {'yes' if r['restart'] else 'no'} | "
            f"{r['budget']} | {r['complete']} | "
            f"{r['running_left']} | {r['peak_connections']} | {r['idle_connections_total']} | "
            f"{r['idle_connections_per_worker_max']} | {tps} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
