"""The search space of a study: peak ``lr`` (log scale), ``schedule``, schedule params,
optimizer params."""

from __future__ import annotations

import math
from typing import Any

import optuna

from lrtune.logspace import log_grid
from lrtune.search.spec import StudySpec


def suggest(
    trial: optuna.Trial, spec: StudySpec, bounds: tuple[float, float]
) -> tuple[float, str, dict[str, Any]]:
    """Ask ``trial`` for ``lr``, ``schedule`` and the schedule's searched parameters.

    Parameters of a schedule are named ``"{schedule}.{param}"`` so that they stay separate
    in Optuna's (conditional) search space.
    """
    lr = trial.suggest_float("lr", bounds[0], bounds[1], log=True)
    schedule = str(trial.suggest_categorical("schedule", list(spec.schedules)))
    params: dict[str, Any] = {}
    if isinstance(trial.study.sampler, optuna.samplers.GridSampler):
        return lr, schedule, params  # not gridded: see grid_space
    for pname, rng in spec.params.get(schedule, {}).items():
        key = f"{schedule}.{pname}"
        if rng[0] == "categorical":
            params[pname] = trial.suggest_categorical(key, list(rng[1]))
        elif rng[0] == "int":
            params[pname] = trial.suggest_int(key, int(rng[1]), int(rng[2]))
        else:
            params[pname] = trial.suggest_float(key, rng[1], rng[2], log=bool(rng[3]))
    return lr, schedule, params


def suggest_optimizer(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The optimizer parameters of ``trial``: the fixed ones of ``spec.optimizer_params``
    and the searched ones of ``[params.optimizer]`` (trial params ``optimizer.<name>``).

    The grid sampler searches ``lr`` × ``schedule`` only: under it searched parameters keep
    lrtune's defaults, as schedule parameters do.
    """
    params = dict(spec.optimizer_params)
    if isinstance(trial.study.sampler, optuna.samplers.GridSampler):
        return params
    for pname, rng in spec.params.get("optimizer", {}).items():
        params[pname] = trial.suggest_float(f"optimizer.{pname}", rng[1], rng[2], log=bool(rng[3]))
    return params


def grid_space(spec: StudySpec, bounds: tuple[float, float]) -> dict[str, list[Any]]:
    """Optuna ``GridSampler`` space: log-spaced LR points inside ``bounds`` × schedules.

    Schedule parameters are not gridded (a grid cannot be conditional); they keep their
    defaults under the grid sampler.
    """
    return {
        "lr": log_grid(bounds[0], bounds[1], spec.grid_points),
        "schedule": list(spec.schedules),
    }


def grid_size(spec: StudySpec) -> int:
    """Number of points of the grid sampler's grid."""
    return spec.grid_points * len(spec.schedules)


def decades(bounds: tuple[float, float]) -> float:
    """Width of ``bounds`` in decades."""
    return math.log10(bounds[1] / bounds[0])
