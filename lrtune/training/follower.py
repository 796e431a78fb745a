"""A follower rank of ``worker --nproc-per-trial N`` (``python -m lrtune.training.follower``,
started by :func:`lrtune.training.ranks.launch`): trains every trial rank 0 sends, until
rank 0 says there are no more or is gone."""

from __future__ import annotations

import dataclasses
import os
import sys

import optuna

from lrtune.training import ranks
from lrtune.training.ranks import ADDR_ENV, PORT_ENV, RANK_ENV, THREADS_ENV, WORLD_ENV, Ranks


def follow(group: Ranks) -> None:
    """A follower rank: train every trial (and run every range test) rank 0 sends until it
    says there are no more. Pruning ends a trial quietly; any other error ends this process
    (the group is then broken and rank 0 fails the trial)."""
    from lrtune.rangetest import range_test
    from lrtune.training.trainer import run_trial

    while True:
        message = ranks.receive(group.handoff)
        if message is None:
            return
        if message[0] == "rangetest":
            range_test(**{**message[1], "device": group.device})
            continue
        _, task, config = message
        config = dataclasses.replace(config, log_dir=None)  # rank 0 writes the logs
        try:
            run_trial(task, config, group.follower_report)
        except optuna.TrialPruned:
            continue


def _main() -> int:
    from lrtune import interrupt
    from lrtune.device import resolve_device
    from lrtune.errors import one_line
    from lrtune.processes import watch_parent
    from lrtune.workers import limit_cpu_threads

    watch_parent()
    rank, world = int(os.environ[RANK_ENV]), int(os.environ[WORLD_ENV])
    device = resolve_device(os.environ.get("LRTUNE_DEVICE", "auto"))
    threads = os.environ.get(THREADS_ENV)
    if device.type == "cpu" or threads is not None:
        limit_cpu_threads(int(threads) if threads is not None else None)
    try:
        group = ranks.init(rank, world, device, os.environ[ADDR_ENV], int(os.environ[PORT_ENV]))
        with interrupt.deferred_sigint():
            follow(group)
    except BaseException as exc:  # one line: rank 0 records the trial and says the rest
        print(f"lrtune rank {rank}: {one_line(exc)}", file=sys.stderr, flush=True)
        return 1
    ranks.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
