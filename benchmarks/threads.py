"""Threads benchmark: how the torch thread count of a trial process changes a small study.

    python benchmarks/threads.py                        # settings 1,2,default; 3 repeats
    python benchmarks/threads.py --load 2 --repeats 5   # with 2 CPU-burning processes

Each run is one fresh ``lrtune study`` process (digits, 6 trials, TPE, prior none, seed 0,
a new temporary SQLite file, ``--device cpu``). A setting is how that process chooses its
torch threads:

  * ``N`` (a number): ``OMP_NUM_THREADS=N`` in its environment (lrtune honours it);
  * ``default``: ``OMP_NUM_THREADS`` unset, no ``--threads``: lrtune's own default;
  * ``torch``: ``OMP_NUM_THREADS`` unset and ``--threads 0`` where the CLI has the flag
    (torch's default: one thread per core); skipped with a note on a build without it.

Settings run interleaved, round after round, so a change of the machine's load hits them
all alike. Per run: training seconds (the sum of the trials' ``seconds`` user attr, i.e.
the ``train()`` calls only) and wall seconds (the whole process, start-up and storage
included). The table gives medians and the ratio to the first setting of the same run.

``--load N`` starts N processes that spin on the CPU for the whole benchmark (each stops
by itself after ``--load-seconds``, and all are killed at the end), to stand for other
jobs on the machine. The last line is JSON.
"""

from __future__ import annotations

import argparse
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

SPIN = """
import sys, time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    pass
"""


def start_load(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``n`` processes that each burn one core for at most ``seconds``."""
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def has_threads_flag() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "lrtune", "study", "--help"], capture_output=True, text=True
    )
    return "--threads" in out.stdout


def run_once(setting: str, args: argparse.Namespace, tmp: Path, index: int) -> dict[str, Any]:
    """One fresh ``lrtune study`` process under ``setting``; its training and wall seconds."""
    url = f"sqlite:///{tmp / f'threads-{index}.db'}"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    extra: list[str] = []
    if setting.isdigit():
        env["OMP_NUM_THREADS"] = setting
    elif setting == "torch":
        extra = ["--threads", "0"]
    cmd = [sys.executable, "-m", "lrtune", "study", "--task", args.task, "--group", "th"]
    cmd += ["--samplers", "tpe", "--prior", "none", "--trials", str(args.trials)]
    cmd += ["--epochs", str(args.epochs), "--seed", "0", "--device", "cpu", "--storage", url]
    start = time.perf_counter()
    out = subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    study = optuna.load_study(study_name="th.tpe.none", storage=url)
    done = [t for t in study.trials if "seconds" in t.user_attrs]
    assert len(done) == args.trials, len(done)
    train = sum(float(t.user_attrs["seconds"]) for t in done)
    return {"setting": setting, "train_s": train, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="1,2,default,torch", help="comma list")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default: 3)")
    parser.add_argument("--load", type=int, default=0, help="CPU-burning processes (default: 0)")
    parser.add_argument("--load-seconds", type=float, default=900.0, help="their time limit")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if "torch" in settings and not has_threads_flag():
        print("(setting torch skipped: this lrtune has no --threads flag)", file=sys.stderr)
        settings.remove("torch")
    load_before = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    load = start_load(args.load, args.load_seconds)
    try:
        with tempfile.TemporaryDirectory(prefix="lrtune-threads-") as tmp:
            for r in range(args.repeats):
                for s in settings:
                    run = run_once(s, args, Path(tmp), len(runs))
                    runs.append({**run, "round": r})
                    print(
                        f"round {r + 1}/{args.repeats} threads={s}: train "
                        f"{run['train_s']:.2f} s, wall {run['wall_s']:.2f} s",
                        file=sys.stderr,
                    )
    finally:
        stop_load(load)
    rows = []
    for s in settings:
        mine = [x for x in runs if x["setting"] == s]
        rows.append(
            {
                "setting": s,
                "train_s": statistics.median(x["train_s"] for x in mine),
                "wall_s": statistics.median(x["wall_s"] for x in mine),
                "train_all": [round(x["train_s"], 2) for x in mine],
            }
        )
    base = rows[0]
    cores = os.cpu_count()
    print(
        f"\n{args.task}, {args.trials} trials x {args.epochs} epochs, TPE, {cores} cores, "
        f"--load {args.load}, {args.repeats} rounds, medians"
    )
    print(f"| threads | training s | vs {base['setting']} | wall s | vs {base['setting']} |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['setting']} | {row['train_s']:.2f} | "
            f"{row['train_s'] / base['train_s']:.2f}x | {row['wall_s']:.1f} | "
            f"{row['wall_s'] / base['wall_s']:.2f}x |"
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {cores} cores",
        "load_avg_before": round(load_before, 1),
        "load_avg_after": round(os.getloadavg()[0], 1),
        "extra_load_procs": args.load,
        "rows": rows,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
