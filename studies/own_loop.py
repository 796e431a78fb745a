"""Your own training loop, tuned by lrtune: ``Task.fit(hp, report)`` with bf16 and accumulation.

lrtune runs ``fit`` in every trial instead of its own loop. ``hp`` is what
``lrtune.load_config`` returns for the exported winner, plus ``seed``, ``epochs``,
``device`` (and the task's ``precision``/``accumulate``): the loop builds its optimizer and
scheduler with one call each, exactly as production code does with the exported file, so
the tuned LR schedule is the one it trains with. ``report(value, epoch)`` records the
validation loss and raises ``optuna.TrialPruned`` when the pruner stops the trial.
``hp.checkpoint(state)`` after each epoch and ``hp.restore()`` at the start let a trial
whose worker died or was preempted (SIGTERM) go on where it stopped on another worker.

The range test (``--prior rangetest``) does not run ``fit``: it sweeps ``model`` on
``train`` through ``step_loss``, with the same bf16 autocast and 2 micro-batches per
update, from the task's fields. Run::

    python -m lrtune study --spec studies/own-loop.toml
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrtune import Task

MICRO_BATCH = 32  # two of them make one update of 64 rows


def _data() -> tuple[TensorDataset, TensorDataset]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed split
    train, val = order[:1400], order[1400:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


TRAIN_SET, VAL_SET = _data()


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def step_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The loss of one batch: what the range test sweeps (a fit task needs it for that)."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def fit(hp: Any, report: Callable[[float, int], None]) -> float:
    """A hand-written loop: bf16 autocast, ``hp.accumulate`` micro-batches per update."""
    torch.manual_seed(hp.seed)
    device = hp.device
    model = build_model().to(device)
    train = DataLoader(TRAIN_SET, batch_size=MICRO_BATCH, shuffle=True)
    val = DataLoader(VAL_SET, batch_size=512)
    accumulate = hp.accumulate
    updates_per_epoch = math.ceil(len(train) / accumulate)
    optimizer = hp.build_optimizer(model.parameters())
    scheduler = hp.build_scheduler(optimizer, hp.epochs * updates_per_epoch)
    val_loss, start = math.inf, 0
    state = hp.restore()  # a retried or handed-back trial: go on where it stopped
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])  # the shuffling order of the next epochs
        start, val_loss = state["epoch"], state["val_loss"]
    for epoch in range(start, hp.epochs):
        model.train()
        for i, (x, y) in enumerate(train):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            (loss / accumulate).backward()
            if (i + 1) % accumulate == 0 or i + 1 == len(train):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        model.eval()
        total, rows = 0.0, 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            for x, y in val:
                x, y = x.to(device), y.to(device)
                total += float(F.cross_entropy(model(x).float(), y, reduction="sum"))
                rows += len(y)
        val_loss = total / rows
        report(val_loss, epoch)  # may raise optuna.TrialPruned: let it through
        hp.checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "val_loss": val_loss,
            }
        )
    return val_loss


def make(seed: int) -> Task:
    torch.manual_seed(seed)
    return Task(
        model=build_model(),  # what the range test sweeps
        train=DataLoader(TRAIN_SET, batch_size=MICRO_BATCH, shuffle=True),
        val=DataLoader(VAL_SET, batch_size=512),
        loss_fn=F.cross_entropy,
        batch_size=MICRO_BATCH * 2,
        epochs=4,
        precision="bf16",
        accumulate=2,
        name="own-loop",
        step_loss=step_loss,
        fit=fit,
    )
