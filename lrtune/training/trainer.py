"""Training one task with one optimizer, peak LR and schedule: what every trial runs.

:func:`train` is lrtune's own loop (any batches, mixed precision, gradient accumulation and
clipping); :func:`run_trial` runs a trial either through it or through the task's own
``fit(hp, report)`` (SPEC "Your own training code").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lrtune import interrupt
from lrtune.device import PRECISIONS_BY_DEVICE, resolve_device
from lrtune.errors import UserError
from lrtune.export.load import ProductionConfig
from lrtune.schedules import Schedule, resolve_params
from lrtune.training.data import Batches, is_pair
from lrtune.training.loading import resolve_task
from lrtune.training.optimizers import (
    check_optimizer,
    evaluating,
    has_modes,
    make_optimizer,
    optimizer_defaults,
)
from lrtune.training.tasks import PRECISIONS, Task, TaskFactory
from lrtune.training.tblog import RunLog

log = logging.getLogger(__name__)

#: A positive training loss this many times its first value counts as diverged.
EXPLODED = 100.0

Report = Callable[[float, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """What to train with. ``epochs``/``batch_size``/``precision``/``accumulate``/
    ``clip_grad_norm`` of ``None`` take the task's own."""

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
    #: A TensorBoard run directory for this run (per-step LR and loss, per-epoch metric;
    #: :mod:`lrtune.training.tblog`); ``None``: none.
    log_dir: str | None = None


@dataclass
class TrainResult:
    """The outcome of :func:`train` or :func:`run_trial`.

    ``value`` is the task's metric after the last epoch (``nan`` when diverged);
    ``history`` the metric after each epoch (what ``fit`` reported, for a ``fit`` task);
    ``config`` the resolved training config in the form ``lrtune export`` writes; ``model``
    the trained model (for a :class:`Task` instance a copy: the task's own model is not
    trained; ``None`` for a ``fit`` task). ``steps`` counts optimizer updates (0 for
    ``fit``); ``total_steps`` is ``None`` when a ``fit`` task's data has no length.
    ``final_lr`` is the LR of the last update (``None`` for ``fit`` or no update): the
    schedule's final LR when the run trained its whole length.
    """

    value: float
    history: list[float]
    diverged: bool
    reason: str | None
    steps: int
    total_steps: int | None
    seconds: float
    config: dict[str, Any]
    metric_name: str = "val_loss"
    direction: str = "minimize"
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    final_lr: float | None = None


@dataclasses.dataclass(frozen=True)
class TrialParams(ProductionConfig):
    """``hp``, what a task's ``fit(hp, report)`` gets: the config ``lrtune.load_config``
    would return for this trial (``build_optimizer``, ``build_scheduler``, ``lr``,
    ``optimizer``, ``schedule``, ``batch_size``) plus the trial's ``seed``, ``epochs``,
    ``device`` (a ``torch.device``) and the task's ``precision``, ``accumulate`` and
    ``clip_grad_norm`` (after the spec's overrides), for a loop that wants to follow them.
    """

    seed: int = 0
    epochs: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    accumulate: int = 1
    clip_grad_norm: float | None = None


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`UserError` for an unknown precision or fp16 without CUDA (the device
    rules: :data:`lrtune.device.PRECISIONS_BY_DEVICE`)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in PRECISIONS_BY_DEVICE.get(device.type, PRECISIONS):
        raise UserError(f"precision fp16 needs CUDA (its grad scaler); use bf16 on {device.type}")


def batch_loss(task: Task) -> Callable[[torch.nn.Module, Any], torch.Tensor]:
    """``task.step_loss``, or ``loss_fn(model(x), y)`` for ``(x, y)`` batches."""
    if task.step_loss is not None:
        return task.step_loss
    loss_fn = task.loss_fn

    def step_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if not is_pair(batch):
            raise TypeError(
                f"a batch is {type(batch).__name__}, not an (x, y) pair of tensors: "
                "give the task a step_loss(model, batch)"
            )
        return loss_fn(model(batch[0]), batch[1])

    return step_loss


class Updater:
    """One optimizer update from one or more micro-batches, shared by trials and the
    range test: autocast for bf16/fp16, a grad scaler for fp16, gradient clipping."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        step_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
        *,
        precision: str,
        clip: float | None,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer, self.step_loss, self.clip = model, optimizer, step_loss, clip
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            contextlib.nullcontext
            if dtype is None
            else lambda: torch.autocast(device.type, dtype=dtype)
        )
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        optimizer.zero_grad(set_to_none=True)

    def forward(self, batch: Any) -> torch.Tensor:
        """The loss of one micro-batch (under autocast)."""
        with self.autocast():
            return self.step_loss(self.model, batch)

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Accumulate ``weight × loss``'s gradients (scaled for fp16)."""
        if weight != 1.0:
            loss = loss * weight
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> bool:
        """Clip, step and clear the gradients; False when fp16 overflow skipped the step."""
        done = True
        if self.scaler is not None:
            if self.clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            done = self.scaler.get_scale() >= before  # the scale drops only on a skip
        else:
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return done


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


def _build(task: str | TaskFactory | Task, seed: int) -> Task:
    if isinstance(task, Task):
        # Training the caller's module in place would make a second call start from the
        # first one's trained weights (and oracle.dense_grid average such runs).
        return replace(task, model=copy.deepcopy(task.model))
    return resolve_task(task)(seed)


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
        return _train(_build(task, config.seed), config, on_epoch)


def run_trial(task: str | TaskFactory | Task, config: TrainConfig, report: Report) -> TrainResult:
    """One trial: the task's own ``fit(hp, report)`` when it has one, else :func:`train`.

    ``report(value, step)`` records an intermediate value (and may raise
    ``optuna.TrialPruned``); lrtune's loop calls it after every epoch with the epoch index.
    ``hp`` is a :class:`TrialParams`. A ``fit`` returning NaN or inf gives a diverged
    result with that reason; one returning no number raises ``TypeError``.
    """
    check_optimizer(config.optimizer)
    with _seeded(config.seed):
        t = _build(task, config.seed)
        if t.fit is None:
            return _train(t, config, lambda epoch, value: report(value, epoch))
        return _fit(t, config, report)


def _resolved(t: Task, config: TrainConfig, total: int | None) -> dict[str, Any]:
    """The trial's config in the form ``lrtune export`` writes (user attr ``config``)."""
    sched = resolve_params(config.schedule, total or 1000, **dict(config.schedule_params))
    opt_kwargs = {**optimizer_defaults(config.optimizer), **dict(config.optimizer_params)}
    return {
        "optimizer": {"name": config.optimizer, "lr": config.lr, **opt_kwargs},
        "schedule": {"name": config.schedule, **sched},
        "batch_size": config.batch_size or t.batch_size,
        "epochs": config.epochs or t.epochs,
        "total_steps": total,
        "precision": config.precision or t.precision,
        "accumulate": config.accumulate or t.accumulate,
        "clip_grad_norm": config.clip_grad_norm
        if config.clip_grad_norm is not None
        else t.clip_grad_norm,
    }


def _fit(t: Task, config: TrainConfig, report: Report) -> TrainResult:
    assert t.fit is not None
    device = resolve_device(config.device)
    epochs = config.epochs or t.epochs
    accumulate = config.accumulate or t.accumulate
    try:  # the fit task decides its steps; record what it will most likely take
        total: int | None = epochs * max(1, len(t.train) // accumulate)
    except TypeError:
        total = None
    resolved = _resolved(t, config, total)
    hp = TrialParams(
        optimizer=resolved["optimizer"],
        schedule=resolved["schedule"],
        batch_size=resolved["batch_size"],
        seed=config.seed,
        epochs=epochs,
        device=device,
        precision=resolved["precision"],
        accumulate=accumulate,
        clip_grad_norm=resolved["clip_grad_norm"],
    )
    history: list[float] = []

    tb = RunLog(config.log_dir)  # a fit task's own loop: its reported values only

    def recorded(value: float, step: int) -> None:
        # A deferred Ctrl-C or SIGTERM reaches the task's own loop here, at its next report.
        interrupt.check()
        history.append(float(value))
        tb.value(t.metric_name, float(value), int(step))
        report(float(value), int(step))

    start = time.perf_counter()
    try:
        out = t.fit(hp, recorded)
    finally:
        tb.close()
    # A loop that caught the interrupt (Lightning shuts down gracefully and returns) still
    # stops the trial: it did not run to its end, and the user was told it is marked failed.
    interrupt.check()
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        raise TypeError(f"fit returned {type(out).__name__}, expected a number (the metric)")
    value = float(out)
    reason = None if math.isfinite(value) else f"fit returned {value}"
    return TrainResult(
        value=math.nan if reason else value,
        history=history,
        diverged=reason is not None,
        reason=reason,
        steps=0,
        total_steps=total,
        seconds=time.perf_counter() - start,
        config=resolved,
        metric_name=t.metric_name,
        direction=t.direction,
    )


def _train(
    t: Task, config: TrainConfig, on_epoch: Callable[[int, float], None] | None
) -> TrainResult:
    device = resolve_device(config.device)
    precision = config.precision or t.precision
    check_precision(precision, device)
    k = config.accumulate or t.accumulate
    if not isinstance(k, int) or k < 1:
        raise UserError(f"accumulate must be a positive int, got {k!r}")
    clip = config.clip_grad_norm if config.clip_grad_norm is not None else t.clip_grad_norm
    batch_size = config.batch_size or t.batch_size
    epochs = config.epochs or t.epochs
    model = t.model.to(device)
    model.train()
    train_batches = Batches(t.train, batch_size, device, "train")
    val_batches = Batches(t.val, max(batch_size, 1024), device, "val")
    n_batches = len(train_batches)
    per_epoch = (n_batches + k - 1) // k  # the last, partial accumulation is an update too
    total = epochs * per_epoch
    resolved = _resolved(t, config, total)
    sched = {k_: v for k_, v in resolved["schedule"].items() if k_ != "name"}
    schedule = Schedule(config.schedule, total, **sched)  # validated once, then a lookup
    opt_kwargs = {k_: v for k_, v in resolved["optimizer"].items() if k_ not in ("name", "lr")}
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **opt_kwargs)
    updater = Updater(
        model, optimizer, batch_loss(t), precision=precision, clip=clip, device=device
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[float] = []
    step = 0
    start = time.perf_counter()
    reason: str | None = None
    first_loss: float | None = None
    lr = config.lr  # the LR of the last update once one ran (final_lr)
    tb = RunLog(config.log_dir)
    update_loss = 0.0
    for epoch in range(epochs):
        pending = 0
        group = 1
        for seen, batch in enumerate(train_batches.epoch(generator)):
            interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)
            if pending == 0:
                lr = config.lr * schedule.factor(step)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                # Mean loss over the update's micro-batches: k micro-batches of b give the
                # gradient of one batch of k·b.
                group = max(1, min(k, n_batches - seen))
            loss = updater.forward(batch)
            # One host sync per micro-batch is cheap next to a trial; it lets a diverged run
            # stop at once instead of training on NaNs for the rest of its budget.
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
            updater.backward(loss, 1.0 / group)
            update_loss += value_now / group
            pending += 1
            if pending >= group:
                pending = 0
                if updater.step():  # an fp16 step skipped on overflow is no step
                    tb.step(step, lr, update_loss)
                    step += 1
                update_loss = 0.0
        if reason is None and pending:
            if updater.step():
                tb.step(step, lr, update_loss * group / pending)
                step += 1
            update_loss = 0.0
        if reason is None:
            with evaluating(optimizer):  # a schedule-free optimizer's averaged weights
                value = evaluate(t, model, val_batches, updater.autocast)
            if not math.isfinite(value):
                reason = f"non-finite {t.metric_name} after epoch {epoch + 1}"
        if reason is not None:
            log.info("diverged: %s", reason)
            break
        history.append(value)
        tb.value(t.metric_name, value, epoch + 1)
        if on_epoch is not None:
            on_epoch(epoch, value)
    tb.close()
    if has_modes(optimizer):
        optimizer.eval()  # type: ignore[attr-defined]  # the model returned is the one evaluated
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
        final_lr=lr if step else None,
    )
