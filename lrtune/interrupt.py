"""Ctrl-C that stops a study cleanly, wherever it lands.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. Two
places break a study: inside a weakref callback or ``__del__`` (torch and SQLAlchemy run
many) the exception is printed as "Exception ignored" and dropped, so the study runs on to
the end of its budget; inside a SQLite read it can leave that connection holding its lock,
so the next write waits for the busy timeout. While :func:`deferred_sigint` is active the
first Ctrl-C only records the request, and :func:`check` (called at every training and
range-test step and between trials) raises ``KeyboardInterrupt`` there: the running trial
is marked failed and the command exits 130. A second Ctrl-C raises at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = False


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now
    _requested = True


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Within the block, defer Ctrl-C to the next :func:`check`; afterwards restore the
    previous handler.

    A SIGINT the parent set to be ignored (a background job of a non-interactive shell)
    stays ignored, as does any handler other than Python's default.
    """
    global _requested
    _requested = False
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested = False


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since the block began."""
    if _requested:
        raise KeyboardInterrupt
