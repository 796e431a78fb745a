"""Run a group from start to end: prepare its studies, run their trials, compare them.

:func:`run_group` is what ``lrtune study`` does, without printing: the command line and
the benchmarks call it and show what they want through its callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lrtune.errors import UserError
from lrtune.group.prepare import GRACE_PERIOD, HEARTBEAT_INTERVAL, Group, prepare_group

if TYPE_CHECKING:
    import optuna

    from lrtune.group.comparison import Comparison
    from lrtune.rangetest import RangeTestResult
    from lrtune.search.spec import StudySpec

log = logging.getLogger(__name__)

#: ``on_progress(group, storage)``: called before the first trial, after each trial run in
#: this process, and about once a second while local worker processes run.
ProgressCallback = Callable[[Group, "optuna.storages.BaseStorage"], None]


def run_group(
    spec: StudySpec,
    url: str,
    *,
    workers: int = 1,
    device: str = "auto",
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    create_only: bool = False,
    worker_args: Sequence[str] = (),
    threads: int | None = None,
    timeout: float | None = None,
    grace: float | None = None,
    on_rangetest: Callable[[RangeTestResult], None] | None = None,
    on_prepared: Callable[[Group], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> Comparison:
    """Create (or resume) the studies of ``spec`` in storage ``url``, run their trials until
    each has its budget, and return the group's comparison, also saved on its studies.

    ``workers`` is 1 to run the trials in this process, else that many local ``lrtune
    worker`` processes (with ``worker_args`` added to their command line). The range test,
    when the prior needs one and the storage holds none, runs first and is passed to
    ``on_rangetest``; ``on_prepared`` receives the prepared :class:`~lrtune.group.prepare.Group`
    (bounds, created studies, range-test result) before any trial runs.
    With ``create_only`` no trial runs: the comparison of what the studies already hold is
    returned and not saved (remote workers run the trials). With ``timeout`` (seconds from
    the start of the trials, as Optuna's ``optimize(timeout=...)``: the range test and the
    studies' creation come before) no trial starts after that long; those running
    then finish, and the comparison is of what the studies hold (the same call later goes
    on: :func:`over_budget` tells whether budgets are left).

    On the CPU this limits torch's threads for the process (``threads``, default
    ``$OMP_NUM_THREADS`` or 1; see :func:`lrtune.workers.limit_cpu_threads`).
    Raises :class:`~lrtune.errors.UserError` for a bad spec, task or storage (nothing is
    written then) and when a local worker process fails.
    """
    from lrtune.device import resolve_device
    from lrtune.group.compare import compare_group
    from lrtune.group.confirm import set_options
    from lrtune.group.present import save_comparison
    from lrtune.storage import open_storage
    from lrtune.workers import limit_cpu_threads

    if str(resolve_device(device)) == "cpu" or threads is not None:
        limit_cpu_threads(threads)
    group = prepare_group(
        spec, url, device=device, on_rangetest=on_rangetest, trains_here=not create_only
    )
    storage = open_storage(url)
    # --confirm/--confirm-seeds may change between runs, like --trials: workers read them here.
    set_options(storage, group.name, spec.confirm, spec.confirm_seeds)
    if group.rangetest is not None and group.rangetest.diagnosis != "ok":
        log.info(
            "range test diagnosis of group %s is %r; its bounds may be off",
            group.name,
            group.rangetest.diagnosis,
        )
    if on_prepared is not None:
        on_prepared(group)
    if create_only:
        return compare_group(storage, group.name, tolerance=spec.tolerance)
    heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    _run_trials(url, group, workers, device, heartbeat, worker_args, on_progress, timeout, grace)
    cmp = compare_group(storage, group.name, tolerance=spec.tolerance)
    save_comparison(storage, cmp)
    return cmp


def _run_trials(
    url: str,
    group: Group,
    workers: int,
    device: str,
    heartbeat: dict[str, int],
    worker_args: Sequence[str],
    on_progress: ProgressCallback | None,
    timeout: float | None,
    grace: float | None = None,
) -> None:
    from lrtune.preempt import DEFAULT_GRACE, handing_back
    from lrtune.processes import failures, spawn_workers, wait_workers
    from lrtune.storage import open_storage
    from lrtune.workers import run_worker

    refs = group.refs
    storage = open_storage(url)

    def progress() -> None:
        if on_progress is not None:
            on_progress(group, storage)

    progress()
    if workers == 1:
        with handing_back(DEFAULT_GRACE if grace is None else grace):  # SIGTERM: lrtune.preempt
            run_worker(
                url,
                studies=[r.name for r in refs],
                device=device,
                on_trial=lambda _n, _t: progress(),
                heartbeat_interval=heartbeat["heartbeat_interval"],
                grace_period=heartbeat["grace_period"],
                timeout=timeout,
            )
        return
    # The local workers run the task this process checked, whatever the storage says later.
    extra = [
        *(f"--{k.replace('_', '-')}={v}" for k, v in heartbeat.items()),
        f"--task={group.spec.task}",
        *([f"--timeout={timeout!r}"] if timeout is not None else []),
        *worker_args,
    ]
    procs = spawn_workers(url, group.name, workers, device=device, extra_args=extra)
    if wait_workers(procs, on_tick=progress) != 0:
        raise UserError(f"{failures(procs)}; run the same command again to finish the budget")


def over_budget(url: str, group: Group) -> tuple[dict[str, float], bool]:
    """The studies of a resumed group that already hold more finished trials (with rungs:
    more compute) than their budget (``study`` re-run with a smaller ``--trials``), with
    those amounts; and whether every study of the group has its budget (nothing is left to
    run)."""
    import optuna

    from lrtune.search.ladder import study_usage
    from lrtune.storage import open_storage

    storage = open_storage(url)
    over: dict[str, float] = {}
    full = True
    for ref in group.refs:
        done, _ = study_usage(optuna.load_study(study_name=ref.name, storage=storage))
        full = full and done >= group.budget(ref)
        if done > group.budget(ref):
            over[ref.name] = done
    return over, full
