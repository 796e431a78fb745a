"""Was tuning the schedule worth it? A tuned LR schedule against schedule-free training.

For each task (``--tasks``, default ``digits,charlm``), at equal compute (the same number
of trials of the same length):

- **tuned schedule**: TPE over LR × schedule (``lrtune study``'s search), with and without
  the range-test prior, exactly as ``benchmarks/search_efficiency.py`` runs it;
- **schedule-free**: TPE over LR × warmup with the task's schedule-free optimizer
  (``schedulefree_adamw`` for AdamW tasks, ``schedulefree_sgd`` otherwise), i.e. the study
  ``lrtune study --baseline schedulefree`` adds (its spec is :func:`lrtune.group.baseline.
  baseline_spec`), with and without a range test of the schedule-free optimizer.

Every arm is scored by the **true regret** of the configuration a user would export after
k trials: its mean over the oracle's training seeds (0, 1, 2; never the study's own seed)
against the best seed mean of the tuned-schedule oracle (a dense LR × schedule grid,
search_efficiency's, cached in benchmarks/.cache). A negative regret: better than every
cell of that grid. Median [IQR] over ``--repeats``; prior arms pay their range test in
trial-equivalents (shown, not added to k).

Run by hand (tens of minutes; charlm dominates):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/schedule_free.py --tasks digits --repeats 10
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/schedule_free.py --tasks charlm \
        --repeats 5 --oracle-lrs 21 --schedules constant,cosine,warmup_cosine,wsd
It prints a markdown section (for docs/benchmarks.md, "Schedule-free") and a JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import search_efficiency as se  # benchmarks/search_efficiency.py: studies, exports
import torch

from lrtune.group.baseline import baseline_spec
from lrtune.rangetest import range_test
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.spec import StudySpec, task_optimizer
from lrtune.training.loading import resolve_task
from lrtune.training.oracle import log_grid
from lrtune.training.trainer import TrainConfig, train

COMPLETE = optuna.trial.TrialState.COMPLETE
ARMS = ("tpe / none", "tpe / rangetest", "schedulefree / none", "schedulefree / rangetest")


class FreeRuns(se.Runs):
    """Runs of the schedule-free optimizer, cached by (warmup_frac, lr, seed, epochs)."""

    def run(self, schedule: str, lr: float, seed: int, epochs: int | None = None) -> dict[str, Any]:
        # ``schedule`` is "constant@<warmup_frac>": the one schedule, with its warmup.
        epochs = epochs or self.epochs
        key = f"{schedule}|{lr:.10g}|{seed}|{epochs}"
        if key not in self.data:
            warmup = float(schedule.partition("@")[2] or 0.0)
            cfg = TrainConfig(
                lr=lr,
                optimizer=self.optimizer,
                schedule="constant",
                schedule_params={"warmup_frac": warmup},
                seed=seed,
                epochs=epochs,
                device="cpu",
            )
            res = train(self.task, cfg)
            ok = not res.diverged and math.isfinite(res.value)
            self.data[key] = {"v": res.value if ok else None, "h": res.history}
            self.trained += 1
            self.unsaved += 1
            if self.unsaved >= 20:
                self.save()
        return self.data[key]


def exported_free(trials: list[optuna.trial.FrozenTrial], k: int, sign: float) -> Any:
    """The best complete trial among the first ``k`` of a schedule-free study, as a
    ``("constant@<warmup>", lr)`` config."""
    done = [
        t
        for t in trials[:k]
        if t.state == COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    if not done:
        return None
    t = min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))
    warmup = float(t.params.get("constant.warmup_frac", 0.0))
    return f"constant@{warmup:.6g}", float(t.params["lr"])


def bench_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    optimizer = task_optimizer(task)
    epochs = resolve_task(task)(0).epochs
    runs = se.Runs(task, optimizer)
    schedules = tuple(args.schedules.split(",")) if args.schedules else SCHEDULE_NAMES
    grid = se.oracle(task, se.per_task(args.oracle_lrs, task), args.oracle_seeds, schedules, runs)
    _, _, best = grid.best()
    sign = 1.0 if grid.direction == "minimize" else -1.0
    se.log(f"{task}: oracle ready ({runs.trained} runs, {time.perf_counter() - t0:.0f} s)")
    spec = StudySpec(task=task, optimizer=optimizer, schedules=schedules, trials=args.budget)
    free_spec = baseline_spec(spec)
    free = FreeRuns(task, free_spec.optimizer)
    seeds = range(args.oracle_seeds)

    def regret(runs_: se.Runs, config: Any) -> float:
        value = math.nan if config is None else runs_.mean(config, seeds)
        return sign * (value - best) / max(abs(best), 1e-12) if math.isfinite(value) else math.inf

    checkpoints = [k for k in se.CHECKPOINTS if k < args.budget] + [args.budget]
    arms: dict[str, dict[str, list[float]]] = {a: {} for a in ARMS}
    for r in range(args.repeats):
        seed = se.STUDY_SEED + r
        for label in ARMS:
            kind, _, prior = label.partition(" / ")
            the_spec = dataclasses.replace(free_spec if kind == "schedulefree" else spec, seed=seed)
            bounds = se.WIDE
            arm = arms[label]
            if prior == "rangetest":
                rt = range_test(
                    task,
                    optimizer=the_spec.optimizer,
                    steps=spec.rangetest_steps,
                    seeds=spec.rangetest_seeds,
                    device="cpu",
                    seed=se.RT_SEED + 10 * r,
                )
                bounds = (rt.lr_low, rt.lr_high)
                arm.setdefault("rt_seconds", []).append(rt.seconds)
            trials = se.run_study(
                the_spec, "tpe", prior, bounds, seed, args.budget, grid.direction, epochs
            )
            secs = [float(t.user_attrs["seconds"]) for t in trials if "seconds" in t.user_attrs]
            arm.setdefault("trial_s", []).append(statistics.median(secs) if secs else math.nan)
            for k in checkpoints:
                if kind == "schedulefree":
                    value = regret(free, exported_free(trials, k, sign))
                else:
                    value = regret(runs, se.exported(trials, k, sign))
                arm.setdefault(f"r{k}", []).append(value)
        runs.save()
        free.save()
        se.log(f"  {task} repeat {r + 1}/{args.repeats} done ({time.perf_counter() - t0:.0f} s)")
        if args.partial:  # what the repeats so far give, rendered by --from-json
            done = _result(task, optimizer, free_spec.optimizer, grid, args, checkpoints, arms)
            done |= {"free_grid_best": math.nan, "repeats_done": r + 1}
            done["seconds"] = time.perf_counter() - t0
            Path(args.partial).write_text(json.dumps(se.finite({"results": [done]})))
    # The schedule-free optimizer's own best over the oracle's LRs (no warmup), for scale.
    free_grid = [free.mean(("constant@0", lr), seeds) for lr in log_grid(*se.WIDE, args.free_lrs)]
    free.save()
    finite = [v for v in free_grid if math.isfinite(v)]
    free_best = min(finite, key=lambda v: sign * v) if finite else math.nan
    out = _result(task, optimizer, free_spec.optimizer, grid, args, checkpoints, arms)
    return out | {
        "free_grid_best": free_best,
        "repeats_done": args.repeats,
        "seconds": time.perf_counter() - t0,
    }


def _result(
    task: str,
    optimizer: str,
    free_optimizer: str,
    grid: Any,
    args: argparse.Namespace,
    checkpoints: list[int],
    arms: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    best_schedule, best_lr, best = grid.best()
    return {
        "task": task,
        "optimizer": optimizer,
        "free_optimizer": free_optimizer,
        "direction": grid.direction,
        "oracle": {
            "best": best,
            "best_schedule": best_schedule,
            "best_lr": best_lr,
            "schedules": len(grid.values),
            "lrs": se.per_task(args.oracle_lrs, task),
        },
        "checkpoints": checkpoints,
        "arms": arms,
    }


def markdown(results: Sequence[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = ["## Schedule-free against a tuned schedule", "", header, ""]
    for res in results:
        o, cps = res["oracle"], res["checkpoints"]
        fb = res["free_grid_best"]
        lines += [
            f"### {res['task']} ({res['optimizer']} vs {res['free_optimizer']}, "
            f"{res['direction']} the metric; {res['repeats_done']} repeats)",
            "",
            f"Oracle: {o['lrs']} LRs × {o['schedules']} schedules × {args.oracle_seeds} seeds "
            f"of {res['optimizer']}; best seed mean {o['best']:.4g} ({o['best_schedule']}, lr "
            f"{o['best_lr']:.3g})."
            + (
                f" {res['free_optimizer']} without warmup over {args.free_lrs} LRs: best "
                f"seed mean {fb:.4g} (regret {se.pct(_reg(fb, o['best'], res['direction']))})."
                if math.isfinite(fb)
                else ""
            ),
            "",
            "| arm | "
            + " | ".join(f"true regret after {k}" for k in cps)
            + " | range test (trial-eq.) |",
            "|---|" + "---|" * (len(cps) + 1),
        ]
        for label, arm in res["arms"].items():
            rt = "-"
            if "rt_seconds" in arm:
                eq = [a / b for a, b in zip(arm["rt_seconds"], arm["trial_s"], strict=True)]
                rt = f"{statistics.median(eq):.2f}"
            cells = [se.med_iqr(arm[f"r{k}"], se.pct) for k in cps]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {rt} |")
        lines.append("")
    return "\n".join(lines)


def _reg(value: float, best: float, direction: str) -> float:
    sign = 1.0 if direction == "minimize" else -1.0
    return sign * (value - best) / max(abs(best), 1e-12) if math.isfinite(value) else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,charlm", help="comma list")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40, help="trials per study")
    parser.add_argument("--oracle-lrs", default="36,charlm=21", help="as search_efficiency's")
    parser.add_argument("--oracle-seeds", type=int, default=3, help="also the true value's")
    parser.add_argument("--schedules", help="the tuned arm's and oracle's (default: all)")
    parser.add_argument("--free-lrs", type=int, default=21, help="schedule-free LR grid")
    parser.add_argument("--partial", help="after each repeat, write the results so far here")
    parser.add_argument("--from-json", help="render a --partial file (with its command)")
    args = parser.parse_args()
    if args.from_json:
        data = se.unfinite(json.loads(Path(args.from_json).read_text()))
        print(markdown(data["results"], args, f"`{args.from_json}` (partial run)"))
        return
    results = [bench_task(t, args) for t in args.tasks.split(",")]
    load = os.getloadavg()[0]
    header = (
        f"`python benchmarks/schedule_free.py {' '.join(sys.argv[1:])}`: "
        f"{platform.machine()}, {os.cpu_count()} cores, CPU, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '-')}, torch {torch.__version__}, "
        f"{datetime.date.today()}, load average {load:.1f} at the end, "
        f"{sum(r['seconds'] for r in results) / 60:.0f} min."
    )
    print(markdown(results, args, header))
    print(json.dumps(se.finite({"results": results, "args": vars(args)})))


if __name__ == "__main__":
    main()
