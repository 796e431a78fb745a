"""One Optuna trial = one :func:`lrtune.trainer.train` run, reported epoch by epoch."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import optuna
import torch

from lrtune.errors import UserError
from lrtune.space import suggest
from lrtune.spec import StudySpec
from lrtune.states import FINISHED
from lrtune.trainer import TrainConfig, run_trial

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial that cannot give a value (CUDA out of memory, an error in the task); it is
    recorded as FAIL with its reason in the ``fail_reason`` user attr, and the worker goes
    on. Failed trials do not count toward the budget."""


class Surplus(Exception):
    """Another worker started the trial that completes the budget at the same moment."""


def is_surplus(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True when the trials before this one already fill the budget.

    Two workers can both see one slot left and start a trial; the later-numbered one then
    steps back (recorded as FAIL, reason ``surplus``) so together they finish exactly the
    budget.
    """
    states = (*FINISHED, optuna.trial.TrialState.RUNNING)
    earlier = [
        t for t in study.get_trials(deepcopy=False, states=states) if t.number < trial.number
    ]
    return len(earlier) >= budget


def make_objective(
    spec: StudySpec,
    bounds: tuple[float, float],
    *,
    budget: int,
    device: str = "auto",
    worker: str | None = None,
    follow_bounds: bool = False,
) -> Callable[[optuna.Trial], float]:
    """The objective of one study: suggest, train, report each epoch, prune on divergence.

    With ``follow_bounds`` the LR bounds are read from the study (user attr ``bounds``) at
    each trial, so bounds widened by :func:`lrtune.widen.maybe_widen` take effect at once.

    ``worker`` (e.g. ``host:pid``) is recorded on each trial (user attr ``worker``), so a
    trial can be traced to the process that ran it.
    """

    def objective(trial: optuna.Trial) -> float:
        if worker is not None:
            trial.set_user_attr("worker", worker)
        if is_surplus(trial.study, trial, budget):
            trial.set_user_attr("fail_reason", "surplus: the budget was met by other workers")
            raise Surplus
        current = bounds
        if follow_bounds:
            stored = trial.study.user_attrs.get("bounds", bounds)
            current = (float(stored[0]), float(stored[1]))
        lr, schedule, params = suggest(trial, spec, current)

        storage_error: list[BaseException] = []

        def report(value: float, step: int) -> None:  # lrtune's loop: step = epoch index
            try:
                trial.report(value, step)
                if trial.should_prune():
                    trial.set_user_attr("prune_reason", f"pruner at epoch {step + 1}")
                    raise optuna.TrialPruned(f"pruned at epoch {step + 1}")
            except optuna.TrialPruned:
                raise
            except Exception as exc:  # the storage's, not the task's: the worker handles it
                storage_error.append(exc)
                raise

        config = TrainConfig(
            lr=lr,
            optimizer=spec.optimizer,
            schedule=schedule,
            schedule_params=params,
            epochs=spec.epochs,
            seed=spec.seed,
            device=device,
        )
        try:
            result = run_trial(spec.task, config, report)
        except torch.cuda.OutOfMemoryError as exc:
            trial.set_user_attr("fail_reason", f"CUDA out of memory: {str(exc).splitlines()[0]}")
            raise TrialFailed("CUDA out of memory") from None
        except (optuna.TrialPruned, UserError):
            raise
        except Exception as exc:  # the task's code (its fit, model, data) raised
            if storage_error:
                raise
            first = (str(exc).splitlines() or [""])[0]
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {first}")
            raise TrialFailed(first) from None
        finally:
            _release_memory()
        trial.set_user_attr("config", result.config)
        trial.set_user_attr("seconds", round(result.seconds, 4))
        if result.diverged:
            trial.set_user_attr("diverged", True)
            trial.set_user_attr("prune_reason", f"diverged: {result.reason}")
            raise optuna.TrialPruned(f"diverged: {result.reason}")
        return result.value

    return objective


def _release_memory() -> None:
    # Each trial builds a fresh model; free it before the next so a long-running GPU worker
    # does not creep up to out-of-memory. On CPU, reference counting already frees it, and a
    # full collection in a process that imported torch costs 0.1-0.4 s a trial: only
    # processes that used CUDA pay for it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def trial_summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """lr, schedule, value and state of a finished trial, for tables and reports."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "lr": trial.params.get("lr"),
        "schedule": trial.params.get("schedule"),
    }
