"""``lrtune worker``: join a group's studies and run their trials until each has its budget."""

from __future__ import annotations

import argparse
import sys

from lrtune.cli.common import (
    Command,
    HeartbeatOptions,
    add_common,
    add_heartbeat,
    add_log_dir,
    add_nproc,
    add_preemption,
    add_threads,
    add_timeout,
    grace_seconds,
    heartbeat_flags,
    heartbeat_options,
    storage_url,
    use_log_dir,
    workers_count,
)
from lrtune.errors import UserError


def _add_worker(p: argparse.ArgumentParser) -> None:
    add_common(p, task=False, seed=False)
    p.add_argument(
        "--task",
        metavar="NAME",
        help="run only studies of this task (exactly as the study names it), the confirm "
        "study included: a worker imports the study's task, so pin it on storages others "
        "can write to; a pinned task file is read from this folder (default: any task)",
    )
    p.add_argument("--group", help="run the studies of this group")
    p.add_argument("--study", action="append", help="run this study (repeatable)")
    p.add_argument("--workers", type=workers_count, default=1, help="processes on this host")
    p.add_argument("--gpus", help="comma list of GPU indices: one process per GPU (default: none)")
    add_nproc(p, "each trial (with --gpus, list N GPUs)")
    add_heartbeat(p)
    add_timeout(p)
    add_preemption(p, max_time=True)
    add_log_dir(p)
    add_threads(p)


def _parse_gpus(text: str) -> list[int]:
    try:
        gpus = [int(g) for g in text.split(",")]
    except ValueError:
        raise UserError(
            f"--gpus {text!r}: expected a comma list of GPU indices, e.g. 0,1"
        ) from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus {text!r}: expected distinct non-negative indices")
    return gpus


def _run_worker(args: argparse.Namespace) -> int:
    if not args.group and not args.study:
        raise UserError("give --group NAME or --study NAME (see `lrtune ls`)")
    heartbeat = heartbeat_options(args)  # every flag checked before anything is written
    grace = grace_seconds(args)
    url = storage_url(args)
    use_log_dir(args)
    gpus = _parse_gpus(args.gpus) if args.gpus else None
    if args.nproc_per_trial > 1:
        return _run_ranked(args, url, heartbeat, gpus)
    if gpus or args.workers > 1:
        from lrtune.processes import failures, spawn_workers, wait_workers

        if not args.group:
            raise UserError("--workers/--gpus need --group")
        # Check here what every child would check, so that a mistake is said once, not
        # once per process.
        _check_group(url, args.group, args.task, heartbeat_options(args)["grace_period"])
        extra = [*heartbeat_flags(args), f"--grace={grace!r}"]
        if args.max_time is not None:
            extra.append(f"--max-time={args.max_time!r}")
        if args.task is not None:
            extra.append(f"--task={args.task}")
        if args.timeout is not None:
            extra.append(f"--timeout={args.timeout!r}")
        procs = spawn_workers(
            url,
            args.group,
            len(gpus) if gpus else args.workers,
            device=args.device,
            gpus=gpus,
            extra_args=extra,
        )
        if wait_workers(procs) != 0:
            raise UserError(f"{failures(procs)}; run the same command again to go on")
        return 0
    from lrtune.device import resolve_device
    from lrtune.preempt import handing_back
    from lrtune.processes import watch_parent
    from lrtune.workers import limit_cpu_threads, run_worker, worker_index

    watch_parent()  # a local worker of `study/worker --workers N` stops with its parent
    device = str(resolve_device(args.device))
    if device == "cpu" or args.threads is not None:
        limit_cpu_threads(args.threads)
    with handing_back(grace, args.max_time):  # SIGTERM, --max-time: hand the trial back
        report = run_worker(
            url,
            group=args.group,
            studies=args.study,
            worker=worker_index(),
            device=device,
            task=args.task,
            timeout=args.timeout,
            **heartbeat,
        )
    done = sum(report.trials.values())
    if report.timed_out:
        print(
            f"worker: --timeout {args.timeout:g} s reached: started no new trial after it; "
            "run it again to go on",
            file=sys.stderr,
        )
    print(
        f"worker done: {done} trials in {report.seconds:.1f} s ({report.failed} failed)"
        if report.failed
        else f"worker done: {done} trials in {report.seconds:.1f} s"
    )
    return 0


def _run_ranked(
    args: argparse.Namespace, url: str, heartbeat: HeartbeatOptions, gpus: list[int] | None
) -> int:
    """``--nproc-per-trial N``: this process is rank 0 (the worker that talks to Optuna),
    ranks 1..N-1 are local processes that train the same trials
    (:mod:`lrtune.training.ranks`)."""
    import os

    n = args.nproc_per_trial
    if args.workers > 1:
        raise UserError(
            f"--nproc-per-trial {n} runs one worker of {n} processes: drop --workers "
            "(start one such worker per N GPUs instead)"
        )
    if gpus is not None:
        if len(gpus) != n:
            raise UserError(f"--nproc-per-trial {n} with --gpus {args.gpus}: list {n} GPUs")
        # Before torch looks at the GPUs: rank k then uses cuda:k, GPU gpus[k].
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    from lrtune.device import resolve_device
    from lrtune.processes import watch_parent
    from lrtune.training import ranks
    from lrtune.workers import limit_cpu_threads, run_worker, worker_index

    devices = ranks.devices_for(n, resolve_device("cuda" if gpus else args.device))
    if args.group:  # what run_worker checks, before any process starts
        _check_group(url, args.group, args.task, heartbeat["grace_period"])
    watch_parent()
    if devices[0] == "cpu" or args.threads is not None:
        limit_cpu_threads(args.threads)
    with ranks.session(devices, args.threads):  # a failed trial stops it: ranks.stop_on_failure
        report = run_worker(
            url,
            group=args.group,
            studies=args.study,
            worker=worker_index(),
            device=devices[0],
            task=args.task,
            timeout=args.timeout,
            **heartbeat,
        )
    print(f"worker done: {sum(report.trials.values())} trials in {report.seconds:.1f} s")
    return 0


def _check_group(url: str, group: str, task: str | None, grace_period: int) -> None:
    """The checks ``run_worker`` makes before its first trial: the group has studies and
    each runs the pinned task."""
    from lrtune.group.creation import wait_created
    from lrtune.joining import trusted_task
    from lrtune.search.states import group_study_names
    from lrtune.storage import mask_url, open_storage, require_existing
    from lrtune.storage_retry import storage_retry_seconds

    require_existing(url)
    storage = open_storage(url, patience=storage_retry_seconds())
    wait_created(storage, [], group, grace_period)
    names = group_study_names(storage, group)
    if not names:
        raise UserError(
            f"no studies for group {group!r} in {mask_url(url)}: create them with "
            "`lrtune study ... --create-only` (see `lrtune ls`)"
        )
    for name in names:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
        trusted_task(name, attrs, task)


COMMAND = Command(
    name="worker",
    help="join a group's studies and run their trials until each has its budget",
    examples=(
        "lrtune worker --group digits --storage postgresql://user@db-host/lrtune",
        "lrtune worker --group digits --gpus 0,1 --task digits",
        "lrtune worker --group digits --max-time 4h --grace 60",
    ),
    add=_add_worker,
    run=_run_worker,
)
