"""``lrtune report``: a group's comparison table and plots, as ``report.md`` and PNGs.

:func:`write_report` reads the group's studies from the storage (nothing is written
there), checks that the group exists and has a finished trial, then draws every figure into
a fresh temporary directory next to the output directory and moves the files into place
only once all of them are written: a failure leaves no half-written report behind.

Figures (see :mod:`lrtune.report.figures` and :mod:`lrtune.rangetest.plot`):

- ``best-so-far.png``: best value so far against finished trials, per sampler × prior
  (median and IQR band over repeats);
- ``rangetest.png``: the stored range-test curve with the search bounds it gave;
- ``schedule.png``: the best trial's LR at every optimizer step (log scale);
- ``importances.png``: Optuna's parameter importances of the best study that has
  :data:`~lrtune.report.gather.MIN_IMPORTANCE_TRIALS` complete trials;
- ``lr-vs-value.png``: every trial's LR against its value, per prior.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lrtune.errors import UserError, mask_url
from lrtune.rangetest.plot import plot_range_test
from lrtune.report import figures
from lrtune.report.gather import (
    best_so_far,
    finished_trials,
    last_reported,
    param_importances,
    start_bounds,
    value_of,
)
from lrtune.shell import command_line, storage_args
from lrtune.table import fmt as _fmt

REPORT_FILE = "report.md"
BEST_SO_FAR_PNG = "best-so-far.png"
RANGETEST_PNG = "rangetest.png"
SCHEDULE_PNG = "schedule.png"
IMPORTANCES_PNG = "importances.png"
SCATTER_PNG = "lr-vs-value.png"
REPORT_FILES = (
    REPORT_FILE,
    BEST_SO_FAR_PNG,
    RANGETEST_PNG,
    SCHEDULE_PNG,
    IMPORTANCES_PNG,
    SCATTER_PNG,
)
"""Every file a report may hold; files of an earlier report that this one lacks are removed."""


@dataclass
class _Section:
    """One part of report.md: its heading, lines and (optionally) its figure."""

    title: str
    lines: list[str] = field(default_factory=list)
    image: str | None = None
    alt: str = ""


def write_report(storage_url: str, group: str, out_dir: str | os.PathLike[str]) -> Path:
    """Write the report of ``group`` in ``storage_url`` into ``out_dir``; returns report.md.

    ``out_dir`` is created (with its parents) if needed; the report's files in it are
    replaced, other files are left alone. Raises :class:`UserError` for a storage that cannot
    be opened, an unknown group, a group without a complete trial, or an ``out_dir`` that is
    a file. Nothing is written before those checks pass.
    """
    import optuna

    from lrtune.compare import compare_group
    from lrtune.search.states import group_study_names
    from lrtune.storage import open_storage

    out = Path(out_dir)
    _check_out_dir(out)
    storage = open_storage(storage_url, readonly=True)
    names = group_study_names(storage, group)
    if not names:
        groups = sorted(
            {
                str(s.user_attrs["group"])
                for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                if "group" in s.user_attrs
            }
        )
        hint = f"groups there: {', '.join(groups)}" if groups else "it holds no lrtune group"
        raise UserError(f"no group {group!r} in {mask_url(storage_url)}; {hint}")
    cmp = compare_group(storage, group)
    if cmp.best is None or cmp.best_row is None:
        raise UserError(
            f"group {group!r} has no complete trial yet: run `lrtune study` or "
            f"`{command_line('worker', '--group', group)}` first"
        )
    studies = {n: optuna.load_study(study_name=n, storage=storage) for n in names}

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:  # /proc, /sys, a read-only mount, no permission...
        raise UserError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the report is an ordinary directory
    try:
        text = _render(tmp, cmp, studies, group)
        (tmp / REPORT_FILE).write_text(text, encoding="utf-8")
        _move_into_place(tmp, out)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / REPORT_FILE


def _check_out_dir(out: Path) -> None:
    """Refuse an ``out`` that is a file or lies under one, before anything is read."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a directory")
            return


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; if ``out`` exists, replace the report's files in it."""
    if not out.exists():
        try:
            os.rename(tmp, out)
            return
        except OSError:  # created meanwhile: merge below
            pass
    out.mkdir(parents=True, exist_ok=True)
    written = {p.name for p in tmp.iterdir()}
    for name in REPORT_FILES:
        if name not in written and (out / name).is_file():
            (out / name).unlink()
    for name in sorted(written, key=lambda n: n == REPORT_FILE):  # report.md last
        os.replace(tmp / name, out / name)


# --- rendering ------------------------------------------------------------------------------


def _table_and_notes(table: str) -> tuple[str, list[str]]:
    head, _, tail = table.partition("\n\n")
    return head, [line for line in tail.splitlines() if line.strip()]


def _render(tmp: Path, cmp: Any, studies: dict[str, Any], group: str) -> str:
    import optuna

    from lrtune import __version__
    from lrtune.rangetest import RangeTestResult
    from lrtune.schedules import schedule_curve
    from lrtune.search.ladder import Ladder, rung_of
    from lrtune.table import format_table

    first = next(iter(studies.values())).user_attrs
    metric, direction = cmp.metric, cmp.direction
    best_row = cmp.best_row
    winner = cmp.winner
    sections: list[_Section] = []

    # Comparison table.
    table, notes = _table_and_notes(format_table(cmp, markdown=True))
    sections.append(_Section("Comparison", [table, "", *(f"- {n}" for n in notes)]))

    # Best so far.
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for row in cmp.rows:
        study = studies[row.study]
        ladder = Ladder.from_attrs(study.user_attrs)
        curve = best_so_far(finished_trials(study), direction, ladder)
        runs.setdefault((row.sampler, row.prior), []).append(curve)
    figures.plot_best_so_far(
        runs,
        tmp / BEST_SO_FAR_PNG,
        metric=metric,
        direction=direction,
        target=cmp.target,
        title=f"{group}: best {metric} so far",
    )
    repeats = max(len(v) for v in runs.values())
    sections.append(
        _Section(
            "Best so far",
            [
                "Best value after each finished trial, per sampler (colour) and prior (line "
                "style)"
                + (
                    f"; the line is the median over {repeats} repeats, the band their "
                    "interquartile range."
                    if repeats > 1
                    else "."
                )
                + " The dotted line is the target of the table's *to target* column.",
            ],
            BEST_SO_FAR_PNG,
            "best value so far against finished trials",
        )
    )

    # Range test.
    rt_data = next(
        (s.user_attrs["rangetest"] for s in studies.values() if "rangetest" in s.user_attrs), None
    )
    if rt_data is not None:
        rt = RangeTestResult.from_dict(rt_data)
        plot_range_test(rt, tmp / RANGETEST_PNG)
        div = _fmt(rt.diverged_at, ".3g") if rt.diverged_at is not None else "never"
        sections.append(
            _Section(
                "Range test",
                [
                    f"- search bounds of the `rangetest` prior: **[{rt.lr_low:.3g}, "
                    f"{rt.lr_high:.3g}]** ({math.log10(rt.lr_high / rt.lr_low):.1f} decades)",
                    f"- suggestions: steep {rt.steep:.3g}, valley {rt.valley:.3g}, "
                    f"min/10 {rt.min10:.3g}; diverged at {div}",
                    f"- {rt.optimizer}, {rt.mode} sweep {rt.start_lr:.3g} → {rt.end_lr:.3g} over "
                    f"{rt.steps} steps, {len(rt.seeds)} seed(s) (spread "
                    f"{rt.spread_decades:.2f} decades), {rt.seconds:.1f} s; diagnosis: "
                    f"{rt.diagnosis}",
                ],
                RANGETEST_PNG,
                "LR range test with the search bounds",
            )
        )
    else:
        sections.append(
            _Section("Range test", ["No range test in this group (it ran with `--prior none`)."])
        )

    # Winner and best trial.
    best_study = studies[best_row.study]
    trial = next(t for t in best_study.trials if t.number == best_row.best_trial)
    config = trial.user_attrs.get("config")
    lines = []
    if winner is not None:
        lines.append(
            f"- winner: **{winner.study}**, reached the target ({metric} "
            f"{'≤' if direction == 'minimize' else '≥'} {_fmt(cmp.target)}) after "
            f"{winner.to_target} finished trials, cost {_fmt(winner.cost, '.3g')} "
            "trial-equivalents (range test included)"
        )
    lines += [f"- {n}" for n in cmp.confirm if n.startswith("confirmed winner")]
    lines.append(
        f"- best trial: **{best_row.study} #{trial.number}**, {metric} {_fmt(trial.value)}, "
        f"lr {trial.params.get('lr', math.nan):.4g}, schedule `{trial.params.get('schedule')}`"
    )
    if isinstance(config, dict):
        sched = dict(config.get("schedule", {}))
        name = str(sched.pop("name", trial.params.get("schedule", "constant")))
        opt = dict(config.get("optimizer", {}))
        params_text = ", ".join(f"{k}={v}" for k, v in sched.items()) or "no parameters"
        opt_text = ", ".join(f"{k}={v}" for k, v in opt.items() if k not in ("name", "lr"))
        lines += [
            f"- optimizer `{opt.get('name')}` ({opt_text}), schedule `{name}` ({params_text})",
            f"- batch size {config.get('batch_size')}, {config.get('epochs')} epochs, "
            f"{config.get('total_steps')} optimizer steps",
        ]
        if config.get("task"):  # the task's own searched dimensions ([params.task])
            lines.append(f"- task: {', '.join(f'{k}={v}' for k, v in config['task'].items())}")
    shown = first.get("storage")  # masked again: a study written by an older lrtune
    storage = storage_args(str(shown) if shown else None)
    export = command_line("export", "--study", best_row.study, *storage, "--out", "lr.yaml")
    lines += [
        "",
        f"Export it: `{export}`"
        + (
            " (export writes the confirmed winner above, the configuration with the best "
            "mean over fresh seeds, which need not be this best single-seed trial)"
            if any(n.startswith("confirmed winner") for n in cmp.confirm)
            else ""
        ),
    ]
    winner_section = _Section("Winner and best trial", lines)
    sections.append(winner_section)
    if isinstance(config, dict) and config.get("total_steps"):
        total = int(config["total_steps"])
        sched = dict(config.get("schedule", {}))
        name = str(sched.pop("name"))
        lr = float(config.get("optimizer", {}).get("lr", trial.params.get("lr")))
        epochs = int(config.get("epochs") or 0)
        bounds = best_study.user_attrs.get("bounds")
        figures.plot_schedule(
            schedule_curve(name, total, lr, **sched),
            tmp / SCHEDULE_PNG,
            title=f"best trial {best_row.study} #{trial.number}: {name}, peak lr {lr:.3g}",
            steps_per_epoch=total // epochs if epochs and total % epochs == 0 else None,
            bounds=tuple(bounds)
            if bounds and best_study.user_attrs.get("prior") == "rangetest"
            else None,
        )
        winner_section.image = SCHEDULE_PNG
        winner_section.alt = "the best trial's LR over training"
        winner_section.lines += [
            "",
            "The best trial's LR at every optimizer step (what `lrtune.load_config(...)"
            ".build_scheduler(opt, total_steps)` reproduces):",
        ]
    else:
        winner_section.lines.append("(the trial has no stored `config`: no schedule plot)")

    # Importances.
    imp_study, importances, note = param_importances(cmp, studies)
    imp = _Section("Parameter importances", [note])
    if importances is not None and imp_study is not None:
        figures.plot_importances(
            importances,
            tmp / IMPORTANCES_PNG,
            title=f"parameter importances (PED-ANOVA): {imp_study}",
        )
        imp.image, imp.alt = IMPORTANCES_PNG, "parameter importances"
    sections.append(imp)

    # LR tried vs value.
    points: list[dict[str, Any]] = []
    diverged = 0
    for row in cmp.rows:
        ladder = Ladder.from_attrs(studies[row.study].user_attrs)
        for t in finished_trials(studies[row.study]):
            lr = t.params.get("lr")
            if lr is None or (ladder is not None and rung_of(t) != ladder.top):
                continue  # with rungs, only full-length trials: values of one fidelity
            value = value_of(t)
            pruned = value is None
            if pruned:
                value = last_reported(t)
            if value is None:
                diverged += 1
                continue
            points.append(
                {
                    "prior": row.prior,
                    "sampler": row.sampler,
                    "lr": lr,
                    "value": value,
                    "pruned": pruned,
                }
            )
    bounds_by_prior = start_bounds(studies.values())
    if points:
        figures.plot_lr_scatter(
            points,
            tmp / SCATTER_PNG,
            metric=metric,
            direction=direction,
            bounds=bounds_by_prior,
            best=(float(trial.params["lr"]), float(trial.value)) if "lr" in trial.params else None,
            title=f"{group}: LR tried against {metric}",
        )
        text = (
            "Every finished trial's LR and value, coloured by prior: the range-test prior "
            "(shaded) keeps the search where the loss falls, the wide prior spends trials on "
            "LRs that learn nothing or diverge."
        )
        if diverged:
            text += f" {diverged} trial(s) pruned before reporting a value are not shown."
        sections.append(_Section("LRs tried", [text], SCATTER_PNG, "LR against value"))

    # Assemble.
    spec = first.get("spec", {})
    samplers = dict.fromkeys(r.sampler for r in cmp.rows)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"# lrtune report: group `{group}`",
        "",
        f"- task `{first.get('task')}`, metric `{metric}` ({direction}), optimizer "
        f"`{spec.get('optimizer', '-')}`, {first.get('epochs', '-')} epochs per trial",
        f"- {len(studies)} studies: samplers {', '.join(samplers)}; priors "
        f"{', '.join(dict.fromkeys(r.prior for r in cmp.rows))}; "
        f"{sum(r.done for r in cmp.rows)} finished trials",
        f"- storage `{first.get('storage', '-')}`; written {created} by lrtune {__version__} "
        f"(Optuna {optuna.__version__})",
    ]
    body: list[str] = list(head)
    for sec in sections:
        body += ["", f"## {sec.title}", "", *sec.lines]
        if sec.image:
            body += ["", f"![{sec.alt}]({sec.image})"]
    return "\n".join(body) + "\n"
