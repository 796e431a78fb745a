"""Local worker processes: ``study --workers N`` and ``worker --workers N/--gpus`` start
``lrtune worker`` processes on this host, wait for them, pass Ctrl-C and SIGTERM on to
them, and each of them stops when its parent is gone (:func:`watch_parent`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from lrtune import interrupt

log = logging.getLogger(__name__)


def spawn_workers(
    storage_url: str,
    group: str,
    n: int,
    *,
    device: str = "auto",
    gpus: Sequence[int] | None = None,
    extra_args: Sequence[str] = (),
) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` ``lrtune worker`` processes (one per GPU when ``gpus`` is given).

    The URL travels in the environment (``LRTUNE_STORAGE``), not on the command line, so a
    password never shows in ``ps``.
    """
    procs = []
    slots: list[int | None] = list(gpus) if gpus else [None] * n
    for index, gpu in enumerate(slots):
        env = dict(os.environ, LRTUNE_STORAGE=storage_url, LRTUNE_WORKER_INDEX=str(index + 1))
        env[PARENT_ENV] = str(os.getpid())  # the worker stops when this process is gone
        dev = device
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
            dev = "cuda"
        cmd = [
            sys.executable,
            "-m",
            "lrtune",
            "worker",
            "--group",
            group,
            "--device",
            dev,
            *extra_args,
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def wait_workers(
    procs: list[subprocess.Popen[bytes]],
    on_tick: Callable[[], None] | None = None,
    poll: float = 1.0,
    stop_seconds: float | None = None,
) -> int:
    """Wait for all, calling ``on_tick`` every ``poll`` seconds; on Ctrl-C or SIGTERM pass
    the same signal on to them and wait for them to stop (:func:`stop_workers`); on any
    other error here (``on_tick`` found the storage gone, say) send them SIGTERM. Worst exit
    code."""
    try:
        while any(p.poll() is None for p in procs):
            interrupt.check()
            if on_tick is not None:
                on_tick()
            time.sleep(poll)
        codes = [exit_code(p.wait()) for p in procs]
    except BaseException as exc:
        signum = exc.signum if isinstance(exc, interrupt.Interrupted) else signal.SIGINT
        if not isinstance(exc, KeyboardInterrupt):
            signum = signal.SIGTERM  # none is left running without the parent it reports to
        stop_workers(procs, signum, STOP_SECONDS if stop_seconds is None else stop_seconds)
        if signum == signal.SIGTERM and all(p.returncode == 0 for p in procs):
            from lrtune.preempt import Preempted

            raise Preempted() from None  # each handed its trial back (lrtune.preempt)
        raise
    return max(codes, default=0)


def exit_code(returncode: int) -> int:
    """A process's exit status as a shell gives it: ``128 + N`` when signal N ended it
    (``Popen`` says ``-N``, which ``max`` over the workers would take for success)."""
    return 128 - returncode if returncode < 0 else returncode


def failures(procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """One line on the finished ``procs`` that failed: each one's number and pid, and the
    signal that ended it (nothing else said anything then) or its exit code (its own
    message came before)."""
    parts = []
    for index, proc in enumerate(procs, start=1):
        code = proc.returncode
        if code is None or code == 0:
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
        else:
            how = f"exited with code {code} (its message is above)"
        parts.append(f"worker {index} (pid {proc.pid}) {how}")
    return "; ".join(parts) or "no worker failed"


#: How long a parent waits for its local workers to stop after passing a signal on; then
#: it kills them (their trials are failed by heartbeat and retried).
STOP_SECONDS = 60.0


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], signum: int, seconds: float) -> None:
    """Send ``signum`` to the live ``procs``, wait up to ``seconds`` for all of them, then
    kill the ones still running."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning(
                "worker %d did not stop within %.0f s of %s; killed",
                p.pid,
                seconds,
                interrupt.signal_name(signum),
            )
            p.kill()
            p.wait()


#: Set by :func:`spawn_workers` in a local worker's environment: the parent's process id.
PARENT_ENV = "LRTUNE_PARENT_PID"


def watch_parent(poll: float = 0.5) -> None:
    """In a local worker (:func:`spawn_workers`), stop with the parent: once the parent is
    gone (killed with SIGKILL, say) this process sends itself SIGTERM, which the worker
    handles as it handles a SIGTERM from the parent (:mod:`lrtune.interrupt`).

    Does nothing outside such a worker. The variable is removed from the environment so
    that processes this one starts do not watch a parent that is not theirs.
    """
    text = os.environ.pop(PARENT_ENV, "")
    if not text.isdigit() or int(text) != os.getppid():
        return  # not a local worker, or the parent is gone already (then: no one to follow)
    parent = int(text)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        log.warning("the parent process %d is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lrtune-parent-watch", daemon=True).start()
