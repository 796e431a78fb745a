"""Preemption: SIGTERM in a worker hands its trial back instead of failing it.

SLURM, Kubernetes and spot instances send SIGTERM some seconds before they kill a job.
While a worker runs trials (:func:`handing_back`), a SIGTERM (deferred by
:mod:`lrtune.interrupt`) makes lrtune's loop finish the update it is in, write a
checkpoint and raise :class:`Preempted`; the objective sets the trial WAITING again (no
FAIL, no failure counted), so the next worker that asks for a trial takes it and resumes
from the checkpoint, and the worker exits 0. A ``fit`` loop is handed back at its next
``report()``, resuming from its last ``hp.checkpoint``.

``--grace`` bounds it: if the process is still running ``grace`` seconds after the signal
(a step or a checkpoint longer than that), a watchdog hands the trial back as it stands
(it resumes from its previous checkpoint) and exits 0 at once. ``worker --max-time T``
sends the worker its own SIGTERM at ``T - grace``, so it is gone before ``T``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lrtune import interrupt
from lrtune.errors import UserError

log = logging.getLogger(__name__)

#: Default ``--grace``: Kubernetes gives 30 s between SIGTERM and SIGKILL, SLURM's
#: ``KillWait`` is 30 s by default; 25 s leaves the process time to exit.
DEFAULT_GRACE = 25.0
#: How often the watchdog looks for the signal.
_POLL = 0.1

_active = False  # inside handing_back()
_hand_back: Callable[[], None] | None = None  # the running trial's, for the watchdog


class Preempted(BaseException):
    """The trial was handed back (SIGTERM); a ``BaseException`` that is neither
    ``Exception`` nor ``KeyboardInterrupt``, so Optuna's ``optimize`` lets it through
    without recording the trial as failed. ``epoch``: the epoch the trial stopped in
    (``None``: between trials)."""

    def __init__(self, epoch: int | None = None) -> None:
        super().__init__("preempted (SIGTERM)")
        self.epoch = epoch


def requested() -> bool:
    """True when a SIGTERM arrived in a worker that hands trials back."""
    return _active and interrupt.requested() == signal.SIGTERM


@contextmanager
def running_trial(hand_back: Callable[[], None]) -> Iterator[None]:
    """While a trial runs: ``hand_back`` is what the watchdog calls when the grace runs out."""
    global _hand_back
    _hand_back = hand_back
    try:
        yield
    finally:
        _hand_back = None


@contextmanager
def handing_back(grace: float = DEFAULT_GRACE, max_time: float | None = None) -> Iterator[None]:
    """Within the block (a worker's run), SIGTERM preempts (:func:`requested`) and the
    process is gone ``grace`` seconds after it; with ``max_time`` the process sends itself
    SIGTERM at ``max_time - grace`` seconds."""
    global _active
    _active = True
    interrupt.on_sigterm(Preempted)  # SIGTERM raised anywhere: hand the trial back
    stop = threading.Event()
    began = time.monotonic()
    watchdog = threading.Thread(
        target=_watch, args=(stop, grace, max_time, began), name="lrtune-preempt", daemon=True
    )
    watchdog.start()
    try:
        yield
    finally:
        _active = False
        interrupt.on_sigterm(None)
        stop.set()


def _watch(stop: threading.Event, grace: float, max_time: float | None, began: float) -> None:
    signalled: float | None = None
    while not stop.wait(_POLL):
        now = time.monotonic()
        if signalled is None and max_time is not None and now - began >= max_time - grace:
            log.warning("--max-time %.0f s: preempting this worker", max_time)
            os.kill(os.getpid(), signal.SIGTERM)
            max_time = None
        if signalled is None and interrupt.requested() == signal.SIGTERM:
            signalled = now
        if signalled is not None and now - signalled >= grace:
            hand_back = _hand_back
            log.warning("still running %.0f s after SIGTERM (--grace): exiting now", grace)
            if hand_back is not None:
                try:
                    hand_back()
                except Exception as exc:  # the heartbeat then retries it
                    log.warning("trial not handed back: %s", exc)
            os._exit(0)


_DURATION = re.compile(r"^(\d+(?:\.\d*)?)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> float:
    """Seconds from ``90``, ``90s``, ``45m``, ``2h``, ``1d`` or ``[D-]HH:MM:SS`` (SLURM's
    form); a :class:`UserError` naming ``flag`` otherwise, or for 0."""
    value = text.strip().lower()
    match = _DURATION.match(value)
    seconds: float | None = None
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        days, _, clock = value.rpartition("-")
        parts = clock.split(":")
        if (
            (not days or days.isdigit())
            and 2 <= len(parts) <= 3
            and all(p.isdigit() for p in parts)
        ):
            h, m, s = ([0] * (3 - len(parts))) + [int(p) for p in parts]
            seconds = int(days or 0) * 86400 + h * 3600 + m * 60 + s
    if seconds is None or not 0 < seconds < 10 * 365 * 86400:
        raise UserError(
            f"{flag} {text!r}: expected a positive duration: seconds, 45m, 2h or HH:MM:SS"
        )
    return seconds
