"""``lrtune study``: the main job. Parses the flags into a spec, calls
:func:`lrtune.group.run_group` and prints what it reports: the range-test table, the
bounds, the progress and the comparison table."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lrtune.cli.common import (
    Command,
    add_common,
    add_heartbeat,
    add_log_dir,
    add_threads,
    add_timeout,
    heartbeat_options,
    int_at_least,
    non_negative_int,
    positive_float,
    positive_int,
    storage_url,
    threads_flags,
    use_log_dir,
    workers_count,
)
from lrtune.errors import UserError
from lrtune.shell import command_line, storage_args

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from lrtune.comparison import Comparison
    from lrtune.progress import Progress
    from lrtune.rangetest import RangeTestResult
    from lrtune.study import Group


def _add_study(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--spec", metavar="FILE", help="study spec file (studies/*.toml); flags win")
    p.add_argument("--group", help="name of the set of studies (default: the task's name)")
    p.add_argument("--prior", help="rangetest, none, or rangetest,none (default: rangetest)")
    p.add_argument(
        "--samplers", help="comma list of grid, random, tpe, qmc, gp (default: grid,random,tpe)"
    )
    p.add_argument("--trials", type=positive_int, help="finished trials per study (default: 30)")
    p.add_argument(
        "--repeats",
        type=positive_int,
        help="studies per sampler x prior with different sampler seeds (default: 1)",
    )
    p.add_argument(
        "--pruner",
        help="none, median or hyperband (default: none; pruning on mid-training losses "
        "favours schedules that decay early)",
    )
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default: the task's)")
    p.add_argument(
        "--rungs",
        metavar="E1,E2,...",
        help="multi-fidelity search: epochs per rung, ascending, the last = --epochs (e.g. "
        "1,3,9); each rung trains the whole schedule compressed to its epochs, --trials "
        "counts full-trial equivalents (default: off)",
    )
    p.add_argument(
        "--reduction-factor",
        type=int_at_least(2, "an integer >= 2"),
        metavar="ETA",
        help="with --rungs: the top 1/ETA of a rung is promoted to the next (default: 3)",
    )
    p.add_argument(
        "--horizon-beta",
        type=float,
        metavar="BETA",
        help="with --rungs: a configuration promoted from E to E' epochs trains at "
        "lr x (E'/E)^-BETA, as the best LR falls with the horizon (e.g. 0.5; default: 0, off)",
    )
    p.add_argument(
        "--optimizer",
        help="sgd, adam, adamw, rmsprop, adagrad, schedulefree_adamw, schedulefree_sgd "
        "(default: the task's own, else sgd)",
    )
    p.add_argument("--schedules", help="comma list of schedules to search (default: all)")
    p.add_argument(
        "--baseline",
        help="schedulefree: add a schedule-free arm (LR and warmup searched, no schedule) "
        "to the comparison (default: none)",
    )
    p.add_argument("--lr-low", type=positive_float, help="no-prior lower LR bound (default: 1e-6)")
    p.add_argument("--lr-high", type=positive_float, help="no-prior upper LR bound (default: 10)")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        help="trials-to-target: within this fraction of the best (default: 0.02)",
    )
    p.add_argument(
        "--widen",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="grow the prior's bounds when the best trials sit at an edge (default: on)",
    )
    p.add_argument("--grid-points", type=positive_int, help="LR points of the grid (default: 6)")
    p.add_argument("--precision", help="fp32, bf16 or fp16 (default: the task's own, else fp32)")
    p.add_argument(
        "--accumulate",
        type=positive_int,
        help="micro-batches per optimizer update (default: the task's, else 1)",
    )
    p.add_argument(
        "--clip-grad-norm", type=positive_float, help="max gradient norm (default: the task's)"
    )
    p.add_argument(
        "--batch-scaling",
        metavar="RULE",
        help="linear, sqrt or none: with [params] batch_size and --prior rangetest, how a "
        "trial's LR bounds follow its batch size from the range test's (default: linear "
        "for sgd, sqrt for the adaptive optimizers)",
    )
    for name, what, kind in (
        ("start-lr", "first LR (default: 1e-7)", positive_float),
        ("end-lr", "last LR (default: 10)", positive_float),
        ("steps", "updates per sweep (default: 100)", positive_int),
        ("seeds", "sweeps (default: 3)", positive_int),
    ):
        p.add_argument(f"--rangetest-{name}", type=kind, help=f"the prior's range test: {what}")
    p.add_argument(
        "--confirm",
        type=non_negative_int,
        metavar="K",
        help="after the budgets, re-train the K best configurations on fresh seeds "
        "(default: 3; 0: off)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=positive_int,
        metavar="S",
        help="fresh training seeds per confirmed configuration (default: 2)",
    )
    p.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        help="local worker processes (default: 1, run in this process)",
    )
    p.add_argument(
        "--create-only",
        action="store_true",
        help="create the studies (and run the range test) for remote workers, exit",
    )
    add_timeout(p)
    add_heartbeat(p)
    add_threads(p)
    add_log_dir(p)


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
    "confirm",
    "confirm_seeds",
    "precision",
    "accumulate",
    "clip_grad_norm",
    "batch_scaling",
    "rangetest_start_lr",
    "rangetest_end_lr",
    "rangetest_steps",
    "rangetest_seeds",
    "rungs",
    "reduction_factor",
    "horizon_beta",
    "baseline",
)


def _run_study(args: argparse.Namespace) -> int:
    from lrtune.search.spec import load_spec_file, resolve_spec

    values = load_spec_file(args.spec) if args.spec else {}
    overrides = {k: getattr(args, k) for k in _SPEC_FLAGS}
    if overrides["seed"] is None and "seed" in values:
        del overrides["seed"]
    spec = resolve_spec(
        values, overrides, source=f"spec file {args.spec}" if args.spec else "the spec"
    )
    heartbeat = heartbeat_options(args)  # every flag checked before anything is written
    if args.create_only and args.workers != 1:
        raise UserError(
            f"--workers {args.workers} with --create-only: it creates the studies and runs no "
            "trial; start the workers with `lrtune worker --group NAME --workers N`"
        )
    url = storage_url(args)
    use_log_dir(args)
    from lrtune.group import run_group

    # The tables are printed once the group is ready: when the range test is unusable (a
    # NaN loss), the error alone comes out, not a table of meaningless LRs above it.
    tested: list[RangeTestResult] = []
    prepared: list[Group] = []

    def on_prepared(group: Group) -> None:
        prepared.append(group)
        for result in tested:
            print(result.table())
            print()
        rt = group.rangetest
        if rt is not None and rt.diagnosis != "ok":
            # The bounds are still used (a failed test stops run_group), but may be off.
            print(
                f"lrtune study: warning: range test diagnosis is '{rt.diagnosis}': the "
                f"rangetest prior's bounds [{rt.lr_low:.3g}, {rt.lr_high:.3g}] may be off; "
                "going on",
                file=sys.stderr,
            )
        for warning in rt.warnings if rt is not None else []:
            print(f"lrtune study: warning: range test: {warning}", file=sys.stderr)
        _say_bounds(group)
        _say_over_budget(url, group)

    cmp = run_group(
        spec,
        url,
        workers=args.workers,
        device=args.device,
        create_only=args.create_only,
        threads=args.threads,
        timeout=args.timeout,
        worker_args=threads_flags(args),
        on_rangetest=tested.append,
        on_prepared=on_prepared,
        on_progress=_progress(),
        **heartbeat,
    )
    if args.create_only:
        group = prepared[0]
        made = ", ".join(group.created) or "none (all existed)"
        print(f"created studies: {made}")
        workers = command_line("worker", "--group", group.name) + " --storage URL"
        print(f"run workers with: {workers}")
        return 0
    if args.timeout is not None:
        _say_timeout(url, prepared[0], args.timeout)
    return _finish_group(url, cmp)


def _progress() -> Callable[[Group, optuna.storages.BaseStorage], None]:
    """The live progress display, made when the first update comes."""
    shown: list[Progress] = []

    def update(group: Group, storage: optuna.storages.BaseStorage) -> None:
        if not shown:
            from lrtune.progress import Progress

            refs = group.refs
            shown.append(Progress([r.name for r in refs], {r.name: group.budget(r) for r in refs}))
        shown[0].update(storage)

    return update


def _say_bounds(group: Group) -> None:
    from lrtune.search.space import decades

    for prior, bounds in group.bounds.items():
        if prior in group.spec.prior:
            print(
                f"prior {prior}: lr in [{bounds[0]:.3g}, {bounds[1]:.3g}] "
                f"({decades(bounds):.1f} decades)"
            )
    if group.spec.baseline and "rangetest" in group.spec.prior:
        low, high = group.baseline_bounds["rangetest"]
        rt = group.baseline_rangetest
        print(
            f"baseline {', '.join(group.spec.baseline)} ({rt.optimizer if rt else '-'}), "
            f"prior rangetest: lr in [{low:.3g}, {high:.3g}] ({decades((low, high)):.1f} decades)"
        )
    spec = group.spec
    if spec.rungs:
        from lrtune.search.ladder import Ladder

        ladder = Ladder(rungs=spec.rungs, eta=spec.reduction_factor, budget=spec.trials)
        print(
            f"rungs: {', '.join(map(str, spec.rungs))} epochs, the top 1/{spec.reduction_factor}"
            f" promoted; --trials {spec.trials} = {spec.trials} full-trial equivalents of "
            f"training per study (about {ladder.bottom_trials()} configurations start on "
            f"{spec.rungs[0]} epoch{'s' if spec.rungs[0] > 1 else ''})"
        )
        if spec.horizon_beta:
            print(
                f"horizon correction: a configuration promoted from E to E' epochs trains at "
                f"lr x (E'/E)^-{spec.horizon_beta:g}"
            )
    if "grid" in spec.samplers:
        from lrtune.search.space import grid_size

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
    from lrtune.group import over_budget

    over, full = over_budget(url, group)
    if not over:
        return
    one = len(over) == 1
    have = " or ".join(f"{d:.3g}" for d in sorted(set(over.values())))
    unit = "full-trial equivalents of training" if group.spec.rungs else "finished trials"
    rest = "nothing to run" if full else f"nothing to run for {'it' if one else 'them'}"
    print(
        f"note: {', '.join(over)} already {'has' if one else 'have'} {have} {unit}, "
        f"more than --trials {group.spec.trials}; {rest} (all their trials are compared)"
    )


def _say_timeout(url: str, group: Group, timeout: float) -> None:
    """One line when ``--timeout`` stopped the run with budgets left."""
    from lrtune.group import over_budget

    if not over_budget(url, group)[1]:
        print(
            f"lrtune study: --timeout {timeout:g} s reached: no new trial started after it; "
            "the table compares the trials finished so far; run the same command again "
            "to finish the budget",
            file=sys.stderr,
        )


def _finish_group(url: str, cmp: Comparison) -> int:
    from lrtune.sqlite_file import check_open
    from lrtune.table import format_table

    check_open()  # no watch:/export: lines for a SQLite file deleted or replaced meanwhile
    print()
    print(format_table(cmp))
    best = cmp.best_row
    print()
    # Quoted for the shell: a group is the user's text (`--group '$(id)'`), and pasting the
    # line must run this command, nothing else.
    print(f"watch:  {command_line('dashboard', *storage_args(url))}")
    if best is not None:
        print(f"export: {command_line('export', '--study', best.study, *storage_args(url))}")
    return 0


COMMAND = Command(
    "study",
    "the main job: search LR x schedule with grid, random and TPE, with and "
    "without the range-test prior",
    (
        "lrtune study --task digits --trials 10 --storage sqlite:///digits.db",
        "lrtune study --spec studies/digits.toml --workers 2",
    ),
    _add_study,
    _run_study,
)
