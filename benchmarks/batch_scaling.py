"""Does the range-test prior gain from following the batch size? (issue 19, item 2)

When a study searches the batch size (``[params] batch_size = [lo, hi]``) with
``--prior rangetest``, the range test measured the LR bounds at one batch size, the task's
(B0). A trial at batch B then searches either

- **follow**: the bounds moved by the scaling rule, × B/B0 for SGD (``linear``, Goyal et al.
  2017), × √(B/B0) for Adam (``sqrt``), lrtune's default; or
- **fixed**: the bounds as measured (``--batch-scaling none``).

For each task both arms run the same group through :func:`lrtune.group.run.run_group` (the
same range test, the same TPE sampler seeds: ``--repeats`` studies each), ``--trials``
trials per study. Each study's best trial is what a user would export; it is scored by its
**true value**, the mean over three fresh training seeds (100, 101, 102; never the study's
own seed 0). Printed per task and arm: median [IQR] over the repeats of that true value and
of the single-seed best, the share of trials pruned as diverged, and the follow/fixed
ratio of the median true values (below 1 on a minimised metric: following helps).

Run by hand (OMP_NUM_THREADS=1; minutes):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/batch_scaling.py
    OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py --tasks digits:adam --repeats 3
It prints a markdown section (docs/benchmarks.md, "Batch size and the prior") and a JSON
line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from lrtune.group.run import run_group
from lrtune.search.spec import resolve_spec
from lrtune.training.trainer import TrainConfig, train

TRUE_SEEDS = (100, 101, 102)
ARMS = {"follow": None, "fixed": "none"}  # batch_scaling: None = the optimizer's default


def _spec(task: str, optimizer: str, rule: str | None, args: argparse.Namespace) -> Any:
    values: dict[str, Any] = {
        "task": task,
        "group": f"{task}-{optimizer}-{rule or 'default'}",
        "optimizer": optimizer,
        "samplers": ["tpe"],
        "prior": ["rangetest"],
        "trials": args.trials,
        "repeats": args.repeats,
        "schedules": args.schedules.split(","),
        "confirm": 0,
        "widen": False,  # the bounds as the rule gives them, not grown by the search
        "params": {"batch_size": [args.low, args.high]},
    }
    if rule is not None:
        values["batch_scaling"] = rule
    return resolve_spec(values, source="benchmark")


def _true_value(task: str, config: dict[str, Any]) -> float:
    """The exported configuration's mean over fresh training seeds; a seed that diverges
    (``nan``) makes it ``inf``, the worst (the metrics here are minimised)."""
    sched = {k: v for k, v in config["schedule"].items() if k != "name"}
    opt = {k: v for k, v in config["optimizer"].items() if k not in ("name", "lr", "groups")}
    values = [
        train(
            task,
            TrainConfig(
                lr=float(config["optimizer"]["lr"]),
                optimizer=str(config["optimizer"]["name"]),
                schedule=str(config["schedule"]["name"]),
                schedule_params=sched,
                optimizer_params=opt,
                epochs=int(config["epochs"]),
                batch_size=int(config["batch_size"]),
                seed=seed,
                device="cpu",
            ),
        ).value
        for seed in TRUE_SEEDS
    ]
    return statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.inf


def _stats(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": q[1], "q1": q[0], "q3": q[2]}


def run_arm(task: str, optimizer: str, arm: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = _spec(task, optimizer, ARMS[arm], args)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'b.db'}"
        start = time.perf_counter()
        cmp = run_group(spec, url, device="cpu")
        seconds = time.perf_counter() - start
        true, best, diverged, total, batches = [], [], 0, 0, []
        for row in cmp.rows:
            study = optuna.load_study(study_name=row.study, storage=url)
            trials = [t for t in study.trials if t.state.is_finished()]
            total += len(trials)
            diverged += sum("diverged" in t.user_attrs for t in trials)
            top = study.best_trial
            best.append(float(top.value))
            batches.append(int(top.params["batch_size"]))
            true.append(_true_value(task, top.user_attrs["config"]))
    return {
        "task": task,
        "optimizer": optimizer,
        "arm": arm,
        "rule": ARMS[arm] or ("linear" if optimizer == "sgd" else "sqrt"),
        "true": _stats(true),
        "best": _stats(best),
        "true_values": true,
        "best_batches": batches,
        "diverged_share": diverged / max(total, 1),
        "seconds": seconds,
    }


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:.4f} [{s['q1']:.4f}, {s['q3']:.4f}]"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| task | optimizer | arm (rule) | true value, median [IQR] | single-seed best | "
        "diverged trials | follow / fixed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fixed = next(
            x
            for x in results
            if x["task"] == r["task"] and x["optimizer"] == r["optimizer"] and x["arm"] == "fixed"
        )
        ratio = r["true"]["median"] / fixed["true"]["median"] if r["arm"] == "follow" else 1.0
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['arm']} ({r['rule']}) | {_fmt(r['true'])} | "
            f"{_fmt(r['best'])} | {r['diverged_share']:.0%} | {ratio:.3f} |"
        )
    when = datetime.date.today().isoformat()
    head = (
        f"{args.repeats} repeats x {args.trials} TPE trials per arm, batch_size "
        f"[{args.low}, {args.high}], schedules {args.schedules}; true value: mean of "
        f"{len(TRUE_SEEDS)} fresh seeds; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {when}"
    )
    return head + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tasks",
        default="digits:sgd,breast-cancer:sgd",
        help="comma list of TASK:OPTIMIZER (default: digits:sgd,breast-cancer:sgd)",
    )
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--low", type=int, default=16)
    p.add_argument("--high", type=int, default=256)
    p.add_argument("--schedules", default="cosine,onecycle")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []
    for item in args.tasks.split(","):
        task, _, optimizer = item.partition(":")
        for arm in ARMS:
            results.append(run_arm(task, optimizer or "sgd", arm, args))
            print(f"done: {task} {optimizer} {arm}", file=sys.stderr, flush=True)
    print(report(results, args))
    print(json.dumps({"batch_scaling": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
