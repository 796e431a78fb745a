"""``hp``: a trial's training hyperparameters as one object.

:class:`ProductionConfig` is what ``lrtune.load_config`` returns for the user's own loop
(``build_optimizer``, ``build_scheduler``, ``lr``, ``lr_at``); :class:`TrialParams` is the
same plus the trial's ``seed``, ``epochs`` and ``device``: what a task's ``fit(hp, report)``
gets (SPEC "Your own training code"). Both live here, below the trainer and the export,
so that neither reaches into the other. Torch-free until an optimizer or a device is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lrtune.errors import UserError, one_line

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class ProductionConfig:
    """An exported config, ready for the user's own training loop.

    ``optimizer`` is ``{"name", "lr", <kwargs>}`` (``momentum``, ``weight_decay``,
    ``betas``, ``eps``; ``groups: {name: {lr_mult}}`` when the trials trained parameter
    groups), ``schedule`` ``{"name", <params>}`` with durations as fractions of the run,
    ``batch_size`` the effective batch size the LR belongs to (micro-batch × accumulate),
    ``micro_batch_size`` the rows of one forward pass, ``task`` the task's own searched
    parameters (``[params.task]``), ``source`` where it came from.
    ``precision`` (``fp32``, ``bf16``, ``fp16``), ``accumulate`` (micro-batches per
    optimizer update: one scheduler step per update) and ``clip_grad_norm`` (``None``: no
    clipping) are how the trial trained (the export's ``training`` block).
    """

    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    batch_size: int | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    precision: str = "fp32"
    accumulate: int = 1
    clip_grad_norm: float | None = None
    micro_batch_size: int | None = None
    task: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def lr(self) -> float:
        """The peak LR."""
        return float(self.optimizer["lr"])

    def build_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The exported optimizer over ``params`` at the exported LR.

        ``params`` are tensors (e.g. ``model.parameters()``) or param-group dicts. A group
        may set its own ``lr``, or ``lr_mult``: its LR is then the exported LR times
        ``lr_mult``. The scheduler scales every group by the same factor. A config tuned
        with parameter groups (``optimizer.groups``) needs those groups, named as the
        task's ``param_groups`` named them (``Task.param_groups(model)`` itself will do):
        each gets the exported LR times its recorded ``lr_mult``.

        A schedule-free optimizer (``schedulefree_adamw``, ``schedulefree_sgd``) comes back
        in train mode; call ``optimizer.eval()`` before evaluating or saving the model and
        ``optimizer.train()`` before training again, as the trials did.
        """
        items = list(params)
        groups: list[Any] = []
        recorded = self.optimizer.get("groups")
        if recorded:
            from lrtune.training.groups import named_groups

            items, groups = [], named_groups(items, recorded, self.lr)
        for item in items:
            if isinstance(item, Mapping):
                group = dict(item)
                mult = group.pop("lr_mult", None)
                if mult is not None and "lr" not in group:
                    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult < 0:
                        raise UserError(f"lr_mult must be a number >= 0, got {mult!r}")
                    group["lr"] = self.lr * float(mult)
                groups.append(group)
            else:
                groups.append(item)
        from lrtune.training.optimizers import make_optimizer

        kwargs = {k: v for k, v in self.optimizer.items() if k not in ("name", "lr", "groups")}
        try:
            return make_optimizer(str(self.optimizer["name"]), groups, self.lr, **kwargs)
        except ValueError as exc:
            raise UserError(f"bad optimizer in the config: {one_line(exc)}") from None

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, total_steps: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` over the exported closed-form schedule for a run of ``total_steps``.

        Call ``scheduler.step()`` after every optimizer step; the LR at step ``s`` is then
        ``schedule_lr(name, s, total_steps, lr, **params)``, as in the trial.
        """
        params = {k: v for k, v in self.schedule.items() if k != "name"}
        from lrtune import schedules

        try:
            return schedules.build_scheduler(
                optimizer, str(self.schedule["name"]), total_steps, **params
            )
        except ValueError as exc:
            raise UserError(f"bad schedule in the config: {one_line(exc)}") from None

    def lr_at(self, step: int, total_steps: int) -> float:
        """The LR at ``step`` of a run of ``total_steps`` (the closed form)."""
        from lrtune import schedules

        params = {k: v for k, v in self.schedule.items() if k != "name"}
        return schedules.schedule_lr(
            str(self.schedule["name"]), step, total_steps, self.lr, **params
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict in export order."""
        out: dict[str, Any] = {"optimizer": dict(self.optimizer), "schedule": dict(self.schedule)}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.micro_batch_size is not None:
            out["micro_batch_size"] = self.micro_batch_size
        if self.task:
            out["task"] = dict(self.task)
        out["training"] = {
            "precision": self.precision,
            "accumulate": self.accumulate,
            "clip_grad_norm": self.clip_grad_norm,
        }
        out["source"] = dict(self.source)
        return out


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class TrialParams(ProductionConfig):
    """``hp``, what a task's ``fit(hp, report)`` gets: the config ``lrtune.load_config``
    would return for this trial (``build_optimizer``, ``build_scheduler``, ``lr``,
    ``optimizer``, ``schedule``, ``batch_size``) plus the trial's ``seed``, ``epochs``,
    ``device`` (a ``torch.device``) and the task's ``precision``, ``accumulate`` and
    ``clip_grad_norm`` (after the spec's overrides), for a loop that wants to follow them.

    :meth:`checkpoint` and :meth:`restore` let the loop resume a trial that was retried
    or handed back (SPEC "Checkpoints"). Under ``worker --nproc-per-trial N``, ``rank``
    and ``world_size`` place this process in the trial's torch.distributed group (already
    initialized); else 0 and 1.

    Example:
        ```python
        import torch

        import lrtune

        def fit(hp, report):  # Task(..., fit=fit): lrtune calls it once per trial
            torch.manual_seed(hp.seed)
            x, y = torch.randn(64, 4), torch.randn(64, 1)
            model = torch.nn.Linear(4, 1).to(hp.device)
            opt = hp.build_optimizer(model.parameters())
            sched = hp.build_scheduler(opt, total_steps=hp.epochs * 8)
            for epoch in range(hp.epochs):
                for i in range(0, 64, 8):
                    loss = torch.nn.functional.mse_loss(model(x[i : i + 8]), y[i : i + 8])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()  # one scheduler step per optimizer update
                report(loss.item(), epoch)  # raises optuna.TrialPruned when told to stop
            return loss.item()

        # What a trial passes; built by hand here to call fit outside a study.
        hp = lrtune.TrialParams(
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
            schedule={"name": "cosine"},
            epochs=2,
        )
        epochs = []
        value = fit(hp, lambda value, epoch: epochs.append(epoch))
        assert epochs == [0, 1] and value == value  # reported each epoch, a finite loss
        assert hp.lr_at(15, 16) < hp.lr  # the cosine decayed by the last update
        ```
    """

    seed: int = 0
    epochs: int = 1
    device: torch.device = dataclasses.field(default_factory=_cpu)
    precision: str = "fp32"
    accumulate: int = 1
    clip_grad_norm: float | None = None
    #: The trial's checkpoints (``save(state)``, ``load() -> state | None``), or ``None``:
    #: outside a worker, or ``--checkpoint-every 0``.
    checkpoints: Any = dataclasses.field(default=None, repr=False, compare=False)
    rank: int = 0
    world_size: int = 1

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (anything ``torch.save`` takes: model and optimizer
        ``state_dict``s, the next epoch, ...) as the trial's checkpoint. Call it after an
        epoch's ``report``: on SIGTERM the trial is handed back at the next call, once the
        state is saved (and at the next ``report`` if the loop does not call it). With the
        default interval a call less than 30 s after the previous save is skipped, unless
        the worker is being preempted."""
        if self.checkpoints is not None:
            self.checkpoints.save(state)

    def restore(self) -> Any:
        """The state the trial last passed to :meth:`checkpoint` when it is being resumed
        (a retry after its worker died, or a trial handed back), else ``None``: start from
        scratch. The values reported before it are reported again for you."""
        return None if self.checkpoints is None else self.checkpoints.load()
