"""lrtune: find the learning rate and LR schedule for PyTorch training.

A cheap LR range test narrows the search bounds; Optuna studies then search LR × schedule
with grid, random and TPE sampling, with and without that prior.

The public names are imported on first use, so ``python -m lrtune --help`` does not pay
for importing torch and Optuna.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from lrtune.errors import UserError

if TYPE_CHECKING:
    from lrtune.export import export_config, load_config
    from lrtune.group.compare import compare_group
    from lrtune.group.comparison import Comparison
    from lrtune.group.run import run_study
    from lrtune.hf import hf_task
    from lrtune.lightning import lightning_task
    from lrtune.rangetest import RangeTestResult, lr_find, range_test
    from lrtune.report import plot_range_test
    from lrtune.schedules import build_scheduler, schedule_lr
    from lrtune.training.hp import ProductionConfig, TrialParams
    from lrtune.training.tasks import Task

_LAZY = {
    "Task": "lrtune.training.tasks",
    "TrialParams": "lrtune.training.hp",
    "ProductionConfig": "lrtune.training.hp",
    "run_study": "lrtune.group.run",
    "compare_group": "lrtune.group.compare",
    "Comparison": "lrtune.group.comparison",
    "export_config": "lrtune.export",
    "lightning_task": "lrtune.lightning",
    "hf_task": "lrtune.hf",
    "load_config": "lrtune.export",
    "plot_range_test": "lrtune.report",
    "range_test": "lrtune.rangetest",
    "lr_find": "lrtune.rangetest",
    "RangeTestResult": "lrtune.rangetest",
    "schedule_lr": "lrtune.schedules",
    "build_scheduler": "lrtune.schedules",
}

__all__ = [
    "Comparison",
    "ProductionConfig",
    "RangeTestResult",
    "Task",
    "TrialParams",
    "UserError",
    "__version__",
    "build_scheduler",
    "compare_group",
    "export_config",
    "hf_task",
    "lightning_task",
    "load_config",
    "lr_find",
    "plot_range_test",
    "range_test",
    "run_study",
    "schedule_lr",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lrtune' has no attribute {name!r}")
