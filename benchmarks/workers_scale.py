"""Many workers on one PostgreSQL, direct and through ``lrtune proxy``: exact budget,
database connections (peak, and per idle worker), trials per second, RUNNING left.

    python benchmarks/workers_scale.py --workers 64            # the issue's figure
    python benchmarks/workers_scale.py --workers 16 --trials 48

``--workers`` separate ``lrtune worker`` processes (``--threads 1``, digits, 1 epoch)
join one random-sampler study of ``--trials`` trials. The benchmark itself holds one of
the slots as a RUNNING trial, so once the others are done every worker waits idle; the
connections are sampled from ``pg_stat_activity`` (by ``application_name = lrtune:PID``)
throughout and during that idle phase; then the held trial is told and the workers exit.
Each worker process imports torch (about 250 MB), so 64 need about 16 GB of memory.
PostgreSQL: a temporary database on ``$LRTUNE_BENCH_PG`` (default the local server). The
last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
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


def run(n: int, trials: int, via_proxy: bool) -> dict[str, Any]:
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
        study = optuna.load_study(study_name="sc.random.none", storage=url)
        held = study.ask()  # one slot: the workers end up waiting idle for it
        proxy = None
        storage = url
        if via_proxy:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proxy = lrtune("proxy", "--storage", url, "--port", str(port))
            assert proxy.stdout is not None and "serving" in proxy.stdout.readline()
            storage = f"grpc://127.0.0.1:{port}"
        admin = sqlalchemy.create_engine(PG_ADMIN, poolclass=sqlalchemy.NullPool)
        db = url.rsplit("/", 1)[1]
        start = time.perf_counter()
        workers = [
            lrtune(
                *("worker", "--group", "sc", "--storage", storage, "--device", "cpu"),
                *("--threads", "1", "--grace-period", "3600"),
            )
            for _ in range(n)
        ]
        pids = {w.pid for w in workers}
        peak_total = 0
        while True:
            now = by_process(admin, db)
            peak_total = max(peak_total, sum(now.values()))
            finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if len(finished) >= trials - 1:
                break
            assert all(w.poll() is None for w in workers), "a worker exited early"
            time.sleep(0.5)
        time.sleep(5)  # every worker now polls for a free slot: idle
        idle = [by_process(admin, db) for _ in range(10) if time.sleep(0.5) is None]
        idle_workers = max(max((c.get(p, 0) for p in pids), default=0) for c in idle)
        idle_total = max(sum(c.values()) for c in idle)
        study.tell(held, 1.0)
        for w in workers:
            _, err = w.communicate(timeout=600)
            assert w.returncode == 0, err
        wall = time.perf_counter() - start
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        admin.dispose()
        done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
        ends = sorted(t.datetime_complete.timestamp() for t in done if t.datetime_complete)
        return {
            "workers": n,
            "via": "proxy" if via_proxy else "direct",
            "budget": trials,
            "complete": len(done),
            "running_left": len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,))),
            "peak_connections": peak_total,
            "idle_connections_total": idle_total,
            "idle_connections_per_worker_max": idle_workers,
            "trials_per_s": (len(ends) - 2) / (ends[-2] - ends[0]) if len(ends) > 2 else None,
            "wall_s": round(wall, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--trials", type=int, default=None, help="default: 2 per worker")
    args = parser.parse_args()
    trials = args.trials or 2 * args.workers
    results = [run(args.workers, trials, via) for via in (False, True)]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {date.today()}")
    print(
        "| via | workers | budget | complete | RUNNING left | peak conns | idle conns "
        "(all) | idle conns per worker | trials/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        tps = f"{r['trials_per_s']:.2f}" if r["trials_per_s"] else "-"
        print(
            f"| {r['via']} | {r['workers']} | {r['budget']} | {r['complete']} | "
            f"{r['running_left']} | {r['peak_connections']} | {r['idle_connections_total']} | "
            f"{r['idle_connections_per_worker_max']} | {tps} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
