"""Confirmed winners: re-train a group's best configurations on fresh training seeds.

Every search trial trains with the same seed, so the best single-seed trial of a group is
partly luck (two seeds of one configuration differ by 8-13% on small tasks). Once every
study of a group has its budget, the ``confirm`` (K) best distinct configurations of the
whole group are enqueued in one extra study, ``{group}.confirm`` (same direction). Each of
its trials trains its configuration on ``confirm_seeds`` (S) fresh seeds in turn; its value
is the mean over the seeds, and its user attr ``confirm`` is
``{"seeds": [...], "values": [...], "mean": m, "sd": sd}``.

The confirm study carries ``confirm_of`` (not ``group``), so it is never a row of the
comparison. Whoever first sees the budgets met (``lrtune study`` in-process or a worker)
creates it; :func:`ensure` is idempotent, and a duplicate enqueued by two workers at once
steps back as ``surplus`` like an over-budget search trial. A seed that diverges makes the
trial PRUNED (``diverged``, ``prune_reason`` naming the seed), like a diverged search
trial: it counts as done, shows in the dashboard, and ranks last.

This module imports torch only inside the objective; :mod:`lrtune.confirmed` reads the
confirm study for the comparison, its dashboard note and ``export``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from lrtune.search.ladder import Ladder, study_usage, top_rung
from lrtune.search.states import FINISHED, group_study_names, unfinished_studies

if TYPE_CHECKING:
    from lrtune.training.trainer import TrainConfig

log = logging.getLogger(__name__)

#: Confirmation seeds are ``spec.seed + SEED_OFFSET + i``: never the search's own seed.
SEED_OFFSET = 1000
#: Trials of the confirm study that hold (or will hold) a confirmation.
_PRESENT = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def confirm_name(group: str) -> str:
    """The name of ``group``'s confirm study."""
    return f"{group}.confirm"


def confirm_seeds(seed: int, count: int) -> list[int]:
    """The ``count`` fresh training seeds derived from the spec's ``seed``."""
    return [seed + SEED_OFFSET + i for i in range(count)]


def is_confirm_study(attrs: dict[str, Any]) -> bool:
    """Do these study user attrs belong to a confirm study?"""
    return "confirm_of" in attrs


def params_key(params: dict[str, Any]) -> str:
    """Configurations are the same when their params are (``lr``, ``schedule``, ...)."""
    return json.dumps(params, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """A finished search trial proposed for confirmation."""

    study: str
    trial: int
    value: float
    params: dict[str, Any]


def _sign(study: optuna.Study) -> int:
    return 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1


def candidates(studies: list[optuna.Study]) -> list[Candidate]:
    """The group's complete finite trials (with rungs, the top rung's), best single-seed
    value first, one per distinct configuration (the earlier study and trial wins a tie)."""
    if not studies:
        return []
    sign = _sign(studies[0])
    found = []
    for index, s in enumerate(studies):
        complete = s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for t in top_rung(complete, Ladder.from_attrs(s.user_attrs)):
            if t.value is not None and math.isfinite(t.value):
                found.append((sign * t.value, index, t.number, s.study_name, t))
    found.sort(key=lambda x: x[:3])
    seen: set[str] = set()
    out = []
    for _, _, number, name, t in found:
        key = params_key(t.params)
        if key not in seen:
            seen.add(key)
            out.append(Candidate(name, number, float(t.value or 0.0), dict(t.params)))
    return out


def _budgets_met(studies: list[optuna.Study]) -> bool:
    for s in studies:
        done, _ = study_usage(s)  # with rungs, compute
        if done < float(s.user_attrs.get("budget", 0)):
            return False
    return bool(studies)


def ensure(storage: optuna.storages.BaseStorage, group: str) -> optuna.Study | None:
    """Create ``{group}.confirm`` and enqueue the configurations it still lacks, once every
    study of ``group`` has its budget; ``None`` when confirmation is off or not due.

    Safe to call again (and from two workers at once): a configuration already waiting,
    running or done is not enqueued again. The study's ``budget`` is the number of
    distinct configurations it must confirm; ``asked``/``found`` record ``--confirm`` and
    the distinct finished configurations there were.
    """
    if unfinished_studies(storage, group):
        return None  # a study of the group is not fully created: its budget is to come
    studies = [
        optuna.load_study(study_name=n, storage=storage) for n in group_study_names(storage, group)
    ]
    if not _budgets_met(studies):
        return None
    spec = dict(studies[0].user_attrs.get("spec", {}))
    asked = int(spec.get("confirm", 3))
    count = int(spec.get("confirm_seeds", 2))
    if asked <= 0:
        return None
    # A baseline arm (lrtune.baseline) trains another optimizer than the spec's: the
    # confirmation re-trains the schedule search's configurations only.
    found = candidates([s for s in studies if "baseline" not in s.user_attrs])
    if not found:
        return None
    first = studies[0]
    study = optuna.create_study(
        storage=storage,
        study_name=confirm_name(group),
        direction=first.direction,
        load_if_exists=True,
    )
    if not is_confirm_study(study.user_attrs):
        attrs: dict[str, Any] = {
            key: first.user_attrs[key]
            for key in ("lrtune_version", "task", "task_dir", "spec", "epochs", "metric", "storage")
            if key in first.user_attrs
        }
        attrs.update(
            sampler="confirm",
            prior="-",
            seeds=confirm_seeds(int(spec.get("seed", 0)), count),
        )
        for name, value in attrs.items():
            study.set_user_attr(name, value)
        # Last: a confirm study is one (is_confirm_study) only once every attr is written,
        # so the next call writes again what a crash cut short.
        study.set_user_attr("confirm_of", group)
    elif len(study.user_attrs.get("seeds", [])) != count:
        log.warning(
            "%s keeps its seeds %s (confirm_seeds changed to %d after it was created)",
            study.study_name,
            study.user_attrs.get("seeds"),
            count,
        )
    wanted = found[:asked]
    present = {
        params_key(t.user_attrs.get("params", {}))
        for t in study.get_trials(deepcopy=False)
        if t.state in _PRESENT and _counts_for_key(t)
    }
    for c in wanted:
        key = params_key(c.params)
        if key not in present:
            study.enqueue_trial(
                c.params,
                user_attrs={
                    "source": {"study": c.study, "trial": c.trial, "value": c.value},
                    "params": c.params,
                },
                skip_if_exists=False,
            )
            present.add(key)
    study.set_user_attr("asked", asked)
    study.set_user_attr("found", len(found))
    study.set_user_attr("budget", len(present))
    return study


def _counts_for_key(trial: optuna.trial.FrozenTrial) -> bool:
    # A fresh trial a worker opened with nothing to confirm has no params: it holds nothing.
    return "params" in trial.user_attrs


def join(
    storage: optuna.storages.BaseStorage,
    names: list[str],
    loaded: dict[str, Any],
    *,
    load_study: Callable[[str], tuple[optuna.Study, Callable[[optuna.Trial], float], int]],
) -> bool:
    """The worker's hook once its studies have their budgets: add (or refresh) the confirm
    study of each of their groups to ``names``/``loaded``, loaded by ``load_study`` (the
    worker's, which checks the task it may import, as for any study). True when
    confirmations are left to run."""
    groups: list[str] = []
    for n in names:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(n))
        g = attrs.get("confirm_of") or attrs.get("group")
        if isinstance(g, str) and g not in groups:
            groups.append(g)
    work = False
    for g in groups:
        study = ensure(storage, g)
        if study is None:
            continue
        name = study.study_name
        budget = int(study.user_attrs["budget"])
        if name not in loaded:
            names.append(name)
            loaded[name] = load_study(name)
        loaded[name] = (loaded[name][0], loaded[name][1], budget)
        done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        work = work or done < budget
    return work


def load(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    task: str,
    device: str,
    worker: str | None,
) -> tuple[optuna.Study, Callable[[optuna.Trial], float], int]:
    """A confirm study as the worker runs it: ``(study, objective, budget)``, training
    ``task`` (the one the worker's trust check let through: ``lrtune.joining.trusted_task``),
    never another the study names."""
    from lrtune.search.spec import StudySpec

    # Only enqueued trials train; a random sampler keeps a stray fresh trial cheap.
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    attrs = study.user_attrs
    spec = StudySpec.from_dict(attrs["spec"])
    spec = dataclasses.replace(spec, task=task)
    seeds = [int(s) for s in attrs["seeds"]]
    objective = make_confirm_objective(spec, seeds, device=device, worker=worker)
    return study, objective, int(attrs.get("budget", 0))


def make_confirm_objective(
    spec: Any, seeds: list[int], *, device: str = "auto", worker: str | None = None
) -> Callable[[optuna.Trial], float]:
    """Train the trial's enqueued configuration on each of ``seeds``; the mean is its value."""

    def objective(trial: optuna.Trial) -> float:
        from lrtune.search.objective import Surplus, run_task, trial_errors

        if worker is not None:
            trial.set_user_attr("worker", worker)
        params = trial.user_attrs.get("params")
        if not isinstance(params, dict):
            group = str(trial.study.user_attrs.get("confirm_of"))
            ensure(trial.study._storage, group)  # re-queue a confirmation that failed
            trial.set_user_attr("fail_reason", "surplus: no configuration waiting")
            raise Surplus
        duplicate = _earlier_duplicate(trial, params)
        if duplicate is not None:
            trial.set_user_attr(
                "fail_reason", f"surplus: trial {duplicate} confirms this configuration"
            )
            raise Surplus
        values: list[float | None] = []
        seconds = 0.0
        config: dict[str, Any] | None = None
        for seed, train_config in zip(
            seeds, _seed_configs(trial, spec, params, seeds, device), strict=True
        ):
            # The search trials' one error path: FAIL with fail_reason, Ctrl-C and a lost
            # storage connection handled as in any trial. run_trial: a task with its own
            # fit() is confirmed through it too.
            with trial_errors(trial):
                result = run_task(spec.task, train_config, lambda _value, _step: None)
            seconds += result.seconds
            config = config or result.config
            if result.diverged:
                values.append(None)
                record = confirm_record(seeds, values)
                record["diverged"] = f"seed {seed}: {result.reason}"
                trial.set_user_attr("confirm", record)
                trial.set_user_attr("config", config)
                trial.set_user_attr("seconds", round(seconds, 4))
                trial.set_user_attr("diverged", True)
                reason = f"diverged on seed {seed}: {result.reason}"
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
            values.append(float(result.value))
        record = confirm_record(seeds, values)
        trial.set_user_attr("confirm", record)
        trial.set_user_attr("config", config)
        trial.set_user_attr("seconds", round(seconds, 4))
        return float(record["mean"])

    return objective


def _seed_configs(
    trial: optuna.Trial, spec: Any, params: dict[str, Any], seeds: list[int], device: str
) -> list[TrainConfig]:
    """The enqueued configuration ``params`` as one training config per seed; its ``lr``
    and ``schedule`` are suggested on ``trial`` (so the trial shows them as params)."""
    from lrtune.search.dims import setup_of
    from lrtune.training.trainer import TrainConfig

    lr = float(trial.suggest_float("lr", *_around(float(params["lr"]), spec), log=True))
    schedule = str(params.get("schedule", "constant"))
    trial.suggest_categorical("schedule", sorted({*spec.schedules, schedule}))
    sched_params = {
        k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(schedule + ".")
    }
    # The optimizer parameters the trial searched, over the spec's fixed ones.
    opt_params = {
        **spec.optimizer_params,
        **{k[len("optimizer.") :]: v for k, v in params.items() if k.startswith("optimizer.")},
    }
    setup = setup_of(params)  # the batch size, multipliers and task parameters it searched
    return [
        TrainConfig(
            lr=lr,
            optimizer=spec.optimizer,
            schedule=schedule,
            schedule_params=sched_params,
            optimizer_params=opt_params,
            epochs=spec.epochs,
            seed=seed,
            device=device,
            precision=spec.precision,
            accumulate=spec.accumulate,
            clip_grad_norm=spec.clip_grad_norm,
            batch_size=setup.batch_size,
            lr_mults=setup.lr_mults,
            task_params=setup.task_params,
        )
        for seed in seeds
    ]


def confirm_record(seeds: list[int], values: list[float | None]) -> dict[str, Any]:
    """The ``confirm`` user attr: seeds, values (``None``: diverged), mean and sd (``None``
    when a seed diverged; sd 0 for one seed)."""
    ok = [v for v in values if v is not None]
    complete = len(ok) == len(seeds) and all(math.isfinite(v) for v in ok)
    mean = statistics.fmean(ok) if complete else None
    sd = (statistics.stdev(ok) if len(ok) > 1 else 0.0) if complete else None
    return {"seeds": list(seeds), "values": list(values), "mean": mean, "sd": sd}


def _around(lr: float, spec: Any) -> tuple[float, float]:
    # Widened bounds may have moved past the spec's; the fixed value must lie inside.
    return min(lr, float(spec.lr_low)), max(lr, float(spec.lr_high))


def _earlier_duplicate(trial: optuna.Trial, params: dict[str, Any]) -> int | None:
    key = params_key(params)
    for t in trial.study.get_trials(deepcopy=False, states=_PRESENT):
        if t.number < trial.number and params_key(t.user_attrs.get("params", {})) == key:
            return t.number
    return None


def set_options(storage: optuna.storages.BaseStorage, group: str, asked: int, seeds: int) -> None:
    """Store ``confirm``/``confirm_seeds`` in the spec of every study of ``group``, so a
    re-run with another ``--confirm`` reaches the workers (studies keep the rest)."""
    for name in group_study_names(storage, group):
        study_id = storage.get_study_id_from_name(name)
        spec = dict(storage.get_study_user_attrs(study_id).get("spec", {}))
        if spec.get("confirm") != asked or spec.get("confirm_seeds") != seeds:
            spec.update(confirm=asked, confirm_seeds=seeds)
            storage.set_study_user_attr(study_id, "spec", spec)


def group_of(attrs: dict[str, Any]) -> str | None:
    """The group a study (search or confirm) belongs to."""
    group = attrs.get("confirm_of") or attrs.get("group")
    return group if isinstance(group, str) else None
