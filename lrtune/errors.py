"""Errors: the one exception type the CLI turns into a one-line message and exit code 2,
and :func:`one_line`, the one way an exception becomes a line of text (secrets masked by
:func:`lrtune.masking.mask_url`, re-exported here).

Pure Python (no torch, no Optuna), so any error path may import it.
"""

from __future__ import annotations

from collections.abc import Iterator

from lrtune.masking import mask_url

__all__ = ["MAX_LINE", "UserError", "causes", "mask_url", "one_line"]

#: The longest line :func:`one_line` returns (a tensor in a message is pages long).
MAX_LINE = 300


class UserError(Exception):
    """A mistake the user can fix (bad flag, spec file, task, storage URL...).

    The message is a single line that says what is wrong and how to fix it. Library code
    raises it; only the CLI prints it.
    """


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first non-empty line of ``exc``'s message, passwords masked, at most
    :data:`MAX_LINE` characters; ``"Type: line"`` with ``with_type``.

    A message that is empty (or whose ``__str__`` raises) gives the type's name alone.
    """
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not hide the error itself
        text = ""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = mask_url(first)
    if len(first) > MAX_LINE:  # one line, not a page of tensor values
        first = first[: MAX_LINE - 1] + "…"
    if not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}" if with_type else first


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``__cause__``, else ``__context__``), and so on: the
    chain every error reader walks (Optuna wraps SQLAlchemy's errors, SQLAlchemy the
    driver's; Optuna's ``optimize`` replaces an error raised while it records a trial by an
    ``UnboundLocalError``). A chain that loops is walked once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
