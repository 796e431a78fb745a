"""A trial's training setup as it is recorded and exported: the batch size (effective and
micro), the parameter groups' multipliers, the task's own searched parameters.

``batch_size`` means the effective batch everywhere lrtune shows, stores and exports it:
the rows of one optimizer update, micro-batch × ``accumulate``; ``micro_batch_size`` (the
rows of one forward pass: ``Task.batch_size``, or a ``DataLoader``'s own) is kept beside it.
A searched batch size (``[params] batch_size``) is an effective batch: the micro-batch is it
divided by ``accumulate``, and a ``DataLoader`` is rebuilt with that batch size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch.utils.data import DataLoader, RandomSampler

from lrtune.errors import UserError
from lrtune.schedules import resolve_params
from lrtune.training.data import is_pair
from lrtune.training.groups import mults_of
from lrtune.training.optimizers import optimizer_defaults
from lrtune.training.tasks import Task

#: Keys of the exported ``optimizer`` block that are not the optimizer's keyword arguments.
NOT_KWARGS = ("name", "lr", "groups")


@dataclass(frozen=True)
class TrainConfig:
    """What to train with. ``epochs``/``batch_size``/``precision``/``accumulate``/
    ``clip_grad_norm`` of ``None`` take the task's own. ``batch_size`` is the effective
    batch (micro-batch × accumulate); ``lr_mults`` replace the ``lr_mult`` of the task's
    parameter groups by name; ``task_params`` go to the task's factory (``make(seed,
    **task_params)``) or, for a ``fit`` task, to ``hp.task``."""

    lr: float
    optimizer: str = "sgd"
    schedule: str = "constant"
    schedule_params: Mapping[str, Any] = field(default_factory=dict)
    optimizer_params: Mapping[str, float] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str | None = None
    accumulate: int | None = None
    clip_grad_norm: float | None = None
    lr_mults: Mapping[str, float] = field(default_factory=dict)
    task_params: Mapping[str, Any] = field(default_factory=dict)
    #: A TensorBoard run directory for this run (per-step LR and loss, per-epoch metric;
    #: :mod:`lrtune.training.tblog`); ``None``: none.
    log_dir: str | None = None


def micro_batch_size(task: Task) -> int:
    """The rows of one forward pass: a ``DataLoader``'s own batch size, else
    ``Task.batch_size``."""
    train = task.train
    if isinstance(train, DataLoader) and isinstance(train.batch_size, int):
        return train.batch_size
    return task.batch_size


def batch_sizes(task: Task, batch_size: int | None, accumulate: int) -> tuple[int, int]:
    """``(effective, micro)``: of a searched effective ``batch_size``, else the task's."""
    if batch_size is None:
        micro = micro_batch_size(task)
        return micro * accumulate, micro
    if batch_size % accumulate:
        raise UserError(
            f"batch_size {batch_size} is not a multiple of accumulate {accumulate}: the "
            "micro-batch is batch_size / accumulate"
        )
    return batch_size, batch_size // accumulate


def with_micro_batch(task: Task, micro: int) -> Task:
    """``task`` whose training batches have ``micro`` rows (a rebuilt ``DataLoader``)."""
    if micro == micro_batch_size(task):
        return task
    train = task.train
    if isinstance(train, DataLoader):
        if train.batch_size is None:
            raise UserError(
                f"task {task.name}: its train DataLoader has a batch_sampler, so lrtune cannot "
                "change its batch size; search batch_size in a fit (hp.micro_batch_size)"
            )
        loader = DataLoader(
            train.dataset,
            batch_size=micro,
            shuffle=isinstance(train.sampler, RandomSampler),
            collate_fn=train.collate_fn,
            num_workers=train.num_workers,
            pin_memory=train.pin_memory,
            drop_last=train.drop_last,
        )
        return replace(task, train=loader, batch_size=micro)
    if isinstance(train, (list, tuple)) and not is_pair(train):
        raise UserError(
            f"task {task.name}: its train data is a list of ready batches, so lrtune cannot "
            "change their size; give (X, y) tensors, a Dataset or a DataLoader"
        )
    return replace(task, batch_size=micro)


def resolve_config(
    t: Task,
    config: TrainConfig,
    total: int | None,
    *,
    batch: tuple[int, int],
    groups: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The trial's config in the form ``lrtune export`` writes (user attr ``config``):
    ``optimizer`` (with ``groups: {name: {lr_mult}}`` for a task with parameter groups),
    ``schedule``, ``batch_size`` (effective) and ``micro_batch_size``, ``task`` (the
    searched task parameters), ``epochs``, ``total_steps``, the training options."""
    sched = resolve_params(config.schedule, total or 1000, **dict(config.schedule_params))
    opt_kwargs = {**optimizer_defaults(config.optimizer), **dict(config.optimizer_params)}
    optimizer: dict[str, Any] = {"name": config.optimizer, "lr": config.lr, **opt_kwargs}
    if groups:
        optimizer["groups"] = mults_of(groups)
    out: dict[str, Any] = {
        "optimizer": optimizer,
        "schedule": {"name": config.schedule, **sched},
        "batch_size": batch[0],
        "micro_batch_size": batch[1],
        "epochs": config.epochs or t.epochs,
        "total_steps": total,
        "precision": config.precision or t.precision,
        "accumulate": config.accumulate or t.accumulate,
        "clip_grad_norm": config.clip_grad_norm
        if config.clip_grad_norm is not None
        else t.clip_grad_norm,
    }
    if config.task_params:
        out["task"] = dict(config.task_params)
    return out


def optimizer_kwargs(optimizer: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's keyword arguments of an exported ``optimizer`` block."""
    return {k: v for k, v in optimizer.items() if k not in NOT_KWARGS}
