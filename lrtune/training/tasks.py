"""What a trial trains: :class:`Task`, its checks and the built-in tasks.

A task factory is ``def make(seed: int) -> Task``. The seed sets the model's initial
weights; the data split is fixed so that every trial is scored on the same validation set.
Built-in tasks use data shipped inside scikit-learn (no download) or synthetic data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lrtune.errors import UserError
from lrtune.precisions import PRECISIONS
from lrtune.training.data import check_batches, is_pair
from lrtune.training.optimizers import OPTIMIZERS
from lrtune.training.watch import DIVERGENCE_FACTOR

Metric = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass
class Task:
    """A model with its data, loss and validation metric.

    Attributes:
        model: a freshly initialised ``torch.nn.Module``.
        train: training data: an ``(X, y)`` pair of tensors, a torch ``Dataset``, a
            ``DataLoader`` or any re-iterable of batches (a batch is tensors nested in
            tuples, lists, dicts or dataclasses, moved to the device recursively).
        val: validation data, same forms (``None`` is allowed for a task with ``fit``).
        loss_fn: ``loss_fn(model(X), y)`` returns a scalar tensor.
        metric: ``metric(predictions, targets) -> float`` on the whole validation set;
            ``None`` means the validation loss.
        metric_name: how the metric is called in tables and exports.
        direction: ``"minimize"`` or ``"maximize"`` the metric.
        batch_size: the micro-batch: rows of one forward pass, in training and the range
            test (a ``DataLoader``'s own batch size wins). With ``accumulate`` k, the batch
            size lrtune shows, stores and exports is the effective one, k × this.
        epochs: default number of training epochs for a trial.
        name: a short name used as the default study group.
        optimizer: the optimizer a study or range test uses when none is named (``None``:
            ``sgd``).
        step_loss: ``step_loss(model, batch) -> Tensor``, the loss of one batch, for a task
            whose batches are not ``(x, y)`` pairs; ``None``: ``loss_fn(model(x), y)``.
        evaluate: ``evaluate(model, val) -> float``, the metric over the validation
            batches (``val`` iterates them on the device; called in eval mode without
            gradients); ``None``: ``metric`` (or ``loss_fn``) on the stacked predictions of
            ``(x, y)`` batches, else the mean ``step_loss`` over the batches.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 adds a grad
            scaler and needs CUDA).
        accumulate: micro-batches per optimizer update (one schedule step per update).
        clip_grad_norm: clip the gradients' total norm to this before each update.
        fit: ``fit(hp, report) -> float``, the user's own training loop run in place of
            lrtune's in each trial (SPEC "Your own training code"); ``None``: lrtune's loop.
        param_groups: ``param_groups(model) -> list[dict]``, torch's param groups, each
            with an optional ``name`` and ``lr_mult`` (its LR is the base LR times it,
            default 1): trials, the range test (the ratios kept), ``fit``'s
            ``hp.build_optimizer(groups)`` and the export use them
            (:mod:`lrtune.training.groups`).
        divergence_factor: lrtune's loop prunes a trial as diverged once its smoothed
            training loss exceeds this multiple of its first loss (a positive loss; default
            4, see :mod:`lrtune.training.watch`); ``None``: only a non-finite loss or one
            batch 100x the first does.
    """

    model: nn.Module
    train: Any
    val: Any
    loss_fn: Callable[..., torch.Tensor]
    metric: Metric | None = None
    metric_name: str = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    batch_size: int = 64
    epochs: int = 10
    name: str = "task"
    optimizer: str | None = None
    step_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None
    fit: Callable[[Any, Callable[[float, int], None]], float] | None = None
    evaluate: Callable[[nn.Module, Any], float] | None = None
    precision: str = "fp32"
    accumulate: int = 1
    clip_grad_norm: float | None = None
    divergence_factor: float | None = DIVERGENCE_FACTOR
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None


TaskFactory = Callable[[int], Task]


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max class equals the target."""
    return float((predictions.argmax(dim=1) == targets).float().mean())


def _split(
    x: np.ndarray, y: np.ndarray, *, classify: bool, val_fraction: float = 0.25
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    # Fixed split and standardisation from the training part only, so every trial of every
    # seed sees the same data and nothing leaks from validation.
    from sklearn.model_selection import train_test_split

    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=val_fraction, random_state=0, stratify=y if classify else None
    )
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant pixels (digits' borders) stay as they are
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    ydtype = torch.long if classify else torch.float32
    return (
        (torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=ydtype)),
        (torch.tensor(x_va, dtype=torch.float32), torch.tensor(y_va, dtype=ydtype)),
    )


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's global RNG seeded with ``seed`` (initial weights), and the
    caller's RNG state put back afterwards: building a task must not reseed its caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@functools.lru_cache(maxsize=8)
def bundled_dataset(
    name: str,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled ``load_<name>`` data as ``(train, val)`` tensor pairs, the
    fixed split every built-in classification task uses."""
    # Loading and splitting costs ~0.5 s; every trial of a study uses the same split, so a
    # worker does it once. Training only reads these tensors (index_select), never writes.
    import sklearn.datasets

    loader = getattr(sklearn.datasets, f"load_{name}")
    x, y = loader(return_X_y=True)
    return _split(np.asarray(x, dtype=np.float64), np.asarray(y), classify=True)


def _classification(name: str, dataset: str, hidden: int, seed: int) -> Task:
    train, val = bundled_dataset(dataset)
    model = _seeded(seed, lambda: _mlp(train[0].shape[1], hidden, int(train[1].max()) + 1))
    return Task(model=model, train=train, val=val, loss_fn=nn.CrossEntropyLoss(), name=name)


def digits(seed: int) -> Task:
    """8×8 handwritten digits (1,797 images, 10 classes), MLP 64-64-10."""
    return _classification("digits", "digits", 64, seed)


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


def digits_cnn(seed: int) -> Task:
    """8×8 digits with a small CNN with BatchNorm (tests BN-buffer restore)."""
    task = digits(seed)
    task.model = _seeded(seed, _SmallCNN)
    task.name = "digits-cnn"
    task.epochs = 6
    return task


def breast_cancer(seed: int) -> Task:
    """Wisconsin breast cancer (569 rows, 30 features, 2 classes), MLP 30-32-2."""
    return _classification("breast-cancer", "breast_cancer", 32, seed)


def wine(seed: int) -> Task:
    """Wine (178 rows, 13 features, 3 classes), MLP 13-32-3; small batches."""
    task = _classification("wine", "wine", 32, seed)
    task.batch_size = 16
    return task


def synthetic(seed: int) -> Task:
    """Regression on fixed synthetic data: y = sin(x·w) + x·v + noise, MLP 16-64-1."""
    rng = np.random.default_rng(12345)
    x = rng.normal(size=(2000, 16))
    w, v = rng.normal(size=16) / 4, rng.normal(size=16) / 4
    y = np.sin(x @ w) + x @ v + 0.1 * rng.normal(size=2000)
    train, val = _split(x, y[:, None], classify=False)
    model = _seeded(seed, lambda: _mlp(16, 64, 1))
    return Task(model=model, train=train, val=val, loss_fn=nn.MSELoss(), name="synthetic")


def check_task(task: Any, label: str = "task") -> None:
    """Raise :class:`UserError` naming the first field of ``task`` that is wrong."""
    expected = "expected lrtune.Task(model=nn.Module, train=..., val=..., loss_fn=callable)"
    if not isinstance(task, Task):
        raise UserError(f"task {label}: the factory returned {type(task).__name__}, {expected}")
    if not isinstance(task.model, nn.Module):
        raise UserError(f"task {label}: model is {type(task.model).__name__}, {expected}")
    if not callable(task.loss_fn):
        raise UserError(f"task {label}: loss_fn is not callable, {expected}")
    for split in ("train", "val"):
        data = getattr(task, split)
        if data is None and (split == "val" and task.fit is not None):
            continue
        check_batches(data, f"task {label}: {split}")
        if is_pair(data) and len(data[0]) != len(data[1]):
            raise UserError(f"task {label}: {split} X has {len(data[0])} rows, y {len(data[1])}")
    if task.direction not in ("minimize", "maximize"):
        raise UserError(
            f"task {label}: direction is {task.direction!r}, expected 'minimize' or 'maximize'"
        )
    if not isinstance(task.batch_size, int) or task.batch_size < 1:
        raise UserError(f"task {label}: batch_size must be a positive int, got {task.batch_size!r}")
    if not isinstance(task.epochs, int) or task.epochs < 1:
        raise UserError(f"task {label}: epochs must be a positive int, got {task.epochs!r}")
    if task.metric is not None and not callable(task.metric):
        raise UserError(f"task {label}: metric is not callable")
    if task.optimizer is not None and task.optimizer not in OPTIMIZERS:
        raise UserError(
            f"task {label}: unknown optimizer {task.optimizer!r}: "
            f"allowed are {', '.join(OPTIMIZERS)}"
        )
    for name in ("step_loss", "evaluate", "fit", "param_groups"):
        if getattr(task, name) is not None and not callable(getattr(task, name)):
            raise UserError(f"task {label}: {name} is not callable")
    if task.precision not in PRECISIONS:
        raise UserError(
            f"task {label}: precision is {task.precision!r}, allowed are {', '.join(PRECISIONS)}"
        )
    acc = task.accumulate
    if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
        raise UserError(
            f"task {label}: accumulate must be a positive int (micro-batches per update), "
            f"got {acc!r}"
        )
    clip = task.clip_grad_norm
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0
    ):
        raise UserError(f"task {label}: clip_grad_norm must be a positive number, got {clip!r}")
    factor = task.divergence_factor
    if factor is not None and (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not (math.isfinite(factor) and factor > 1)
    ):
        raise UserError(
            f"task {label}: divergence_factor must be a number above 1 (a multiple of the "
            f"first training loss) or None, got {factor!r}"
        )
