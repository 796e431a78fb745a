"""Search efficiency under seed noise: what is the configuration a user exports worth?

A trial's value is one training seed's result; two seeds of one configuration differ by
several percent, so "the best trial" is partly luck. This benchmark scores what a user gets,
not what a study saw. For each built-in task (``--tasks``):

- **oracle**: a dense grid over the wide space (``--oracle-lrs`` log-spaced LRs from 1e-6 to
  10 × every schedule × ``--oracle-seeds`` training seeds 0, 1, …), every run cached in
  benchmarks/.cache by task + config + seed + a fingerprint of what the training code does
  (``bench_runs.py``, shared with ``rung_rank.py``). Its best seed
  mean is the reference; the **seed noise** is the median, over the 10 best cells, of the
  seeds' relative sd (the half-range is printed too).
- **true value** of a configuration: its mean over the oracle's seeds (the oracle cell when
  the configuration lies on the oracle grid, else trained on those seeds and cached). Those
  seeds are never the study's: a study of repeat r trains every trial with seed 1000 + r,
  confirmation re-trains use seeds 10000 + 10 r + j, range tests 5000 + 10 r.
- per **strategy** (grid / random / TPE × prior none / rangetest, plus TPE with a prior
  shifted two decades low, which lrtune's widening must recover from), ``--repeats``
  studies run exactly as ``lrtune study`` runs them (same objective, sampler, pruner,
  widening), in memory. After k = 5/10/20/40 trials the exported configuration is the best
  finished trial so far; its **regret** is (true value − oracle best) / |oracle best|
  (sign flipped when maximizing). **Trials to target**: the first k at which the exported
  configuration's true value is within the tolerance of the oracle's best
  (``lrtune.group.compare.within``), tolerance = max(``--tolerance``, seed noise); a repeat that
  never gets there is censored at budget + 1 (shown ≥). Prior arms add the range test's
  cost in trial-equivalents (its seconds ÷ the repeat's median trial seconds).
- **confirmation** (SPEC "Seed noise", K = 3, S = 2) at equal total trials: arm A runs
  ``--budget`` trials and exports the best single-seed trial; arm B runs budget − K·S trials,
  re-trains its K best configurations on S fresh seeds and exports the best mean of those
  fresh seeds. Both are scored by true regret.

Median [IQR] over repeats. A markdown table per task, then one JSON line.

Cost, per task: the oracle trains lrs × schedules × seeds runs once (cached); each repeat
runs 7 studies of ``--budget`` trials, 2 of budget − K·S, K·S confirmation runs and
``--oracle-seeds`` runs per distinct exported configuration off the oracle grid (5-10 per
study). The small MLP tasks take minutes each; digits-cnn, finetune and charlm (1-3 s a
trial) hours: give them a coarser oracle (``--oracle-lrs 36,charlm=21``; 21 LRs are 0.35
decades apart), fewer schedules (``--schedules``) or their own run (``--tasks``).

``--arms`` picks strategies; the candidate priors of ``priors.py`` (``tpe / warm``,
``tpe / soft``, ``tpe / startup 3``) run only when named there.

Run by hand (the full run is long: see ``--help`` for the budget flags):
    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py
    python benchmarks/search_efficiency.py --quick        # smoke test, ~2 minutes
Slow tasks with their own flags, then one docs section from the saved outputs:
    python benchmarks/search_efficiency.py --tasks charlm --oracle-lrs 21 ... > charlm.out
    python benchmarks/search_efficiency.py --from-json small.out charlm.out cnn.out
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_runs
import optuna
import torch
from bench_runs import ROOT, WIDE, Config, Runs, oracle, seed_noise
from bench_stats import finite, log, med_iqr, num, pct, per_task, quantile, unfinite
from priors import warm_start_params  # benchmarks/priors.py: candidate priors

# Every import from lrtune is here, in one place (modules may move; update them here).
from lrtune.group.compare import within
from lrtune.rangetest import range_test
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.objective import make_objective
from lrtune.search.samplers import PRUNERS, make_pruner, make_sampler, tpe_startup_trials
from lrtune.search.space import grid_size, grid_space
from lrtune.search.spec import StudySpec, task_optimizer
from lrtune.search.states import FINISHED
from lrtune.search.widen import maybe_widen
from lrtune.training.loading import resolve_task

CANDIDATES = ("digits", "breast-cancer", "wine", "synthetic", "digits-cnn", "charlm", "finetune")
CHECKPOINTS = (5, 10, 20, 40)
STUDY_SEED, RT_SEED, CONFIRM_SEED = 1000, 5000, 10000
END_MARK = "<!-- end of the section written by benchmarks/search_efficiency.py -->"
COMPLETE = optuna.trial.TrialState.COMPLETE


def available_tasks(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The names resolve_task knows, and notes for those it does not."""
    known, notes = [], []
    for name in names:
        try:
            resolve_task(name)
            known.append(name)
        except Exception as exc:  # an unknown task is skipped, not fatal
            notes.append(f"skipped {name}: {str(exc).splitlines()[0]}")
    return known, notes


def run_study(
    spec: StudySpec,
    sampler: str,
    prior: str,
    bounds: tuple[float, float],
    seed: int,
    budget: int,
    direction: str,
    epochs: int,
    warm: list[dict[str, Any]] | None = None,
    startup: int | None = None,
) -> list[optuna.trial.FrozenTrial]:
    """One study, run like `lrtune study` runs it, in memory; its finished trials in order.
    ``warm``: trial params enqueued first (a warm start); ``startup``: TPE's start-up count
    instead of lrtune's (a candidate prior, not what `lrtune study` does)."""
    if startup is None:
        made = make_sampler(sampler, seed=seed, budget=budget, grid=grid_space(spec, bounds))
    else:
        made = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(
        direction=direction,
        sampler=made,
        pruner=make_pruner(spec.pruner, epochs=epochs),  # as workers do: the trial's epochs
    )
    for params in warm or []:
        study.enqueue_trial(params)
    attrs = {"prior": prior, "spec": spec.to_dict(), "sampler": sampler, "bounds": list(bounds)}
    for key, value in (attrs | {"budget": budget}).items():
        study.set_user_attr(key, value)
    if sampler == "grid":  # as `lrtune study` does: the grid caps the budget
        budget = min(budget, grid_size(spec))
    follow = prior == "rangetest" and sampler != "grid"
    objective = make_objective(spec, bounds, budget=budget, device="cpu", follow_bounds=follow)
    while sum(t.state in FINISHED for t in study.trials) < budget:
        study.optimize(objective, n_trials=1)
        if follow:
            maybe_widen(study)
    return [t for t in study.trials if t.state in FINISHED]


def exported(trials: list[optuna.trial.FrozenTrial], k: int, sign: float) -> Config | None:
    """The best complete trial among the first ``k`` finished: what a user would export
    (``sign``: 1 to minimize, -1 to maximize)."""
    done = [t for t in trials[:k] if t.state == COMPLETE and t.value is not None]
    done = [t for t in done if math.isfinite(t.value)]  # type: ignore[arg-type]
    if not done:
        return None
    t = min(done, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]
    return str(t.params["schedule"]), float(t.params["lr"])


def top_configs(trials: list[optuna.trial.FrozenTrial], n: int, sign: float) -> list[Config]:
    """The ``n`` best distinct configurations of a study by their single-seed value."""
    done = sorted(
        (sign * t.value, t.number, str(t.params["schedule"]), float(t.params["lr"]))
        for t in trials
        if t.state == COMPLETE and t.value is not None and math.isfinite(t.value)
    )
    return list(dict.fromkeys((s, lr) for _, _, s, lr in done))[:n]


def bench_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    optimizer = task_optimizer(task)
    epochs = resolve_task(task)(0).epochs
    runs = Runs(task, optimizer)
    n_lrs, n_seeds = per_task(args.oracle_lrs, task), args.oracle_seeds
    schedules = tuple(args.schedules.split(",")) if args.schedules else SCHEDULE_NAMES
    grid = oracle(task, n_lrs, n_seeds, schedules, runs)
    eval_seeds = range(n_seeds)
    log(f"{task}: oracle ready ({runs.trained} runs trained, {time.perf_counter() - t0:.0f} s)")
    best_schedule, best_lr, best = grid.best()
    noise_sd, noise_half = seed_noise(grid)
    tol = max(args.tolerance, noise_sd if math.isfinite(noise_sd) else 0.0)
    sign = 1.0 if grid.direction == "minimize" else -1.0

    def true_value(config: Config | None) -> float:
        return math.nan if config is None else runs.mean(config, eval_seeds)

    def regret(value: float) -> float:
        """Relative regret; ``inf`` when nothing finished or the config diverged."""
        return sign * (value - best) / max(abs(best), 1e-12) if math.isfinite(value) else math.inf

    spec = StudySpec(
        task=task,
        optimizer=optimizer,
        schedules=schedules,
        trials=args.budget,
        pruner=args.pruner,
    )
    range_test(task, optimizer=optimizer, seeds=1, steps=20, device="cpu", seed=RT_SEED - 1)
    robust = {s: grid.robust_best_lr(s) for s in schedules}
    checkpoints = [k for k in CHECKPOINTS if k < args.budget] + [args.budget]
    ks = args.confirm_k * args.confirm_seeds
    arm_names = args.arms.split(",")
    arms: dict[str, dict[str, list[float]]] = {}
    coverage: list[float] = []
    spans: list[float] = []
    rt_trials: list[float] = []
    for r in range(args.first_repeat, args.first_repeat + args.repeats):
        seed = STUDY_SEED + r
        rspec = dataclasses.replace(spec, seed=seed)
        rt = range_test(
            task,
            optimizer=optimizer,
            steps=spec.rangetest_steps,
            seeds=spec.rangetest_seeds,
            device="cpu",
            seed=RT_SEED + 10 * r,
        )
        bounds = {"none": WIDE, "rangetest": (rt.lr_low, rt.lr_high)}
        spans.append(math.log10(rt.lr_high / rt.lr_low))
        coverage.append(sum(rt.lr_low <= lr <= rt.lr_high for lr in robust.values()) / len(robust))
        n_start = tpe_startup_trials(args.budget)
        # label → (sampler, prior, bounds, warm-start params, TPE start-up count)
        plan: dict[str, tuple[str, str, tuple[float, float], list[dict[str, Any]], int | None]]
        plan = {f"{s} / {p}": (s, p, bounds[p], [], None) for p in bounds for s in CORE}
        plan["tpe shifted"] = ("tpe", "rangetest", (rt.lr_low / 100, rt.lr_high / 100), [], None)
        rtb = bounds["rangetest"]
        warm = warm_start_params("suggestions", rt, schedules, rtb, n_start)
        plan["tpe / warm"] = ("tpe", "rangetest", rtb, warm, None)
        soft = warm_start_params("soft", rt, schedules, WIDE, n_start, seed=seed)
        plan["tpe / soft"] = ("tpe", "none", WIDE, soft, None)
        plan["tpe / startup 3"] = ("tpe", "rangetest", rtb, [], 3)
        secs: list[float] = []
        for label in [a for a in arm_names if a in plan]:
            sampler, prior, b, warm_params, startup = plan[label]
            trials = run_study(
                rspec,
                sampler,
                prior,
                b,
                seed,
                args.budget,
                grid.direction,
                epochs,
                warm_params,
                startup,
            )
            secs += [float(t.user_attrs["seconds"]) for t in trials if "seconds" in t.user_attrs]
            arm = arms.setdefault(label, {})
            # What pruning bought and cost: the share of trials it stopped (a diverged
            # trial is pruned too, by lrtune, whatever the pruner) and the study's seconds.
            arm.setdefault("pruned", []).append(
                sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) / len(trials)
            )
            arm.setdefault("train_s", []).append(
                sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials)
            )
            # The true value of the export after every k (few distinct configs: cached).
            values = [true_value(exported(trials, k, sign)) for k in range(1, args.budget + 1)]
            arm.setdefault("curve", []).append([regret(v) for v in values])
            for k in checkpoints:
                arm.setdefault(f"r{k}", []).append(regret(values[k - 1]))
            ttt = next(
                (
                    k
                    for k, v in enumerate(values, 1)
                    if math.isfinite(v) and within(v, best, tol, grid.direction)
                ),
                args.budget + 1,
            )
            arm.setdefault("ttt", []).append(float(ttt))
            if ks and label in ("tpe / none", "tpe / rangetest"):
                # Arm B: fewer trials, then confirm the K best on S fresh seeds.
                short = run_study(
                    rspec, sampler, prior, b, seed, args.budget - ks, grid.direction, epochs
                )
                fresh = [CONFIRM_SEED + 10 * r + j for j in range(args.confirm_seeds)]
                cands = top_configs(short, args.confirm_k, sign)
                means = [runs.mean(c, fresh) for c in cands]
                order = sorted(
                    range(len(cands)),
                    key=lambda i: sign * means[i] if math.isfinite(means[i]) else math.inf,
                )
                pick = cands[order[0]] if cands else None
                arm.setdefault("confirmed", []).append(regret(true_value(pick)))
        trial_s = statistics.median(secs) if secs else math.nan
        rt_trials.append(rt.seconds / trial_s if trial_s > 0 else math.nan)
        runs.save()
        last = args.first_repeat + args.repeats
        log(f"  {task} repeat {r + 1}/{last} done ({time.perf_counter() - t0:.0f} s)")
    for label, arm in arms.items():
        extra = [0.0] * len(rt_trials) if label in NO_RANGE_TEST else rt_trials
        arm["cost"] = [
            t + e if t <= args.budget else math.inf for t, e in zip(arm["ttt"], extra, strict=True)
        ]
    return {
        "task": task,
        "optimizer": optimizer,
        "direction": grid.direction,
        "oracle": {
            "lrs": n_lrs,
            "seeds": n_seeds,
            "schedules": len(schedules),
            "decades_per_step": math.log10(WIDE[1] / WIDE[0]) / max(n_lrs - 1, 1),
            "best": best,
            "best_lr": best_lr,
            "best_schedule": best_schedule,
        },
        "noise_sd": noise_sd,
        "noise_half_range": noise_half,
        "tolerance": tol,
        **range_test_stats(rt_trials, coverage, spans),
        "checkpoints": checkpoints,
        "arms": arms,
        "runs_trained": runs.trained,
        "seconds": time.perf_counter() - t0,
    }


CORE = ("grid", "random", "tpe")
#: Arms that run no range test (their cost is trials alone).
NO_RANGE_TEST = tuple(f"{s} / none" for s in CORE)
STANDARD_ARMS = (*NO_RANGE_TEST, *(f"{s} / rangetest" for s in CORE), "tpe shifted")
#: Candidate better priors (issue 10, item 4): off unless ``--arms`` names them.
CANDIDATE_ARMS = ("tpe / warm", "tpe / soft", "tpe / startup 3")


def summarize(res: dict[str, Any], budget: int) -> dict[str, Any]:
    arms = res["arms"]
    # The goal's comparison: TPE with the prior at 10 trial-equivalents, range test
    # included (per repeat: the trials its range test leaves of 10), vs TPE without at 40.
    out: dict[str, Any] = {}
    tn = arms.get("tpe / none")
    prior_arms = [a for a in arms if a.startswith("tpe /") and a != "tpe / none"]
    ks = [
        min(budget, max(1, math.floor(10 - e)) if math.isfinite(e) else 10)
        for e in res["rt_trials"]
    ]
    for label in prior_arms if tn else []:
        curves = arms[label]["curve"]
        at10 = [c[min(k, len(c)) - 1] for c, k in zip(curves, ks, strict=True)]
        out.setdefault("prior_at_10", {})[label] = {
            "trials": statistics.median(ks),
            "regret": quantile(at10, 0.5),
            "not_worse": sum(x <= y for x, y in zip(at10, tn[f"r{budget}"], strict=True)),
        }
    if tn:
        out["tpe_none_regret_at_budget"] = quantile(tn[f"r{budget}"], 0.5)
    out["reached"] = {a: sum(t <= budget for t in v["ttt"]) for a, v in arms.items()}
    out["ttt_median"] = {a: quantile(v["ttt"], 0.5) for a, v in arms.items()}
    out["cost_median"] = {a: quantile(v["cost"], 0.5) for a, v in arms.items()}
    for label in ("tpe / none", "tpe / rangetest"):
        arm = arms.get(label, {})
        if "confirmed" in arm:
            a, b = arm[f"r{budget}"], arm["confirmed"]
            out[f"confirm {label}"] = {
                "A_median": quantile(a, 0.5),
                "B_median": quantile(b, 0.5),
                "B_better": sum(y < x for x, y in zip(a, b, strict=True)),
                "B_worse": sum(y > x for x, y in zip(a, b, strict=True)),
            }
    out["regret_median"] = {
        a: {k: quantile(v[f"r{k}"], 0.5) for k in res["checkpoints"]} for a, v in arms.items()
    }
    return out


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    b, ks = args.budget, args.confirm_k * args.confirm_seeds
    lines = ["## Search efficiency", "", header, ""]
    lines += [
        "Regret: (true value − oracle best) / |oracle best| of the configuration exported "
        "after k trials (its mean over the oracle's seeds, never the seed it was found "
        "with). To target: first k whose export is within the tolerance of the oracle best "
        f"(censored at {b + 1}, shown ≥); cost adds the range test (prior arms). "
        "Median [IQR] over repeats; a regret shown ≥ leans on a repeat whose export "
        "diverged on the true-value seeds. Negative regret: a configuration between the "
        "oracle's grid points beats its best cell.",
        "",
    ]
    for res in results:
        o, cps = res["oracle"], res["checkpoints"]
        coarse = " (coarser than the default)" if o["lrs"] < per_task(args.oracle_lrs, "") else ""
        lines += [
            f"### {res['task']} ({res['optimizer']}, {res['direction']} the metric)",
            "",
            f"Oracle{coarse}: {o['lrs']} LRs ({o['decades_per_step']:.2f} decades apart) × "
            f"{o['schedules']} schedules × {o['seeds']} seeds; best seed mean "
            f"{o['best']:.4g} ({o['best_schedule']}, lr {o['best_lr']:.3g}). Seed noise at "
            f"the 10 best cells: relative sd {res['noise_sd']:.1%}, half-range "
            f"{res['noise_half_range']:.1%}; tolerance {res['tolerance']:.1%}. Range test = "
            f"{res['rt_trial_equivalents']:.2f} trial-equivalents; bounds hold every "
            f"schedule's best LR in {res['full_coverage']:.0%} of repeats, span "
            f"{res['bounds_decades_median']:.2f} decades (median; max "
            f"{res['bounds_decades_max']:.2f}).",
            "",
            "| strategy / prior | "
            + " | ".join(f"regret after {k}" for k in cps)
            + " | reached | to target | cost |",
            "|---|" + "---|" * (len(cps) + 3),
        ]
        for label, arm in res["arms"].items():
            n_reached = sum(v <= b for v in arm["ttt"])
            cells = [med_iqr(arm[f"r{k}"], pct) for k in cps]
            ttt = [t if t <= b else math.inf for t in arm["ttt"]]
            lines.append(
                f"| {label} | "
                + " | ".join(cells)
                + f" | {n_reached}/{len(arm['ttt'])} | {med_iqr(ttt, num, b + 1)} | "
                f"{med_iqr(arm['cost'], num, b + 1)} |"
            )
        s = res["summary"]
        lines.append("")
        for label, arm in res["arms"].items():
            if "pruned" in arm:  # runs saved before the pruner was recorded lack it
                lines.append(
                    f"- {label}: pruned (or diverged) {pct(quantile(arm['pruned'], 0.5))} of "
                    f"the trials, {quantile(arm['train_s'], 0.5):.0f} s of training per "
                    "study (medians)"
                )
        for label, p10 in s.get("prior_at_10", {}).items():
            lines.append(
                f"- {label} at 10 trial-equivalents (median {p10['trials']:g} trials + the "
                f"range test): regret {pct(p10['regret'])}; TPE without prior after {b}: "
                f"{pct(s['tpe_none_regret_at_budget'])}; not worse in "
                f"{p10['not_worse']}/{len(res['rt_trials'])} repeats"
            )
        for label in ("tpe / none", "tpe / rangetest"):
            c = s.get(f"confirm {label}")
            if c:
                n = len(res["arms"][label]["confirmed"])
                lines.append(
                    f"- confirmation, {label}: {b} trials, best single seed: regret "
                    f"{pct(c['A_median'])}; {b - ks} trials + top {args.confirm_k} on "
                    f"{args.confirm_seeds} fresh seeds: {pct(c['B_median'])} "
                    f"(lower in {c['B_better']}/{n} repeats, higher in {c['B_worse']})"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    # --axis compute: rungs against full-length trials and pruners at equal compute
    # (issue 16), benchmarks/compute_axis.py, with its own flags.
    axis = argparse.ArgumentParser(add_help=False)
    axis.add_argument("--axis", choices=("trials", "compute"), default="trials")
    chosen, rest = axis.parse_known_args()
    if chosen.axis == "compute":
        import compute_axis

        compute_axis.main(rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--axis",
        choices=("trials", "compute"),
        default="trials",
        help="compute: the regret at equal training compute of rungs, full-length trials "
        "and pruners (benchmarks/compute_axis.py; its own flags: --axis compute --help)",
    )
    parser.add_argument("--tasks", default=",".join(CANDIDATES), help="comma list")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40, help="trials per study")
    parser.add_argument(
        "--first-repeat",
        type=int,
        default=0,
        help="index of the first repeat (its seeds): split a slow task's repeats over "
        "processes, then join their outputs with --from-json",
    )
    parser.add_argument(
        "--oracle-lrs",
        default="36",
        help="LRs of the oracle grid, optionally per task: 36,charlm=21 (n − 1 a multiple "
        "of 5 keeps the no-prior grid sampler's points on the oracle grid)",
    )
    parser.add_argument("--oracle-seeds", type=int, default=3, help="also the true value's")
    parser.add_argument("--schedules", help="comma list (default all): a coarser run")
    parser.add_argument("--tolerance", type=float, default=0.02, help="floor of the tolerance")
    parser.add_argument(
        "--arms",
        default=",".join(STANDARD_ARMS),
        help=f"comma list of strategies (default the standard ones); candidate priors: "
        f"{', '.join(CANDIDATE_ARMS)}",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=StudySpec.pruner,
        help="the studies' pruner (default: lrtune's, %(default)s)",
    )
    parser.add_argument("--confirm-k", type=int, default=3)
    parser.add_argument("--confirm-seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="tasks run in parallel")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 tasks, tiny")
    parser.add_argument("--no-write", action="store_true", help="do not update docs")
    parser.add_argument(
        "--from-json",
        nargs="+",
        metavar="OUT",
        help="train nothing: render the saved stdout of earlier runs as one section",
    )
    args = parser.parse_args()
    if args.from_json:
        from_json(args)
        return
    if args.quick:
        args.tasks, args.repeats, args.budget, args.oracle_lrs = "digits,wine", 2, 12, "6"
        args.schedules, args.no_write = "constant,cosine", True
    if args.repeats < 1 or args.budget < 1 or args.oracle_seeds < 2 or args.first_repeat < 0:
        parser.error("--repeats and --budget must be ≥ 1, --oracle-seeds ≥ 2, --first-repeat ≥ 0")
    if args.confirm_k < 0 or args.confirm_seeds < 0:
        parser.error("--confirm-k and --confirm-seeds must be ≥ 0 (0: no confirmation arm)")
    if args.confirm_k * args.confirm_seeds >= args.budget:
        parser.error("--confirm-k × --confirm-seeds must leave some of --budget for trials")
    if args.oracle_seeds < 3:
        log("note: fewer than 3 oracle seeds: true values are means over fewer than 3 seeds")
    unknown = set(args.arms.split(",")) - {*STANDARD_ARMS, *CANDIDATE_ARMS}
    if unknown:
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))}")
    tasks, notes = available_tasks(args.tasks.split(","))
    if not tasks:
        parser.error("none of --tasks is known to lrtune")
    try:
        if min(per_task(args.oracle_lrs, t) for t in [*tasks, ""]) < 2:
            raise ValueError
    except ValueError:
        parser.error(f"--oracle-lrs {args.oracle_lrs!r}: expected N or N,task=N,… with N ≥ 2")
    for n in notes:
        log(n)
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(bench_task, tasks, [args] * len(tasks)))
    for res in results:
        res["summary"] = summarize(res, args.budget)
    machine = machine_info(args, notes)
    render(results, args, [header_of(machine)])
    # The per-k curves stay: --from-json recomputes the summary of repeats split over runs.
    print(json.dumps(finite(machine | {"tasks": {r["task"]: r for r in results}})))


def machine_info(args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    """The run's machine, date and options (the header of its docs section)."""
    return bench_runs.machine() | {"args": vars(args), "notes": notes}


def header_of(machine: dict[str, Any]) -> str:
    """One run's line: its options, the machine and the date (from its JSON)."""
    a = machine["args"]
    opts = (
        f"--tasks {a['tasks']} --repeats {a['repeats']} --budget {a['budget']} "
        f"--oracle-lrs {a['oracle_lrs']} --oracle-seeds {a['oracle_seeds']}"
        + (f" --schedules {a['schedules']}" if a.get("schedules") else "")
        + (f" --pruner {a['pruner']}" if a.get("pruner") else "")
        + (f" --first-repeat {a['first_repeat']}" if a.get("first_repeat") else "")
        + f" --confirm-k {a['confirm_k']} --confirm-seeds {a['confirm_seeds']}"
        + (f" --arms '{a['arms']}'" if a.get("arms") else "")
    )
    return (
        f"`python benchmarks/search_efficiency.py {opts}`: {machine['machine']}, "
        f"{machine['cores']} cores, CPU, OMP_NUM_THREADS={machine.get('omp_threads') or '-'}, "
        f"{a['jobs']} task process(es) of 1 torch thread, torch "
        f"{machine.get('torch', torch.__version__)}, {machine['date']}."
        + "".join(f" {n}." for n in machine.get("notes", []))
    )


def render(results: list[dict[str, Any]], args: argparse.Namespace, headers: list[str]) -> None:
    """Print the markdown section and, unless ``--no-write``, put it in docs/benchmarks.md."""
    header = "Runs (each line one command; the tables below follow them in order):\n\n" + (
        "\n".join(f"- {h}" for h in headers)
    )
    text = markdown(results, args, header)
    print(text)
    if not args.no_write:
        doc = ROOT / "docs" / "benchmarks.md"
        old = doc.read_text() if doc.exists() else "# Benchmarks\n"
        head = old.split("## Search efficiency")[0].rstrip()
        # What follows the marker (the hand-written reading of the figures) is kept.
        tail = old.split(END_MARK, 1)[1] if END_MARK in old else "\n"
        doc.write_text(head + "\n\n" + text + "\n" + END_MARK + tail)


def from_json(args: argparse.Namespace) -> None:
    """Render earlier runs' JSON lines (their output's last line) as one section: runs
    with different budget flags per task (a coarser oracle for the slow tasks) side by side."""
    results, headers = [], []
    for file in args.from_json:
        lines = [ln for ln in Path(file).read_text().splitlines() if ln.startswith("{")]
        if not lines:
            raise SystemExit(f"--from-json {file}: no JSON line (the run's stdout) in it")
        data = unfinite(json.loads(lines[-1]))
        if data["args"]["budget"] != args.budget:
            raise SystemExit(
                f"--from-json {file}: budget {data['args']['budget']}, not {args.budget}"
            )
        headers.append(header_of(data))
        results += list(data["tasks"].values())
    render(join_repeats(results, args.budget), args, headers)


def range_test_stats(
    rt_trials: list[float], coverage: list[float], spans: list[float]
) -> dict[str, Any]:
    """The per-repeat range-test lists (cost in trials, share of schedules' best LRs inside
    the bounds, bounds' decades) and their summaries."""
    return {
        "rt_trial_equivalents": statistics.median(rt_trials),
        "rt_trials": rt_trials,
        "coverage": coverage,
        "spans": spans,
        "full_coverage": sum(c == 1.0 for c in coverage) / len(coverage),
        "bounds_decades_median": statistics.median(spans),
        "bounds_decades_max": max(spans),
    }


def join_repeats(results: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """One result per task: the repeats of runs that split a task (``--first-repeat``)
    joined, their statistics recomputed. Runs saved without the per-repeat lists (curves,
    coverage, spans) cannot be joined and stay apart."""
    joined: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for res in results:
        first = joined.get(res["task"])
        if first is None or "spans" not in res or "spans" not in first:
            joined.setdefault(res["task"], res)
            out.append(res)
            continue
        if first["oracle"] != res["oracle"]:
            raise SystemExit(f"--from-json: the runs of {res['task']} have different oracles")
        first.update(
            range_test_stats(*(first[k] + res[k] for k in ("rt_trials", "coverage", "spans")))
        )
        for label, arm in res["arms"].items():
            mine = first["arms"].setdefault(label, {})
            for key, values in arm.items():
                mine[key] = mine.get(key, []) + values
        first["seconds"] = max(first["seconds"], res["seconds"])
        first["summary"] = summarize(first, budget)
    return out


if __name__ == "__main__":
    main()
