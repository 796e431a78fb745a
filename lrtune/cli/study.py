"""``lrtune study``: the main job. Parses the flags into a spec, calls
:func:`lrtune.group.run.run_group` and prints what it reports: the range-test table, the
bounds, the progress and the comparison table."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lrtune.cli.common import (
    Command,
    HeartbeatOptions,
    grace_seconds,
    heartbeat_options,
    ranked,
    storage_url,
    threads_flags,
    use_log_dir,
)
from lrtune.cli.study_flags import SPEC_FLAGS, add_study
from lrtune.errors import UserError
from lrtune.shell import command_line, storage_args

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from lrtune.group.comparison import Comparison
    from lrtune.group.prepare import Group
    from lrtune.progress import Progress
    from lrtune.rangetest import RangeTestResult
    from lrtune.search.spec import StudySpec


def _run_study(args: argparse.Namespace) -> int:
    from lrtune.group.run import study_spec

    spec = study_spec(args.spec or None, {k: getattr(args, k) for k in SPEC_FLAGS})
    heartbeat = heartbeat_options(args)  # every flag checked before anything is written
    grace = grace_seconds(args)
    if args.create_only and args.workers != 1:
        raise UserError(
            f"--workers {args.workers} with --create-only: it creates the studies and runs no "
            "trial; start the workers with `lrtune worker --group NAME --workers N`"
        )
    if args.nproc_per_trial > 1 and args.workers != 1:
        raise UserError(
            f"--nproc-per-trial {args.nproc_per_trial} runs the trials in this process and "
            f"{args.nproc_per_trial - 1} more: drop --workers (or start more with `lrtune "
            "worker --nproc-per-trial N`)"
        )
    url = storage_url(args)
    use_log_dir(args)

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

    with ranked(args):  # --nproc-per-trial N: this process is rank 0 of N
        cmp = _run(args, spec, url, grace, heartbeat, tested.append, on_prepared)
    if args.create_only:
        group = prepared[0]
        made = ", ".join(group.created) or "none (all existed)"
        print(f"created studies: {made}")
        nproc = [f"--nproc-per-trial={args.nproc_per_trial}"] if args.nproc_per_trial > 1 else []
        workers = command_line("worker", "--group", group.name, *nproc) + " --storage URL"
        print(f"run workers with: {workers}")
        return 0
    if args.timeout is not None:
        _say_timeout(url, prepared[0], args.timeout)
    return _finish_group(url, cmp)


def _run(
    args: argparse.Namespace,
    spec: StudySpec,
    url: str,
    grace: float,
    heartbeat: HeartbeatOptions,
    on_rangetest: Callable[[RangeTestResult], None],
    on_prepared: Callable[[Group], None],
) -> Comparison:
    from lrtune.group.run import run_group

    return run_group(
        spec,
        url,
        workers=args.workers,
        device=args.device,
        create_only=args.create_only,
        threads=args.threads,
        timeout=args.timeout,
        worker_args=[*threads_flags(args), f"--grace={grace!r}"],
        grace=grace,
        on_rangetest=on_rangetest,
        on_prepared=on_prepared,
        on_progress=_progress(),
        **heartbeat,
    )


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
        if spec.share_trunks:
            print(
                "shared trunks: a wsd or constant configuration promoted to a longer rung "
                "continues from the end of its stable phase (it costs only its new epochs)"
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
    from lrtune.group.run import over_budget

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
    from lrtune.group.run import over_budget

    if not over_budget(url, group)[1]:
        print(
            f"lrtune study: --timeout {timeout:g} s reached: no new trial started after it; "
            "the table compares the trials finished so far; run the same command again "
            "to finish the budget",
            file=sys.stderr,
        )


def _finish_group(url: str, cmp: Comparison) -> int:
    from lrtune.group.present import format_table
    from lrtune.sqlite_file import check_open

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
    name="study",
    help="the main job: search LR x schedule with grid, random and TPE, with and "
    "without the range-test prior",
    examples=(
        "lrtune study --task digits --trials 10 --storage sqlite:///digits.db",
        "lrtune study --spec studies/digits.toml --workers 2",
    ),
    add=add_study,
    run=_run_study,
)
