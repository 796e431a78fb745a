"""TensorBoard runs (``--log-dir DIR``): per-step LR and training loss, per-epoch metric.

One run per trial, ``DIR/{study}/trial-{number:04d}``, and one per range test,
``DIR/{group}/rangetest`` (``DIR/rangetest-{task}`` from ``lrtune rangetest``). The root
comes from ``--log-dir`` or ``$LRTUNE_LOG_DIR`` (the CLI sets the variable, so worker
processes it starts inherit it). ``torch.utils.tensorboard`` (the ``tensorboard`` package,
extra ``lrtune[tensorboard]``) is imported only when a run is written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UserError

if TYPE_CHECKING:
    from lrtune.rangetest.result import RangeTestResult

#: The environment variable ``--log-dir`` sets.
LOG_DIR_ENV = "LRTUNE_LOG_DIR"


def log_root() -> str | None:
    """The TensorBoard root of this process (``$LRTUNE_LOG_DIR``), or ``None``: no logging."""
    return os.environ.get(LOG_DIR_ENV) or None


def check_log_dir(path: str) -> str:
    """``path`` made (with its parents) and checked writable, as an absolute path; else
    :class:`UserError`. Also checks that the ``tensorboard`` package is there."""
    _summary_writer()
    target = Path(path).expanduser()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if target.exists() and not target.is_dir():
        raise UserError(f"--log-dir {path}: exists and is not a directory")
    if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK)):
        raise UserError(f"--log-dir {path}: {existing} is not a writable directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--log-dir {path}: cannot create it ({exc.strerror or exc})") from None
    return str(target.resolve())


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "--log-dir needs the tensorboard package: pip install 'lrtune[tensorboard]' "
            "(or pip install tensorboard)"
        ) from None
    return SummaryWriter


class RunLog:
    """One TensorBoard run; every method is a no-op when ``run_dir`` is ``None``."""

    def __init__(self, run_dir: str | None) -> None:
        self.writer = _summary_writer()(run_dir) if run_dir else None

    def step(self, step: int, lr: float, loss: float) -> None:
        """The LR an optimizer update used and its training loss (``lr``, ``train_loss``)."""
        if self.writer is not None:
            self.writer.add_scalar("lr", lr, step)
            if math.isfinite(loss):
                self.writer.add_scalar("train_loss", loss, step)

    def value(self, name: str, value: float, step: int) -> None:
        """A metric after epoch (or reported step) ``step``; flushed, so a trial pruned or
        stopped right after still has everything up to here on disk."""
        if self.writer is not None:
            if math.isfinite(value):
                self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the run's event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def trial_run(study: str, number: int) -> str | None:
    """The run directory of trial ``number`` of ``study``, or ``None`` without a log root."""
    root = log_root()
    return None if root is None else os.path.join(root, study, f"trial-{number:04d}")


def write_range_test(result: RangeTestResult, run_dir: str) -> None:
    """The range test's curves: per seed, ``lr``, ``loss`` and ``smoothed_loss`` against the
    sweep's step (``rangetest/seed-{s}/...``), and the bounds as text."""
    writer = _summary_writer()(run_dir)
    try:
        for index, lrs in enumerate(result.lrs):
            seed = result.seeds[index] if index < len(result.seeds) else index
            curves = zip(lrs, result.losses[index], result.smoothed[index], strict=False)
            for step, (lr, loss, smooth) in enumerate(curves):
                writer.add_scalar(f"rangetest/seed-{seed}/lr", lr, step)
                for tag, value in (("loss", loss), ("smoothed_loss", smooth)):
                    if math.isfinite(value):
                        writer.add_scalar(f"rangetest/seed-{seed}/{tag}", value, step)
        writer.add_text(
            "rangetest/bounds",
            f"{result.optimizer}: lr in [{result.lr_low:.3g}, {result.lr_high:.3g}], "
            f"valley {result.valley:.3g}, diagnosis {result.diagnosis}",
        )
    finally:
        writer.close()
