"""Ctrl-C and SIGTERM that stop a study cleanly, wherever they land.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. Two
places break a study: inside a weakref callback or ``__del__`` (torch and SQLAlchemy run
many) the exception is printed as "Exception ignored" and dropped, so the study runs on to
the end of its budget; inside a SQLite read it can leave that connection holding its lock,
so the next write waits for the busy timeout. While :func:`deferred_sigint` is active the
first Ctrl-C only records the request, and :func:`check` (called at every training and
range-test step, at every ``report()`` of a task's own ``fit`` loop, and between trials)
raises :class:`Interrupted` there: the running trial is marked failed and the command exits
130. A second Ctrl-C raises at once.

SIGTERM (what ``kill``, SLURM, Kubernetes and spot instances send) is deferred the same way,
so that a terminated worker never leaves its trial RUNNING for the heartbeat to find.

Code that touches no storage and runs long before the first training step (building a
task: importing its modules, loading its data; a busy machine takes a minute for
scikit-learn's imports alone) runs under :func:`immediate`: there a signal raises at once,
else the parent's bounded wait for its local workers would run out and kill them with their
trials RUNNING. :func:`stop_for` makes the exception a signal raises, in both cases.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals deferred to :func:`check`.
DEFERRED = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None  # the signal received since the block began, if any
_immediate = False  # inside immediate(): raise at once
_on_sigterm: Callable[[], BaseException] | None = None  # see on_sigterm()


class Interrupted(KeyboardInterrupt):
    """A deferred Ctrl-C or SIGTERM, raised by :func:`check` (a ``KeyboardInterrupt``, so
    every ``except KeyboardInterrupt`` sees it)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``"Ctrl-C"`` for SIGINT, else the signal's name (``"SIGTERM"``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupted_by(exc: BaseException) -> str:
    """What stopped the run, for messages and ``fail_reason``: ``"Ctrl-C"`` or
    ``"SIGTERM"`` (any other ``KeyboardInterrupt`` is a Ctrl-C)."""
    return signal_name(exc.signum) if isinstance(exc, Interrupted) else "Ctrl-C"


def exit_code(exc: BaseException) -> int:
    """The shell's exit code for a run stopped by ``exc``: 128 + the signal number."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


def stop_for(signum: int) -> BaseException:
    """The exception that stops the run on ``signum``: the one place where a deferred
    signal (:func:`check`) and an immediate one (:func:`immediate`, a second signal) become
    an exception. SIGTERM in a worker that hands trials back is
    :class:`lrtune.preempt.Preempted` (the trial goes back to WAITING; see
    :func:`on_sigterm`), else :class:`Interrupted` (the trial is marked failed)."""
    if signum == signal.SIGTERM and _on_sigterm is not None:
        return _on_sigterm()
    return Interrupted(signum)


def on_sigterm(make: Callable[[], BaseException] | None) -> None:
    """Make SIGTERM raise ``make()`` instead of :class:`Interrupted` (``None``: back to
    that); :mod:`lrtune.preempt` sets it while a worker hands trials back."""
    global _on_sigterm
    _on_sigterm = make


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    first = _requested is None
    if first:
        _requested = signum  # recorded first: a raise that a __del__ swallows is not lost
    if not first or _immediate:
        raise stop_for(signum)  # a second signal, or code where raising at once is safe


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Within the block, defer Ctrl-C and SIGTERM to the next :func:`check`; afterwards
    restore the previous handlers.

    A signal the parent set to be ignored (SIGINT of a background job of a non-interactive
    shell) stays ignored, as does any handler other than Python's default.
    """
    global _requested
    _requested = None
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {signum: signal.getsignal(signum) for signum in DEFERRED}
    mine = [signum for signum in DEFERRED if previous[signum] is defaults[signum]]
    for signum in mine:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum in mine:
            signal.signal(signum, previous[signum])
        _requested = None


def requested() -> int | None:
    """The signal received since the block began (``None``: none)."""
    return _requested


def check() -> None:
    """Raise :class:`Interrupted` if Ctrl-C was pressed (or SIGTERM received) since the
    block began."""
    if _requested is not None:
        raise stop_for(_requested)


@contextmanager
def immediate() -> Iterator[None]:
    """Within the block a Ctrl-C or SIGTERM raises at once instead of at the next
    :func:`check` (one received before the block raises on entry). For code that holds no
    storage connection and may run long before the next check: a task's factory."""
    global _immediate
    check()
    previous, _immediate = _immediate, True
    try:
        yield
    except Exception as exc:
        # The signal's exception can come out of the code it interrupted as another one: a
        # C extension whose module init it stopped raises ImportError("initialization
        # failed"). The signal is what happened; reporting that error instead would make a
        # preempted worker exit 2 with a wrong one-line error.
        if _requested is not None:
            raise stop_for(_requested) from exc
        raise
    finally:
        _immediate = previous
