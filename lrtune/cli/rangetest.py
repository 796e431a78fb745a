"""``lrtune rangetest``: the LR range test on a task; prints the suggestion table."""

from __future__ import annotations

import argparse
import os

from lrtune.cli.common import (
    Command,
    add_common,
    add_log_dir,
    add_nproc,
    add_threads,
    positive_float,
    positive_int,
    ranked,
    storage_url,
    use_log_dir,
)
from lrtune.errors import UserError
from lrtune.export.formats import check_writable


def _add_rangetest(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_log_dir(p)
    p.add_argument(
        "--optimizer",
        help="sgd, adam, adamw, rmsprop, adagrad, schedulefree_adamw, schedulefree_sgd "
        "(default: the task's own, else sgd)",
    )
    p.add_argument("--seeds", type=positive_int, default=3, help="sweeps to run")
    p.add_argument("--start-lr", type=positive_float, default=1e-7, help="first LR of the sweep")
    p.add_argument("--end-lr", type=positive_float, default=10.0, help="last LR of the sweep")
    p.add_argument("--steps", type=positive_int, default=100, help="mini-batches per sweep")
    p.add_argument("--mode", choices=("exp", "linear"), default="exp", help="LR growth")
    p.add_argument(
        "--track-metric",
        action="store_true",
        help="also evaluate the task's metric on a held-out batch during the sweep",
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (default: no file)")
    p.add_argument("--plot", metavar="PATH", help="draw the curves to a PNG (default: no plot)")
    p.add_argument("--study", help="also record the result on this existing study (default: none)")
    add_nproc(p, "the sweep")
    add_threads(p)


def _run_rangetest(args: argparse.Namespace) -> int:
    from lrtune.rangetest import range_test

    _check_out_path(args.json, ".json", "--json")
    _check_out_path(args.plot, ".png", "--plot")
    use_log_dir(args)
    from lrtune.device import resolve_device
    from lrtune.workers import limit_cpu_threads

    if args.threads is not None or str(resolve_device(args.device)) == "cpu":
        limit_cpu_threads(args.threads)
    study = None
    if args.study:
        from lrtune.group.prepare import load_existing_study

        study = load_existing_study(storage_url(args), args.study)
    from lrtune.faults import call_task
    from lrtune.search.spec import task_optimizer

    task = args.task or "digits"
    # Any error from the task's code is one line (call_task), not a traceback.
    optimizer = args.optimizer or call_task(f"task {task}", task_optimizer, task)
    with ranked(args):  # --nproc-per-trial N: every rank sweeps its share of each batch
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
        from lrtune.export.formats import write_config

        write_config(result.to_json(), args.json)  # atomic, as every file lrtune writes
        print(f"wrote {args.json}")
    if args.plot:
        from lrtune.report import plot_range_test

        plot_range_test(result, args.plot)
        print(f"wrote {args.plot}")
    from lrtune.training.tblog import log_root, write_range_test

    root = log_root()
    if root is not None:
        run = os.path.join(root, f"rangetest-{os.path.basename(task).replace(':', '-')}")
        write_range_test(result, run)
        print(f"wrote TensorBoard run {run}")
    if study is not None:
        from lrtune.group.creation import record_range_test

        record_range_test(study, result, storage_url(args))
        print(f"recorded on study {args.study}")
    return 0


def _check_out_path(path: str | None, suffix: str, flag: str) -> None:
    """Fail before any work when an output path cannot be written."""
    if path is None:
        return
    if not path.lower().endswith(suffix):
        raise UserError(f"{flag} {path!r}: expected a file name ending in {suffix}")
    try:  # no folder, a folder by that name, a read-only file: now, not after the test
        _target, parent, _mode = check_writable(path)
    except UserError as exc:
        raise UserError(f"{flag} {path!r}: {exc}") from None
    import tempfile

    try:  # /proc, /sys, a read-only mount: find out now, not after the range test
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path!r}: cannot write in {parent}: {exc.strerror}") from None


COMMAND = Command(
    name="rangetest",
    help="LR range test on a task: prints the suggestion table",
    examples=(
        "lrtune rangetest --task digits --plot rangetest.png",
        "lrtune rangetest --task wine --optimizer adam --seeds 1 --json rangetest.json",
        "lrtune rangetest --task digits --nproc-per-trial 2 --device cpu",
    ),
    add=_add_rangetest,
    run=_run_rangetest,
)
