"""The user's setup as searched dimensions: the effective batch size, the parameter groups'
multipliers and the task's own parameters, and the prior's LR bounds that follow the batch.

Trial params: ``batch_size`` (categorical over powers of two), ``lr_mult.<group>`` (log
scale) and ``task.<name>`` (``[params.task]``). The grid sampler searches LR × schedule
only: under it these keep the task's own values, as schedule parameters do.

With ``--prior rangetest`` the range test measured the bounds at one batch size ``B0`` (the
task's effective batch); a trial at batch ``B`` searches them moved by the scaling rule:
``× B/B0`` (``linear``, Goyal et al. 2017, for SGD), ``× sqrt(B/B0)`` (``sqrt``, for Adam
and the other adaptive optimizers: Malladi et al. 2022) or not at all (``none``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from lrtune.search.spec import StudySpec
from lrtune.training.groups import task_groups
from lrtune.training.loading import resolve_task
from lrtune.training.resolved import batch_sizes, with_micro_batch
from lrtune.training.tasks import Task

#: The exponent of ``B / B0`` by which each rule moves the LR bounds.
SCALING_POWER: dict[str, float] = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}
#: Optimizers whose default rule is ``linear``; every other one is adaptive: ``sqrt``.
LINEAR_BY_DEFAULT: tuple[str, ...] = ("sgd", "schedulefree_sgd")


@dataclass(frozen=True, kw_only=True)
class Setup:
    """A trial's searched setup: ``None`` / empty where it keeps the task's own."""

    batch_size: int | None = None
    lr_mults: Mapping[str, float] = field(default_factory=dict)
    task_params: Mapping[str, Any] = field(default_factory=dict)


def scaling_rule(spec: StudySpec) -> str:
    """``spec.batch_scaling``, else linear for SGD and sqrt for the adaptive optimizers."""
    if spec.batch_scaling is not None:
        return spec.batch_scaling
    return "linear" if spec.optimizer in LINEAR_BY_DEFAULT else "sqrt"


def scaled_bounds(
    bounds: tuple[float, float], batch: int, reference: int, rule: str
) -> tuple[float, float]:
    """``bounds`` measured at batch ``reference``, moved to batch ``batch`` by ``rule``."""
    factor = (batch / reference) ** SCALING_POWER[rule]
    return bounds[0] * factor, bounds[1] * factor


def suggest_setup(trial: optuna.Trial, spec: StudySpec) -> Setup:
    """Ask ``trial`` for the batch size, the multipliers and the task's parameters the spec
    searches (nothing under the grid sampler)."""
    if isinstance(trial.study.sampler, optuna.samplers.GridSampler):
        return Setup()
    params = spec.params
    batch = None
    if "batch_size" in params:
        sizes: list[Any] = params["batch_size"][1]  # type: ignore[index]  # a range, not a table
        batch = int(trial.suggest_categorical("batch_size", list(sizes)))
    mults = {
        name: trial.suggest_float(f"lr_mult.{name}", rng[1], rng[2], log=True)
        for name, rng in params.get("lr_mult", {}).items()
    }
    task = {
        name: _suggest(trial, f"task.{name}", rng) for name, rng in params.get("task", {}).items()
    }
    return Setup(batch_size=batch, lr_mults=mults, task_params=task)


def _suggest(trial: optuna.Trial, key: str, rng: list[Any]) -> Any:
    if rng[0] == "categorical":
        return trial.suggest_categorical(key, list(rng[1]))
    if rng[0] == "int":
        return trial.suggest_int(key, int(rng[1]), int(rng[2]), log=bool(rng[3]))
    return trial.suggest_float(key, float(rng[1]), float(rng[2]), log=bool(rng[3]))


def setup_of(params: Mapping[str, Any]) -> Setup:
    """The setup a finished trial searched, from its params (to train it again)."""
    batch = params.get("batch_size")
    return Setup(
        batch_size=int(batch) if batch is not None else None,
        lr_mults={
            k[len("lr_mult.") :]: float(v) for k, v in params.items() if k.startswith("lr_mult.")
        },
        task_params={k[len("task.") :]: v for k, v in params.items() if k.startswith("task.")},
    )


def example_setup(spec: StudySpec) -> Setup:
    """A setup with one value of each searched dimension (the low end, the first choice):
    what building the task once checks before any study is created."""
    params = spec.params
    mults = {name: float(rng[1]) for name, rng in params.get("lr_mult", {}).items()}
    task = {
        name: rng[1][0] if rng[0] == "categorical" else rng[1]
        for name, rng in params.get("task", {}).items()
    }
    batch: Any = params.get("batch_size")  # ["categorical", [sizes]]
    return Setup(batch_size=int(batch[1][0]) if batch else None, lr_mults=mults, task_params=task)


def build_checked(spec: StudySpec) -> Task:
    """The task built once (seed ``spec.seed``) with one value of each searched dimension,
    so that a mistake is one line before any study is created: ``[params.task]`` keys the
    factory does not take, an ``[params.lr_mult]`` group the task's ``param_groups`` does
    not name, a batch size that is no multiple of ``accumulate`` or data whose batch size
    lrtune cannot change."""
    example = example_setup(spec)
    task = resolve_task(spec.task)(spec.seed, **dict(example.task_params))
    task_groups(task.param_groups, task.model, task.name, dict(example.lr_mults))
    if "batch_size" in spec.params:
        accumulate = spec.accumulate or task.accumulate
        for size in spec.params["batch_size"][1]:  # type: ignore[index]
            _, micro = batch_sizes(task, int(size), accumulate)
        if task.fit is None:
            with_micro_batch(task, micro)
    return task


def setup_lines(spec: StudySpec) -> list[str]:
    """The searched setup, for the dashboard's study note."""
    params = spec.params
    lines = []
    if "batch_size" in params:
        sizes: list[Any] = params["batch_size"][1]  # type: ignore[index]
        lines.append(
            f"- batch size searched: {', '.join(map(str, sizes))} (the prior's bounds "
            f"follow it: {scaling_rule(spec)})"
        )
    for table in ("lr_mult", "task"):
        for name, rng in params.get(table, {}).items():
            shown = rng[1] if rng[0] == "categorical" else f"[{rng[1]:g}, {rng[2]:g}]"
            lines.append(f"- {table}.{name} searched: {shown}{' (log)' if rng[-1] is True else ''}")
    return lines
