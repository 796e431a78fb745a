"""lrtune.errors.one_line: the one way an exception becomes a line of text; causes: the one
walk of an exception's chain."""

from __future__ import annotations

import subprocess
import sys

from lrtune.errors import MAX_LINE, UserError, causes, one_line


def test_the_first_non_empty_line_stripped() -> None:
    exc = ValueError("\n\n  shapes differ (3, 4) vs (4, 5)  \nTraceback detail\nmore")
    assert one_line(exc) == "shapes differ (3, 4) vs (4, 5)"


def test_with_type_prefixes_the_class_name() -> None:
    assert one_line(KeyError("missing"), with_type=True) == "KeyError: 'missing'"
    assert one_line(UserError("bad flag\nsecond"), with_type=True) == "UserError: bad flag"


def test_an_empty_message_gives_the_type() -> None:
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line(RuntimeError("  \n \n"), with_type=True) == "RuntimeError"


def test_a_broken_str_gives_the_type() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert one_line(BadStr("x"), with_type=True) == "BadStr"


def test_passwords_are_masked() -> None:
    exc = ConnectionError("could not connect to postgresql://root:hunter2@db:5432/lr: refused")
    assert one_line(exc) == "could not connect to postgresql://root:***@db:5432/lr: refused"
    no_scheme = OSError("open 'root:hunter2@db/lr' failed\npostgresql://u:hunter2@h/x")
    assert "hunter2" not in one_line(no_scheme, with_type=True)
    assert one_line(no_scheme) == "open 'root:***@db/lr' failed"


def test_a_long_line_is_capped_after_masking() -> None:
    # The URL sits across the cap: masking first means no part of the password survives.
    exc = RuntimeError("x" * (MAX_LINE - 20) + " postgresql://u:" + "p" * 50 + "@h/db")
    line = one_line(exc)
    assert len(line) == MAX_LINE and line.endswith("…") and "ppp" not in line


def test_importing_errors_imports_neither_torch_nor_optuna() -> None:
    code = (
        "import sys, lrtune.errors; "
        "assert not {'torch', 'optuna'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_causes_walks_cause_before_context_and_stops_on_a_loop() -> None:
    root, context, explicit = OSError("disk"), KeyError("k"), ValueError("v")
    try:
        try:
            raise context
        except KeyError:
            raise explicit from root  # __cause__ wins over the implicit __context__
    except ValueError as exc:
        top = RuntimeError("top")
        top.__context__ = exc
    assert list(causes(top)) == [top, explicit, root]
    root.__cause__ = top  # a chain that loops back is walked once, not forever
    assert list(causes(top)) == [top, explicit, root]
