"""Do short trials rank configurations like full-length ones? Compressed vs truncated rungs.

The fact multi-fidelity search (``lrtune study --rungs``) rests on. For each task, over the
search-efficiency oracle's grid (``--oracle-lrs`` log-spaced LRs from 1e-6 to 10 ×
``--schedules`` × ``--seeds`` training seeds, the runs cached in benchmarks/.cache and
shared with ``search_efficiency.py``), and for each lower rung of E epochs (``--rungs``,
default the geometric ladder EN, EN/3, EN/9, … of ``--reduction-factor`` 3):

- **compressed**: a run of E epochs that trains the whole schedule over its own steps (what
  a rung trial of ``--rungs`` trains);
- **truncated**: the value after E epochs of the full-length run (what a learning-curve
  pruner, median or Hyperband, compares);
- **full, one seed** (the reference): the full-length value of the same seed: how well a
  full trial ranks, given seed noise. A rung cannot be expected to beat it.

Each is compared, seed by seed, with the **leave-one-out full-length mean**: the mean of the
other seeds' full-length values of the same cell (so a run is never scored against itself).
Figures, means over the seeds:

- Spearman ρ over every cell of the wide grid (diverged runs rank last, tied), and over
  the cells inside the range test's bounds (seed 5000, ``lrtune study``'s defaults): the
  region a search with the prior compares;
- **pick regret**: the full-length true regret (seed mean against the grid's best mean) of
  the cell the rung ranks first inside the bounds: what promoting on it would cost if it
  kept only one.

**Horizon** (issue 16, item 4): per schedule, the best LR of the seed-mean curve at every
rung and at full length (refined between grid points by a parabola through the best point
and its neighbours in log LR), and β of LR*(E) ∝ E^-β fitted on them (least squares in log
space); per seed too, to show its noise.

Run by hand (about an hour of one core for the four tasks, most of it charlm-long's
oracle; every run is cached, so a rerun trains nothing):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/rung_rank.py > rank.out
    python benchmarks/rung_rank.py --from-json rank.out     # re-render, trains nothing
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import Runs, ladder, load_average, oracle, run_meta, task_ref

from lrtune.rangetest import range_test
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.spec import StudySpec

TASKS = ("charlm", "digits-cnn", "finetune", "charlm-long")
#: The schedules each task's search-efficiency oracle uses (the slow tasks fewer).
SCHEDULES = {
    "charlm": "constant,cosine,warmup_cosine,wsd",
    "charlm-long": "constant,cosine,warmup_cosine,wsd",
    "digits-cnn": "constant,step,cosine,warmup_cosine,onecycle",
}
RT_SEED = 5000  # search_efficiency's range-test seed of repeat 0


def per_task(option: str, task: str, default: str) -> str:
    """``A`` or ``A;task=B;...`` (``;`` because values hold commas): the value for task."""
    chosen = default
    for part in option.split(";"):
        name, sep, value = part.partition("=")
        if not sep and part:
            chosen = part
    for part in option.split(";"):
        name, sep, value = part.partition("=")
        if sep and name == task:
            return value
    return chosen


def ordered(values: Sequence[float], sign: float) -> np.ndarray:
    """Values oriented so smaller is better, a diverged (``nan``) one worst."""
    a = sign * np.asarray(values, dtype=float)
    return np.where(np.isfinite(a), a, np.inf)


def rho(x: Sequence[float], y: Sequence[float], sign: float) -> float:
    a, b = ordered(x, sign), ordered(y, sign)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def best_log_lr(lrs: Sequence[float], values: Sequence[float], sign: float) -> float:
    """log10 of the curve's best LR, refined by a parabola through it and its neighbours."""
    x, v = np.log10(np.asarray(lrs)), ordered(values, sign)
    i = int(np.argmin(v))
    if not math.isfinite(v[i]):
        return math.nan
    if 0 < i < len(v) - 1 and math.isfinite(v[i - 1]) and math.isfinite(v[i + 1]):
        curv = v[i + 1] - 2 * v[i] + v[i - 1]
        if curv > 0:
            h = x[i + 1] - x[i]
            shift = 0.5 * h * (v[i - 1] - v[i + 1]) / curv
            return float(x[i] + max(-h, min(h, shift)))
    return float(x[i])


def beta(epochs: Sequence[int], log_lrs: Sequence[float]) -> float:
    """β of LR* ∝ E^-β: minus the least-squares slope of log LR* against log E."""
    pts = [(math.log10(e), y) for e, y in zip(epochs, log_lrs, strict=True) if math.isfinite(y)]
    if len(pts) < 2:
        return math.nan
    xs, ys = zip(*pts, strict=True)
    return -float(np.polyfit(xs, ys, 1)[0])


def bench_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    runs = Runs(task)
    n_lrs = int(per_task(args.oracle_lrs, task, "21"))
    schedules = per_task(args.schedules, task, SCHEDULES.get(task, ",".join(SCHEDULE_NAMES)))
    scheds = schedules.split(",")
    rungs = [int(e) for e in per_task(args.rungs, task, "").split(",") if e]
    rungs = rungs or ladder(runs.epochs, args.reduction_factor)
    if rungs[-1] != runs.epochs:
        raise SystemExit(f"--rungs for {task}: the last must be its epochs, {runs.epochs}")
    seeds = range(args.seeds)
    full = oracle(task, n_lrs, args.seeds, scheds, runs)
    log(
        f"{task}: full-length grid ready ({runs.trained} trained, {time.perf_counter() - t0:.0f} s)"
    )
    grids: dict[str, Any] = {"full": full.runs}
    for e in rungs[:-1]:
        grids[f"compressed {e}"] = oracle(task, n_lrs, args.seeds, scheds, runs, e).runs
        grids[f"truncated {e}"] = {
            s: [[runs.truncated(s, lr, k, e) for k in seeds] for lr in full.lrs] for s in scheds
        }
        log(f"{task}: rung {e} ready ({runs.trained} trained, {time.perf_counter() - t0:.0f} s)")
    runs.save()
    spec = StudySpec(task=task_ref(task), optimizer=runs.optimizer)
    rt = range_test(
        task_ref(task),
        optimizer=runs.optimizer,
        steps=spec.rangetest_steps,
        seeds=spec.rangetest_seeds,
        device="cpu",
        seed=RT_SEED,
    )
    return {
        "task": task,
        "optimizer": runs.optimizer,
        "direction": runs.direction,
        "epochs": runs.epochs,
        "rungs": rungs,
        "lrs": full.lrs,
        "schedules": scheds,
        "seeds": args.seeds,
        "bounds": [rt.lr_low, rt.lr_high],
        "grids": grids,
        "runs_trained": runs.trained,
        "seconds": time.perf_counter() - t0,
    }


def cells(grid: dict[str, list[list[float]]], scheds: Sequence[str], k: int) -> list[float]:
    """Seed ``k``'s values over every (schedule, lr) cell, schedule-major."""
    return [grid[s][i][k] for s in scheds for i in range(len(grid[s]))]


def seed_mean(values: Sequence[float]) -> float:
    """Mean over seeds, ``nan`` when any diverged (it counts as the worst)."""
    return statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.nan


def ranking(res: dict[str, Any], name: str, inside: list[bool]) -> dict[str, float]:
    """One row: ``name``'s grid scored seed by seed against the other seeds' full means."""
    sign = 1.0 if res["direction"] == "minimize" else -1.0
    scheds, n, full = res["schedules"], res["seeds"], res["grids"]["full"]
    means = [seed_mean(r) for s in scheds for r in full[s]]
    best = float(min(ordered(means, sign)))
    r_all, r_in, picks = [], [], []
    for k in range(n):
        x = cells(res["grids"][name], scheds, k)
        others = [cells(full, scheds, j) for j in range(n) if j != k]
        y = [seed_mean(c) for c in zip(*others, strict=True)]
        r_all.append(rho(x, y, sign))
        pairs = [(a, b) for a, b, m in zip(x, y, inside, strict=True) if m]
        r_in.append(rho([a for a, _ in pairs], [b for _, b in pairs], sign))
        ox = ordered(x, sign)
        pick = min((i for i in range(len(x)) if inside[i]), key=lambda i: ox[i])
        v = float(ordered([means[pick]], sign)[0])
        picks.append((v - best) / max(abs(best), 1e-12))
    return {
        "rho_all": statistics.fmean(r_all),
        "rho_bounds": statistics.fmean(r_in),
        "pick_regret": statistics.fmean(picks),
    }


def horizon(res: dict[str, Any], schedule: str) -> dict[str, Any]:
    """LR* per rung (seed mean and per seed) of one schedule and β fitted on them."""
    sign = 1.0 if res["direction"] == "minimize" else -1.0
    epochs, n = res["rungs"], res["seeds"]
    curves = {
        e: res["grids"]["full" if e == res["epochs"] else f"compressed {e}"][schedule]
        for e in epochs
    }

    def star(e: int, k: int | None) -> float:
        vals = [seed_mean(r) if k is None else r[k] for r in curves[e]]
        return best_log_lr(res["lrs"], vals, sign)

    mean_star = [star(e, None) for e in epochs]
    # What a correction fitted on the lower rungs would predict for the top, seed by seed
    # (a study sees one seed): the error of LR*(E_{N-1}) as is, and extrapolated by the β of
    # the rungs below the top, against the seed-mean LR* at full length (decades).
    plain, fitted = [], []
    if len(epochs) >= 3:
        gap = math.log10(epochs[-1] / epochs[-2])
        for k in range(n):
            low = [star(e, k) for e in epochs[:-1]]
            plain.append(abs(low[-1] - mean_star[-1]))
            fitted.append(abs(low[-1] - beta(epochs[:-1], low) * gap - mean_star[-1]))
    return {
        "log_lr_star": mean_star,
        "beta": beta(epochs, mean_star),
        "beta_seeds": [beta(epochs, [star(e, k) for e in epochs]) for k in range(n)],
        "top_error_plain": plain,
        "top_error_fitted": fitted,
    }


def analyse(res: dict[str, Any]) -> dict[str, Any]:
    """Spearman, pick regret and the horizon fit from a task's raw grids."""
    lo, hi = res["bounds"]
    inside = [
        lo * (1 - 1e-9) <= lr <= hi * (1 + 1e-9) for _ in res["schedules"] for lr in res["lrs"]
    ]
    rows = {
        ("full, one seed" if name == "full" else name): ranking(res, name, inside)
        for name in res["grids"]
    }
    return {
        "rows": rows,
        "horizon": {s: horizon(res, s) for s in res["schedules"]},
        "in_bounds": sum(inside),
    }


def markdown(results: list[dict[str, Any]], header: str) -> str:
    lines = ["### Rank correlation: compressed vs truncated rungs", "", header, ""]
    for res in results:
        a = res["analysis"]
        lo, hi = res["bounds"]
        lines += [
            f"#### {res['task']} ({res['optimizer']}, {res['epochs']} epochs, rungs "
            f"{','.join(map(str, res['rungs']))})",
            "",
            f"Grid: {len(res['lrs'])} LRs × {len(res['schedules'])} schedules "
            f"({', '.join(res['schedules'])}) × {res['seeds']} seeds; range-test bounds "
            f"[{lo:.3g}, {hi:.3g}] hold {a['in_bounds']} cells.",
            "",
            "| rung | Spearman ρ, all cells | ρ, inside the bounds | pick regret |",
            "|---|---|---|---|",
        ]
        for name, row in a["rows"].items():
            label = f"{name} (reference)" if name.startswith("full") else name
            lines.append(
                f"| {label} | {row['rho_all']:.3f} | {row['rho_bounds']:.3f} | "
                f"{pct(row['pick_regret'])} |"
            )
        lines.append("")
    lines += [
        "### Horizon: the best LR per rung",
        "",
        "LR* of the seed-mean curve (refined between grid points), per rung's epochs; β of "
        "LR* ∝ E^-β (positive: the best LR falls as the horizon grows), on the seed means "
        "and per seed. Top LR* error: decades between the full-length LR* (seed mean) and "
        "one seed's LR* on the rung below the top, as is and moved by the β fitted on that "
        "seed's lower rungs (what a correction fitted inside a study could do at best; "
        "needs two rungs below the top), mean over seeds.",
        "",
        "| task | schedule | LR* per rung (epochs: LR*) | β | β per seed | top LR* error: "
        "as is → β of the lower rungs |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for s, h in res["analysis"]["horizon"].items():
            stars = ", ".join(
                f"{e}: {10**y:.3g}" if math.isfinite(y) else f"{e}: -"
                for e, y in zip(res["rungs"], h["log_lr_star"], strict=True)
            )
            seeds = ", ".join(f"{b:+.2f}" for b in h["beta_seeds"])
            err = "-"
            if h.get("top_error_plain"):
                err = (
                    f"{statistics.fmean(h['top_error_plain']):.2f} → "
                    f"{statistics.fmean(h['top_error_fitted']):.2f}"
                )
            lines.append(f"| {res['task']} | {s} | {stars} | {h['beta']:+.2f} | {seeds} | {err} |")
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "diverged"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def header_of(meta: dict[str, Any]) -> str:
    a = meta["args"]
    return (
        f"`python benchmarks/rung_rank.py --tasks {a['tasks']} --seeds {a['seeds']} "
        f"--oracle-lrs '{a['oracle_lrs']}'"
        + (f" --schedules '{a['schedules']}'" if a["schedules"] else "")
        + (f" --rungs '{a['rungs']}'" if a["rungs"] else "")
        + f"`: {meta['machine']}, {meta['cores']} cores, CPU, OMP_NUM_THREADS="
        f"{meta['omp_threads'] or '-'}, torch {meta['torch']}, {meta['date']}, load average "
        f"{meta['load_start']} at the start, {meta['load_end']} at the end; "
        + ", ".join(
            f"{r['task']} {r['seconds'] / 60:.0f} min ({r['runs_trained']} runs trained)"
            for r in meta["tasks"]
        )
        + "."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0, 1, …")
    parser.add_argument("--oracle-lrs", default="21;finetune=36", help="N or N;task=N")
    parser.add_argument("--schedules", default="", help="comma list, or list;task=list")
    parser.add_argument("--rungs", default="", help="E1,…,EN or …;task=E1,…,EN")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--from-json", nargs="+", metavar="OUT", help="render saved runs")
    args = parser.parse_args()
    if args.from_json:
        metas = []
        for file in args.from_json:
            lines = [ln for ln in Path(file).read_text().splitlines() if ln.startswith("{")]
            metas.append(json.loads(lines[-1]))
        results = [r | {"analysis": analyse(r)} for m in metas for r in m["tasks"]]
        print(markdown(results, "\n".join(f"- {header_of(m)}" for m in metas)))
        return
    if args.seeds < 2:
        parser.error("--seeds must be ≥ 2 (each seed is scored against the others' mean)")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    load_start = load_average()
    results = [bench_task(t, args) for t in args.tasks.split(",")]
    meta = run_meta(args, results, load_start)
    analysed = [r | {"analysis": analyse(r)} for r in results]
    print(markdown(analysed, f"- {header_of(meta)}"))
    print(json.dumps(meta, default=lambda x: None))


if __name__ == "__main__":
    main()
