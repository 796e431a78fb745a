"""A worker's patience with a storage that stops answering mid-run: back off and retry
for a while (``$LRTUNE_STORAGE_RETRY_SECONDS``), then give up in one line. Nothing is lost
meanwhile: a trial left running is failed by heartbeat and retried.
"""

from __future__ import annotations

import logging
import os
import time

from lrtune.dberrors import first_line
from lrtune.errors import UserError, mask_url

log = logging.getLogger(__name__)

#: How long a worker keeps retrying when the storage stops answering mid-run
#: (``$LRTUNE_STORAGE_RETRY_SECONDS`` overrides it).
STORAGE_RETRY_SECONDS = 120.0
STORAGE_RETRY_ENV = "LRTUNE_STORAGE_RETRY_SECONDS"


def storage_retry_seconds() -> float:
    """How long a worker retries a lost storage: ``$LRTUNE_STORAGE_RETRY_SECONDS`` or
    :data:`STORAGE_RETRY_SECONDS`."""
    text = os.environ.get(STORAGE_RETRY_ENV)
    if not text:
        return STORAGE_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UserError(f"${STORAGE_RETRY_ENV}={text!r}: expected a number of seconds >= 0")
    return value


class StorageLost(UserError):
    """The storage stopped answering for longer than the retry time."""


class StorageRetry:
    """Backoff (1, 2, 4 ... 15 s) while the storage is unreachable, for at most
    ``seconds`` from the first failure of a streak; then :class:`StorageLost`."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.seconds = seconds
        self.since: float | None = None
        self.delay = 1.0

    def ok(self) -> None:
        """The storage answered: a streak of failures (if any) is over."""
        if self.since is not None:
            log.warning("storage %s is back; going on", mask_url(self.url))
        self.since = None
        self.delay = 1.0

    def wait(self, exc: BaseException) -> None:
        """The storage failed with ``exc``: sleep before the next try, or give up."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "storage %s unreachable (%s); retrying for up to %.0f s",
                mask_url(self.url),
                first_line(exc),
                self.seconds,
            )
        elapsed = now - self.since
        if elapsed >= self.seconds:
            raise StorageLost(
                f"storage {mask_url(self.url)} unreachable for {elapsed:.0f} s "
                f"({first_line(exc)}); gave up. Nothing is lost: a trial left running is "
                "failed by heartbeat and retried when a worker runs again; run the same "
                "command when the database is back"
            ) from None
        pause = min(self.delay, self.seconds - elapsed)
        log.debug("storage retry in %.1f s", pause)
        time.sleep(pause)
        self.delay = min(self.delay * 2, 15.0)
