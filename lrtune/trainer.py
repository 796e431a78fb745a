"""Training one task with one optimizer, peak LR and schedule: what every trial runs."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lrtune import interrupt
from lrtune.data import Batches
from lrtune.device import resolve_device
from lrtune.optimizers import check_optimizer, make_optimizer, optimizer_defaults
from lrtune.schedules import Schedule
from lrtune.tasks import Task, TaskFactory, resolve_task

log = logging.getLogger(__name__)

#: A positive training loss this many times its first value counts as diverged.
EXPLODED = 100.0


@dataclass(frozen=True)
class TrainConfig:
    """What to train with. ``epochs``/``batch_size`` of ``None`` take the task's own."""

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


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    ``value`` is the task's metric after the last epoch (``nan`` when diverged);
    ``history`` the metric after each epoch; ``config`` the resolved training config in the
    form ``lrtune export`` writes; ``model`` the trained model (for a :class:`Task`
    instance a copy: the task's own model is not trained).
    """

    value: float
    history: list[float]
    diverged: bool
    reason: str | None
    steps: int
    total_steps: int
    seconds: float
    config: dict[str, Any]
    metric_name: str = "val_loss"
    direction: str = "minimize"
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)


def evaluate(task: Task, model: torch.nn.Module, val: Batches) -> float:
    """The task's metric (default: mean validation loss) over the whole validation split."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for xb, yb in val.epoch(None, shuffle=False):
            preds.append(model(xb))
            targets.append(yb)
    model.train(was_training)
    p, t = torch.cat(preds), torch.cat(targets)
    if task.metric is None:
        return float(task.loss_fn(p, t))
    return float(task.metric(p, t))


def train(
    task: str | TaskFactory | Task,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``task`` from a fresh model built with ``config.seed``.

    A name or factory builds a new model with ``config.seed``. A :class:`Task` instance is
    trained on a deep copy of its model, so every call starts from the weights the task
    had when it was passed in and ``task.model`` is left untouched (not moved, not
    trained); ``config.seed`` then only sets the batch order and dropout.

    After each epoch ``on_epoch(epoch, value)`` is called (a trial reports to Optuna and
    may raise ``optuna.TrialPruned`` from there). A non-finite training loss or metric ends
    the run with ``diverged=True`` instead of an exception. Same seed, same result on CPU.
    torch's global RNG state is the same afterwards as before.
    """
    check_optimizer(config.optimizer)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    # Seeding is needed (model init, dropout) but must not leak: the caller's RNG streams
    # continue afterwards as if train() had not run.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _train(task, config, on_epoch)


def _train(
    task: str | TaskFactory | Task,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None,
) -> TrainResult:
    if isinstance(task, Task):
        # Training the caller's module in place would make a second call start from the
        # first one's trained weights (and oracle.dense_grid average such runs).
        t = replace(task, model=copy.deepcopy(task.model))
    else:
        t = resolve_task(task)(config.seed)
    device = resolve_device(config.device)
    batch_size = config.batch_size or t.batch_size
    epochs = config.epochs or t.epochs
    model = t.model.to(device)
    model.train()
    train_batches = Batches(t.train, batch_size, device)
    val_batches = Batches(t.val, max(batch_size, 1024), device)
    total = epochs * len(train_batches)
    schedule = Schedule(config.schedule, total, **dict(config.schedule_params))
    sched = dict(schedule.params)
    opt_kwargs = {**optimizer_defaults(config.optimizer), **dict(config.optimizer_params)}
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **opt_kwargs)
    resolved = {
        "optimizer": {"name": config.optimizer, "lr": config.lr, **opt_kwargs},
        "schedule": {"name": config.schedule, **sched},
        "batch_size": batch_size,
        "epochs": epochs,
        "total_steps": total,
    }
    generator = torch.Generator().manual_seed(config.seed)
    history: list[float] = []
    step = 0
    start = time.perf_counter()
    reason: str | None = None
    first_loss: float | None = None
    for epoch in range(epochs):
        for xb, yb in train_batches.epoch(generator):
            interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)
            lr = config.lr * schedule.factor(step)  # validated once, a table lookup
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = t.loss_fn(model(xb), yb)
            # One host sync per step is cheap next to a trial; it lets a diverged run stop
            # at once instead of training on NaNs for the rest of its budget.
            value_now = loss.item()
            if not math.isfinite(value_now):
                reason = f"non-finite training loss at step {step} (lr={lr:.3g})"
                break
            if first_loss is None:
                first_loss = value_now
            elif first_loss > 0 and value_now > EXPLODED * first_loss:
                # Finite but astronomically high (1e13 .. 1e27 seen at high LRs): the run has
                # diverged as surely as with a NaN; scoring it would flatten every plot and
                # give samplers a meaningless number.
                reason = (
                    f"training loss exploded to {value_now:.3g} at step {step} "
                    f"({EXPLODED:g}x its first value; lr={lr:.3g})"
                )
                break
            loss.backward()
            optimizer.step()
            step += 1
        if reason is None:
            value = evaluate(t, model, val_batches)
            if not math.isfinite(value):
                reason = f"non-finite {t.metric_name} after epoch {epoch + 1}"
        if reason is not None:
            log.info("diverged: %s", reason)
            break
        history.append(value)
        if on_epoch is not None:
            on_epoch(epoch, value)
    return TrainResult(
        value=math.nan if reason else history[-1],
        history=history,
        diverged=reason is not None,
        reason=reason,
        steps=step,
        total_steps=total,
        seconds=time.perf_counter() - start,
        config=resolved,
        metric_name=t.metric_name,
        direction=t.direction,
        model=model,
    )
