"""A task's own training loop, ``fit(hp, report)`` (SPEC "Your own training code", level 3):
the trial around it, ``hp`` a :class:`~lrtune.training.hp.TrialParams`."""

from __future__ import annotations

import math
import numbers
import time
from typing import Any

import torch

from lrtune import interrupt, preempt
from lrtune.device import resolve_device
from lrtune.training import ranks
from lrtune.training.checkpoint import Checkpoints, UserCheckpoints
from lrtune.training.groups import task_groups
from lrtune.training.hp import TrialParams
from lrtune.training.resolved import TrainConfig, batch_sizes, resolve_config
from lrtune.training.result import Report, TrainResult
from lrtune.training.tasks import Task
from lrtune.training.tblog import RunLog


def run_fit(
    t: Task, config: TrainConfig, report: Report, checkpoints: Checkpoints | None = None
) -> TrainResult:
    """A trial of a task's own ``fit(hp, report)``
    (:func:`lrtune.training.trainer.run_trial`)."""
    assert t.fit is not None
    device = resolve_device(config.device)
    epochs = config.epochs or t.epochs
    accumulate = config.accumulate or t.accumulate
    batch = batch_sizes(t, config.batch_size, accumulate)
    try:  # the fit task decides its steps; record what it will most likely take
        total: int | None = epochs * max(1, len(t.train) // accumulate)
    except TypeError:
        total = None
    # The groups' names and multipliers, checked on the task's model: fit builds its own
    # optimizer with hp.build_optimizer(groups), which applies them by name.
    groups = task_groups(t.param_groups, t.model, t.name, config.lr_mults)
    resolved = resolve_config(t, config, total, batch=batch, groups=groups)
    history: list[float] = []
    mine = None
    if checkpoints is not None:
        checkpoints.identity.update(task=t.name, seed=config.seed, config=resolved)
        mine = UserCheckpoints(checkpoints, history)
    hp = TrialParams(
        optimizer=resolved["optimizer"],
        schedule=resolved["schedule"],
        batch_size=batch[0],
        micro_batch_size=batch[1],
        task=dict(config.task_params),
        seed=config.seed,
        epochs=epochs,
        device=device,
        precision=resolved["precision"],
        accumulate=accumulate,
        clip_grad_norm=resolved["clip_grad_norm"],
        checkpoints=mine,
        rank=group.rank if (group := ranks.current()) else 0,
        world_size=group.world if group else 1,
    )

    tb = RunLog(config.log_dir)  # a fit task's own loop: its reported values only

    def recorded(value: float, step: int) -> None:
        # A deferred Ctrl-C or SIGTERM reaches the task's own loop here, at its next report;
        # in a worker SIGTERM hands the trial back: at the loop's next hp.checkpoint (it
        # saves first), or here when the loop does not checkpoint or did not since.
        if preempt.requested():
            if mine is None or not mine.used or mine.deferred:
                raise preempt.Preempted(step)
            mine.deferred = True
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
    if preempt.requested():
        raise preempt.Preempted()
    interrupt.check()
    value = _number(out)
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


def _number(out: Any) -> float:
    """What ``fit`` returned, as the trial's value; ``TypeError`` when it is no number."""
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        raise TypeError(f"fit returned {type(out).__name__}, expected a number (the metric)")
    return float(out)
