"""Search efficiency on an axis of compute (issue 16, item 5): rungs against full-length
trials and against Optuna's learning-curve pruners, at equal training compute.

``python benchmarks/search_efficiency.py --axis compute …`` runs this module (or run it
directly). For each task (``--tasks``; ``charlm-long`` is benchmarks/long_tasks.py's) and
each repeat r (study seed 1000 + r, range test seed 5000 + 10 r, as search_efficiency):

- **tpe+prior rungs**: TPE inside the range test's bounds, ``--rungs`` (default the
  geometric ladder EN, EN/3, …, as ``lrtune study --rungs``), η = ``--reduction-factor``:
  each rung trial trains the whole schedule compressed to its epochs; the study is driven as
  a worker drives it (:func:`lrtune.search.ladder.next_work`, ``BottomRungView``,
  widening). Only top-rung trials can be exported. For each ``--own-budgets`` b it also runs
  a study of budget b (``--trials b``), whose end differs from the first b of a longer one:
  its last configurations climb to the top rung;
- **tpe rungs (no prior)**: the same over the wide bounds (1e-6 … 10);
- **tpe+prior rungs+horizon** (not run unless ``--arms`` names it): tpe+prior rungs with
  ``lrtune study --horizon-beta`` (``--horizon-beta``, default 0.5): a promotion from E to
  E' epochs trains at lr × (E'/E)^-β;
- **tpe+prior rungs+trunks** (not run unless ``--arms`` names it): tpe+prior rungs with
  ``lrtune study --share-trunks``: a wsd or constant promotion starts from its source's state
  at the end of the stable phase (trunks in a temporary artifact store) and costs only its
  epochs past it, so the same compute starts more configurations;
- **tpe+prior full**: TPE inside the bounds, every trial full length, no pruner;
- **tpe+prior hyperband** / **tpe+prior median**: the same with Optuna's ``HyperbandPruner``
  / ``MedianPruner`` (lrtune's ``--pruner`` settings) judging truncated learning curves.

Every arm runs until it has trained the largest budget (``--budgets``); the export after c
is the best complete (with rungs: top-rung) trial among those whose cumulative compute (a
pruned trial: the epochs it trained; a rung trial: its rung's) is at most c: what a user
would export if they looked at the study then.

Every export is scored by its **true regret**: the configuration's mean over the oracle's
training seeds 0, 1, 2 (never a study's seed) against the best seed mean of the oracle
grid (bench_runs.oracle, shared with rung_rank.py and cached). ∞: nothing to export yet (no
top-rung trial, every trial pruned) or the export diverged on a true-value seed. The range
test's cost (trial-equivalents) is shown apart, not taken out of c: it is the same for
every prior arm.

Run by hand, one task per process (minutes to an hour each on one CPU thread):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/search_efficiency.py --axis compute \
        --tasks charlm --repeats 3 > compute-charlm.out
    python benchmarks/compute_axis.py --from-json compute-*.out   # one section, no training
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import WIDE, Config, Runs, ladder, load_average, oracle, run_meta, task_ref
from bench_stats import finite, log, unfinite
from compute_report import header_of, markdown
from rung_rank import SCHEDULES
from rung_rank import per_task as per_task_str

from lrtune.rangetest import range_test
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.ladder import Ladder, Promotion, next_work, promote, rung_of, trained
from lrtune.search.objective import Surplus, TrialFailed, make_objective
from lrtune.search.samplers import BottomRungView, make_pruner, make_sampler
from lrtune.search.spec import StudySpec
from lrtune.search.states import FINISHED
from lrtune.search.widen import maybe_widen
from lrtune.training.trainer import TrainConfig, train
from lrtune.training.trunk import START_ATTR

ARMS = (
    "tpe+prior rungs",
    "tpe+prior full",
    "tpe+prior hyperband",
    "tpe+prior median",
    "tpe rungs (no prior)",
)
#: Arms run only when ``--arms`` names them.
OPTIONAL_ARMS = ("tpe+prior rungs+horizon", "tpe+prior rungs+trunks")
TASKS = ("charlm", "digits-cnn", "finetune", "charlm-long")
STUDY_SEED, RT_SEED = 1000, 5000
COMPLETE = optuna.trial.TrialState.COMPLETE
Trials = list[optuna.trial.FrozenTrial]


def _study(
    spec: StudySpec,
    prior: str,
    bounds: tuple[float, float],
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    budget: float,
) -> optuna.Study:
    """An in-memory study with the user attrs `lrtune study` writes that the objective,
    the ladder and widening read."""
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    attrs = {"prior": prior, "spec": spec.to_dict(), "sampler": "tpe", "bounds": list(bounds)}
    for key, value in (attrs | {"budget": budget}).items():
        study.set_user_attr(key, value)
    return study


def rung_study(
    spec: StudySpec, prior: str, bounds: tuple[float, float], direction: str, budget: int
) -> Trials:
    """One study with rungs (``spec.rungs``) of ``budget`` full-trial equivalents, run as
    a worker runs it; its finished trials."""
    lad = Ladder(
        rungs=spec.rungs,
        eta=spec.reduction_factor,
        budget=float(budget),
        beta=spec.horizon_beta,
        share=spec.share_trunks,
    )
    sampler = make_sampler("tpe", seed=spec.seed, budget=lad.bottom_trials())
    study = _study(spec, prior, bounds, direction, sampler, BottomRungView(), budget)
    follow = prior == "rangetest"
    with tempfile.TemporaryDirectory(prefix="lrtune-trunks-") as folder:
        # --share-trunks keeps trunks in the artifact store; checkpoints stay off, as before.
        store = FileSystemArtifactStore(folder) if spec.share_trunks else None
        spec = dataclasses.replace(spec, checkpoint_every=0)
        objective = make_objective(
            spec,
            bounds,
            budget=budget,
            device="cpu",
            follow_bounds=follow,
            ladder=lad,
            checkpoint_store=store,
        )
        _drive(study, objective, lad, direction, follow)
    return [t for t in study.trials if t.state in FINISHED]


def _drive(study: optuna.Study, objective: Any, lad: Ladder, direction: str, follow: bool) -> None:
    """Run ``study`` as a worker runs it until its ladder says the budget is held."""
    while True:
        work = next_work(study.get_trials(deepcopy=False), lad, minimize=direction == "minimize")
        if work in ("full", "wait"):  # one process: nothing is in flight, so "wait" is the end
            break
        if isinstance(work, Promotion):
            promote(study, work, lad)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, Surplus))
        if follow and study.trials[-1].state == COMPLETE:
            maybe_widen(study)


def compute_study(
    spec: StudySpec,
    prior: str,
    bounds: tuple[float, float],
    direction: str,
    budget: int,
    epochs: int,
) -> Trials:
    """Full-length trials (``spec.pruner`` may stop them) until ``budget`` full-trial
    equivalents are trained; its finished trials in order."""
    sampler = make_sampler("tpe", seed=spec.seed, budget=budget)
    study = _study(
        spec, prior, bounds, direction, sampler, make_pruner(spec.pruner, epochs=epochs), budget
    )
    follow = prior == "rangetest"
    # The trial count is open (pruned trials are cheap): the objective's own budget check
    # must never call a trial surplus, so it gets a count no study here reaches.
    objective = make_objective(spec, bounds, budget=10**6, device="cpu", follow_bounds=follow)
    spent = 0.0
    while spent < budget - 1e-9:
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        last = study.trials[-1]
        spent += trained(last, epochs) if last.state in FINISHED else 0.0
        if follow and last.state == COMPLETE:
            maybe_widen(study)
    return [t for t in study.trials if t.state in FINISHED]


def best_config(trials: Trials, sign: float) -> Config | None:
    """The best complete, finite trial's (schedule, lr): what `lrtune export` writes."""
    done = [t for t in trials if t.state == COMPLETE and t.value is not None]
    done = [t for t in done if math.isfinite(t.value)]  # type: ignore[arg-type]
    if not done:
        return None
    t = min(done, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]
    if START_ATTR in t.user_attrs:
        # --share-trunks: it trained (and `export` writes) its bottom rung's warmup in
        # steps, not the default warmup_frac the oracle's runs have: scored as trained.
        schedule = json.dumps(t.user_attrs["config"]["schedule"], sort_keys=True)
        return str(t.params["schedule"]), float(t.params["lr"]), schedule  # type: ignore[return-value]
    return str(t.params["schedule"]), float(t.params["lr"])


#: True values of configurations whose schedule parameters are not the oracle's defaults.
_OWN: dict[tuple[str, float, str, int], float] = {}


def own_mean(runs: Runs, config: tuple[str, float, str], seeds: range) -> float:
    """Seed mean of (schedule, lr, its resolved schedule as JSON) at full length, trained
    here (``nan`` when a seed diverged), as ``Runs.mean`` does for default parameters."""
    values = []
    for seed in seeds:
        key = (*config, seed)
        if key not in _OWN:
            params = {k: v for k, v in json.loads(config[2]).items() if k != "name"}
            cfg = TrainConfig(
                lr=config[1],
                optimizer=runs.optimizer,
                schedule=config[0],
                schedule_params=params,
                seed=seed,
                epochs=runs.epochs,
                device="cpu",
            )
            res = train(task_ref(runs.task), cfg)
            _OWN[key] = res.value if not res.diverged else math.nan
        values.append(_OWN[key])
    return statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.nan


def prefix(trials: Trials, compute: float, epochs: int) -> Trials:
    """The trials whose cumulative compute (in order) is at most ``compute``."""
    out, spent = [], 0.0
    for t in trials:
        spent += trained(t, epochs)
        if spent > compute + 1e-9:
            break
        out.append(t)
    return out


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every arm of one task shares."""

    runs: Runs
    rungs: tuple[int, ...]
    eta: int
    budgets: list[int]
    own: list[int]  # --own-budgets
    direction: str
    best: float  # the oracle's best seed mean
    seeds: range  # the oracle's: the true value's
    beta: float = 0.0  # --horizon-beta of the rungs+horizon arm

    def regret(self, config: Config | None) -> float:
        """True regret of ``config`` (``inf``: nothing exported, or it diverged)."""
        sign = 1.0 if self.direction == "minimize" else -1.0
        if config is None:
            value = math.nan
        elif len(config) == 3:
            value = own_mean(self.runs, config, self.seeds)  # type: ignore[arg-type]
        else:
            value = self.runs.mean(config, self.seeds)
        if not math.isfinite(value):
            return math.inf
        return sign * (value - self.best) / max(abs(self.best), 1e-12)


def run_arm(
    label: str, spec: StudySpec, bounds: dict[str, tuple[float, float]], s: Setup
) -> tuple[dict[str, Any], list[float]]:
    """One arm of one repeat: its figures by key (``r{b}``, ``spent{b}``, …) and the
    seconds of its full-length trials."""
    prior = "none" if "no prior" in label else "rangetest"
    sign = 1.0 if s.direction == "minimize" else -1.0
    epochs, top = s.runs.epochs, len(s.rungs) - 1
    out: dict[str, Any] = {}
    if "rungs" in label:
        beta = s.beta if "horizon" in label else 0.0
        rspec = dataclasses.replace(
            spec,
            rungs=s.rungs,
            reduction_factor=s.eta,
            horizon_beta=beta,
            share_trunks="trunks" in label,
        )
        trials = rung_study(rspec, prior, bounds[prior], s.direction, s.budgets[-1])
        # A study of its own per budget (`--trials b`: its last configurations climb),
        # for the budgets --own-budgets names; prior arm only.
        for b in s.own if prior == "rangetest" and label == "tpe+prior rungs" else []:
            ts = rung_study(rspec, prior, bounds[prior], s.direction, b)
            out[f"own{b}"] = s.regret(best_config([t for t in ts if rung_of(t) == top], sign))
            out[f"ownspent{b}"] = sum(trained(t, epochs) for t in ts)
    else:
        pruner = label.rsplit(" ", 1)[1] if label.endswith(("hyperband", "median")) else "none"
        pspec = dataclasses.replace(spec, pruner=pruner)
        trials = compute_study(pspec, prior, bounds[prior], s.direction, s.budgets[-1], epochs)
    # With rungs only top-rung trials can be exported (as `lrtune export`).
    full = [t for t in trials if rung_of(t) == top] if "rungs" in label else trials
    results = {t.number for t in full}
    for b in s.budgets:
        seen = prefix(trials, b, epochs)
        export = best_config([t for t in seen if t.number in results], sign)
        out[f"r{b}"] = s.regret(export)
        out[f"spent{b}"] = sum(trained(t, epochs) for t in seen)
        out[f"trials{b}"] = len(seen)
        out[f"export{b}"] = export
    out["pruned"] = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) / len(trials)
    return out, [float(t.user_attrs.get("seconds", 0)) for t in full if t.state == COMPLETE]


def bench_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    runs = Runs(task)
    n_lrs = int(per_task_str(args.oracle_lrs, task, "21"))
    schedules = per_task_str(args.schedules, task, SCHEDULES.get(task, ",".join(SCHEDULE_NAMES)))
    scheds = tuple(schedules.split(","))
    rung_text = per_task_str(args.rungs, task, "")
    rungs = tuple(int(e) for e in rung_text.split(",") if e) or tuple(
        ladder(runs.epochs, args.reduction_factor)
    )
    grid = oracle(task, n_lrs, args.oracle_seeds, scheds, runs)
    log(f"{task}: oracle ready ({runs.trained} runs trained, {time.perf_counter() - t0:.0f} s)")
    best_schedule, best_lr, best = grid.best()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    own = [int(b) for b in args.own_budgets.split(",") if b]
    setup = Setup(
        runs,
        rungs,
        args.reduction_factor,
        budgets,
        own,
        grid.direction,
        best,
        range(args.oracle_seeds),
        args.horizon_beta,
    )
    arm_names = [a for a in args.arms.split(",") if a]
    base = StudySpec(
        task=task_ref(task), optimizer=runs.optimizer, schedules=scheds, trials=budgets[-1]
    )
    arms: dict[str, dict[str, list[Any]]] = {a: {} for a in arm_names}
    rt_fte: list[float] = []
    for r in range(args.first_repeat, args.first_repeat + args.repeats):
        spec = dataclasses.replace(base, seed=STUDY_SEED + r)
        rt = range_test(
            spec.task,
            optimizer=runs.optimizer,
            steps=spec.rangetest_steps,
            seeds=spec.rangetest_seeds,
            device="cpu",
            seed=RT_SEED + 10 * r,
        )
        bounds = {"rangetest": (rt.lr_low, rt.lr_high), "none": WIDE}
        full_secs: list[float] = []
        for label in arm_names:
            figures, secs = run_arm(label, spec, bounds, setup)
            full_secs += secs
            for key, value in figures.items():
                arms[label].setdefault(key, []).append(value)
            runs.save()
            log(f"  {task} repeat {r + 1}: {label} done ({time.perf_counter() - t0:.0f} s)")
        trial_s = statistics.median(full_secs) if full_secs else math.nan
        rt_fte.append(rt.seconds / trial_s if trial_s > 0 else math.nan)
    return {
        "task": task,
        "optimizer": runs.optimizer,
        "direction": grid.direction,
        "epochs": runs.epochs,
        "rungs": list(rungs),
        "eta": args.reduction_factor,
        "budgets": budgets,
        "oracle": {
            "lrs": n_lrs,
            "seeds": args.oracle_seeds,
            "schedules": list(scheds),
            "best": best,
            "best_lr": best_lr,
            "best_schedule": best_schedule,
        },
        "rt_fte": rt_fte,
        "arms": arms,
        "runs_trained": runs.trained,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-repeat", type=int, default=0)
    parser.add_argument("--budgets", default="3,5,10,20", help="full-trial equivalents")
    parser.add_argument(
        "--own-budgets",
        default="5",
        help="budgets at which tpe+prior rungs also runs a study of that budget (its end "
        "climbs) besides reading the largest budget's study at that compute",
    )
    parser.add_argument(
        "--arms", default=",".join(ARMS), help="comma list of " + ", ".join(ARMS + OPTIONAL_ARMS)
    )
    parser.add_argument("--oracle-lrs", default="21", help="N or N;task=N")
    parser.add_argument("--oracle-seeds", type=int, default=3, help="also the true value's")
    parser.add_argument("--schedules", default="", help="comma list, or list;task=list")
    parser.add_argument("--rungs", default="", help="E1,…,EN or …;task=E1,…,EN")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument(
        "--horizon-beta", type=float, default=0.5, help="beta of the rungs+horizon arm"
    )
    parser.add_argument("--from-json", nargs="+", metavar="OUT", help="render saved runs")
    args = parser.parse_args(argv)
    if args.from_json:
        metas = []
        for file in args.from_json:
            lines = [ln for ln in Path(file).read_text().splitlines() if ln.startswith("{")]
            metas.append(unfinite(json.loads(lines[-1])))
        results = [r for m in metas for r in m["tasks"]]
        print(markdown(results, [header_of(m) for m in metas]))
        return
    unknown = set(args.arms.split(",")) - set(ARMS + OPTIONAL_ARMS)
    if unknown or args.repeats < 1 or args.oracle_seeds < 2:
        parser.error(f"unknown arms {sorted(unknown)}, or --repeats < 1, or --oracle-seeds < 2")
    load_start = load_average()
    results = [bench_task(t, args) for t in args.tasks.split(",")]
    meta = run_meta(args, results, load_start)
    print(markdown(results, [header_of(meta)]))
    print(json.dumps(finite(meta)))


if __name__ == "__main__":
    main()
