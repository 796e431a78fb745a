"""One optimizer update from one or more micro-batches (:class:`Updater`: autocast, an fp16
grad scaler, accumulation, clipping) and the loss of one batch (:func:`batch_loss`): shared
by lrtune's training loop and the range test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from lrtune.errors import UserError
from lrtune.precisions import PRECISIONS, PRECISIONS_BY_DEVICE
from lrtune.training import ranks
from lrtune.training.data import is_pair
from lrtune.training.tasks import Task


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`UserError` for an unknown precision or fp16 without CUDA (the device
    rules: :data:`lrtune.precisions.PRECISIONS_BY_DEVICE`)."""
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
        """The loss of one micro-batch (under autocast). Under ``--nproc-per-trial`` each
        rank computes its slice of the batch and the loss returned is the whole batch's
        (:mod:`lrtune.training.ranks`)."""
        group = ranks.current()
        if group is None:
            with self.autocast():
                return self.step_loss(self.model, batch)
        part, n_local, n = group.shard(batch)
        with self.autocast():
            if n_local:
                local = self.step_loss(self.model, part)
            else:  # fewer rows than ranks: this rank adds zero gradients
                local = sum((p.sum() for p in self.model.parameters()), torch.zeros(()))
        return group.global_loss(local, n_local, n)

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Accumulate ``weight × loss``'s gradients (scaled for fp16)."""
        if weight != 1.0:
            loss = loss * weight
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> bool:
        """Clip, step and clear the gradients; False when fp16 overflow skipped the step."""
        done = True
        group = ranks.current()
        if group is not None:  # before unscaling: every rank then sees the same gradients
            group.reduce_grads(self.model.parameters())
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
