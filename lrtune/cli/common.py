"""What every command shares: the parser class, the help layout, flag types and helpers,
the storage URL and the exit codes.

Nothing here imports torch, optuna or lrtune's heavy modules: a command imports what it
needs inside its ``_run_<name>``, so ``--help`` and the read-only commands stay light.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, TypedDict

from lrtune.errors import UserError
from lrtune.shell import DEFAULT_STORAGE as DEFAULT_STORAGE  # where it lives: torch-free

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line and exit 2 (no usage dump).

    ``prog`` is ``lrtune`` for the top level and ``lrtune <command>`` for a command's parser,
    so the line starts as every other error of that command does.
    """

    def error(self, message: str) -> NoReturn:
        message = message.replace("argument COMMAND: invalid choice", "unknown command")
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's example lines as written and shows each flag's default.

    ``(default: …)`` is added where the help text does not already say what the default
    is; a flag whose default is ``None`` (resolved later: from a spec file, the task, an
    environment variable) must say it in its help text.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


@dataclass(frozen=True, kw_only=True)
class Command:
    """One command: its name, one-line help, example command lines, and the pair
    ``add(parser)`` (its flags) / ``run(args) -> exit code``."""

    name: str
    help: str
    examples: tuple[str, ...]
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    @property
    def epilog(self) -> str:
        """The examples, laid out for ``--help``."""
        return "examples:\n" + "\n".join(f"  {line}" for line in self.examples)


def _int_between(low: int, high: int | None, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (``high`` None: no upper bound), else
    one line saying ``expected``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def int_at_least(low: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``, else one line saying ``expected``."""
    return _int_between(low, None, expected)


non_negative_int = int_at_least(0, "an integer >= 0")
positive_int = int_at_least(1, "a positive integer")

#: Upper bounds of the flags that size processes, threads and waits: far above any real
#: use, they stop a typo (``--threads 1e9``) before it reaches libgomp or the scheduler.
MAX_PROCESSES = 1024
MAX_HEARTBEAT_S = 3600
MAX_GRACE_S = 7 * 24 * 3600
workers_count = _int_between(1, MAX_PROCESSES, f"an integer 1..{MAX_PROCESSES}")


def positive_float(text: str) -> float:
    """An argparse type: a positive finite number, else one line."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _seed(text: str) -> int:
    from lrtune.search.spec import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer 0..{MAX_SEED}, got {text!r}")
    return value


def _task(text: str) -> str:
    # An empty --task is a mistake (an unset shell variable), not "the default task".
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected a task: a built-in name (digits), module:function or path/to/file.py:function"
        )
    return text


def add_common(
    p: argparse.ArgumentParser, *, task: bool = True, device: bool = True, seed: bool = True
) -> None:
    """``--storage`` and ``--debug`` (every command), and the flags a command that trains
    takes: ``--task``, ``--device``, ``--seed``."""
    p.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage URL (default: $LRTUNE_STORAGE or {DEFAULT_STORAGE})",
    )
    if task:
        p.add_argument(
            "--task",
            type=_task,
            default=None,
            help="built-in task name, module:function or path/to/file.py:function "
            "(default: digits)",
        )
    if device:
        p.add_argument(
            "--device",
            default="auto",
            help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps",
        )
    if seed:
        p.add_argument("--seed", type=_seed, default=None, help="random seed (default: 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def storage_url(args: argparse.Namespace) -> str:
    """The storage URL from ``--storage``, else ``$LRTUNE_STORAGE``, else the default."""
    if args.storage is not None and not args.storage.strip():
        # An empty --storage is a mistake (an unset shell variable), not "the default".
        raise UserError("--storage is empty: give a URL, e.g. sqlite:///lrtune.db")
    return args.storage or os.environ.get("LRTUNE_STORAGE") or DEFAULT_STORAGE


def add_heartbeat(p: argparse.ArgumentParser) -> None:
    """``--heartbeat-interval`` and ``--grace-period`` (commands that run trials)."""
    p.add_argument(
        "--heartbeat-interval",
        type=_int_between(1, MAX_HEARTBEAT_S, f"seconds 1..{MAX_HEARTBEAT_S}"),
        default=None,
        help="seconds between a running trial's heartbeats (default: 5)",
    )
    p.add_argument(
        "--grace-period",
        type=_int_between(1, MAX_GRACE_S, f"seconds 1..{MAX_GRACE_S}"),
        default=None,
        help="seconds without heartbeat before a trial is failed and retried, at least "
        "twice --heartbeat-interval (default: 20, or 4 heartbeat intervals when longer)",
    )


class HeartbeatOptions(TypedDict):
    """The heartbeat settings, as :func:`lrtune.storage.open_storage` takes them."""

    heartbeat_interval: int
    grace_period: int


def heartbeat_options(args: argparse.Namespace) -> HeartbeatOptions:
    """The heartbeat settings; a one-line :class:`UserError` when the grace period would
    fail live trials (call it before anything is written)."""
    from lrtune.group.prepare import GRACE_PERIOD, HEARTBEAT_INTERVAL

    interval = args.heartbeat_interval or HEARTBEAT_INTERVAL
    grace = args.grace_period
    if grace is None:
        grace = max(GRACE_PERIOD, 4 * interval)
    elif grace < 2 * interval:
        # A live trial beats every `interval` seconds: a grace period not above two beats
        # fails it as dead whenever one beat comes late.
        raise UserError(
            f"--grace-period {grace} is less than twice --heartbeat-interval {interval}: "
            f"live trials would be failed as dead; use --grace-period {2 * interval} or more"
        )
    return {"heartbeat_interval": interval, "grace_period": grace}


def heartbeat_flags(args: argparse.Namespace) -> list[str]:
    """The heartbeat (and --threads) flags again, for the worker processes this command
    starts."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in heartbeat_options(args).items()]
    return flags + threads_flags(args)


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads`` (torch threads per trial process)."""
    p.add_argument(
        "--threads",
        type=_int_between(0, MAX_PROCESSES, f"an integer 0..{MAX_PROCESSES}"),
        default=None,
        metavar="N",
        help="torch threads per process; 0 = torch's default, one per core (default: "
        "$OMP_NUM_THREADS, else 1 on the CPU)",
    )


def threads_flags(args: argparse.Namespace) -> list[str]:
    """``--threads`` again, for the worker processes this command starts."""
    return [f"--threads={args.threads}"] if args.threads is not None else []


def add_timeout(p: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS`` (``study`` and ``worker``): no trial starts after it."""
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        default=None,
        help="start no new trial once SECONDS have passed since the trials began (the range "
        "test comes before); trials running then finish; run the same command again to go "
        "on (default: none)",
    )


def _duration(text: str) -> float:
    """An argparse type: a positive duration (``90``, ``45m``, ``2h``, ``HH:MM:SS``)."""
    from lrtune.preempt import parse_duration

    try:
        return parse_duration(text, "")
    except UserError:
        raise argparse.ArgumentTypeError(
            f"expected a positive duration (seconds, 45m, 2h or HH:MM:SS), got {text!r}"
        ) from None


def add_preemption(p: argparse.ArgumentParser, *, max_time: bool) -> None:
    """``--grace`` (and, for ``worker``, ``--max-time``): SIGTERM hands the running trial
    back (:mod:`lrtune.preempt`); :func:`grace_seconds` reads it."""
    p.add_argument(
        "--grace",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM the running trial finishes its step, checkpoints and is handed back "
        "to another worker; the process exits 0 within this many seconds (default: 25, at most "
        "half of --max-time)",
    )
    if max_time:
        p.add_argument(
            "--max-time",
            type=_duration,
            default=None,
            metavar="T",
            help="preempt this worker before T (seconds, 45m, 2h or HH:MM:SS: a job's wall "
            "time): at T minus --grace it hands its trial back and exits 0 (default: none)",
        )


def grace_seconds(args: argparse.Namespace) -> float:
    """``--grace``, or its default (with a short ``--max-time``: half of it); shorter than
    ``--max-time``."""
    from lrtune.preempt import DEFAULT_GRACE

    limit = getattr(args, "max_time", None)
    if args.grace is None:
        return DEFAULT_GRACE if limit is None else min(DEFAULT_GRACE, limit / 2)
    grace = float(args.grace)
    if limit is not None and grace >= limit:
        raise UserError(
            f"--grace {grace:g} is not shorter than --max-time {limit:g} s: the worker "
            "would preempt itself at once; give a longer --max-time or a shorter --grace"
        )
    return grace


def add_nproc(p: argparse.ArgumentParser, what: str) -> None:
    """``--nproc-per-trial N``: :func:`ranked` reads it."""
    p.add_argument(
        "--nproc-per-trial",
        type=workers_count,  # 1..MAX_PROCESSES, like --workers
        default=1,
        metavar="N",
        help=f"run {what} with N processes on this host under torch.distributed (NCCL on "
        "GPUs, one per rank; gloo on the CPU): one configuration, each micro-batch split "
        "across the ranks, so the batch is the global one",
    )


@contextmanager
def ranked(args: argparse.Namespace) -> Iterator[None]:
    """With ``--nproc-per-trial N`` > 1, this process is rank 0 of N on this host while the
    block runs (:func:`lrtune.training.ranks.session`): its range tests and trials run on
    every rank."""
    n = args.nproc_per_trial
    if n == 1:
        yield
        return
    from lrtune.device import resolve_device
    from lrtune.training import ranks

    with ranks.session(ranks.devices_for(n, resolve_device(args.device)), args.threads):
        yield


def add_log_dir(p: argparse.ArgumentParser) -> None:
    """``--log-dir`` (TensorBoard runs); :func:`use_log_dir` applies it."""
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="write TensorBoard runs there: per trial DIR/STUDY/trial-NNNN (per-step LR and "
        "training loss, per-epoch metric) and the range test's curve (default: "
        "$LRTUNE_LOG_DIR, else none)",
    )


def use_log_dir(args: argparse.Namespace) -> None:
    """``--log-dir``, checked (one line when it is not writable) and handed to this
    process and the workers it starts as ``$LRTUNE_LOG_DIR``."""
    if getattr(args, "log_dir", None) is None:
        return
    from lrtune.training.tblog import LOG_DIR_ENV, check_log_dir

    os.environ[LOG_DIR_ENV] = check_log_dir(args.log_dir)
