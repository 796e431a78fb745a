"""µs per optimizer step that applying an LR schedule costs, per schedule and per path.

Paths, each setting the LR of one SGD param group for steps ``0 .. T-1``:

- ``lr_factor``: the trainer's loop before issue 12,
  ``lr = peak * lr_factor(name, step, T, **params)`` and then the param-group loop (every
  call re-validates the schedule and its parameters);
- ``Schedule``: the trainer's loop now, ``lr = peak * schedule.factor(step)`` with a
  :class:`lrtune.schedules.Schedule` made once before the loop (a table lookup), then the
  same param-group loop;
- ``LambdaLR``: ``scheduler.step()`` of :func:`lrtune.schedules.build_scheduler` (what an
  exported config's ``build_scheduler`` gives), torch's scheduler machinery included.

``build`` is the one-off cost of a ``Schedule``'s table, per step of the run. Each figure
is the best of ``--repeats`` runs, as ``timeit`` reports: on a shared machine the fastest
run is the one least disturbed by other processes. Run by hand, not in CI::

    python benchmarks/schedule_overhead.py [--steps 2000] [--repeats 7]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
import warnings

import torch

from lrtune.schedules import SCHEDULE_NAMES, Schedule, build_scheduler, lr_factor, resolve_params

PEAK = 0.1


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)


def via_lr_factor(name: str, total: int) -> float:
    """Seconds for ``total`` steps of the old trainer path."""
    optimizer = _optimizer()
    params = resolve_params(name, total)
    start = time.perf_counter()
    for step in range(total):
        lr = PEAK * lr_factor(name, step, total, **params)
        for group in optimizer.param_groups:
            group["lr"] = lr
    return time.perf_counter() - start


def via_schedule(name: str, total: int) -> tuple[float, float]:
    """Seconds for ``total`` steps of the new trainer path, and of the table's first build."""
    optimizer = _optimizer()
    schedule = Schedule(name, total)
    start = time.perf_counter()
    schedule.factor(0)  # builds the table
    built = time.perf_counter()
    for step in range(total):
        lr = PEAK * schedule.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
    return time.perf_counter() - built, built - start


def via_lambdalr(name: str, total: int) -> float:
    """Seconds for ``total`` calls of ``scheduler.step()``."""
    scheduler = build_scheduler(_optimizer(), name, total)
    start = time.perf_counter()
    for _ in range(total):
        scheduler.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per run (default 2000)")
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (default 7)")
    args = parser.parse_args()
    # No optimizer.step() here: torch's warning about the call order is noise.
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
    total = args.steps
    per_step = 1e6 / total
    rows: dict[str, dict[str, float]] = {}
    for name in SCHEDULE_NAMES:
        old, new, build, lam = [], [], [], []
        for _ in range(args.repeats):
            old.append(via_lr_factor(name, total))
            loop, table = via_schedule(name, total)
            new.append(loop)
            build.append(table)
            lam.append(via_lambdalr(name, total))
        rows[name] = {
            "lr_factor": min(old) * per_step,
            "Schedule": min(new) * per_step,
            "build": min(build) * per_step,
            "LambdaLR": min(lam) * per_step,
        }
    print(
        f"µs per step, best of {args.repeats} runs of {total} steps; {platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{datetime.date.today().isoformat()}"
    )
    print()
    print("| schedule | lr_factor (before) | Schedule (now) | table build, once | LambdaLR.step |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['lr_factor']:.2f} | {r['Schedule']:.3f} | {r['build']:.2f} | "
            f"{r['LambdaLR']:.2f} |"
        )
    means = {k: statistics.mean(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    print(
        f"| mean | {means['lr_factor']:.2f} | {means['Schedule']:.3f} | {means['build']:.2f} | "
        f"{means['LambdaLR']:.2f} |"
    )
    print()
    print(json.dumps({"steps": total, "repeats": args.repeats, "us_per_step": rows}))


if __name__ == "__main__":
    main()
