"""The command line: parse arguments, call one library function, choose the exit code.

Each command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> int``. Library
code raises :class:`~lrtune.errors.UserError` for mistakes the user can fix; here it becomes
one line on stderr and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, NoReturn, TypedDict

from lrtune.errors import UserError

if TYPE_CHECKING:
    from lrtune.rangetest import RangeTestResult
    from lrtune.study import Group

DEFAULT_STORAGE = "sqlite:///lrtune.db"
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line and exit 2 (no usage dump).

    ``prog`` is ``lrtune`` for the top level and ``lrtune <command>`` for a command's parser,
    so the line starts as every other error of that command does.
    """

    def error(self, message: str) -> NoReturn:
        message = message.replace("argument COMMAND: invalid choice", "unknown command")
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _seed(text: str) -> int:
    from lrtune.spec import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer 0..{MAX_SEED}, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser, *, task: bool = True) -> None:
    p.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage URL (default: $LRTUNE_STORAGE or {DEFAULT_STORAGE})",
    )
    if task:
        p.add_argument(
            "--task",
            default=None,
            help="built-in task name, module:function or path/to/file.py:function "
            "(default: digits)",
        )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=_seed, default=None, help="random seed (default: 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def storage_url(args: argparse.Namespace) -> str:
    """The storage URL from ``--storage``, else ``$LRTUNE_STORAGE``, else the default."""
    if args.storage is not None and not args.storage.strip():
        # An empty --storage is a mistake (an unset shell variable), not "the default".
        raise UserError("--storage is empty: give a URL, e.g. sqlite:///lrtune.db")
    return args.storage or os.environ.get("LRTUNE_STORAGE") or DEFAULT_STORAGE


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command."""
    parser = _Parser(
        prog="lrtune",
        description="Find the learning rate and LR schedule for PyTorch training.",
    )
    from lrtune import __version__

    parser.add_argument("--version", action="version", version=f"lrtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text, add, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run, _parser=p)
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

    try:
        # Commands that run trials stop at the next training step on Ctrl-C (see
        # lrtune.interrupt); the others (dashboard) stop where it lands.
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
        from lrtune.storage import storage_failure

        failure = None if debug else storage_failure(exc)  # a database fault mid-command
        if failure is None:
            raise
        print(f"lrtune {args.command}: error: {failure}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"lrtune {args.command}: interrupted; the running trial is marked failed, "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return 130


# --- commands ------------------------------------------------------------------------------
# Each command: _add_<name>(parser) adds its flags, _run_<name>(args) calls the library and
# returns the exit code. Registered in _COMMANDS at the end of this file.


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study",
        required=True,
        metavar="NAME",
        help="the study to export (its best finished trial)",
    )
    p.add_argument(
        "--format",
        choices=("yaml", "json", "toml"),
        default=None,
        help="output format (default: from the --out suffix, else yaml)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="PATH", default=None, help="write here (default: stdout)")
    where.add_argument(
        "--into",
        metavar="PATH[:dotted.key]",
        default=None,
        help="merge into this YAML/JSON/TOML config under the key, keeping everything else; "
        "prints the diff",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="B",
        help="rescale the LR to batch size B by the linear scaling rule (lr * B / trained)",
    )
    p.add_argument("--dry-run", action="store_true", help="with --into: print the diff only")
    _add_common(p, task=False)


def _run_export(args: argparse.Namespace) -> int:
    from lrtune import export

    if args.dry_run and not args.into:
        raise UserError("--dry-run goes with --into PATH[:key]")
    config = export.export_config(storage_url(args), args.study, batch_size=args.batch_size)
    if args.into:
        diff = export.merge_into(args.into, config, dry_run=args.dry_run)
        sys.stdout.write(diff)
        if not diff:
            print(f"lrtune export: {args.into} already holds this config", file=sys.stderr)
        elif args.dry_run:
            print("lrtune export: dry run, nothing written", file=sys.stderr)
        return 0
    fmt: str = args.format or export.format_for_path(args.out or "") or "yaml"
    text = export.dump_config(config, fmt)
    if args.out:
        export.write_config(text, args.out)
        print(f"lrtune export: wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return value


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    _add_common(p, task=False)


def _run_dashboard(args: argparse.Namespace) -> int:
    from lrtune import dashboard
    from lrtune.storage import mask_url

    url = storage_url(args)

    def ready(address: str) -> None:
        print(
            f"lrtune dashboard: open {address} (storage {mask_url(url)}; Ctrl-C to stop)",
            flush=True,
        )

    try:
        dashboard.serve(url, host=args.host, port=args.port, quiet=args.quiet, on_ready=ready)
    except KeyboardInterrupt:
        print("lrtune dashboard: stopped", file=sys.stderr)
    return 0


def _add_rangetest(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument(
        "--optimizer",
        help="sgd, adam, adamw, rmsprop, adagrad (default: the task's own, else sgd)",
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="sweeps to run (default 3)")
    p.add_argument("--start-lr", type=_positive_float, default=1e-7, help="default 1e-7")
    p.add_argument("--end-lr", type=_positive_float, default=10.0, help="default 10")
    p.add_argument("--steps", type=_positive_int, default=100, help="mini-batches per sweep")
    p.add_argument("--mode", choices=("exp", "linear"), default="exp", help="LR growth")
    p.add_argument(
        "--track-metric",
        action="store_true",
        help="also evaluate the task's metric on a held-out batch during the sweep",
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw the curves to a PNG")
    p.add_argument("--study", help="also record the result on this existing study")


def _run_rangetest(args: argparse.Namespace) -> int:
    from lrtune.rangetest import range_test

    _check_out_path(args.json, ".json", "--json")
    _check_out_path(args.plot, ".png", "--plot")
    study = None
    if args.study:
        from lrtune.study import load_existing_study

        study = load_existing_study(storage_url(args), args.study)
    from lrtune.faults import call_task
    from lrtune.spec import task_optimizer

    task = args.task or "digits"
    # Any error from the task's code is one line (call_task), not a traceback.
    optimizer = args.optimizer or call_task(f"task {task}", task_optimizer, task)
    result = call_task(
        f"range test on {task}",
        range_test,
        task,
        optimizer=optimizer,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        steps=args.steps,
        mode=args.mode,
        seeds=args.seeds,
        device=args.device,
        track_metric=args.track_metric,
        seed=args.seed or 0,
    )
    print(result.table())
    if args.json:
        _write_atomic(args.json, result.to_json())
        print(f"wrote {args.json}")
    if args.plot:
        from lrtune.plots import plot_range_test

        plot_range_test(result, args.plot)
        print(f"wrote {args.plot}")
    if study is not None:
        from lrtune.study import record_range_test

        record_range_test(study, result, storage_url(args))
        print(f"recorded on study {args.study}")
    return 0


def _check_out_path(path: str | None, suffix: str, flag: str) -> None:
    """Fail before any work when an output path cannot be written."""
    if path is None:
        return
    if not path.lower().endswith(suffix):
        raise UserError(f"{flag} {path!r}: expected a file name ending in {suffix}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path!r}: directory {parent} does not exist")
    import tempfile

    try:  # /proc, /sys, a read-only mount: find out now, not after the range test
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path!r}: cannot write in {parent}: {exc.strerror}") from None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _add_study(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--spec", metavar="FILE", help="study spec file (studies/*.toml); flags win")
    p.add_argument("--group", help="name of the set of studies (default: the task's name)")
    p.add_argument("--prior", help="rangetest, none, or rangetest,none (default rangetest)")
    p.add_argument(
        "--samplers", help="comma list of grid, random, tpe, qmc, gp (default grid,random,tpe)"
    )
    p.add_argument("--trials", type=_positive_int, help="finished trials per study (default 30)")
    p.add_argument(
        "--repeats",
        type=_positive_int,
        help="studies per sampler x prior with different sampler seeds (default 1)",
    )
    p.add_argument("--pruner", help="median (default), hyperband or none")
    p.add_argument("--epochs", type=_positive_int, help="epochs per trial (default: the task's)")
    p.add_argument(
        "--optimizer",
        help="sgd, adam, adamw, rmsprop, adagrad (default: the task's own, else sgd)",
    )
    p.add_argument("--schedules", help="comma list of schedules to search (default: all)")
    p.add_argument("--lr-low", type=_positive_float, help="no-prior lower LR bound (1e-6)")
    p.add_argument("--lr-high", type=_positive_float, help="no-prior upper LR bound (10)")
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        help="trials-to-target: within this fraction of the best (default 0.02)",
    )
    p.add_argument(
        "--widen",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="grow the prior's bounds when the best trials sit at an edge (default: on)",
    )
    p.add_argument("--grid-points", type=_positive_int, help="LR points of the grid (default 6)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="local worker processes (default 1: run in this process)",
    )
    p.add_argument(
        "--create-only",
        action="store_true",
        help="create the studies (and run the range test) for remote workers, exit",
    )
    _add_heartbeat(p)


_SPEC_FLAGS = (
    "task",
    "group",
    "prior",
    "samplers",
    "trials",
    "repeats",
    "pruner",
    "epochs",
    "optimizer",
    "schedules",
    "lr_low",
    "lr_high",
    "tolerance",
    "grid_points",
    "widen",
    "seed",
)


def _add_heartbeat(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--heartbeat-interval",
        type=_positive_int,
        default=None,
        help="seconds between a running trial's heartbeats (default 5)",
    )
    p.add_argument(
        "--grace-period",
        type=_positive_int,
        default=None,
        help="seconds without heartbeat before a trial is failed and retried (default 20)",
    )


class _Heartbeat(TypedDict):
    heartbeat_interval: int
    grace_period: int


def _heartbeat(args: argparse.Namespace) -> _Heartbeat:
    from lrtune.study import GRACE_PERIOD, HEARTBEAT_INTERVAL

    return {
        "heartbeat_interval": args.heartbeat_interval or HEARTBEAT_INTERVAL,
        "grace_period": args.grace_period or GRACE_PERIOD,
    }


def _heartbeat_flags(args: argparse.Namespace) -> list[str]:
    """The heartbeat flags again, for the worker processes this command starts."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in _heartbeat(args).items()]


def _run_study(args: argparse.Namespace) -> int:
    from lrtune.spec import load_spec_file, resolve_spec

    values = load_spec_file(args.spec) if args.spec else {}
    overrides = {k: getattr(args, k) for k in _SPEC_FLAGS}
    if overrides["seed"] is None and "seed" in values:
        del overrides["seed"]
    spec = resolve_spec(
        values, overrides, source=f"spec file {args.spec}" if args.spec else "the spec"
    )
    url = storage_url(args)
    from lrtune.device import resolve_device
    from lrtune.workers import limit_cpu_threads

    device = str(resolve_device(args.device))
    if device == "cpu":
        limit_cpu_threads(1 if args.create_only else args.workers)
    from lrtune.study import prepare_group

    # The table is printed once the group is ready: when the range test is unusable (a NaN
    # loss), the error alone comes out, not a table of meaningless LRs above it.
    tested: list[RangeTestResult] = []
    group = prepare_group(spec, url, device=device, on_rangetest=tested.append)
    for result in tested:
        print(result.table())
        print()
    rt = group.rangetest
    if rt is not None and rt.diagnosis != "ok":
        # The bounds are still used (a failed test stops prepare_group), but may be off.
        print(
            f"lrtune study: warning: range test diagnosis is '{rt.diagnosis}': the rangetest "
            f"prior's bounds [{rt.lr_low:.3g}, {rt.lr_high:.3g}] may be off; going on",
            file=sys.stderr,
        )
    _say_bounds(group)
    _say_over_budget(url, group)
    if args.create_only:
        made = ", ".join(group.created) or "none (all existed)"
        print(f"created studies: {made}")
        print(f"run workers with: lrtune worker --group {group.name} --storage URL")
        return 0
    _run_trials(args, url, group)
    return _finish_group(url, group.name, spec.tolerance)


def _say_bounds(group: Group) -> None:
    from lrtune.space import decades

    for prior, bounds in group.bounds.items():
        if prior in group.spec.prior:
            print(
                f"prior {prior}: lr in [{bounds[0]:.3g}, {bounds[1]:.3g}] "
                f"({decades(bounds):.1f} decades)"
            )
    spec = group.spec
    if "grid" in spec.samplers:
        from lrtune.space import grid_size

        size = grid_size(spec)
        if size < spec.trials:
            print(
                f"note: the grid has {size} points ({spec.grid_points} LRs x "
                f"{len(spec.schedules)} schedules), fewer than --trials {spec.trials}: "
                f"grid studies stop at {size} trials"
            )
        else:
            print(
                f"grid: {size} points ({spec.grid_points} LRs x {len(spec.schedules)} "
                f"schedules); {spec.trials} of them are tried, in random order"
            )


def _say_over_budget(url: str, group: Group) -> None:
    """One line when a resumed group's studies already hold more trials than the budget
    (``study`` re-run with a smaller ``--trials``): nothing runs for them."""
    import optuna

    from lrtune.states import counts
    from lrtune.storage import open_storage

    storage = open_storage(url)
    over: dict[str, int] = {}
    full = True
    for ref in group.refs:
        done, _ = counts(optuna.load_study(study_name=ref.name, storage=storage))
        full = full and done >= group.budget(ref)
        if done > group.budget(ref):
            over[ref.name] = done
    if not over:
        return
    one = len(over) == 1
    have = " or ".join(str(d) for d in sorted(set(over.values())))
    rest = "nothing to run" if full else f"nothing to run for {'it' if one else 'them'}"
    print(
        f"note: {', '.join(over)} already {'has' if one else 'have'} {have} finished trials, "
        f"more than --trials {group.spec.trials}; {rest} (all their trials are compared)"
    )


def _run_trials(args: argparse.Namespace, url: str, group: Group) -> None:
    from lrtune.progress import Progress
    from lrtune.storage import open_storage
    from lrtune.workers import run_worker, spawn_workers, wait_workers

    refs = group.refs
    budgets = {r.name: group.budget(r) for r in refs}
    progress = Progress([r.name for r in refs], budgets)
    storage = open_storage(url)
    progress.update(storage)
    if args.workers == 1:
        run_worker(
            url,
            studies=[r.name for r in refs],
            device=args.device,
            on_trial=lambda _n, _t: progress.update(storage),
            **_heartbeat(args),
        )
        return
    # The local workers run the task this command checked, whatever the storage says later.
    extra = [*_heartbeat_flags(args), f"--task={group.spec.task}"]
    procs = spawn_workers(
        url,
        group.name,
        args.workers,
        device=args.device,
        extra_args=extra,
    )
    if wait_workers(procs, on_tick=lambda: progress.update(storage)) != 0:
        raise UserError(
            "a worker failed (see its message above); run the same command "
            "again to finish the budget"
        )


def _finish_group(url: str, group: str, tolerance: float | None) -> int:
    from lrtune.compare import compare_group
    from lrtune.storage import open_storage
    from lrtune.study import save_comparison
    from lrtune.table import format_table

    storage = open_storage(url)
    cmp = compare_group(storage, group, tolerance=tolerance)
    print()
    print(format_table(cmp))
    save_comparison(storage, cmp)
    best = cmp.best_row
    print()
    print(f"watch:  lrtune dashboard{_storage_flag(url)}")
    if best is not None:
        print(f"export: lrtune export --study {best.study}{_storage_flag(url)}")
    return 0


def _storage_flag(url: str) -> str:
    from lrtune.storage import mask_url

    return "" if url == DEFAULT_STORAGE else f" --storage '{mask_url(url)}'"


def _add_worker(p: argparse.ArgumentParser) -> None:
    _add_common(p, task=False)
    p.add_argument(
        "--task",
        metavar="NAME",
        help="run only studies of this task (exactly as the study names it): a worker "
        "imports the study's task, so pin it on storages others can write to",
    )
    p.add_argument("--group", help="run the studies of this group")
    p.add_argument("--study", action="append", help="run this study (repeatable)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes on this host")
    p.add_argument("--gpus", help="comma list of GPU indices: one process per GPU")
    _add_heartbeat(p)


def _parse_gpus(text: str) -> list[int]:
    try:
        gpus = [int(g) for g in text.split(",")]
    except ValueError:
        raise UserError(
            f"--gpus {text!r}: expected a comma list of GPU indices, e.g. 0,1"
        ) from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus {text!r}: expected distinct non-negative indices")
    return gpus


def _run_worker(args: argparse.Namespace) -> int:
    if not args.group and not args.study:
        raise UserError("give --group NAME or --study NAME (see `lrtune ls`)")
    url = storage_url(args)
    gpus = _parse_gpus(args.gpus) if args.gpus else None
    if gpus or args.workers > 1:
        from lrtune.workers import spawn_workers, wait_workers

        if not args.group:
            raise UserError("--workers/--gpus need --group")
        # Check here what every child would check, so that a mistake is said once, not
        # once per process.
        _check_group(url, args.group, args.task)
        extra = _heartbeat_flags(args)
        if args.task is not None:
            extra.append(f"--task={args.task}")
        procs = spawn_workers(
            url,
            args.group,
            len(gpus) if gpus else args.workers,
            device=args.device,
            gpus=gpus,
            extra_args=extra,
        )
        return wait_workers(procs)
    from lrtune.device import resolve_device
    from lrtune.workers import limit_cpu_threads, run_worker, worker_index

    device = str(resolve_device(args.device))
    if device == "cpu":
        limit_cpu_threads(int(os.environ.get("LRTUNE_WORKERS_ON_HOST", "1")))
    report = run_worker(
        url,
        group=args.group,
        studies=args.study,
        worker=worker_index(),
        device=device,
        task=args.task,
        **_heartbeat(args),
    )
    done = sum(report.trials.values())
    print(
        f"worker done: {done} trials in {report.seconds:.1f} s ({report.failed} failed)"
        if report.failed
        else f"worker done: {done} trials in {report.seconds:.1f} s"
    )
    return 0


def _check_group(url: str, group: str, task: str | None) -> None:
    """The checks ``run_worker`` makes before its first trial: the group has studies and
    each runs the pinned task."""
    from lrtune.states import group_study_names
    from lrtune.storage import mask_url, open_storage, require_existing
    from lrtune.workers import check_task_pin

    require_existing(url)
    storage = open_storage(url)
    names = group_study_names(storage, group)
    if not names:
        raise UserError(
            f"no studies for group {group!r} in {mask_url(url)}: create them with "
            "`lrtune study ... --create-only` (see `lrtune ls`)"
        )
    for name in names:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
        check_task_pin(name, str(attrs.get("spec", {}).get("task")), task)


def _add_ls(p: argparse.ArgumentParser) -> None:
    _add_common(p, task=False)
    p.add_argument("--group", help="only the studies of this group")


def _run_ls(args: argparse.Namespace) -> int:
    from lrtune.states import list_studies

    rows = list_studies(storage_url(args), group=args.group)
    if not rows:
        print("no studies")
        return 0
    header = ["study", "sampler", "prior", "trials", "best"]
    table = [header] + [
        [r["study"], r["sampler"], r["prior"], f"{r['done']}/{r['budget']}", r["best"]]
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", required=True, metavar="NAME", help="the group of studies")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for report.md and the PNGs (created; the report's files replaced)",
    )
    _add_common(p, task=False)


def _run_report(args: argparse.Namespace) -> int:
    from lrtune.report import REPORT_FILES, write_report

    path = write_report(storage_url(args), args.group, args.out)
    pngs = [n for n in REPORT_FILES if n.endswith(".png") and (path.parent / n).is_file()]
    print(f"lrtune report: wrote {path} and {len(pngs)} plots ({', '.join(pngs)})")
    return 0


# --- registry (keep last) ------------------------------------------------------------------

_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = [
    (
        "rangetest",
        "LR range test on a task: prints the suggestion table",
        _add_rangetest,
        _run_rangetest,
    ),
    (
        "study",
        "the main job: search LR x schedule with grid, random and TPE, with and "
        "without the range-test prior",
        _add_study,
        _run_study,
    ),
    (
        "worker",
        "join a group's studies and run their trials until each has its budget",
        _add_worker,
        _run_worker,
    ),
    ("ls", "the studies in a storage with trials done/planned and best value", _add_ls, _run_ls),
    ("export", "write a study's best trial as a production config", _add_export, _run_export),
    ("dashboard", "serve optuna-dashboard on the storage", _add_dashboard, _run_dashboard),
    ("report", "comparison table and plots of a group", _add_report, _run_report),
]
