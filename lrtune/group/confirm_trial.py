"""One trial of a group's confirm study (:mod:`lrtune.group.confirm`): its enqueued
configuration trained on each fresh seed in turn, through the search trials' own path
(``run_task``, ``trial_errors``); its value is the mean over the seeds and its user attr
``confirm`` the per-seed record (:func:`confirm_record`). Torch is imported inside the
objective only.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from lrtune.group.confirm import earlier_duplicate, ensure

if TYPE_CHECKING:
    from lrtune.training.trainer import TrainConfig


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
        duplicate = earlier_duplicate(trial, params)
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
    from lrtune.search.trial_config import trial_config

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
        trial_config(
            spec,
            lr=lr,
            schedule=schedule,
            schedule_params=sched_params,
            optimizer_params=opt_params,
            setup=setup,
            seed=seed,
            device=device,
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
