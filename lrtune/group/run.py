"""Run a group from start to end: prepare its studies, run their trials, compare them.

:func:`run_group` is what ``lrtune study`` does, without printing: the command line and
the benchmarks call it and show what they want through its callbacks. :func:`study_spec`
builds the spec as ``lrtune study`` does (a spec file, then the flags given), and
:func:`run_study` is both in one call: ``lrtune study`` from Python.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UserError
from lrtune.group.prepare import GRACE_PERIOD, HEARTBEAT_INTERVAL, Group, prepare_group
from lrtune.shell import DEFAULT_STORAGE

if TYPE_CHECKING:
    import optuna

    from lrtune.group.comparison import Comparison
    from lrtune.rangetest import RangeTestResult
    from lrtune.search.spec import StudySpec

log = logging.getLogger(__name__)

#: ``on_progress(group, storage)``: called before the first trial, after each trial run in
#: this process, and about once a second while local worker processes run.
ProgressCallback = Callable[[Group, "optuna.storages.BaseStorage"], None]


def study_spec(spec_file: str | Path | None, keys: Mapping[str, Any]) -> StudySpec:
    """The spec of a group as ``lrtune study`` builds it: the keys of ``spec_file`` (a
    ``studies/*.toml`` file; ``None``: none), each overridden by a value in ``keys`` (the
    flags given; ``None`` values are not given). Raises :class:`UserError` naming the key."""
    from lrtune.search.spec import load_spec_file, resolve_spec

    values = load_spec_file(spec_file) if spec_file is not None else {}
    source = f"spec file {spec_file}" if spec_file is not None else "the spec"
    return resolve_spec(values, keys, source=source)


def run_study(
    task: str | Callable[..., Any] | None = None,
    *,
    storage: str | None = None,
    spec: str | Path | None = None,
    workers: int = 1,
    device: str = "auto",
    **keys: Any,
) -> Comparison:
    """``lrtune study`` from Python: create (or resume) a group's studies, run their trials
    and return the comparison (:class:`~lrtune.group.comparison.Comparison`; ``.table()``
    is what the command prints). The same spec and the same :func:`run_group` as the
    command, so a call resumes what the command started and the other way round.

    Args:
        task: what ``--task`` takes (a built-in name, ``module:function``,
            ``path.py:function``) or a task factory ``make(seed) -> Task`` defined at the
            top level of an importable module or of the script being run (workers import
            it by that path); ``None``: the spec file's.
        storage: the Optuna storage URL (``--storage``); default ``$LRTUNE_STORAGE``, else
            ``sqlite:///lrtune.db``.
        spec: a spec file (``--spec``); ``keys`` override its values.
        workers: 1 runs the trials in this process, N that many local worker processes.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (``--device``).
        **keys: any spec key, as in a spec file or the flag of the same name:
            ``prior="rangetest,none"``, ``samplers="random,tpe"`` (or a list),
            ``trials=20``, ``repeats``, ``epochs``, ``group``, ``confirm``, ``seed``, ...

    Raises :class:`~lrtune.errors.UserError` (one line) for a bad key, value, task or
    storage, before anything is written.

    Example:
        ```python
        import lrtune

        cmp = lrtune.run_study(
            "digits", storage="sqlite:///example.db", group="quick", prior="none",
            samplers="random,tpe", trials=3, epochs=1, lr_low=0.01, lr_high=0.3, confirm=0,
        )
        print(cmp.table())  # the table `lrtune study` prints
        assert [row.study for row in cmp.rows] == ["quick.random.none", "quick.tpe.none"]
        assert all(row.done == 3 for row in cmp.rows)
        # The same call again resumes: the budgets are met, nothing more is trained.
        again = lrtune.run_study(
            "digits", storage="sqlite:///example.db", group="quick", prior="none",
            samplers="random,tpe", trials=3, epochs=1, lr_low=0.01, lr_high=0.3, confirm=0,
        )
        assert [row.done for row in again.rows] == [3, 3]
        ```
    """
    from lrtune.search.spec import StudySpec

    known = {f.name for f in dataclasses.fields(StudySpec)}
    unknown = sorted(set(keys) - known)
    if unknown:
        raise UserError(
            f"run_study(): unknown spec key {unknown[0]!r}: the keys are {', '.join(sorted(known))}"
        )
    if storage is not None and not storage.strip():
        raise UserError("run_study(): storage is empty: give a URL, e.g. sqlite:///lrtune.db")
    url = storage or os.environ.get("LRTUNE_STORAGE") or DEFAULT_STORAGE
    given = {**keys, "task": task_path(task) if task is not None else None}
    return run_group(study_spec(spec, given), url, workers=workers, device=device)


def task_path(task: str | Callable[..., Any]) -> str:
    """What ``--task`` would say for ``task``: a string as it is, a factory by the path
    workers import it from."""
    if isinstance(task, str):
        return task
    module = getattr(task, "__module__", None)
    name = getattr(task, "__qualname__", "")
    if not callable(task) or not module or not name or "<" in name or "." in name:
        raise UserError(
            f"run_study(): task {task!r} is no task name or top-level factory function: "
            "define make(seed) -> Task at the top level of a module and pass it (or "
            "'file.py:make')"
        )
    if module != "__main__":
        return f"{module}:{name}"
    script = getattr(sys.modules["__main__"], "__file__", None)
    if script is None:  # a notebook or the interactive shell: nothing a worker can import
        raise UserError(
            f"run_study(): task {name} is defined interactively: workers import a task, so "
            "put make(seed) -> Task in a file and pass 'file.py:make'"
        )
    return f"{Path(script).resolve()}:{name}"


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
