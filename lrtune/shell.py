"""Commands lrtune shows the user to run next (printed hints, ``report.md``): each argument
quoted for a POSIX shell, so that pasting one runs exactly that command.

A group or study name is the user's text (``--group '$(id)'`` is a valid name): printed
bare, ``lrtune export --study $(id).random.none`` would run ``id`` when pasted. Storage URLs
are shown with their secrets masked (:func:`lrtune.masking.mask_url`). Pure Python.
"""

from __future__ import annotations

import shlex

from lrtune.masking import mask_url

DEFAULT_STORAGE = "sqlite:///lrtune.db"
"""The storage every command uses without ``--storage`` or ``$LRTUNE_STORAGE``."""


def command_line(*args: str) -> str:
    """``lrtune ARGS...`` with every argument quoted by :func:`shlex.quote` where the shell
    would read it otherwise (``lrtune export --study 'g$(id).tpe.none'``)."""
    return shlex.join(["lrtune", *args])


def storage_args(url: str | None) -> list[str]:
    """``["--storage", URL]`` with the URL's secrets masked, or nothing for the default
    storage (or no URL)."""
    if url is None or url == DEFAULT_STORAGE:
        return []
    return ["--storage", mask_url(url)]
