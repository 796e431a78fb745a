"""The LR range test's sweep (Smith 2015; fastai's ``lr_find``) and :func:`range_test`.

The LR grows exponentially (or linearly) from ``start_lr`` to ``end_lr`` over ``steps``
optimizer updates; the loss is smoothed by a bias-corrected exponential moving average
(β = 0.98, :class:`~lrtune.rangetest.suggest.Ema`) and the sweep stops once the smoothed loss
rises 3× the minimum's magnitude above the minimum (fastai's "4× the minimum" for positive
losses, and still meaningful for negative ones) or the loss is not finite. Model,
optimizer, BatchNorm buffers, gradients and torch RNG state are restored whatever happens
(:func:`preserved_state`). The curves are read in :mod:`lrtune.rangetest.suggest`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lrtune import interrupt
from lrtune.device import resolve_device
from lrtune.errors import UserError
from lrtune.rangetest.quick import task_from_parts
from lrtune.rangetest.restore import preserved_rng, preserved_state
from lrtune.rangetest.result import RangeTestResult
from lrtune.rangetest.suggest import (
    MAX_SKIPPED,
    SKIP_END,
    SKIP_START,
    Curve,
    combine,
    lr_at,
    should_stop,
)
from lrtune.smoothing import Ema
from lrtune.training import ranks
from lrtune.training.data import Batches, is_pair
from lrtune.training.groups import at_base_lr, task_groups
from lrtune.training.loading import resolve_task
from lrtune.training.optimizers import check_optimizer, evaluating, has_modes, make_optimizer
from lrtune.training.resolved import micro_batch_size
from lrtune.training.tasks import Task, TaskFactory
from lrtune.training.updater import Updater, batch_loss, check_precision

log = logging.getLogger(__name__)


def _tracked_metric(
    task: Task, target: torch.Tensor
) -> tuple[str, Callable[[torch.Tensor, torch.Tensor], float]]:
    # ``target`` is the held-out targets (not ``task.val[1]``: ``val`` may be a Dataset,
    # whose item 1 is a sample, not the targets).
    if task.metric is not None:
        return task.metric_name, task.metric

    def metric(pred: torch.Tensor, target: torch.Tensor) -> float:
        if pred.dim() == 2 and pred.shape[1] > 1 and not target.is_floating_point():
            return float((pred.argmax(1) == target).float().mean())
        return float(task.loss_fn(pred, target))

    return "accuracy" if not target.is_floating_point() else "val_loss", metric


def _held_out(task: Task, device: torch.device) -> Any:
    """Up to 512 validation rows, on ``device``: the first validation batch."""
    batch = next(iter(Batches(task.val, 512, device, "val")))
    return (batch[0][:512], batch[1][:512]) if is_pair(batch) else batch


def _batch_metric(task: Task, batch: Any) -> tuple[str, Callable[[torch.nn.Module], float]]:
    """The tracked metric's name and ``metric(model)`` on one held-out ``batch``."""
    if not is_pair(batch) or (task.step_loss is not None and task.metric is None):
        step_loss = batch_loss(task)
        return "val_loss", lambda model: float(step_loss(model, batch))
    name, fn = _tracked_metric(task, batch[1])
    return name, lambda model: fn(model(batch[0]), batch[1])


def _sweep(
    task: Task,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    *,
    seed: int,
    start_lr: float,
    end_lr: float,
    steps: int,
    mode: str,
    device: torch.device,
    track_metric: bool,
    precision: str,
    accumulate: int,
    clip_grad_norm: float | None,
) -> Curve:
    batches = Batches(task.train, task.batch_size, device, "train")
    stream = batches.endless(torch.Generator().manual_seed(seed))
    model = task.model
    model.train()
    if has_modes(optimizer):
        optimizer.train()  # type: ignore[attr-defined]  # schedule-free: steps need train mode
    updater = Updater(
        model, optimizer, batch_loss(task), precision=precision, clip=clip_grad_norm, device=device
    )
    metric_fn = metric_name = None
    metric_every = max(1, steps // 25)
    if track_metric:
        metric_name, metric_fn = _batch_metric(task, _held_out(task, device))
    # Losses stay on the device and are checked every few steps on CUDA, so the GPU is not
    # stalled by a host sync each step; on CPU a check per step costs nothing. (A list of
    # loss tensors, not an indexed write into one buffer: that costs ~10% of a small step.)
    check_every = 8 if device.type == "cuda" else 1
    pending: list[torch.Tensor] = []
    lrs: list[float] = []
    curve = _Smoothing()
    metric_steps: list[int] = []
    metrics: list[float] = []
    skipped = 0
    i = 0
    while i < steps:
        interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)
        lr = lr_at(i, steps, start_lr, end_lr, mode)
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        # One sweep step is one optimizer update, of ``accumulate`` micro-batches; its loss
        # is their mean.
        loss = _accumulated_loss(updater, stream, accumulate)
        if not updater.step():
            # fp16 overflow: the scaler skipped the update; the LR does not move on. A loss
            # that keeps overflowing ends the sweep as non-finite.
            skipped += 1
            if skipped < MAX_SKIPPED:
                continue
            loss = torch.full_like(loss, math.inf)
        skipped = 0
        pending.append(loss / accumulate if accumulate > 1 else loss)
        lrs.append(lr)
        if metric_fn is not None and i % metric_every == 0:
            model.eval()
            with evaluating(optimizer), torch.no_grad(), updater.autocast():
                metrics.append(metric_fn(model))
            model.train()
            metric_steps.append(i)
        i += 1
        if i % check_every and i < steps:
            continue
        values = (
            [pending[0].item()]
            if len(pending) == 1
            else torch.stack(pending).float().flatten().tolist()
        )
        pending.clear()
        if curve.extend(values):
            break
    n = len(curve.raw)
    return Curve(
        lrs[:n], curve.raw, curve.smoothed, curve.stop_reason, metric_steps, metrics, metric_name
    )


def _accumulated_loss(updater: Updater, stream: Iterator[Any], accumulate: int) -> torch.Tensor:
    """One sweep step's loss, backpropagated: the sum over ``accumulate`` micro-batches
    (each scaled by ``1/accumulate`` for the gradient), detached."""
    loss = updater.forward(next(stream))
    updater.backward(loss, 1.0 / accumulate)
    loss = loss.detach()
    for _ in range(accumulate - 1):
        micro = updater.forward(next(stream))
        updater.backward(micro, 1.0 / accumulate)
        loss = loss + micro.detach()
    return loss


@dataclass
class _Smoothing:
    """The sweep's losses as read back from the device: raw, smoothed, and why it stopped."""

    raw: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop_reason: str | None = None
    ema: Ema = field(default_factory=Ema)
    best: float = math.inf

    def extend(self, values: list[float]) -> bool:
        """Take the next losses; ``True`` once the sweep must stop (non-finite, diverged)."""
        for value in values:
            self.raw.append(value)
            if not math.isfinite(value):
                self.stop_reason = "non-finite"
                self.smoothed.append(math.nan)
                return True
            sm = self.ema.update(value)
            self.smoothed.append(sm)
            self.best = min(self.best, sm)
            if should_stop(sm, self.best):
                self.stop_reason = "diverged"
                return True
        return False


def _check_args(start_lr: float, end_lr: float, steps: int, mode: str, seeds: int) -> None:
    if not (math.isfinite(start_lr) and start_lr > 0):
        raise UserError(f"start_lr must be a positive number, got {start_lr}")
    if not (math.isfinite(end_lr) and end_lr > start_lr):
        raise UserError(f"end_lr must be larger than start_lr ({start_lr}), got {end_lr}")
    if steps < SKIP_START + SKIP_END + 5:
        raise UserError(f"steps must be at least {SKIP_START + SKIP_END + 5}, got {steps}")
    if mode not in ("exp", "linear"):
        raise UserError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")


def _check_optimizer_name(optimizer: str | torch.optim.Optimizer) -> None:
    if isinstance(optimizer, str):
        try:
            check_optimizer(optimizer)
        except ValueError as exc:
            raise UserError(str(exc)) from None


def _options(
    task: Task,
    device: torch.device,
    precision: str | None,
    accumulate: int | None,
    clip_grad_norm: float | None,
) -> dict[str, Any]:
    """The sweep's training options (``None``: the task's own), checked."""
    if task.fit is not None and task.step_loss is None:
        raise UserError(
            f"task {task.name!r} has its own fit but no step_loss: the range test needs "
            "step_loss(model, batch) (or run the study with --prior none)"
        )
    options: dict[str, Any] = {
        "precision": precision or task.precision,
        "accumulate": accumulate or task.accumulate,
        "clip_grad_norm": clip_grad_norm if clip_grad_norm is not None else task.clip_grad_norm,
    }
    check_precision(options["precision"], device)
    k = options["accumulate"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"accumulate must be a positive int, got {k!r}")
    return options


def range_test(
    task: str | TaskFactory | Task | None = None,
    *,
    model: torch.nn.Module | None = None,
    train: Any = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    step_loss: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    batch_size: int | None = None,
    optimizer: str | torch.optim.Optimizer = "sgd",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    seeds: int = 3,
    device: str | torch.device = "auto",
    track_metric: bool = False,
    seed: int = 0,
    precision: str | None = None,
    accumulate: int | None = None,
    clip_grad_norm: float | None = None,
) -> RangeTestResult:
    """Run the LR range test on ``task`` with ``seeds`` seeds and return the suggestions.

    ``task`` is a built-in name, a factory ``make(seed) -> Task`` (a fresh model per seed),
    or a :class:`Task` (its model is swept ``seeds`` times and restored exactly afterwards).
    Or, fastai-style, no task but ``model=``, ``train=`` (a ``DataLoader``, ``(X, y)``
    tensors, a ``Dataset`` or any re-iterable of batches) and ``loss_fn=`` (or
    ``step_loss=``), with ``batch_size=`` for tensor data (default: the loader's, else 64):
    ``range_test(model=net, train=loader, loss_fn=F.cross_entropy).plot()``.
    ``optimizer`` is a name (``sgd``, ``adam``, ...) or an optimizer over the task's model;
    with several param groups their LR ratios are kept: the sweep moves the base LR, each
    group of ``Task.param_groups`` at it × its ``lr_mult`` (the result's ``groups``).
    Seeds are ``seed, seed+1, ...``.

    ``precision``, ``accumulate`` (micro-batches per sweep step: ``steps`` counts optimizer
    updates) and ``clip_grad_norm`` of ``None`` take the task's own. The task's batches go
    through ``step_loss`` (default ``loss_fn(model(x), y)``); a task with ``fit`` but no
    ``step_loss`` cannot be swept. Any error of the task's code in the sweep (a batch the
    model rejects) is raised as :class:`UserError` with its first line.
    """
    arguments = dict(locals())  # every argument as given: what the other ranks run
    _check_args(start_lr, end_lr, steps, mode, seeds)
    _share_with_ranks(arguments)
    parts = {"model": model, "train": train, "loss_fn": loss_fn, "step_loss": step_loss}
    task = task_from_parts(task, **parts, batch_size=batch_size)
    _check_optimizer_name(optimizer)
    dev = resolve_device(device)
    factory = resolve_task(task)  # a Task gives a factory that returns that same Task
    given_opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
    opt_name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__.lower()
    # The first optimizer built in a process imports torch._dynamo (about 2 s here); a
    # trial's timer starts after its optimizer exists, so this one-time cost is left out of
    # the range test's seconds too, keeping "trial-equivalents" a fair ratio.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    t0 = time.perf_counter()
    curves: list[Curve] = []
    seed_list = [seed + k for k in range(seeds)]
    setup: dict[str, Any] = {}
    sweep: dict[str, Any] = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps}
    sweep |= {"mode": mode, "device": dev, "track_metric": track_metric}
    with preserved_rng():
        for s in seed_list:
            torch.manual_seed(s)
            t = factory(s)
            options = _options(t, dev, precision, accumulate, clip_grad_norm)
            curve, setup = _sweep_seed(t, given_opt, str(optimizer), s, sweep, options)
            curves.append(curve)
    return combine(
        curves,
        seed_list,
        seconds=time.perf_counter() - t0,
        optimizer=opt_name,
        mode=mode,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        metric_name=curves[-1].metric_name if curves else None,
        **setup,
    )


def _share_with_ranks(arguments: dict[str, Any]) -> None:
    """On rank 0 of N (``--nproc-per-trial``): the other ranks run this range test too
    (``arguments``, each on its own device), each its share of every micro-batch. Only
    names travel: a model, data or optimizer object cannot be sent to another process."""
    group = ranks.current()
    if group is None or not group.leads:
        return
    objects = ("model", "train", "loss_fn", "step_loss", "batch_size")
    if any(arguments[k] is not None for k in objects) or not all(
        isinstance(arguments[k], str) for k in ("task", "optimizer")
    ):
        raise UserError("a range test under N ranks takes a task name and an optimizer name")
    group.share_range_test({k: v for k, v in arguments.items() if k not in objects})


def _sweep_seed(
    t: Task,
    given_opt: torch.optim.Optimizer | None,
    optimizer: str,
    seed: int,
    sweep: dict[str, Any],
    options: dict[str, Any],
) -> tuple[Curve, dict[str, Any]]:
    """One seed's sweep of ``t``, its model given back as it was; the curve and the setup
    it measured (batch size, micro-batch, parameter groups)."""
    with preserved_state(t.model, given_opt):
        t.model.to(sweep["device"])
        if given_opt is not None and given_opt.state:
            # Its state (Adam's moments) follows the parameters to the device: loading a
            # state dict casts each tensor to its parameter's device, as PyTorch documents.
            given_opt.load_state_dict(given_opt.state_dict())
        opt, ratios, groups = _optimizer(t, given_opt, optimizer, sweep["start_lr"])
        setup = {
            "batch_size": micro_batch_size(t) * options["accumulate"],
            "micro_batch_size": micro_batch_size(t),
            "groups": groups,
            "ranks": group.world if (group := ranks.current()) else 1,
        }
        curve = _sweep(t, opt, ratios, seed=seed, **sweep, **options)
    return curve, setup


def _optimizer(
    task: Task, given: torch.optim.Optimizer | None, name: str, start_lr: float
) -> tuple[torch.optim.Optimizer, list[float], dict[str, float]]:
    """The sweep's optimizer, each group's LR as a multiple of the swept LR, and the task's
    groups' multipliers by name (empty without ``param_groups``). The sweep moves the base
    LR: a task's group runs at it × its ``lr_mult``; a given optimizer's groups keep the
    ratios of their LRs to the first group's."""
    if given is not None:
        base = given.param_groups[0]["lr"]
        return given, [g["lr"] / base for g in given.param_groups], {}
    groups = task_groups(task.param_groups, task.model, task.name)
    if groups is None:
        return make_optimizer(name, task.model.parameters(), start_lr), [1.0], {}
    opt = make_optimizer(name, at_base_lr(groups, start_lr), start_lr)
    mults = [float(g["lr_mult"]) for g in groups]
    return opt, mults, {g["name"]: float(g["lr_mult"]) for g in groups}


lr_find = range_test
"""fastai's name for :func:`range_test` (``lrtune.lr_find(model=..., train=..., loss_fn=...)``)."""
