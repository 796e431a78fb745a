"""pytorch-lightning adapter: a ``LightningModule`` factory plus its data becomes a task.

:func:`lightning_task` returns a task factory (``make(seed) -> Task``) whose task has
``model`` (a fresh module), ``train``/``val`` (the loaders) and ``step_loss`` (the module's
own ``training_step``) for the range test, and ``fit(hp, report)`` for trials: it runs
``Trainer.fit`` with lrtune's optimizer and exact closed-form schedule in place of the
module's ``configure_optimizers``, and reports the monitored metric after every epoch. In
a worker a trial checkpoints with ``Trainer.save_checkpoint`` through ``hp.checkpoint`` and
resumes with ``Trainer.fit(ckpt_path=...)`` (SPEC "Checkpoints"); SIGTERM hands it back.

Needs the extra ``lrtune[lightning]`` (``pip install pytorch-lightning``). Written against
``pytorch_lightning`` 2.x. optuna-integration's ``PyTorchLightningPruningCallback`` is not
used: it imports the unified ``lightning`` package (whose ``Callback`` a
``pytorch_lightning.Trainer`` rejects) and takes an Optuna trial, where lrtune's ``fit``
contract hands over a ``report`` function.

Example: docs/reference/python-api.md, Adapters (run by tests/test_api.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrtune import interrupt
from lrtune.device import resolve_device
from lrtune.errors import UserError
from lrtune.training.checkpoint import rng_state, set_rng_state
from lrtune.training.hp import TrialParams
from lrtune.training.tasks import Task, TaskFactory

try:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.model_helpers import is_overridden
    from pytorch_lightning.utilities.warnings import PossibleUserWarning
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "lrtune.lightning needs pytorch-lightning: pip install 'lrtune[lightning]'"
    ) from exc

__all__ = ["TrialParams", "lightning_step_loss", "lightning_task"]

Report = Callable[[float, int], None]

# Trainer settings that lrtune owns: the epochs are the trial's, and the schedule's length
# is computed from them, so a different max/min would cut or stretch it.
_OWNED_TRAINER_KWARGS = ("max_epochs", "min_epochs", "max_steps", "min_steps")

# Lightning warns on every self.log() in a training_step called without a Trainer, as the
# range test does through step_loss.
_NO_TRAINER_LOG = r".*`self\.log\(\)` but the `self\.trainer` reference is not registered"

_LEAF_SPEC = r".*isinstance\(treespec, LeafSpec\)` is deprecated"


def lightning_step_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The loss of one batch: ``model.training_step(batch, 0)``, or its ``"loss"`` entry
    when it returns a dict. Raises ``TypeError`` when there is no loss tensor."""
    if not isinstance(model, pl.LightningModule):
        raise TypeError(f"model is {type(model).__name__}, expected a LightningModule")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_TRAINER_LOG)
        out = model.training_step(batch, 0)
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"{type(model).__name__}.training_step returned {type(out).__name__}: "
            "expected a loss tensor or a dict with 'loss'"
        )
    return loss


def _no_loss_fn(*args: Any) -> torch.Tensor:
    raise TypeError("a Lightning task's loss is its training_step: use task.step_loss")


class _Reporter(pl.Callback):
    """Reports the monitored metric once per epoch; stops on lrtune's deferred Ctrl-C.

    The value is read at the end of the training epoch, after that epoch's validation (if
    any): ``callback_metrics`` then holds both the validation metrics and the epoch
    aggregates of the training metrics (not yet what the module logs in its own
    ``on_train_epoch_end``, which Lightning calls after callbacks). When the task validates,
    an epoch without validation (``check_val_every_n_epoch``) reports nothing.
    """

    def __init__(self, monitor: str, report: Report) -> None:
        self.monitor = monitor
        self.report = report
        self._validated = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt; see _run)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.enable_validation and not self._validated:
            return
        self._validated = False
        # A TrialPruned raised here leaves Trainer.fit as is (after Lightning's teardown).
        self.report(_monitored(trainer, self.monitor), trainer.current_epoch)


class _Checkpointer(pl.Callback):
    """Writes a Lightning checkpoint (``Trainer.save_checkpoint``) through the trial's
    ``hp.checkpoint`` after each reported epoch but the last, when the interval says so or
    the worker is being preempted; the trial resumes with ``Trainer.fit(ckpt_path=...)``.

    Its own state, stored inside the Lightning checkpoint, is the RNG streams (torch,
    numpy, Python): Lightning does not save them, and the next epoch's data order is drawn
    from them. They are put back when Lightning restores the checkpoint, before the
    training loader's iterator is created, so a resumed trial trains the same batches.
    """

    def __init__(self, checkpoints: Any, folder: Path) -> None:
        self.checkpoints, self.folder = checkpoints, folder

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
            return  # the trial ends with this epoch: nothing left to resume
        if not self.checkpoints.wanted():
            return
        path = self.folder / "trial.ckpt"
        trainer.save_checkpoint(path)
        self.checkpoints.save({"lightning": path.read_bytes()})

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict["rng"])


def _monitored(trainer: pl.Trainer, monitor: str) -> float:
    metrics = trainer.callback_metrics
    if monitor not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        raise UserError(
            f"monitor {monitor!r} was not logged (logged: {logged}); log it with "
            f"self.log({monitor!r}, value) or pass monitor= one of those"
        )
    return float(metrics[monitor])


def _accelerator(device: Any) -> dict[str, Any]:
    dev = resolve_device(device if isinstance(device, torch.device) else str(device))
    accelerator = "gpu" if dev.type == "cuda" else dev.type
    return {"accelerator": accelerator, "devices": [dev.index] if dev.index is not None else 1}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep Lightning's banner ("GPU available: ...") and hints (``num_workers``, logging
    interval) out of lrtune's output; real warnings still show."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            # pytorch_lightning 2.6 builds torch's deprecated LeafSpec (torch >= 2.10):
            # Lightning's to fix, nothing the user can act on.
            warnings.filterwarnings("ignore", message=_LEAF_SPEC, category=FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _use_lrtune_optimizer(module: pl.LightningModule, hp: TrialParams) -> None:
    """Replace ``module.configure_optimizers`` (on this instance only) with lrtune's."""

    def configure_optimizers() -> Any:  # an OptimizerLRSchedulerConfig dict
        # Optimizer updates of the whole run, with accumulate_grad_batches and
        # limit_train_batches taken into account (ceil per epoch: Lightning steps on an
        # epoch's last, partial accumulation too).
        total = module.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError(
                "the training loader has no length: lrtune needs the number of batches per "
                "epoch to lay out the LR schedule"
            )
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = hp.build_optimizer(params)
        scheduler = hp.build_scheduler(optimizer, int(total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    module.configure_optimizers = configure_optimizers  # type: ignore[method-assign]


def lightning_task(
    module_factory: Callable[[], pl.LightningModule],
    train: DataLoader | pl.LightningDataModule,
    val: DataLoader | None = None,
    *,
    monitor: str = "val_loss",
    direction: Literal["minimize", "maximize"] = "minimize",
    epochs: int = 10,
    batch_size: int | None = None,
    name: str = "lightning",
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> TaskFactory:
    """A task factory for a ``LightningModule``: ``make = lightning_task(MyModule, loader)``.

    Args:
        module_factory: builds a fresh, untrained module (a class with a no-argument
            constructor will do).
        train: the training ``DataLoader``, or a ``LightningDataModule`` (then ``val`` is
            its ``val_dataloader``).
        val: the validation ``DataLoader``; ``None``: the module's own, if any.
        monitor: the metric logged with ``self.log(monitor, ...)`` in a step or in the
            validation hooks, reported each epoch and returned by ``fit``.
        direction: ``"minimize"`` or ``"maximize"`` ``monitor``.
        epochs: the task's default epochs per trial (a spec's ``epochs`` overrides it).
        batch_size: the batch size recorded with the results; ``None``: the train loader's.
        name: the task's name (the default study group).
        trainer_kwargs: more ``pytorch_lightning.Trainer`` arguments
            (``accumulate_grad_batches``, ``precision``, ``gradient_clip_val``,
            ``callbacks``...); the epochs are lrtune's.

    ``fit(hp, report)`` seeds everything with ``hp.seed``, builds a fresh module, gives it
    ``hp.build_optimizer`` over its trainable parameters and ``hp.build_scheduler`` stepped
    after every optimizer update, runs ``Trainer.fit`` for ``hp.epochs`` on ``hp.device``,
    calls ``report(value, epoch)`` after each epoch (which may raise ``optuna.TrialPruned``)
    and returns the last value of ``monitor``. Raises :class:`UserError` for bad arguments.
    An example: the docstring of :mod:`lrtune.lightning`.
    """
    extra, user_callbacks = _checked_args(
        module_factory, train, val, monitor, direction, trainer_kwargs
    )
    loaders: list[tuple[Any, Any]] = []  # filled on first use: a datamodule sets up once

    def data() -> tuple[Any, Any]:
        if not loaders:
            if isinstance(train, pl.LightningDataModule):
                train.prepare_data()
                train.setup("fit")
                dm_val = train.val_dataloader() if is_overridden("val_dataloader", train) else None
                loaders.append((train.train_dataloader(), dm_val))
            else:
                loaders.append((train, val))
        return loaders[0]

    def fit(hp: TrialParams, report: Report) -> float:
        return _fit(hp, report, module_factory, train, val, monitor, extra, user_callbacks)

    def make(seed: int) -> Task:
        train_loader, val_loader = data()
        size = batch_size if batch_size is not None else getattr(train_loader, "batch_size", None)
        if not isinstance(size, int):
            raise UserError(
                f"lightning task {name}: the train loader has no batch_size; "
                "pass lightning_task(..., batch_size=)"
            )
        torch.manual_seed(seed)  # the seed sets the initial weights, as for every task
        return Task(
            model=module_factory(),
            train=train_loader,
            val=val_loader,
            loss_fn=_no_loss_fn,
            metric_name=monitor,
            direction=direction,
            batch_size=size,
            epochs=epochs,
            name=name,
            step_loss=lightning_step_loss,
            fit=fit,
        )

    return make


def _checked_args(
    module_factory: Any,
    train: Any,
    val: Any,
    monitor: Any,
    direction: str,
    trainer_kwargs: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], list[Any]]:
    """:func:`lightning_task`'s arguments checked (one line each); the extra ``Trainer``
    arguments and the user's callbacks."""
    if not callable(module_factory):
        raise UserError("lightning_task: module_factory must build a LightningModule")
    is_datamodule = isinstance(train, pl.LightningDataModule)
    if not is_datamodule and not isinstance(train, DataLoader):
        raise UserError(
            f"lightning_task: train is {type(train).__name__}, "
            "expected a DataLoader or a LightningDataModule"
        )
    if val is not None and (is_datamodule or not isinstance(val, DataLoader)):
        raise UserError(
            "lightning_task: val must be a DataLoader, and is not given with a LightningDataModule"
        )
    if direction not in ("minimize", "maximize"):
        raise UserError(
            f"lightning_task: direction is {direction!r}, expected 'minimize' or 'maximize'"
        )
    if not isinstance(monitor, str) or not monitor:
        raise UserError("lightning_task: monitor must name a logged metric")
    extra = dict(trainer_kwargs or {})
    owned = [key for key in _OWNED_TRAINER_KWARGS if key in extra]
    if owned:
        raise UserError(
            f"lightning_task: trainer_kwargs may not set {', '.join(owned)}: "
            "each trial trains for its epochs (epochs=, or the spec's epochs)"
        )
    callbacks = extra.pop("callbacks", None) or []
    user_callbacks = [callbacks] if isinstance(callbacks, pl.Callback) else list(callbacks)
    return extra, user_callbacks


def _fit(
    hp: TrialParams,
    report: Report,
    module_factory: Callable[[], pl.LightningModule],
    train: Any,
    val: Any,
    monitor: str,
    extra: dict[str, Any],
    user_callbacks: list[Any],
) -> float:
    """One trial: ``Trainer.fit`` of a fresh module with ``hp``'s optimizer and schedule,
    ``monitor`` reported each epoch; its last value. In a worker (``hp.checkpoints``) the
    trial checkpoints through ``hp.checkpoint`` and a resumed one starts from its Lightning
    checkpoint (``ckpt_path``)."""
    checkpoints = getattr(hp, "checkpoints", None)
    with _quiet(), tempfile.TemporaryDirectory(prefix="lrtune-lightning-") as tmp:
        pl.seed_everything(hp.seed, workers=True, verbose=False)
        module = module_factory()
        _use_lrtune_optimizer(module, hp)
        callbacks = [*user_callbacks, _Reporter(monitor, report)]
        ckpt_path = None
        if checkpoints is not None:
            callbacks.append(_Checkpointer(checkpoints, Path(tmp)))
            state = hp.restore()  # its reported values are reported again
            if state is not None:
                ckpt_path = Path(tmp) / "resume.ckpt"
                ckpt_path.write_bytes(state["lightning"])
        kwargs: dict[str, Any] = {
            **_accelerator(hp.device),
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **extra,
            "max_epochs": hp.epochs,
            "callbacks": callbacks,
        }
        trainer = pl.Trainer(**kwargs)
        _run(trainer, module, train, val, ckpt_path)
        return _monitored(trainer, monitor)


def _run(
    trainer: pl.Trainer, module: pl.LightningModule, train: Any, val: Any, ckpt_path: Path | None
) -> None:
    previous = signal.getsignal(signal.SIGINT)
    # The checkpoint was written by lrtune's own worker into the trial's store: as trusted
    # as the task code it runs (hp.restore unpickles the same way).
    resume: dict[str, Any] = {"ckpt_path": ckpt_path, "weights_only": False} if ckpt_path else {}
    try:
        if isinstance(train, pl.LightningDataModule):
            trainer.fit(module, datamodule=train, **resume)
        else:
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val, **resume)
    except SystemExit:
        # Lightning turns a KeyboardInterrupt inside fit (lrtune's deferred Ctrl-C, or a
        # second Ctrl-C) into "ignore SIGINT from now on" and sys.exit(1), after its own
        # teardown, and a SIGTERM into SIGTERMException (a SystemExit) at the end of the
        # batch; give lrtune its SIGINT handler and its exception back (in a worker,
        # SIGTERM is lrtune.preempt.Preempted: the trial is handed back).
        if not trainer.interrupted:
            raise
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        signum = interrupt.requested()
        raise (KeyboardInterrupt() if signum is None else interrupt.stop_for(signum)) from None
