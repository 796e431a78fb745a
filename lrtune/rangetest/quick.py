"""The fastai-style one-liner: ``lrtune.range_test(model=..., train=loader, loss_fn=...)``
sweeps a model and its data without writing a :class:`~lrtune.training.tasks.Task` first
(``lrtune.lr_find`` is the same function, under fastai's name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lrtune.errors import UserError
from lrtune.training.data import check_batches
from lrtune.training.tasks import Task


def task_from_parts(
    task: Any,
    *,
    model: nn.Module | None,
    train: Any,
    loss_fn: Callable[..., Any] | None,
    step_loss: Callable[[nn.Module, Any], Any] | None,
    batch_size: int | None,
) -> Any:
    """``task`` as given, or a :class:`Task` made of ``model``, ``train`` and ``loss_fn``
    (or ``step_loss``); one line for a missing or contradicting part."""
    parts = {"model": model, "train": train, "loss_fn": loss_fn, "step_loss": step_loss}
    given = [name for name, value in parts.items() if value is not None]
    if task is not None:
        if given or batch_size is not None:
            raise UserError(
                f"range_test: give a task or model=/train=/loss_fn=, not both (got a task and "
                f"{', '.join(given or ['batch_size'])})"
            )
        return task
    if model is None or train is None:
        raise UserError(
            "range_test: give a task (a name, a factory or lrtune.Task), or model=, train= "
            "and loss_fn= (e.g. range_test(model=net, train=loader, loss_fn=F.cross_entropy))"
        )
    if not isinstance(model, nn.Module):
        raise UserError(f"range_test: model is {type(model).__name__}, not a torch.nn.Module")
    if loss_fn is None and step_loss is None:
        raise UserError(
            "range_test: give loss_fn= (loss_fn(model(x), y)) or step_loss= "
            "(step_loss(model, batch)) to say how a batch gives a loss"
        )
    for name in ("loss_fn", "step_loss"):
        if parts[name] is not None and not callable(parts[name]):
            raise UserError(f"range_test: {name} is not callable")
    check_batches(train, "range_test: train")
    if batch_size is None:  # a DataLoader's own; tensors are batched by 64 rows
        batch_size = train.batch_size if isinstance(train, DataLoader) else None
    return Task(
        model=model,
        train=train,
        val=None,
        loss_fn=loss_fn or _unused,
        step_loss=step_loss,
        batch_size=batch_size or 64,
        name=type(model).__name__,
    )


def _unused(*_: Any) -> Any:  # a step_loss task never calls loss_fn
    raise AssertionError("loss_fn is not used: the task has a step_loss")
