"""One Optuna trial = one :func:`lrtune.training.trainer.train` run, reported epoch by epoch."""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch

from lrtune import interrupt, preempt
from lrtune.errors import UserError
from lrtune.faults import describe
from lrtune.search.dims import scaled_bounds, scaling_rule, suggest_setup
from lrtune.search.ladder import (
    EPOCHS,
    PROMOTION,
    RUNG,
    Ladder,
    rung_of,
    source_of,
    surplus_reason,
)
from lrtune.search.space import suggest, suggest_optimizer
from lrtune.search.spec import StudySpec
from lrtune.search.states import FINISHED
from lrtune.search.trial_config import trial_config
from lrtune.training import ranks
from lrtune.training.checkpoint import ArtifactStore, Checkpoints
from lrtune.training.tblog import trial_run
from lrtune.training.trainer import TrainConfig, TrainResult, run_trial
from lrtune.training.trunk import TRUNK_ATTR, Trunks

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial that cannot give a value (CUDA out of memory, any error in the task); it is
    recorded as FAIL with its reason in the ``fail_reason`` user attr, and the worker goes
    on. Failed trials do not count toward the budget."""


class Surplus(Exception):
    """Another worker started the trial that completes the budget at the same moment."""


class TaskError(Exception):
    """What the task's code raised during a trial (``error``), whatever its type: an
    ``OptunaError`` of the user's own, an ``OperationalError`` of their own database,
    ``GeneratorExit``. See :func:`run_task`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(describe(error))
        self.error = error


#: The largest ``report`` step a storage holds (PostgreSQL keeps steps in a 32-bit column).
MAX_STEP = 2**31 - 1


def run_task(
    task: str,
    config: TrainConfig,
    report: Callable[[float, int], None],
    checkpoints: Checkpoints | None = None,
    trunks: Trunks | None = None,
) -> TrainResult:
    """:func:`~lrtune.training.trainer.run_trial`, with what it raises told apart by where
    it was raised, never by its type alone.

    ``report`` is lrtune's own call into the storage: an error raised inside it (the
    storage lost, the trial failed by another worker) propagates as it is, whatever the
    task's loop did with it, for the worker to handle. Anything else raised while the task
    runs is the task's, so it becomes :class:`TaskError` (the trial then FAILs with its
    reason), except Ctrl-C/SIGTERM, pruning (by the pruner through ``report``, or the
    task's own ``optuna.TrialPruned``) and :class:`UserError` (lrtune's checks of the
    task's options). A step ``report`` cannot store is the task's error too.
    """
    ours: list[BaseException] = []

    def guarded(value: float, step: int) -> None:
        if not 0 <= step <= MAX_STEP:
            raise ValueError(
                f"report(value, step={step}): steps go from 0 to 2**31 - 1 (what storages "
                "hold); report an epoch or update index, not a sample or token count"
            )
        try:
            report(value, step)
        except BaseException as exc:
            ours.append(exc)
            raise

    call: Callable[[float, int], None] = guarded
    group = ranks.current()
    if group is not None:  # --nproc-per-trial: every rank trains this configuration
        group.share(task, config)
        call = group.leader_report(guarded)
        # The other ranks would start from scratch: rank 0 must not resume alone.
        checkpoints = trunks = None
    try:
        return run_trial(task, config, call, checkpoints=checkpoints, trunks=trunks)
    except (KeyboardInterrupt, optuna.TrialPruned, UserError, preempt.Preempted):
        raise
    except BaseException as exc:
        storage = next((e for e in ours if not isinstance(e, optuna.TrialPruned)), None)
        if storage is not None:
            raise storage from None  # lrtune's own call failed, whatever the task did then
        raise TaskError(exc) from exc


def is_surplus(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True when the trials before this one already fill the budget.

    Two workers can both see one slot left and start a trial; the later-numbered one then
    steps back (recorded as FAIL, reason ``surplus``) so together they finish exactly the
    budget.
    """
    if trial.number < budget:
        # Fewer trials of any state were started before this one than the budget: no need
        # to read them (a storage round trip per trial) to know they cannot fill it.
        return False
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
    ladder: Ladder | None = None,
    reference_batch: int | None = None,
    checkpoint_store: ArtifactStore | None = None,
) -> Callable[[optuna.Trial], float]:
    """The objective of one study: suggest, train, report each epoch, prune on divergence.

    With a ``ladder`` (rungs) a trial trains its rung's epochs (user attrs ``rung`` and
    ``epochs``; the schedule is compressed to them) and steps back as surplus when
    :func:`lrtune.search.ladder.surplus_reason` says so; ``budget`` is then compute.

    With ``follow_bounds`` the LR bounds are read from the study (user attr ``bounds``) at
    each trial, so bounds widened by :func:`lrtune.search.widen.maybe_widen` take effect at once.

    ``worker`` (e.g. ``host:pid``) is recorded on each trial (user attr ``worker``), so a
    trial can be traced to the process that ran it.

    ``reference_batch`` is the batch size the bounds were measured at (the range test's):
    a trial that searches ``batch_size`` then searches the bounds moved to its batch by
    the spec's scaling rule (:mod:`lrtune.search.dims`; user attr ``lr_bounds``).

    With a ``checkpoint_store`` each trial checkpoints there every
    ``spec.checkpoint_every`` epochs and resumes from the checkpoint its retry or
    hand-back carries (:mod:`lrtune.training.checkpoint`); on SIGTERM in a worker it is
    handed back (:mod:`lrtune.preempt`).
    """

    run = _Settings(
        spec=spec,
        bounds=bounds,
        device=device,
        follow_bounds=follow_bounds,
        ladder=ladder,
        reference_batch=reference_batch,
        checkpoint_store=checkpoint_store,
    )

    def objective(trial: optuna.Trial) -> float:
        if worker is not None:
            trial.set_user_attr("worker", worker)
        if ladder is not None:
            reason = surplus_reason(trial.study.get_trials(deepcopy=False), trial, ladder)
            if reason is not None:
                trial.set_user_attr("fail_reason", reason)
                raise Surplus
            # A promotion was enqueued with its rung; a configuration the sampler proposed
            # starts on the bottom rung. Recorded before training: running trials count.
            rung = rung_of(trial)
            trial.set_user_attr(RUNG, rung)
            trial.set_user_attr(EPOCHS, ladder.rungs[rung])
        elif is_surplus(trial.study, trial, budget):
            trial.set_user_attr("fail_reason", "surplus: the budget was met by other workers")
            raise Surplus
        with trial_errors(trial), preempt.running_trial(lambda: hand_back(trial)):
            return _train_trial(trial, run)

    return objective


@dataclass(frozen=True, kw_only=True)
class _Settings:
    """What :func:`make_objective` fixes for every trial of its study."""

    spec: StudySpec
    bounds: tuple[float, float]
    device: str
    follow_bounds: bool
    ladder: Ladder | None
    reference_batch: int | None
    checkpoint_store: ArtifactStore | None


def _train_trial(trial: optuna.Trial, run: _Settings) -> float:
    """Suggest the trial's configuration, train it (reported each epoch), record it."""
    spec, ladder = run.spec, run.ladder
    current = run.bounds
    if run.follow_bounds:
        stored = trial.study.user_attrs.get("bounds", run.bounds)
        current = (float(stored[0]), float(stored[1]))
    setup = suggest_setup(trial, spec)  # before lr: a searched batch moves its bounds
    if setup.batch_size is not None and run.reference_batch is not None:
        current = scaled_bounds(current, setup.batch_size, run.reference_batch, scaling_rule(spec))
        trial.set_user_attr("lr_bounds", list(current))
    with warnings.catch_warnings():
        if ladder is not None and ladder.beta:
            # A promotion's LR moved by the horizon correction may leave the bounds
            # the sampler draws from: it is meant to.
            warnings.filterwarnings("ignore", message="Fixed parameter lr with value")
        lr, schedule, params = suggest(trial, spec, current)
    epochs = spec.epochs if ladder is None else ladder.rungs[rung_of(trial)]
    steps: list[int] = []
    config = trial_config(
        spec,
        lr=lr,
        schedule=schedule,
        schedule_params=params,
        optimizer_params=suggest_optimizer(trial, spec),
        setup=setup,
        seed=spec.seed,
        device=run.device,
        epochs=epochs,
        log_dir=trial_run(trial.study.study_name, trial.number),  # --log-dir: TensorBoard
    )
    checkpoints = None
    if run.checkpoint_store is not None and spec.checkpoint_every != 0:
        checkpoints = Checkpoints(
            run.checkpoint_store, trial, every=spec.checkpoint_every, identity={"epochs": epochs}
        )
    try:
        report = _pruning_report(trial, steps)
        result = run_task(spec.task, config, report, checkpoints, _trunks(trial, run))
    except optuna.TrialPruned:
        if checkpoints is not None:
            checkpoints.discard()  # a pruned trial is never resumed
        raise
    finally:
        _release_memory()
    if checkpoints is not None:
        checkpoints.discard()  # finished: nothing left to resume
        if result.model is not None and not result.diverged:
            checkpoints.keep_weights(result.model)  # for export --weights
    trial.set_user_attr("config", result.config)
    trial.set_user_attr("seconds", round(result.seconds, 4))
    if (group := ranks.current()) is not None:  # config's batch_size is the global batch
        trial.set_user_attr("ranks", group.world)
    if result.final_lr is not None:
        trial.set_user_attr("final_lr", result.final_lr)
    if ladder is not None and epochs is not None and steps and max(steps) >= epochs:
        warn_ignored_epochs(trial.study, spec.task, epochs, max(steps))
    if result.diverged:
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("prune_reason", f"diverged: {result.reason}")
        raise optuna.TrialPruned(f"diverged: {result.reason}")
    return result.value


def _trunks(trial: optuna.Trial, run: _Settings) -> Trunks | None:
    """With ``--share-trunks``: the trunk ``trial`` starts from (its promotion's record)
    and whether it keeps its own (below the top rung); ``None`` without, or without an
    artifact store (then every trial trains from scratch)."""
    ladder, store = run.ladder, run.checkpoint_store
    if ladder is None or not ladder.share or store is None:
        return None
    record = trial.user_attrs.get(PROMOTION)
    start = record.get(TRUNK_ATTR) if isinstance(record, dict) else None
    keep = rung_of(trial) < ladder.top
    return Trunks(store, trial, start=start, source=source_of(trial), keep=keep)


def _pruning_report(trial: optuna.Trial, steps: list[int]) -> Callable[[float, int], None]:
    """``report(value, step)`` for the task: records the value on ``trial`` (and the step
    in ``steps``) and raises ``TrialPruned`` when the pruner says so."""

    def report(value: float, step: int) -> None:  # lrtune's loop: step = epoch index
        steps.append(step)
        trial.report(value, step)
        if trial.should_prune():
            trial.set_user_attr("prune_reason", f"pruner at epoch {step + 1}")
            raise optuna.TrialPruned(f"pruned at epoch {step + 1}")

    return report


#: Study user attr: a ``fit`` rung trial of the study reported more epochs than its rung
#: has (set by the first worker that saw it, so the warning is given once per study).
IGNORES_EPOCHS = "fit_ignores_epochs"
_WARNED: set[str] = set()


def warn_ignored_epochs(study: optuna.Study, task: str, epochs: int, step: int) -> None:
    """One warning per study, whichever worker process sees it first: a ``fit`` rung trial
    reported epoch ``step`` (from 0) but its rung has ``epochs``: the task trains its own
    epochs, not ``hp.epochs``."""
    if study.study_name in _WARNED:
        return
    _WARNED.add(study.study_name)  # no second storage read in this process
    if study.user_attrs.get(IGNORES_EPOCHS):
        return  # another worker warned
    study.set_user_attr(IGNORES_EPOCHS, {"epochs": epochs, "reported": step + 1})
    log.warning(
        "task %s ignores hp.epochs: a rung trial of %d epoch(s) reported epoch %d; its fit "
        "must train hp.epochs epochs (and report once per epoch) for rungs to compare "
        "compressed schedules",
        task,
        epochs,
        step + 1,
    )


@contextmanager
def trial_errors(trial: optuna.Trial) -> Iterator[None]:
    """Around everything a trial runs of the task: the one place where its errors are
    handled, whatever code trains.

    Whatever the task raised (:class:`TaskError`, from :func:`run_task`: any type,
    ``sys.exit`` and ``GeneratorExit`` included) sets the trial's ``fail_reason`` to its
    first line and becomes :class:`TrialFailed`, so Optuna records FAIL and the worker goes
    on. Ctrl-C sets ``fail_reason = "interrupted (Ctrl-C)"`` (SIGTERM: ``"interrupted
    (SIGTERM)"``) and passes through, as do pruning, and, from lrtune's own calls, Optuna's
    errors (the trial was failed by another worker) and a lost database connection (the
    worker retries it; see :mod:`lrtune.workers`). Any other exception fails the trial
    too: none leaves it RUNNING.
    """
    from lrtune.dberrors import is_connection_error

    try:
        yield
        return
    except preempt.Preempted:
        hand_back(trial)
        raise
    except KeyboardInterrupt as exc:
        _set_reason(trial, f"interrupted ({interrupt.interrupted_by(exc)})")
        raise
    except TaskError as exc:
        reason = _task_reason(exc.error)
    except (optuna.exceptions.OptunaError, TrialFailed, Surplus, UserError):
        raise  # UserError: a mistake in the task's options (e.g. fp16 on CPU), one line
    except BaseException as exc:  # lrtune's own code, outside the task's run
        if isinstance(exc, Exception) and is_connection_error(exc):
            raise
        reason = _task_reason(exc)
    _set_reason(trial, reason)
    raise TrialFailed(reason) from None


def hand_back(trial: optuna.Trial) -> None:
    """Make ``trial`` WAITING again (preempted: not a failure), for the next worker that
    asks for a trial to run it from its checkpoint; counts it in user attr ``preempted``."""
    storage = trial.study._storage
    count = int(trial.user_attrs.get("preempted", 0)) + 1
    storage.set_trial_user_attr(trial._trial_id, "preempted", count)
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.WAITING)
    log.warning("trial %d of %s handed back (preempted)", trial.number, trial.study.study_name)


def _task_reason(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        detail = describe(exc).partition(": ")[2]
        return f"CUDA out of memory: {detail}" if detail else "CUDA out of memory"
    return describe(exc)


def _set_reason(trial: optuna.Trial, reason: str) -> None:
    try:
        trial.set_user_attr("fail_reason", reason)
    except Exception as exc:  # the storage is gone or the trial already failed elsewhere
        log.warning("could not record why trial %d failed (%s): %s", trial.number, reason, exc)


def _release_memory() -> None:
    # Each trial builds a fresh model; free it before the next so a long-running GPU worker
    # does not creep up to out-of-memory. On CPU, reference counting already frees it, and a
    # full collection in a process that imported torch costs 0.1-0.4 s a trial: only
    # processes that used CUDA pay for it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
