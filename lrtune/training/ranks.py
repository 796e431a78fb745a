"""Trials under torch.distributed (``worker --nproc-per-trial N``): N processes, one
configuration, one result.

Rank 0 is the worker that talks to Optuna; ranks 1..N-1 are local processes it starts
(:func:`launch`) that only train. For each trial rank 0 sends the task and its
:class:`~lrtune.training.resolved.TrainConfig` to every rank (:meth:`Ranks.share`), so all
train the same hyperparameters from the same seed (same initial weights, same batch
order). lrtune's loop and the range test then train data-parallel through
:class:`~lrtune.training.updater.Updater`: each rank computes the loss of its slice of
every micro-batch (:meth:`Ranks.shard`), weighted by its share of the rows, and the
gradients are summed across ranks before each update (:meth:`Ranks.reduce_grads`), which
is what DistributedDataParallel does: N ranks with micro-batch b train like one process
with micro-batch b. The loss every rank sees is the global one, so divergence checks and
the range test's stop rule decide alike on every rank. Validation runs on every rank over
the whole split (the weights are the same). After each epoch rank 0 reports to Optuna and
sends the pruner's decision (:meth:`Ranks.leader_report`, :meth:`Ranks.follower_report`).

A ``fit`` task gets ``hp.rank`` and ``hp.world_size`` and the initialized default process
group, and does its own data parallelism (e.g. wraps its model in DDP); its ``report``
must be called as often on every rank.

Faults: training collectives time out after :data:`TIMEOUT` seconds, and a rank that dies
closes its connections, so the others fail at their next collective at once. Any failed
trial ends the group (the trial is recorded FAIL with the error; :mod:`lrtune.workers`
then stops with one line): after one rank failed, the ranks no longer agree on where they
are.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import torch
import torch.distributed as dist

from lrtune.errors import UserError

log = logging.getLogger(__name__)

#: Seconds a training collective waits for the other ranks before failing the trial.
TIMEOUT = 600.0
#: Environment of a follower rank (set by :func:`launch`).
RANK_ENV, WORLD_ENV, ADDR_ENV, PORT_ENV = (
    "LRTUNE_RANK",
    "LRTUNE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
THREADS_ENV = "LRTUNE_RANK_THREADS"
# The pruner's decision after an epoch, rank 0 to the others.
_GO_ON, _PRUNED, _ABORT = 0, 1, 2


@dataclass
class Ranks:
    """This process's place in a trial's process group."""

    rank: int
    world: int
    device: torch.device
    #: A second group for handing trials out: waiting for the next trial is unbounded
    #: (rank 0 may wait for other workers' trials), training collectives are not.
    handoff: Any = None
    #: Rank 0 of a :func:`session`: its follower ranks wait for work it shares.
    leads: bool = False

    def shard(self, batch: Any) -> tuple[Any, int, int]:
        """This rank's rows of ``batch`` (every tensor split along dim 0 into ``world``
        near-equal chunks), its row count and the batch's."""
        rows = _rows(batch)
        return _slice(batch, self.rank, self.world), len(_chunk(rows, self.rank, self.world)), rows

    def global_loss(self, local: torch.Tensor, n_local: int, n: int) -> torch.Tensor:
        """A loss whose value is the mean over all ranks' rows and whose gradient is this
        rank's share (``n_local / n`` of its own mean): summed across ranks by
        :meth:`reduce_grads`, the gradient of one process on the whole batch."""
        weighted = local * (n_local / n) if n_local else local * 0.0
        total = weighted.detach().float().clone()
        dist.all_reduce(total)
        return weighted + (total.to(weighted.dtype) - weighted.detach())

    def reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients across ranks (one flat all-reduce)."""
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:  # a rank whose slice was empty, or an unused parameter
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def share(self, task: str, config: Any) -> None:
        """Rank 0: send the trial's task and config to the other ranks."""
        _send(self.handoff, ("trial", task, config))

    def share_range_test(self, kwargs: dict[str, Any]) -> None:
        """Rank 0: have the other ranks run ``range_test(**kwargs)`` alongside (each on
        its own device)."""
        _send(self.handoff, ("rangetest", kwargs))

    def leader_report(self, report: Callable[[float, int], None]) -> Callable[[float, int], None]:
        """Rank 0's ``report``: Optuna's, then its decision to every rank."""

        def leader(value: float, step: int) -> None:
            try:
                report(value, step)
            except optuna.TrialPruned:
                self._decide(_PRUNED)
                raise
            except BaseException:
                self._decide(_ABORT)
                raise
            self._decide(_GO_ON)

        return leader

    def follower_report(self, _value: float, _step: int) -> None:
        """A follower's ``report``: rank 0's decision for this epoch."""
        decision = self._decide(None)
        if decision == _PRUNED:
            raise optuna.TrialPruned("pruned by rank 0")
        if decision == _ABORT:
            raise RuntimeError("rank 0 stopped the trial")

    def _decide(self, decision: int | None) -> int:
        # On the training group (bounded); NCCL takes tensors on the GPU only.
        flag = torch.tensor([-1 if decision is None else decision], device=self.device)
        dist.broadcast(flag, src=0)
        return int(flag.item())

    def stop(self) -> None:
        """Rank 0: tell the other ranks there are no more trials, leave the group."""
        try:
            _send(self.handoff, None)
        finally:
            close()


_current: Ranks | None = None


def current() -> Ranks | None:
    """The process group of this process's trials, or None (one process per trial)."""
    return _current


def _chunk(n: int, rank: int, world: int) -> range:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def _rows(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    items = batch.values() if isinstance(batch, dict) else batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        for item in items:
            rows = _rows(item)
            if rows >= 0:
                return rows
    return -1


def _slice(batch: Any, rank: int, world: int) -> Any:
    if isinstance(batch, torch.Tensor):
        if not batch.dim():
            return batch
        part = _chunk(batch.shape[0], rank, world)
        return batch[part.start : part.stop]
    if isinstance(batch, dict):
        return type(batch)((k, _slice(v, rank, world)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_slice(v, rank, world) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(v, rank, world) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = {
            f.name: _slice(getattr(batch, f.name), rank, world)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **fields)
    return batch


def _send(group: Any, obj: Any) -> None:
    dist.broadcast_object_list([obj], src=0, group=group)  # pickled by torch


def receive(group: Any) -> Any:
    data: list[Any] = [None]
    dist.broadcast_object_list(data, src=0, group=group)
    return data[0]


def free_port() -> int:
    """A TCP port free on this host now (for rank 0's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init(rank: int, world: int, device: torch.device, addr: str, port: int) -> Ranks:
    """Join the trial group as ``rank`` of ``world`` (gloo on CPU, NCCL on CUDA)."""
    global _current
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=TIMEOUT)
    dist.init_process_group(
        backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world, timeout=timeout
    )
    handoff = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=30))
    _current = Ranks(rank, world, device, handoff)
    return _current


def close() -> None:
    """Leave the process group (this process trains alone again)."""
    global _current
    _current = None
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(
    port: int, devices: list[str], threads: int | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start ranks 1..len(devices)-1 on this host (``python -m lrtune.training.follower``),
    rank k on ``devices[k]``; the caller is rank 0. Each stops when rank 0 is gone."""
    from lrtune.processes import PARENT_ENV

    procs = []
    for rank in range(1, len(devices)):
        env = dict(os.environ, LRTUNE_DEVICE=devices[rank], **{PARENT_ENV: str(os.getpid())})
        env.update({RANK_ENV: str(rank), WORLD_ENV: str(len(devices)), ADDR_ENV: "127.0.0.1"})
        env[PORT_ENV] = str(port)
        if threads is not None:
            env[THREADS_ENV] = str(threads)
        procs.append(subprocess.Popen([sys.executable, "-m", "lrtune.training.follower"], env=env))
    return procs


def devices_for(n: int, device: torch.device) -> list[str]:
    """The device of each of ``n`` ranks: ``cuda:k..k+n-1`` from ``device``'s index on
    CUDA (a :class:`UserError` when fewer are visible), else ``device`` for all."""
    if device.type != "cuda":
        return [str(device)] * n
    first = device.index or 0
    if first + n > torch.cuda.device_count():
        raise UserError(
            f"--nproc-per-trial {n} needs {n} GPUs from cuda:{first}; "
            f"{torch.cuda.device_count()} visible (or use --device cpu: gloo)"
        )
    return [f"cuda:{first + k}" for k in range(n)]


@contextmanager
def session(devices: list[str], threads: int | None = None) -> Iterator[Ranks]:
    """This process as rank 0 of ``len(devices)`` ranks, the others started on this host
    (:func:`launch`); inside, :func:`current` is rank 0's group, and range tests and trials
    run on every rank. On the way out the followers are told to stop and reaped."""
    port = free_port()
    followers = launch(port, devices, threads=threads)
    try:
        group = init(0, len(devices), torch.device(devices[0]), "127.0.0.1", port)
        group.leads = True
        yield group
        group.stop()
    finally:
        close()
        reap(followers)


def stop_on_failure(study: str, trial: optuna.trial.FrozenTrial) -> None:
    """After a trial failed under N ranks: a :class:`UserError` (the ranks no longer agree
    on where they are; ``surplus`` trials never trained, so they do not count)."""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    if trial.state == optuna.trial.TrialState.FAIL and not reason.startswith("surplus"):
        raise UserError(
            f"trial {trial.number} of {study} failed under --nproc-per-trial: "
            f"{reason or 'error'}; the ranks stopped (run the same command again to go on)"
        )


def reap(procs: list[subprocess.Popen[bytes]], seconds: float = 30.0) -> None:
    """Wait (bounded) for the follower ranks to exit; kill those that do not."""
    deadline = time.monotonic() + seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
