"""Training one task with one optimizer, peak LR and schedule: what every trial runs.

:func:`train` is lrtune's own loop (any batches, mixed precision, gradient accumulation and
clipping); :func:`run_trial` runs a trial either through it or through the task's own
``fit(hp, report)`` (SPEC "Your own training code").
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from lrtune import interrupt, preempt
from lrtune.device import resolve_device
from lrtune.errors import UserError
from lrtune.schedules import Schedule
from lrtune.training.checkpoint import Checkpoints, Loop, capture, replay, restore, same_shapes
from lrtune.training.data import Batches, is_pair
from lrtune.training.fit import run_fit
from lrtune.training.groups import at_base_lr, set_base_lr, task_groups
from lrtune.training.loading import resolve_task
from lrtune.training.optimizers import (
    check_optimizer,
    evaluating,
    has_modes,
    make_optimizer,
)
from lrtune.training.resolved import (
    TrainConfig,
    batch_sizes,
    optimizer_kwargs,
    resolve_config,
    with_micro_batch,
)
from lrtune.training.result import Report, TrainResult
from lrtune.training.tasks import Task, TaskFactory
from lrtune.training.tblog import RunLog
from lrtune.training.trunk import Trunks, identity_of
from lrtune.training.updater import Updater, batch_loss, check_precision
from lrtune.training.watch import DivergenceWatch

log = logging.getLogger(__name__)


def evaluate(
    task: Task,
    model: torch.nn.Module,
    val: Batches,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> float:
    """The task's metric over the whole validation split: ``task.evaluate(model, val)``;
    else ``metric`` (or ``loss_fn``) on the stacked predictions of ``(x, y)`` batches; else
    the mean ``step_loss`` over the batches."""
    was_training = model.training
    model.eval()
    preds, targets, losses = [], [], []
    step_loss = batch_loss(task)
    try:
        with torch.no_grad(), autocast():
            if task.evaluate is not None:
                return float(task.evaluate(model, val))
            for batch in val:
                if is_pair(batch) and (task.step_loss is None or task.metric is not None):
                    preds.append(model(batch[0]))
                    targets.append(batch[1])
                else:
                    losses.append(step_loss(model, batch).detach().float())
    finally:
        model.train(was_training)
    if losses:
        return float(torch.stack(losses).mean())
    p, t = torch.cat(preds), torch.cat(targets)
    if p.dtype in (torch.bfloat16, torch.float16):
        p = p.float()
    if task.metric is None:
        return float(task.loss_fn(p, t))
    return float(task.metric(p, t))


def _build(task: str | TaskFactory | Task, config: TrainConfig) -> Task:
    if isinstance(task, Task):
        # Training the caller's module in place would make a second call start from the
        # first one's trained weights (and oracle.dense_grid average such runs).
        return replace(task, model=copy.deepcopy(task.model))
    return resolve_task(task)(config.seed, **dict(config.task_params))


@contextlib.contextmanager
def _seeded(seed: int) -> Any:
    # Seeding is needed (model init, dropout) but must not leak: the caller's RNG streams
    # continue afterwards as if the run had not happened.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train(
    task: str | TaskFactory | Task,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``task`` with lrtune's loop from a fresh model built with ``config.seed``.

    A name or factory builds a new model with ``config.seed``. A :class:`Task` instance is
    trained on a deep copy of its model, so every call starts from the weights the task
    had when it was passed in and ``task.model`` is left untouched (not moved, not
    trained); ``config.seed`` then only sets the batch order and dropout.

    After each epoch ``on_epoch(epoch, value)`` is called (a trial reports to Optuna and
    may raise ``optuna.TrialPruned`` from there). A non-finite training loss or metric ends
    the run with ``diverged=True`` instead of an exception. Same seed, same result on CPU.
    torch's global RNG state is the same afterwards as before. Raises :class:`UserError`
    for a bad precision (fp16 without CUDA), accumulate or empty data.
    """
    check_optimizer(config.optimizer)
    with _seeded(config.seed):
        return _train(_build(task, config), config, on_epoch)


def run_trial(
    task: str | TaskFactory | Task,
    config: TrainConfig,
    report: Report,
    *,
    checkpoints: Checkpoints | None = None,
    trunks: Trunks | None = None,
) -> TrainResult:
    """One trial: the task's own ``fit(hp, report)`` when it has one, else :func:`train`.

    ``report(value, step)`` records an intermediate value (and may raise
    ``optuna.TrialPruned``); lrtune's loop calls it after every epoch with the epoch index.
    ``hp`` is a :class:`TrialParams`. A ``fit`` returning NaN or inf gives a diverged
    result with that reason; one returning no number raises ``TypeError``. With
    ``checkpoints`` the trial resumes from its last checkpoint and writes new ones
    (:mod:`lrtune.training.checkpoint`); on SIGTERM in a worker it raises
    :class:`lrtune.preempt.Preempted` at the next update boundary, its state saved. With
    ``trunks`` (``--share-trunks``; lrtune's loop only) it starts from its source's trunk
    and keeps its own (:mod:`lrtune.training.trunk`).
    """
    check_optimizer(config.optimizer)
    with _seeded(config.seed):
        t = _build(task, config)
        if t.fit is None:
            return _train(t, config, lambda e, v: report(v, e), checkpoints, trunks)
        return run_fit(t, config, report, checkpoints)


def _resumable(
    checkpoints: Checkpoints | None, loop: Loop, task: str, seed: int, config: dict[str, Any]
) -> dict[str, Any] | None:
    """The trial's last checkpoint, put back into ``loop``, or ``None`` (none, or one of
    another task or configuration: the trial starts over)."""
    if checkpoints is None:
        return None
    checkpoints.identity.update(task=task, seed=seed, config=config)
    state = checkpoints.load()
    if state is None:
        return None
    problem = same_shapes(loop.model, state["model"])
    if problem is not None:
        log.warning("checkpoint not resumed, starting over: %s", problem)
        return None
    restore(loop, state)
    checkpoints.resumed(int(state["epoch"]), loop.history)
    return state


def _options(t: Task, config: TrainConfig) -> tuple[torch.device, str, int, float | None]:
    """The device, precision, accumulation and clipping a run uses (the config's, else the
    task's), checked."""
    device = resolve_device(config.device)
    precision = config.precision or t.precision
    check_precision(precision, device)
    k = config.accumulate or t.accumulate
    if not isinstance(k, int) or k < 1:
        raise UserError(f"accumulate must be a positive int, got {k!r}")
    clip = config.clip_grad_norm if config.clip_grad_norm is not None else t.clip_grad_norm
    return device, precision, k, clip


@dataclass(frozen=True, kw_only=True)
class _EpochRun:
    """One epoch of :func:`_train`: its index, the RNG states it started from (what a
    hand-back checkpoint replays), the schedule and the peak LR."""

    epoch: int
    epoch_start: Any
    schedule: Schedule
    lr: float
    #: ``keep(run, seen)``: keeps the trunk if it ends here (``--share-trunks``)
    keep: Callable[[_EpochRun | None, int], None] | None = None


def _train_epoch(
    loop: Loop,
    batches: Iterator[tuple[int, Any]],
    run: _EpochRun,
    *,
    k: int,
    n_batches: int,
    tb: RunLog,
    checkpoints: Checkpoints | None,
) -> str | None:
    """Train one epoch's updates of ``k`` micro-batches; why it diverged, else ``None``.

    On SIGTERM in a worker it checkpoints (when it can) and hands the trial back."""
    updater, optimizer = loop.updater, loop.optimizer
    reason: str | None = None
    pending, group, update_loss = 0, 1, 0.0
    for seen, batch in batches:
        if pending == 0 and checkpoints is not None and checkpoints.due_in_epoch():
            # SIGTERM in a worker, or a long epoch under the default interval (a SIGKILL
            # then loses at most AUTO_SECONDS of it: the retry replays the epoch's order)
            checkpoints.save(
                capture(loop, epoch_start=run.epoch_start), epoch=run.epoch, batch=seen
            )
        if pending == 0 and preempt.requested():  # SIGTERM in a worker: hand it back
            raise preempt.Preempted(run.epoch)
        if pending == 0 and run.keep is not None:
            run.keep(run, seen)  # where the stable phase ends: the trunk a promotion starts from
        interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)
        if pending == 0:
            loop.lr = run.lr * run.schedule.factor(loop.step)
            set_base_lr(optimizer, loop.lr)  # each group at lr x its lr_mult
            # Mean loss over the update's micro-batches: k micro-batches of b give the
            # gradient of one batch of k·b.
            group = max(1, min(k, n_batches - seen))
        loss = updater.forward(batch)
        # One host sync per micro-batch is cheap next to a trial; it lets a diverged run
        # stop at once instead of training on NaNs for the rest of its budget.
        value_now = loss.item()
        reason = loop.watch.check(value_now, loop.step, loop.lr)
        if reason is not None:
            return reason
        updater.backward(loss, 1.0 / group)
        update_loss += value_now / group
        pending += 1
        if pending >= group:
            pending = 0
            if updater.step():  # an fp16 step skipped on overflow is no step
                tb.step(loop.step, loop.lr, update_loss)
                loop.step += 1
            update_loss = 0.0
    if pending and updater.step():
        tb.step(loop.step, loop.lr, update_loss * group / pending)
        loop.step += 1
    return None


def _make_loop(
    t: Task, config: TrainConfig, resolved: dict[str, Any], groups: Any, updater_opts: Any
) -> Loop:
    """The model (on its device), optimizer, updater, data-order generator and divergence
    watch of one run, as :class:`Loop`."""
    device, precision, clip = updater_opts
    model = t.model
    params = at_base_lr(groups, config.lr) if groups else model.parameters()
    optimizer = make_optimizer(
        config.optimizer, params, config.lr, **optimizer_kwargs(resolved["optimizer"])
    )
    updater = Updater(
        model, optimizer, batch_loss(t), precision=precision, clip=clip, device=device
    )
    generator = torch.Generator().manual_seed(config.seed)
    # lr: the LR of the last update once one ran (final_lr)
    return Loop(
        model, optimizer, updater, generator, DivergenceWatch(t.divergence_factor), config.lr
    )


def _keeper(
    trunks: Trunks | None, loop: Loop, identity: dict[str, Any], shape: tuple[Any, ...]
) -> Callable[[_EpochRun | None, int], None] | None:
    """``keep(run, seen)`` for :class:`_EpochRun`: saves the trunk once ``loop`` reaches the
    end of its stable phase, mid-epoch (``run``) or after the last (``None``); ``shape`` is
    the run's ``(epochs, per_epoch, schedule, total)``."""
    if trunks is None:
        return None
    epochs, per_epoch, schedule, total = shape

    def keep(run: _EpochRun | None, seen: int) -> None:
        if not trunks.due(loop.step):
            return
        epoch_start, epoch = (run.epoch_start, run.epoch) if run else (None, epochs)
        where = (epoch, seen, per_epoch, schedule, total)
        trunks.save(capture(loop, epoch_start=epoch_start), identity=identity, where=where)

    return keep


def _train(
    t: Task,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None,
    checkpoints: Checkpoints | None = None,
    trunks: Trunks | None = None,
) -> TrainResult:
    device, precision, k, clip = _options(t, config)
    batch = batch_sizes(t, config.batch_size, k)
    t = with_micro_batch(t, batch[1])
    epochs = config.epochs or t.epochs
    model = t.model.to(device)
    model.train()
    train_batches = Batches(t.train, batch[1], device, "train")
    val_batches = Batches(t.val, max(batch[1], 1024), device, "val")
    n_batches = len(train_batches)
    per_epoch = (n_batches + k - 1) // k  # the last, partial accumulation is an update too
    total = epochs * per_epoch
    groups = task_groups(t.param_groups, model, t.name, config.lr_mults)
    resolved = resolve_config(t, config, total, batch=batch, groups=groups)
    if trunks is not None:  # a promotion from a trunk warms up as its source did
        resolved["schedule"] = trunks.plan(resolved["schedule"], total)
    sched = {k_: v for k_, v in resolved["schedule"].items() if k_ != "name"}
    schedule = Schedule(config.schedule, total, **sched)  # validated once, then a lookup
    loop = _make_loop(t, config, resolved, groups, (device, precision, clip))
    optimizer, updater, generator = loop.optimizer, loop.updater, loop.generator
    start = time.perf_counter()
    reason: str | None = None
    state = _resumable(checkpoints, loop, t.name, config.seed, resolved)
    trunk_id = identity_of(t.name, config.seed, resolved)
    if state is None and trunks is not None:
        state = trunks.restore(loop, identity=trunk_id, factor=schedule.factor, per_epoch=per_epoch)

    keep = _keeper(trunks, loop, trunk_id, (epochs, per_epoch, resolved["schedule"], total))
    begin = 0 if state is None else int(state["epoch"])
    tb = RunLog(config.log_dir)
    for epoch in range(begin, epochs):
        epoch_start = (generator.get_state(), torch.get_rng_state())
        batches = train_batches.epoch(generator)
        skip = int(state["batch"]) if state is not None and epoch == begin else 0
        if skip and state is not None:
            batches = replay(batches, loop, state)
        reason = _train_epoch(
            loop,
            enumerate(batches, start=skip),
            _EpochRun(
                epoch=epoch, epoch_start=epoch_start, schedule=schedule, lr=config.lr, keep=keep
            ),
            k=k,
            n_batches=n_batches,
            tb=tb,
            checkpoints=checkpoints,
        )
        if reason is None:
            with evaluating(optimizer):  # a schedule-free optimizer's averaged weights
                value = evaluate(t, model, val_batches, updater.autocast)
            if not math.isfinite(value):
                reason = f"non-finite {t.metric_name} after epoch {epoch + 1}"
        if reason is not None:
            log.info("diverged: %s", reason)
            break
        loop.history.append(value)
        tb.value(t.metric_name, value, epoch + 1)
        if on_epoch is not None:
            on_epoch(epoch, value)
        if checkpoints is not None and checkpoints.due(epoch + 1, epochs):
            checkpoints.save(capture(loop), epoch=epoch + 1)
    if reason is None and keep is not None:
        keep(None, 0)  # constant: the whole run is the trunk
    tb.close()
    if has_modes(optimizer):
        optimizer.eval()  # type: ignore[attr-defined]  # the model returned is the one evaluated
    return _result(t, loop, reason, total_steps=total, start=start, config=resolved)


def _result(
    t: Task,
    loop: Loop,
    reason: str | None,
    *,
    total_steps: int,
    start: float,
    config: dict[str, Any],
) -> TrainResult:
    """What :func:`_train` returns once its epochs ran (or it diverged: ``reason``)."""
    history = loop.history
    return TrainResult(
        value=math.nan if reason else history[-1],
        history=history,
        diverged=reason is not None,
        reason=reason,
        steps=loop.step,
        total_steps=total_steps,
        seconds=time.perf_counter() - start,
        config=config,
        metric_name=t.metric_name,
        direction=t.direction,
        model=loop.model,
        final_lr=loop.lr if loop.step else None,
    )
