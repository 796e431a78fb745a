"""The one exception type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad flag, spec file, task, storage URL...).

    The message is a single line that says what is wrong and how to fix it. Library code
    raises it; only the CLI prints it.
    """
