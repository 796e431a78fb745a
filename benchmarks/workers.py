"""Workers benchmark: per-trial storage overhead, and throughput of 1 vs 2 local workers.

    python benchmarks/workers.py                  # everything (~3 min on 2 cores)
    python benchmarks/workers.py --trials 100 --no-pg

Part 1, storage overhead (trivial objective, ``--trials`` trials, one process):
  * ``optuna``: ``study.optimize`` of ``x**2`` on Optuna's in-memory, SQLite and PostgreSQL
    storage: what the storage costs per trial before lrtune does anything;
  * ``lrtune``: ``run_worker`` (heartbeat thread, budget bookkeeping, user attrs, surplus
    check) on a study of a tiny task (one SGD step on 16 points), minus the time that task's
    ``train()`` takes alone: what lrtune adds per trial on top of Optuna.

Part 2, throughput: the same budget of real CPU trials (digits MLP) run by ``lrtune worker
--workers 1`` and ``--workers 2`` on one SQLite storage; trials per second measured from
the trials' own start/end times (process start-up excluded). As a control, the same
training loop run in 1 and 2 bare processes without Optuna: the machine's own scaling.

PostgreSQL: a temporary database on ``$LRTUNE_BENCH_PG`` (default the local server, user
postgres), created and dropped here. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from bench_pg import temporary_database

HERE = Path(__file__).resolve()
optuna.logging.set_verbosity(optuna.logging.ERROR)


def tiny(seed: int) -> Any:
    """A task whose trial is one SGD step on 16 points: training costs ~nothing."""
    from lrtune import Task

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 2, generator=g)
    y = x.sum(1, keepdim=True)
    torch.manual_seed(seed)
    return Task(
        torch.nn.Linear(2, 1), (x, y), (x, y), torch.nn.MSELoss(), batch_size=16, epochs=1,
        name="tiny",
    )  # fmt: skip


def optuna_ms(storage: Any, trials: int) -> float:
    """ms per trial of Optuna alone: random sampler, trivial objective."""

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3)  # warm up connections and caches
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials, gc_after_trial=False)
    return (time.perf_counter() - start) / trials * 1000


def train_ms(repeats: int = 50) -> float:
    """ms of one tiny-task ``train()`` (what a trial does besides storage)."""
    from lrtune.training.trainer import TrainConfig, train

    config = TrainConfig(lr=0.01, schedule="cosine", device="cpu")
    train(tiny, config)
    start = time.perf_counter()
    for _ in range(repeats):
        train(tiny, config)
    return (time.perf_counter() - start) / repeats * 1000


def lrtune_ms(url: str, trials: int, group: str) -> float:
    """ms per trial of ``run_worker`` on the tiny task (heartbeat on, as workers run)."""
    from lrtune.cli import main
    from lrtune.workers import run_worker

    argv = ["study", "--task", f"{HERE}:tiny", "--group", group, "--samplers", "random"]
    argv += ["--prior", "none", "--pruner", "none", "--trials", str(trials), "--device", "cpu"]
    argv += ["--confirm", "0"]  # search trials only: what a trial costs the storage
    argv += ["--storage", url, "--create-only"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    start = time.perf_counter()
    report = run_worker(url, group=group, device="cpu", heartbeat_interval=5, grace_period=20)
    assert sum(report.trials.values()) == trials, report
    return (time.perf_counter() - start) / trials * 1000


def overhead(trials: int, use_pg: bool, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"storage": "in-memory", "optuna_ms": optuna_ms(None, trials)}]
    sqlite = f"sqlite:///{tmp / 'overhead.db'}"
    rows.append(
        {"storage": "sqlite", "optuna_ms": optuna_ms(sqlite, trials), "url": sqlite}
    )  # fmt: skip
    with temporary_database(optional=True) if use_pg else contextlib.nullcontext() as pg:
        if pg:
            rows.append({"storage": "postgresql", "optuna_ms": optuna_ms(pg, trials), "url": pg})
        bare = train_ms()
        for row in rows:
            url = row.pop("url", None)
            row["train_ms"] = bare
            if url:
                row["lrtune_ms"] = lrtune_ms(url, trials, f"tiny-{row['storage']}")
                row["lrtune_added_ms"] = row["lrtune_ms"] - bare - row["optuna_ms"]
    return rows


# --- throughput ---------------------------------------------------------------------------


def _lrtune(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "lrtune", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"lrtune {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def throughput(workers: int, trials: int, epochs: int, tmp: Path) -> dict[str, Any]:
    """Trials per second of ``lrtune worker --workers N`` from the trials' own timestamps."""
    url = f"sqlite:///{tmp / f'throughput{workers}.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    common = ("--storage", url)
    _lrtune(
        *("study", "--task", "digits", "--group", "tp", "--samplers", "random"),
        *("--prior", "none", "--pruner", "none", "--trials", str(trials), "--confirm", "0"),
        *("--epochs", str(epochs), "--lr-low", "0.001", "--lr-high", "0.1"),
        *("--create-only", "--device", "cpu", *common),
        env=env,
    )
    wall = time.perf_counter()
    _lrtune(
        "worker", "--group", "tp", "--workers", str(workers), "--device", "cpu", *common, env=env
    )
    wall = time.perf_counter() - wall
    study = optuna.load_study(study_name="tp.random.none", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == trials, len(done)
    # Steady state: each worker's rate from the end of its first trial (which pays for
    # torch's lazy imports, 2-7 s here) to the end of its last; the rates add up.
    by_worker: dict[str, list[float]] = {}
    for t in done:
        assert t.datetime_complete is not None
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.datetime_complete.timestamp())
    rate = 0.0
    for ends in by_worker.values():
        if len(ends) > 1:
            rate += (len(ends) - 1) / (max(ends) - min(ends))
    span = trials / rate
    train_s = [float(t.user_attrs["seconds"]) for t in done]
    return {
        "workers": workers,
        "trials": trials,
        "span_s": span,
        "trials_per_s": rate,
        "per_worker": {k: len(v) for k, v in by_worker.items()},
        "median_trial_s": statistics.median(train_s),
        "wall_s_with_startup": wall,
    }


_BARE = """
import sys, time, torch
from lrtune.training.trainer import TrainConfig, train
procs, n, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(max(1, (__import__("os").cpu_count() or 1) // procs))
train("digits", TrainConfig(lr=0.01, epochs=1, device="cpu"))
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for _ in range(n):
    train("digits", TrainConfig(lr=0.01, schedule="cosine", epochs=epochs, device="cpu"))
print(time.perf_counter() - start, flush=True)
"""


def bare(procs: int, trials: int, epochs: int) -> dict[str, Any]:
    """The same training in ``procs`` plain processes (no Optuna, no storage)."""
    each = trials // procs
    ps = [
        subprocess.Popen(
            [sys.executable, "-c", _BARE, str(procs), str(each), str(epochs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    for p in ps:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in ps:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = []
    for p in ps:
        out, _ = p.communicate()
        spans.append(float(out.strip().splitlines()[-1]))
    return {"procs": procs, "trials": each * procs, "trials_per_s": each * procs / max(spans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per storage (part 1)")
    parser.add_argument("--tp-trials", type=int, default=24, help="trials per run (part 2)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (part 2)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "versions": {"torch": torch.__version__, "optuna": optuna.__version__},
    }
    with tempfile.TemporaryDirectory(prefix="lrtune-bench-") as tmp:
        rows = [] if args.skip_overhead else overhead(args.trials, not args.no_pg, Path(tmp))
        print(f"\nPer-trial overhead, {args.trials} trials, trivial objective (ms/trial)")
        print("| storage | Optuna alone | lrtune worker | tiny train() | lrtune adds |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            lr = f"{r['lrtune_ms']:.1f}" if "lrtune_ms" in r else "-"
            add = f"{r['lrtune_added_ms']:.1f}" if "lrtune_added_ms" in r else "-"
            print(f"| {r['storage']} | {r['optuna_ms']:.1f} | {lr} | {r['train_ms']:.1f} | {add} |")
        result["overhead"] = rows
        if not args.skip_throughput:
            tp = [throughput(n, args.tp_trials, args.epochs, Path(tmp)) for n in (1, 2)]
            ctl = [bare(n, args.tp_trials, args.epochs) for n in (1, 2)]
            ratio = tp[1]["trials_per_s"] / tp[0]["trials_per_s"]
            ctl_ratio = ctl[1]["trials_per_s"] / ctl[0]["trials_per_s"]
            print(
                f"\nThroughput, digits MLP, {args.epochs} epochs, {args.tp_trials} trials, SQLite"
            )
            print("| | 1 worker | 2 workers | ratio |")
            print("|---|---:|---:|---:|")
            print(
                f"| lrtune worker (trials/s) | {tp[0]['trials_per_s']:.2f} | "
                f"{tp[1]['trials_per_s']:.2f} | {ratio:.2f}x |"
            )
            print(
                f"| bare train() processes (trials/s) | {ctl[0]['trials_per_s']:.2f} | "
                f"{ctl[1]['trials_per_s']:.2f} | {ctl_ratio:.2f}x |"
            )
            result["throughput"] = {
                "lrtune": tp,
                "bare": ctl,
                "ratio": ratio,
                "bare_ratio": ctl_ratio,
            }
    result["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
