"""Errors: the one exception type the CLI turns into a one-line message and exit code 2,
and :func:`one_line`, the one way an exception becomes a line of text.

Pure Python (no torch, no Optuna), so any error path may import it.
"""

from __future__ import annotations

import re

#: The longest line :func:`one_line` returns (a tensor in a message is pages long).
MAX_LINE = 300

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")


class UserError(Exception):
    """A mistake the user can fix (bad flag, spec file, task, storage URL...).

    The message is a single line that says what is wrong and how to fix it. Library code
    raises it; only the CLI prints it.
    """


def _mask_token(token: str) -> str:
    # The password runs from the first ":" of the user info to the LAST "@" of the token, so
    # a raw "@" in it is hidden too (over-masking a path or query is harmless).
    scheme = _SCHEME.search(token)
    start = scheme.end() if scheme else len(token) - len(token.lstrip("'\"([{<=,;"))
    at = token.rfind("@")
    if at <= start:
        return token
    colon = token.find(":", start, at)
    if colon < 0 or token[start] == "/":
        return token
    return f"{token[: colon + 1]}***{token[at:]}"


def mask_url(text: str) -> str:
    """Replace the password of every ``[scheme://]user:password@host`` in ``text`` by ``***``.

    Works on a bare URL and on messages that quote one; a URL without a scheme and a raw
    ``@`` inside the password are masked too.
    """
    return re.sub(r"\S+", lambda m: _mask_token(m[0]), text)


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
