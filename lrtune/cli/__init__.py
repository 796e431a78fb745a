"""The command line: parse arguments, call one library function, choose the exit code.

One module per command (``lrtune.cli.<name>``), each with ``_add_<name>(parser)`` (its
flags, only those it uses), ``_run_<name>(args) -> int`` and a :class:`~.common.Command`
registered below. Library code raises :class:`~lrtune.errors.UserError` for mistakes the
user can fix; here it becomes one line on stderr and exit code 2 (a traceback only with
``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext

from lrtune.cli import dashboard, export, ls, proxy, rangetest, report, study, worker
from lrtune.cli.common import (
    DEFAULT_STORAGE,
    EXIT_USAGE,
    Command,
    HelpFormatter,
    Parser,
    storage_url,
)
from lrtune.errors import UserError

__all__ = ["COMMANDS", "DEFAULT_STORAGE", "EXIT_USAGE", "build_parser", "main", "storage_url"]

#: Every command, in the order ``lrtune --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    rangetest.COMMAND,
    study.COMMAND,
    worker.COMMAND,
    ls.COMMAND,
    export.COMMAND,
    dashboard.COMMAND,
    report.COMMAND,
    proxy.COMMAND,
)

_EPILOG = """examples:
  lrtune rangetest --task digits
  lrtune study --task digits --trials 10
  lrtune <command> --help"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command."""
    parser = Parser(
        prog="lrtune",
        description="Find the learning rate and LR schedule for PyTorch training.",
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    from lrtune import __version__

    parser.add_argument("--version", action="version", version=f"lrtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=HelpFormatter,
        )
        command.add(p)
        p.set_defaults(_run=command.run, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    # argparse hands a command's unknown arguments back to the top-level parser, whose
    # message would not name the command: report them from the command's own parser.
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        import optuna

        # Optuna logs every trial at INFO and a failed trial's traceback at WARNING; lrtune
        # shows its own progress and records each failure's reason on the trial.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    from lrtune.interrupt import deferred_sigint
    from lrtune.preempt import Preempted

    try:
        # Commands that run trials stop at the next training step on Ctrl-C or SIGTERM
        # (see lrtune.interrupt); the others (dashboard) stop where it lands.
        with deferred_sigint() if args.command in ("study", "worker") else nullcontext():
            return int(args._run(args))
    except UserError as exc:
        if debug:
            raise
        print(f"lrtune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `lrtune ls | head`: the reader left; stop quietly (and keep Python's flush at exit
        # from failing on the closed pipe too).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        from lrtune.dberrors import storage_failure

        failure = None if debug else storage_failure(exc)  # a database fault mid-command
        if failure is None:
            raise
        print(f"lrtune {args.command}: error: {failure}", file=sys.stderr)
        return EXIT_USAGE
    except Preempted as exc:
        at = "" if exc.epoch is None else f" in epoch {exc.epoch + 1}"
        print(
            f"lrtune {args.command}: preempted (SIGTERM){at}: the running trial (if any) is "
            "handed back with its checkpoint for another worker to resume",
            file=sys.stderr,
        )
        return 0
    except KeyboardInterrupt as exc:
        from lrtune.interrupt import exit_code, interrupted_by

        print(
            f"lrtune {args.command}: interrupted ({interrupted_by(exc)}); the running trial "
            "is marked failed, run the same command again to continue",
            file=sys.stderr,
        )
        return exit_code(exc)
